//! Helpers shared by the integration tests: synthetic datasets on disk.

#![allow(dead_code)]

use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// idx3 image file bytes.
pub fn idx_images(n: usize, h: usize, w: usize, pixels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        v.extend_from_slice(&(d as u32).to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

/// idx1 label file bytes.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// Gzips bytes.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A learnable 3-class problem of `side`×`side` images: class k has a bright bar in band k,
/// plus deterministic noise.
pub fn synthetic(n: usize, side: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let mut pixels = Vec::with_capacity(n * side * side);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % 3;
        labels.push(k as u8);
        for y in 0..side {
            for _x in 0..side {
                let band = y * 3 / side;
                let base = if band == k { 180 } else { 40 };
                pixels.push((base + (next() % 60) as i32 - 30).clamp(0, 255) as u8);
            }
        }
    }
    (pixels, labels)
}

/// Writes a synthetic idx dataset (train 240 / test 90 images of 12×12) into `dir`.
pub fn write_idx_dataset(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let (p, l) = synthetic(240, 12, 1);
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gz(&idx_images(240, 12, 12, &p)),
    )
    .unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(&l)).unwrap();
    let (p, l) = synthetic(90, 12, 2);
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx_images(90, 12, 12, &p),
    )
    .unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), gz(&idx_labels(&l))).unwrap();
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
