//! ccq-runtime: the `.ccq` deployment format and the integer-only inference engine.
//!
//! Pure Rust, with no dependency on libtorch or on the ccq training stack: a `.ccq` file written
//! by `ccq export` is loaded with [`format::IntModel::load`] and run with [`engine::Engine`].

pub mod engine;
pub mod format;
mod kernels;
mod layout;
pub mod pack;
mod pool;
pub mod reference;
pub mod validate;

pub use engine::Engine;
pub use format::IntModel;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename. On failure
/// `path` is untouched and the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    if let Err(e) = std::fs::write(&tmp, bytes) {
        // Disk full, say: leave no partial file behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// The temporary file name `write_atomic` uses for `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}
