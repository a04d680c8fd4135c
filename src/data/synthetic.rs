//! A small learnable dataset on disk, for examples and smoke tests: 3 classes of grayscale
//! images, class k a bright horizontal band in the k-th third, plus deterministic noise.

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::Path;

/// idx3 image file bytes of `n` images of `h`×`w`.
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
    e.write_all(bytes).expect("writing to memory");
    e.finish().expect("writing to memory")
}

/// `n` images of `side`×`side` (pixels, row-major) and their labels, from `seed`.
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

/// Writes the synthetic dataset in idx format into `dir` (train 240 / test 90 images of
/// 12×12; some files gzipped, some not, as both occur).
pub fn write_idx_dataset(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, bytes: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))
    };
    let (p, l) = synthetic(240, 12, 1);
    write(
        "train-images-idx3-ubyte.gz",
        gz(&idx_images(240, 12, 12, &p)),
    )?;
    write("train-labels-idx1-ubyte", idx_labels(&l))?;
    let (p, l) = synthetic(90, 12, 2);
    write("t10k-images-idx3-ubyte", idx_images(90, 12, 12, &p))?;
    write("t10k-labels-idx1-ubyte.gz", gz(&idx_labels(&l)))
}
