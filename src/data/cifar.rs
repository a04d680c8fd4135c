//! CIFAR-10 binary batches: records of 1 label byte + 3072 pixel bytes (3×32×32, planar RGB).

use super::dataset::Dataset;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// Bytes per CIFAR-10 record.
pub const RECORD: usize = 1 + 3 * 32 * 32;

/// CIFAR-10 class names.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Parses one batch file's bytes, appending to `pixels`/`labels`.
pub fn parse_batch(
    bytes: &[u8],
    path: &Path,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u16>,
) -> Result<()> {
    if bytes.is_empty() {
        bail!("{}: empty CIFAR batch file", path.display());
    }
    if !bytes.len().is_multiple_of(RECORD) {
        bail!(
            "{}: truncated or not a CIFAR-10 batch: {} bytes is not a multiple of the {RECORD}-byte record ({} whole records, {} bytes left over)",
            path.display(),
            bytes.len(),
            bytes.len() / RECORD,
            bytes.len() % RECORD
        );
    }
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] >= 10 {
            bail!(
                "{}: record {i} has label {} (CIFAR-10 labels are 0..9)",
                path.display(),
                rec[0]
            );
        }
        labels.push(rec[0] as u16);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok(())
}

fn load(files: &[std::path::PathBuf]) -> Result<Dataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let bytes =
            std::fs::read(f).with_context(|| format!("cannot read CIFAR batch {}", f.display()))?;
        parse_batch(&bytes, f, &mut pixels, &mut labels)?;
    }
    Ok(Dataset {
        storage: super::dataset::Storage::Memory(pixels),
        labels,
        channels: 3,
        height: 32,
        width: 32,
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
    })
}

/// Loads `data_batch_{1..5}.bin` (those present, at least one) and `test_batch.bin` from `dir`.
pub fn load_dir(dir: &Path) -> Result<(Dataset, Dataset)> {
    let train: Vec<_> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .filter(|p| p.is_file())
        .collect();
    if train.is_empty() {
        bail!(
            "{}: no CIFAR-10 training batch (data_batch_1.bin .. data_batch_5.bin)",
            dir.display()
        );
    }
    let test = load_test(dir)?;
    Ok((load(&train)?, test))
}

/// Loads `test_batch.bin` from `dir`.
pub fn load_test(dir: &Path) -> Result<Dataset> {
    let test = dir.join("test_batch.bin");
    if !test.is_file() {
        bail!("{}: missing test_batch.bin", dir.display());
    }
    load(&[test])
}
