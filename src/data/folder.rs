//! Image folders: `ROOT/<split>/<class>/*.png|*.jpg`, classes sorted by name.

use super::dataset::Dataset;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// Decodes one PNG or JPEG of exactly `width`×`height` into `channels` (1: grayscale, 3: RGB)
/// planes of `u8`, CHW. A header that declares another size is refused before any pixel is
/// decoded, so a crafted file cannot make the decoder allocate more than the declared image.
pub fn decode_image(bytes: &[u8], channels: usize, height: usize, width: usize) -> Result<Vec<u8>> {
    if !matches!(channels, 1 | 3) {
        bail!("--channels {channels}: image folders hold 1 (grayscale) or 3 (RGB) channels");
    }
    let reader = || -> Result<_> {
        let mut r = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .context("unreadable image")?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(width as u32);
        limits.max_image_height = Some(height as u32);
        limits.max_alloc = Some(64 * (width * height) as u64 + (1 << 20));
        r.limits(limits);
        Ok(r)
    };
    // The header alone first, for a clear message when the size differs.
    let (w, h) = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .context("unreadable image")?
        .into_dimensions()
        .context("unreadable image")?;
    if w as usize != width || h as usize != height {
        bail!("image is {w}×{h} but the declared input size is {width}×{height}");
    }
    let img = reader()?.decode().context("unreadable image")?;
    if img.width() as usize != width || img.height() as usize != height {
        bail!(
            "image is {}×{} but the declared input size is {width}×{height}",
            img.width(),
            img.height()
        );
    }
    Ok(if channels == 1 {
        img.to_luma8().into_raw()
    } else {
        let rgb = img.to_rgb8();
        let raw = rgb.as_raw();
        (0..3)
            .flat_map(|c| raw.iter().skip(c).step_by(3).copied())
            .collect()
    })
}

/// Loads `root/<split>` with images of the declared `channels` (1 or 3) and size.
/// `classes`: class names to expect (the train split's), or `None` to read them from disk.
pub fn load_split(
    root: &Path,
    split: &str,
    channels: usize,
    height: usize,
    width: usize,
    classes: Option<&[String]>,
) -> Result<Dataset> {
    let dir = root.join(split);
    if !dir.is_dir() {
        bail!(
            "{}: missing split folder (expected ROOT/{split}/<class>/*.png|jpg)",
            dir.display()
        );
    }
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    if found.is_empty() {
        bail!("{}: no class folders", dir.display());
    }
    let classes: Vec<String> = match classes {
        Some(c) => {
            if let Some(extra) = found.iter().find(|f| !c.contains(f)) {
                bail!(
                    "{}: class `{extra}` is not among the training classes",
                    dir.display()
                );
            }
            c.to_vec()
        }
        None => found,
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let cdir = dir.join(class);
        if !cdir.is_dir() {
            continue;
        }
        let mut files: Vec<_> = std::fs::read_dir(&cdir)
            .with_context(|| format!("cannot list {}", cdir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .map(|e| {
                        matches!(
                            e.to_string_lossy().to_lowercase().as_str(),
                            "png" | "jpg" | "jpeg"
                        )
                    })
                    .unwrap_or(false)
            })
            .collect();
        files.sort();
        if files.is_empty() {
            bail!(
                "{}: empty class folder (no .png or .jpg images)",
                cdir.display()
            );
        }
        for f in files {
            let bytes =
                std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
            pixels.extend(
                decode_image(&bytes, channels, height, width)
                    .with_context(|| format!("{}", f.display()))?,
            );
            labels.push(label as u16);
        }
    }
    Ok(Dataset {
        pixels,
        labels,
        channels,
        height,
        width,
        classes,
    })
}
