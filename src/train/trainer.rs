//! The training loop (SGD with momentum and weight decay, cross-entropy) and evaluation.

use crate::data::{Augment, Normalization, Subset, make_batch};
use crate::model::{Network, QuantCtx};
use crate::progress;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The devices a job runs on: one with autodiff for training, the same without for inference.
#[derive(Clone, Debug)]
pub struct Devices {
    /// Training device (autodiff).
    pub train: Device,
    /// Inference device.
    pub eval: Device,
}

impl Devices {
    /// burn's pure-Rust CPU backend (flex). A GPU backend slots in here.
    pub fn flex() -> Self {
        Devices {
            train: Device::flex().autodiff(),
            eval: Device::flex(),
        }
    }

    /// Seeds burn's random generator (weight initialisation) on both devices.
    pub fn seed(&self, seed: u64) {
        self.train.seed(seed);
        self.eval.seed(seed);
    }
}

/// Optimiser hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    /// Images per step.
    pub batch_size: usize,
    /// SGD momentum (dampening 0, as PyTorch).
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
}

/// SGD with momentum (PyTorch semantics: dampening 0) and weight decay.
pub fn sgd(h: &Hyper) -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: h.momentum,
            dampening: 0.0,
            nesterov: false,
        }))
        .with_weight_decay(Some(WeightDecayConfig {
            penalty: h.weight_decay as f32,
        }))
        .init()
}

/// What one epoch did.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct EpochStats {
    /// Mean training loss.
    pub loss: f64,
    /// Training top-1 (on augmented, fake-quantized batches).
    pub acc: f64,
    /// Images seen.
    pub images: usize,
    /// Wall time.
    pub seconds: f64,
}

/// Cross-entropy of `logits` against `labels`.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let n = labels.dims()[0];
    let logp = log_softmax(logits, 1);
    logp.gather(1, labels.reshape([n, 1])).mean().neg()
}

/// Trains `net` for one pass over (at most `max_samples` of) `data`. `lr_at(t)` gives the learning
/// rate at the fraction `t ∈ [0,1)` of the epoch.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch(
    mut net: Network,
    optim: &mut ModuleOptimizer,
    ctx: &QuantCtx,
    data: &Subset,
    norm: &Normalization,
    h: &Hyper,
    augment: Option<Augment>,
    rng: &mut StdRng,
    max_samples: Option<usize>,
    lr_at: &dyn Fn(f64) -> f64,
    label: &str,
    device: &Device,
) -> (Network, EpochStats) {
    let start = Instant::now();
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(rng);
    if let Some(m) = max_samples {
        order.truncate(m.max(h.batch_size.min(order.len())));
    }
    // A last batch of one image would break BatchNorm's batch statistics.
    let chunks: Vec<&[usize]> = order
        .chunks(h.batch_size)
        .filter(|c| c.len() >= 2)
        .collect();
    let bar = progress::bar(chunks.len() as u64, label);
    let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
    for (i, chunk) in chunks.iter().enumerate() {
        let lr = lr_at(i as f64 / chunks.len() as f64);
        let batch = make_batch(data, chunk, norm, augment.map(|a| (a, &mut *rng)), device);
        let labels = batch.label_tensor(device);
        let logits = net.forward(batch.images, ctx);
        let pred = crate::host::to_i64(logits.clone().detach().argmax(1));
        let loss = cross_entropy(logits, labels);
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step(lr, net, grads);
        let l = loss.into_scalar::<f32>() as f64;
        loss_sum += l * chunk.len() as f64;
        correct += pred
            .iter()
            .zip(&batch.labels)
            .filter(|(p, l)| **p == **l as i64)
            .count();
        seen += chunk.len();
        bar.set_message(format!(
            "loss {:.3} acc {:.2}% lr {lr:.2e}",
            loss_sum / seen as f64,
            100.0 * correct as f64 / seen as f64
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let stats = EpochStats {
        loss: loss_sum / seen.max(1) as f64,
        acc: correct as f64 / seen.max(1) as f64,
        images: seen,
        seconds: start.elapsed().as_secs_f64(),
    };
    (net, stats)
}

/// Accuracy and loss of a model on a split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Eval {
    /// Top-1 accuracy in [0, 1].
    pub top1: f64,
    /// Top-5 accuracy in [0, 1] (top-k with k = min(5, classes)).
    pub top5: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Images evaluated.
    pub images: usize,
}

/// Evaluates `net` (a `valid()` snapshot on `device`) on `data`.
pub fn evaluate(
    net: &Network,
    ctx: &QuantCtx,
    data: &Subset,
    norm: &Normalization,
    batch_size: usize,
    label: Option<&str>,
    device: &Device,
) -> Eval {
    let order: Vec<usize> = (0..data.len()).collect();
    let bar = match label {
        Some(l) => progress::bar(order.len().div_ceil(batch_size) as u64, l),
        None => indicatif::ProgressBar::hidden(),
    };
    let (mut top1, mut top5, mut loss) = (0usize, 0usize, 0.0f64);
    for chunk in order.chunks(batch_size) {
        let batch = make_batch(data, chunk, norm, None, device);
        let logits = net.forward(batch.images, ctx);
        let [n, k] = logits.dims();
        let v = crate::host::to_f32(logits);
        for (r, &label) in batch.labels.iter().enumerate().take(n) {
            let row = &v[r * k..(r + 1) * k];
            let target = row[label as usize];
            let above = row.iter().filter(|&&x| x > target).count();
            top1 += (above == 0) as usize;
            top5 += (above < 5) as usize;
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
            loss += (lse - target) as f64;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = data.len().max(1) as f64;
    Eval {
        top1: top1 as f64 / n,
        top5: top5 as f64 / n,
        loss: loss / n,
        images: data.len(),
    }
}

/// Evaluates `model` fake-quantized under `policy` on `subset` (batches of 500, inference device).
pub fn eval_policy(
    model: &crate::model::Model,
    policy: &crate::quant::policy::Policy,
    scheme: crate::quant::quantizer::QuantScheme,
    subset: &Subset,
    norm: &Normalization,
    devices: &Devices,
    label: Option<&str>,
) -> Eval {
    use burn::module::Module;
    evaluate(
        &model.net.valid(),
        &QuantCtx::new(scheme, &policy.bits),
        subset,
        norm,
        500,
        label,
        &devices.eval,
    )
}

/// Predicted class (first maximum logit) of every image of `data`, in order.
pub fn predict(
    net: &Network,
    ctx: &QuantCtx,
    data: &Subset,
    norm: &Normalization,
    batch_size: usize,
    device: &Device,
) -> Vec<usize> {
    let order: Vec<usize> = (0..data.len()).collect();
    let mut out = Vec::with_capacity(data.len());
    for chunk in order.chunks(batch_size) {
        let batch = make_batch(data, chunk, norm, None, device);
        let logits = net.forward(batch.images, ctx);
        let [_, k] = logits.dims();
        let v = crate::host::to_f32(logits);
        for row in v.chunks_exact(k) {
            let mut best = 0;
            for (i, x) in row.iter().enumerate() {
                if *x > row[best] {
                    best = i;
                }
            }
            out.push(best);
        }
    }
    out
}
