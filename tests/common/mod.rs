//! Helpers shared by the integration tests: synthetic datasets on disk.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

#[allow(unused_imports)]
pub use ccq::data::synthetic::{gz, idx_images, idx_labels, synthetic};

/// Writes the synthetic idx dataset (train 240 / test 90 images of 12×12) into `dir`.
pub fn write_idx_dataset(dir: &Path) {
    ccq::data::synthetic::write_idx_dataset(dir).unwrap();
}

/// Runs the `ccq` binary and returns stdout + stderr; panics (with the output) if it fails.
pub fn ccq(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ccq"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ccq {args:?} failed:\n{text}");
    text
}

/// Runs the `ccq` binary, which must fail; returns its stderr.
pub fn ccq_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ccq"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "ccq {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
