//! Image folders: `ROOT/<split>/<class>/*.png|*.jpg`, classes sorted by name.

use super::dataset::Dataset;
use anyhow::{Context, Result, bail};
use std::path::Path;

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
            let img =
                image::open(&f).with_context(|| format!("{}: unreadable image", f.display()))?;
            if img.width() as usize != width || img.height() as usize != height {
                bail!(
                    "{}: image is {}×{} but the declared input size is {width}×{height}",
                    f.display(),
                    img.width(),
                    img.height()
                );
            }
            match channels {
                1 => pixels.extend_from_slice(img.to_luma8().as_raw()),
                3 => {
                    let rgb = img.to_rgb8();
                    let raw = rgb.as_raw();
                    for c in 0..3 {
                        pixels.extend(raw.iter().skip(c).step_by(3));
                    }
                }
                other => bail!(
                    "--channels {other}: image folders hold 1 (grayscale) or 3 (RGB) channels"
                ),
            }
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
