//! idx files (MNIST, Fashion-MNIST): `*-idx3-ubyte[.gz]` images and `*-idx1-ubyte[.gz]` labels.

use super::dataset::Dataset;
use anyhow::{Context, Result, bail};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads a file, gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupt or truncated gzip data", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses an idx3 image file: returns (count, rows, cols, pixels).
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    if bytes.len() < 16 {
        bail!(
            "{}: too short for an idx3 header ({} bytes)",
            path.display(),
            bytes.len()
        );
    }
    let magic = be_u32(bytes, 0);
    if magic != 0x0803 {
        bail!(
            "{}: wrong magic number 0x{magic:08x} for idx3 images (expected 0x00000803)",
            path.display()
        );
    }
    let (n, r, c) = (
        be_u32(bytes, 4) as usize,
        be_u32(bytes, 8) as usize,
        be_u32(bytes, 12) as usize,
    );
    let Some(want) = n.checked_mul(r).and_then(|v| v.checked_mul(c)) else {
        bail!(
            "{}: header declares {n} images of {r}×{c}, more bytes than can be addressed",
            path.display()
        );
    };
    if bytes.len() - 16 < want {
        bail!(
            "{}: truncated: header declares {n} images of {r}×{c} ({want} bytes) but {} bytes follow",
            path.display(),
            bytes.len() - 16
        );
    }
    Ok((n, r, c, bytes[16..16 + want].to_vec()))
}

/// Parses an idx1 label file.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u16>> {
    if bytes.len() < 8 {
        bail!(
            "{}: too short for an idx1 header ({} bytes)",
            path.display(),
            bytes.len()
        );
    }
    let magic = be_u32(bytes, 0);
    if magic != 0x0801 {
        bail!(
            "{}: wrong magic number 0x{magic:08x} for idx1 labels (expected 0x00000801)",
            path.display()
        );
    }
    let n = be_u32(bytes, 4) as usize;
    if bytes.len() - 8 < n {
        bail!(
            "{}: truncated: header declares {n} labels but {} bytes follow",
            path.display(),
            bytes.len() - 8
        );
    }
    Ok(bytes[8..8 + n].iter().map(|&b| b as u16).collect())
}

/// Finds `<prefix>-<kind>-ubyte` or its `.gz` in `dir`.
fn find(dir: &Path, prefix: &str, kind: &str) -> Result<PathBuf> {
    let plain = dir.join(format!("{prefix}-{kind}-ubyte"));
    let gz = dir.join(format!("{prefix}-{kind}-ubyte.gz"));
    if plain.is_file() {
        Ok(plain)
    } else if gz.is_file() {
        Ok(gz)
    } else {
        bail!(
            "{}: missing {} (or .gz)",
            dir.display(),
            plain.file_name().unwrap_or_default().to_string_lossy()
        )
    }
}

/// Loads one split (`train` or `t10k`) of an idx directory.
pub fn load_split(dir: &Path, prefix: &str) -> Result<Dataset> {
    let ip = find(dir, prefix, "images-idx3")?;
    let lp = find(dir, prefix, "labels-idx1")?;
    let (n, h, w, pixels) = parse_images(&read_maybe_gz(&ip)?, &ip)?;
    let labels = parse_labels(&read_maybe_gz(&lp)?, &lp)?;
    if labels.len() != n {
        bail!(
            "{} has {n} images but {} has {} labels",
            ip.display(),
            lp.display(),
            labels.len()
        );
    }
    if n == 0 {
        bail!("{}: no images", ip.display());
    }
    let classes = labels.iter().copied().max().unwrap_or(0) as usize + 1;
    Ok(Dataset {
        storage: super::dataset::Storage::Memory(pixels),
        labels,
        channels: 1,
        height: h,
        width: w,
        classes: (0..classes.max(2)).map(|c| c.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_sizes_cannot_wrap() {
        let mut b = vec![0, 0, 8, 3];
        for d in [u32::MAX, u32::MAX, 0x1000_0001] {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(&[0; 64]);
        let e = format!("{:#}", parse_images(&b, Path::new("x.idx")).unwrap_err());
        assert!(
            e.contains("x.idx") && e.contains("more bytes than can be addressed"),
            "{e}"
        );
        // Sizes that multiply without overflow but exceed the file: truncated.
        let mut b = vec![0, 0, 8, 3];
        for d in [1000u32, 28, 28] {
            b.extend_from_slice(&d.to_be_bytes());
        }
        let e = format!("{:#}", parse_images(&b, Path::new("x.idx")).unwrap_err());
        assert!(e.contains("truncated"), "{e}");
    }
}
