//! Turning subsets into normalised, optionally augmented batches of tensors.

use super::dataset::Dataset;
use super::dataset::Subset;
use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::sync::{Arc, Weak};
use tch::{Device, Kind, Tensor};

/// Per-channel normalisation computed from the training split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean of each channel, in pixel units / 255.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel, in pixel units / 255.
    pub std: Vec<f32>,
}

impl Normalization {
    /// Mean and standard deviation per channel over `subset`.
    pub fn from_subset(subset: &Subset) -> Self {
        let d = &subset.data;
        let hw = d.height * d.width;
        let mut sum = vec![0f64; d.channels];
        let mut sq = vec![0f64; d.channels];
        for &i in &subset.idx {
            let img = d.image(i);
            for c in 0..d.channels {
                for &p in &img[c * hw..(c + 1) * hw] {
                    let v = p as f64 / 255.0;
                    sum[c] += v;
                    sq[c] += v * v;
                }
            }
        }
        let n = (subset.len() * hw).max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(q, &m)| ((q / n - (m as f64) * (m as f64)).max(1e-12).sqrt() as f32).max(1e-3))
            .collect();
        Normalization { mean, std }
    }
}

/// Random crop (zero padding `pad`) and horizontal flip.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Padding of the random crop.
    pub pad: usize,
    /// Random horizontal flips.
    pub flip: bool,
}

/// One batch, on the device.
pub struct Batch {
    /// `[n, c, h, w]` normalised images.
    pub images: Tensor,
    /// `[n]` labels (`i64`).
    pub labels: Tensor,
}

/// A dataset's pixels (`u8`, `[N, C, H, W]`) and labels (`i64`) held on one device.
struct DeviceData {
    images: Tensor,
    labels: Tensor,
}

impl DeviceData {
    fn shallow(&self) -> DeviceData {
        DeviceData {
            images: self.images.shallow_clone(),
            labels: self.labels.shallow_clone(),
        }
    }
}

/// Datasets already uploaded (per thread), by the address of their `Arc` and the device.
type Uploads = Vec<(Weak<Dataset>, Device, DeviceData)>;
thread_local! {
    static UPLOADS: RefCell<Uploads> = const { RefCell::new(Vec::new()) };
}

/// The dataset of `subset` on `device`, uploaded once (it stays while the dataset lives).
fn on_device(data: &Arc<Dataset>, device: Device) -> DeviceData {
    UPLOADS.with_borrow_mut(|up| upload(up, data, device))
}

fn upload(up: &mut Uploads, data: &Arc<Dataset>, device: Device) -> DeviceData {
    up.retain(|(w, _, _)| w.strong_count() > 0);
    if let Some((_, _, d)) = up
        .iter()
        .find(|(w, dev, _)| *dev == device && std::ptr::eq(w.as_ptr(), Arc::as_ptr(data)))
    {
        return d.shallow();
    }
    let (n, c, h, w) = (data.len(), data.channels, data.height, data.width);
    let images = Tensor::from_slice(&data.pixels)
        .view([n as i64, c as i64, h as i64, w as i64])
        .to_device(device);
    let labels: Vec<i64> = data.labels.iter().map(|&l| l as i64).collect();
    let labels = Tensor::from_slice(&labels).to_device(device);
    let d = DeviceData { images, labels };
    up.push((Arc::downgrade(data), device, d.shallow()));
    d
}

/// Builds the batch of `subset` images at positions `order` on `device`. The dataset is held on
/// the device as `u8`; normalisation, random crop (zero padding) and flips run there, with the
/// crop offsets and flips drawn from `aug`'s generator on the host.
pub fn make_batch(
    subset: &Subset,
    order: &[usize],
    norm: &Normalization,
    aug: Option<(Augment, &mut StdRng)>,
    device: Device,
) -> Batch {
    let d = &subset.data;
    let (c, h, w) = (d.channels as i64, d.height as i64, d.width as i64);
    let dd = on_device(d, device);
    let ids: Vec<i64> = order.iter().map(|&p| subset.idx[p] as i64).collect();
    let idx = Tensor::from_slice(&ids).to_device(device);
    let labels = dd.labels.index_select(0, &idx);
    let mut x = dd.images.index_select(0, &idx).to_kind(Kind::Float) / 255.0;
    if let Some((a, rng)) = aug {
        let n = order.len();
        let p = a.pad as i64;
        let (mut rows, mut cols) = (Vec::with_capacity(n * h as usize), Vec::new());
        cols.reserve(n * w as usize);
        for _ in 0..n {
            let dx = if p > 0 { rng.random_range(-p..=p) } else { 0 };
            let dy = if p > 0 { rng.random_range(-p..=p) } else { 0 };
            let flip = a.flip && rng.random_bool(0.5);
            rows.extend((0..h).map(|y| y + dy + p));
            cols.extend((0..w).map(|xx| if flip { w - 1 - xx } else { xx } + dx + p));
        }
        let n = n as i64;
        let rows = Tensor::from_slice(&rows).view([n, h, 1]).to_device(device);
        let cols = Tensor::from_slice(&cols).view([n, 1, w]).to_device(device);
        let b = Tensor::arange(n, (Kind::Int64, device)).view([n, 1, 1]);
        let padded = x.constant_pad_nd([p, p, p, p]).permute([0, 2, 3, 1]);
        x = padded
            .index(&[Some(b), Some(rows), Some(cols)])
            .permute([0, 3, 1, 2])
            .contiguous();
    }
    let mean = Tensor::from_slice(&norm.mean)
        .view([1, c, 1, 1])
        .to_device(device);
    let std = Tensor::from_slice(&norm.std)
        .view([1, c, 1, 1])
        .to_device(device);
    Batch {
        images: (x - mean) / std,
        labels,
    }
}
