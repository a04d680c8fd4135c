//! Image folders: `ROOT/<split>/<class>/*.png|*.jpg`, classes sorted by name; decoding with
//! the evaluation and training transforms.

use super::dataset::{Dataset, Storage};
use super::stream::ImageFiles;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

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
        planes(img.to_rgb8().as_raw())
    })
}

/// Opens a PNG or JPEG of any size (up to 16384 a side, 64 megapixels).
fn open_any(bytes: &[u8]) -> Result<image::DynamicImage> {
    let mut r = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .context("unreadable image")?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(16384);
    limits.max_image_height = Some(16384);
    limits.max_alloc = Some(64 * 4 * (1 << 20));
    r.limits(limits);
    let img = r.decode().context("unreadable image")?;
    if img.width() == 0 || img.height() == 0 {
        bail!("empty image");
    }
    Ok(img)
}

/// The region `[x, y, w, h]` of `img` scaled to `width`×`height` (bilinear), mirrored if
/// `flip`, as `channels` planes of `u8`, CHW.
fn crop_scale(
    img: &image::DynamicImage,
    [x, y, w, h]: [u32; 4],
    channels: usize,
    [height, width]: [usize; 2],
    flip: bool,
) -> Vec<u8> {
    let filter = image::imageops::FilterType::Triangle;
    let (tw, th) = (width as u32, height as u32);
    if channels == 1 {
        let g = image::imageops::crop_imm(&img.to_luma8(), x, y, w, h).to_image();
        let mut g = image::imageops::resize(&g, tw, th, filter);
        if flip {
            image::imageops::flip_horizontal_in_place(&mut g);
        }
        g.into_raw()
    } else {
        let c = image::imageops::crop_imm(&img.to_rgb8(), x, y, w, h).to_image();
        let mut c = image::imageops::resize(&c, tw, th, filter);
        if flip {
            image::imageops::flip_horizontal_in_place(&mut c);
        }
        planes(c.as_raw())
    }
}

/// Decodes one PNG or JPEG of any size (up to 16384 a side, 64 megapixels), scales it so that
/// its shorter side is `shorter` (bilinear), and crops its centre `width`×`height`, into
/// `channels` planes of `u8`, CHW: the evaluation transform of ImageNet-style models.
pub fn decode_resized(
    bytes: &[u8],
    channels: usize,
    height: usize,
    width: usize,
    shorter: usize,
) -> Result<Vec<u8>> {
    if !matches!(channels, 1 | 3) {
        bail!("--channels {channels}: image folders hold 1 (grayscale) or 3 (RGB) channels");
    }
    if shorter < height.max(width) {
        bail!("--resize {shorter} is smaller than the {width}×{height} crop");
    }
    let img = open_any(bytes)?;
    let (w0, h0) = (img.width() as usize, img.height() as usize);
    let scale = shorter as f64 / w0.min(h0) as f64;
    // The shorter side becomes `shorter` exactly; the other keeps the aspect ratio.
    let side = |n: usize| ((n as f64 * scale).round() as usize).max(shorter);
    let (nw, nh) = (side(w0).max(width), side(h0).max(height));
    let filter = image::imageops::FilterType::Triangle;
    let (x0, y0) = ((nw - width) / 2, (nh - height) / 2);
    Ok(if channels == 1 {
        let g = image::imageops::resize(&img.to_luma8(), nw as u32, nh as u32, filter);
        image::imageops::crop_imm(&g, x0 as u32, y0 as u32, width as u32, height as u32)
            .to_image()
            .into_raw()
    } else {
        let rgb = image::imageops::resize(&img.to_rgb8(), nw as u32, nh as u32, filter);
        let c = image::imageops::crop_imm(&rgb, x0 as u32, y0 as u32, width as u32, height as u32)
            .to_image();
        planes(c.as_raw())
    })
}

/// Interleaved RGB as three planes.
fn planes(raw: &[u8]) -> Vec<u8> {
    (0..3)
        .flat_map(|k| raw.iter().skip(k).step_by(3).copied())
        .collect()
}

/// The training transform of ImageNet-style models (torchvision's `RandomResizedCrop` with
/// its default scale 0.08–1 and aspect ratio 3/4–4/3, then a horizontal flip with probability
/// 1/2): decodes one PNG or JPEG of any size, crops a random region, scales it to
/// `width`×`height`. The draws come from `seed` alone, so the result does not depend on which
/// thread decodes it.
pub fn decode_random_resized(
    bytes: &[u8],
    channels: usize,
    [height, width]: [usize; 2],
    seed: u64,
) -> Result<Vec<u8>> {
    use rand::{Rng, SeedableRng};
    if !matches!(channels, 1 | 3) {
        bail!("--channels {channels}: image folders hold 1 (grayscale) or 3 (RGB) channels");
    }
    let img = open_any(bytes)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let region = random_region(img.width(), img.height(), &mut rng);
    let flip = rng.random_bool(0.5);
    Ok(crop_scale(&img, region, channels, [height, width], flip))
}

/// torchvision's `RandomResizedCrop.get_params` with scale (0.08, 1) and ratio (3/4, 4/3):
/// up to ten tries at a random area and aspect ratio, else the centre crop at the nearest
/// allowed ratio. Returns `[x, y, w, h]`.
fn random_region(width: u32, height: u32, rng: &mut impl rand::Rng) -> [u32; 4] {
    let (wf, hf) = (width as f64, height as f64);
    let area = wf * hf;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(0.08..=1.0);
        let ratio = rng.random_range(lo..=hi).exp();
        let w = (target * ratio).sqrt().round();
        let h = (target / ratio).sqrt().round();
        if w >= 1.0 && h >= 1.0 && w <= wf && h <= hf {
            let (w, h) = (w as u32, h as u32);
            let y = rng.random_range(0..=height - h);
            let x = rng.random_range(0..=width - w);
            return [x, y, w, h];
        }
    }
    let ratio = wf / hf;
    let (w, h) = if ratio < 3.0 / 4.0 {
        (wf, (wf / (3.0 / 4.0)).round())
    } else if ratio > 4.0 / 3.0 {
        ((hf * 4.0 / 3.0).round(), hf)
    } else {
        (wf, hf)
    };
    let (w, h) = ((w as u32).clamp(1, width), (h as u32).clamp(1, height));
    [(width - w) / 2, (height - h) / 2, w, h]
}

/// The files of a split: each image's path and label, and the class names.
pub struct SplitFiles {
    /// Path and label of each image, in class then file-name order.
    pub files: Vec<(PathBuf, u16)>,
    /// Class names (index = label).
    pub classes: Vec<String>,
}

/// The image files of `root/<split>`, with their labels, in class then file-name order, and
/// the class names. `classes`: class names to expect (the train split's), or `None` to read
/// them from disk.
pub fn list_split(root: &Path, split: &str, classes: Option<&[String]>) -> Result<SplitFiles> {
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
    let mut out = Vec::new();
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
        out.extend(files.into_iter().map(|f| (f, label as u16)));
    }
    Ok(SplitFiles {
        files: out,
        classes,
    })
}

/// Loads `root/<split>` with images of the declared `channels` (1 or 3) and size; with
/// `resize`, images of any size are scaled (shorter side) and centre-cropped to that size
/// ([`decode_resized`]). `classes`: class names to expect (the train split's), or `None` to
/// read them from disk. `stream`: whether to keep the file list and decode images when a batch
/// needs them (checking every header now), rather than decode them all now, in parallel.
pub fn load_split(
    root: &Path,
    split: &str,
    channels: usize,
    [height, width]: [usize; 2],
    resize: Option<usize>,
    classes: Option<&[String]>,
    stream: super::source::Loader,
) -> Result<Dataset> {
    use rayon::prelude::*;
    if !matches!(channels, 1 | 3) {
        bail!("--channels {channels}: image folders hold 1 (grayscale) or 3 (RGB) channels");
    }
    let SplitFiles { files, classes } = list_split(root, split, classes)?;
    let labels: Vec<u16> = files.iter().map(|(_, l)| *l).collect();
    let paths: Vec<PathBuf> = files.into_iter().map(|(f, _)| f).collect();
    let decoded = (paths.len() * channels * height * width) as u64;
    let storage = if stream.streams(decoded, resize.is_some()) {
        let files = ImageFiles { paths, resize };
        files.check_headers([height, width])?;
        Storage::Files(files)
    } else {
        let files = ImageFiles { paths, resize };
        let ids: Vec<usize> = (0..files.paths.len()).collect();
        // Decoded in parallel, in chunks so that the compressed files are not all held at once.
        let mut pixels = Vec::with_capacity(decoded as usize);
        for chunk in ids.chunks(4096) {
            let part: Vec<Vec<u8>> = chunk
                .par_iter()
                .map(|&i| files.decode(i, channels, [height, width]))
                .collect::<Result<_>>()?;
            part.into_iter().for_each(|p| pixels.extend(p));
        }
        Storage::Memory(pixels)
    };
    Ok(Dataset {
        storage,
        labels,
        channels,
        height,
        width,
        classes,
    })
}

#[cfg(test)]
mod resize_tests {
    use super::*;

    /// A `w`×`h` RGB PNG whose red channel rises left to right and green top to bottom.
    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, 7])
        });
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn shorter_side_then_centre_crop() {
        // 60×30 → shorter side 12: 24×12, centre 8×8 crop from x = 8.
        let v = decode_resized(&png(60, 30), 3, 8, 8, 12).unwrap();
        assert_eq!(v.len(), 3 * 64);
        let (red, green) = (&v[..64], &v[64..128]);
        assert!(
            red[0] < red[7] && red[0] > 60 && red[7] < 195,
            "the centre columns: {red:?}"
        );
        // 12 rows, the centre 8 (rows 2..10): green from about 2/11 to 9/11 of 255.
        assert!(
            green[0] > 30 && green[0] < 70 && green[56] > 185 && green[56] < 225,
            "{green:?}"
        );
        assert!(v[128..].iter().all(|&b| b == 7));
        // Portrait and grayscale.
        assert_eq!(decode_resized(&png(20, 50), 1, 8, 8, 10).unwrap().len(), 64);
        let e = format!(
            "{:#}",
            decode_resized(&png(20, 50), 3, 16, 16, 10).unwrap_err()
        );
        assert!(
            e.contains("--resize 10 is smaller than the 16×16 crop"),
            "{e}"
        );
        // Without --resize, another size is refused.
        assert!(decode_image(&png(20, 50), 3, 8, 8).is_err());
    }
}
