//! Turning subsets into normalised, optionally augmented batches of tensors.

use super::dataset::Subset;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

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

/// One batch: images on the device and labels on the host.
pub struct Batch {
    /// `[n, c, h, w]` normalised images.
    pub images: Tensor<4>,
    /// Labels.
    pub labels: Vec<u16>,
}

impl Batch {
    /// Labels as an int tensor on `device`.
    pub fn label_tensor(&self, device: &Device) -> Tensor<1, Int> {
        let v: Vec<i64> = self.labels.iter().map(|&l| l as i64).collect();
        Tensor::from_data(TensorData::new(v, [self.labels.len()]), device)
    }
}

/// Builds the batch of `subset` images at positions `order`.
pub fn make_batch(
    subset: &Subset,
    order: &[usize],
    norm: &Normalization,
    aug: Option<(Augment, &mut StdRng)>,
    device: &Device,
) -> Batch {
    let d = &subset.data;
    let (c, h, w) = (d.channels, d.height, d.width);
    let mut out = vec![0f32; order.len() * c * h * w];
    let mut labels = Vec::with_capacity(order.len());
    let mut aug = aug;
    for (bi, &pos) in order.iter().enumerate() {
        let i = subset.idx[pos];
        labels.push(d.labels[i]);
        let img = d.image(i);
        let (dx, dy, flip) = match aug.as_mut() {
            Some((a, rng)) => {
                let p = a.pad as i64;
                let dx = if p > 0 { rng.random_range(-p..=p) } else { 0 };
                let dy = if p > 0 { rng.random_range(-p..=p) } else { 0 };
                (dx, dy, a.flip && rng.random_bool(0.5))
            }
            None => (0, 0, false),
        };
        let dst = &mut out[bi * c * h * w..(bi + 1) * c * h * w];
        for ch in 0..c {
            let (m, s) = (norm.mean[ch], norm.std[ch]);
            for y in 0..h {
                let sy = y as i64 + dy;
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    let sx = xx as i64 + dx;
                    let v = if sy >= 0 && sy < h as i64 && sx >= 0 && sx < w as i64 {
                        img[ch * h * w + sy as usize * w + sx as usize] as f32 / 255.0
                    } else {
                        0.0
                    };
                    dst[ch * h * w + y * w + x] = (v - m) / s;
                }
            }
        }
    }
    let images = Tensor::from_data(TensorData::new(out, [order.len(), c, h, w]), device);
    Batch { images, labels }
}
