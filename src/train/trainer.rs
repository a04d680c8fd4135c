//! The training loop (SGD with momentum and weight decay, cross-entropy) and evaluation.

use super::distill::Teacher;
use super::optim::{FlatSgd, Hyper};
use crate::data::{Augment, Batcher, Normalization, Subset, in_order};
use crate::events::Pass;
use crate::model::{Network, QuantCtx};
use anyhow::Result;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The device a job trains and evaluates on, seeded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Devices {
    /// Where tensors live.
    pub device: Device,
}

impl Devices {
    /// The CPU.
    pub fn cpu() -> Self {
        Devices::on(Device::Cpu)
    }

    /// Train and evaluate on `device`.
    pub fn on(device: Device) -> Self {
        Devices { device }
    }

    /// Seeds libtorch's generators (weight initialisation) on every device.
    pub fn seed(&self, seed: u64) {
        tch::manual_seed(seed as i64);
        if self.device.is_cuda() {
            tch::Cuda::manual_seed_all(seed);
        }
    }
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

/// Mean cross-entropy of `logits` against `labels`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.cross_entropy_for_logits(labels)
}

/// Per image: whether the label is the top-1 and within the top-5 (top-k with k = min(5,
/// classes)) of `logits`, as `i64` 0/1 tensors.
///
/// The one definition of "correct" in ccq: a class ranks above the label when its logit is
/// greater, or equal with a smaller index (the first maximum wins, as `argmax`), and a row with a
/// non-finite logit is never correct.
pub fn correct(logits: &Tensor, labels: &Tensor) -> (Tensor, Tensor) {
    let n = labels.size()[0];
    let k = logits.size()[1];
    let target = logits.gather(1, &labels.view([n, 1]), false);
    let greater = logits.gt_tensor(&target);
    let index = Tensor::arange(k, (Kind::Int64, logits.device())).view([1, k]);
    let tie_before = logits
        .eq_tensor(&target)
        .logical_and(&index.lt_tensor(&labels.view([n, 1])));
    let above = greater
        .logical_or(&tie_before)
        .sum_dim_intlist(1, false, Kind::Int64);
    let finite = logits.isfinite().all_dim(1, false);
    let top1 = above.eq(0).logical_and(&finite).to_kind(Kind::Int64);
    let top5 = above.lt(5).logical_and(&finite).to_kind(Kind::Int64);
    (top1, top5)
}

pub use crate::error::Diverged;

/// Trains `net` for one pass over (at most `max_samples` of) `data`. `lr_at(t)` gives the learning
/// rate at the fraction `t ∈ [0,1)` of the epoch; with a `teacher` the loss is its distillation
/// mix, otherwise the labels' cross-entropy. A non-finite loss stops it with an error that
/// names the step (the network then holds that step's update; callers keep the last good state).
#[allow(clippy::too_many_arguments)]
pub fn train_epoch(
    net: &Network,
    optim: &mut FlatSgd,
    ctx: &QuantCtx,
    data: &Subset,
    norm: &Normalization,
    h: &Hyper,
    augment: Option<Augment>,
    rng: &mut StdRng,
    max_samples: Option<usize>,
    lr_at: &dyn Fn(f64) -> f64,
    teacher: Option<&Teacher>,
    pass: Pass,
) -> Result<EpochStats> {
    let label = pass.phase;
    let device = net.device();
    let start = Instant::now();
    let ctx = ctx.training();
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(rng);
    if let Some(m) = max_samples {
        order.truncate(m.max(h.batch_size.min(order.len())));
    }
    // A last batch of one image would break BatchNorm's batch statistics.
    let chunks: Vec<(usize, usize)> = (0..order.len())
        .step_by(h.batch_size)
        .map(|s| (s, h.batch_size.min(order.len() - s)))
        .filter(|&(_, len)| len >= 2)
        .collect();
    let batcher = Batcher::new(data, &order, norm, augment.map(|a| (a, &mut *rng)), device);
    pass.started(chunks.len() as u64);
    // Sums stay on the device; the host reads them every `sync_every` steps and at the end.
    let sync_every = if device.is_cuda() { 50 } else { 10 };
    let loss_sum = Tensor::zeros([], (Kind::Double, device));
    let correct_sum = Tensor::zeros([], (Kind::Int64, device));
    let mut seen = 0usize;
    let mut checked = 0usize;
    for (i, &(first, len)) in chunks.iter().enumerate() {
        let lr = lr_at(i as f64 / chunks.len() as f64);
        let batch = batcher.batch(first, len)?;
        let logits = net.forward(&batch.images, &ctx);
        let loss = match teacher {
            Some(t) => t.loss(&logits, &batch.images, &batch.labels),
            None => cross_entropy(&logits, &batch.labels),
        };
        let grads = FlatSgd::gradients(net, &loss);
        tch::no_grad(|| {
            let (top1, _) = correct(&logits.detach(), &batch.labels);
            let _ = loss_sum
                .shallow_clone()
                .g_add_(&(loss.detach().to_kind(Kind::Double) * len as f64));
            let _ = correct_sum.shallow_clone().g_add_(&top1.sum(Kind::Int64));
        });
        optim.step(net, grads, lr);
        seen += len;
        if (i + 1) % sync_every == 0 || i + 1 == chunks.len() {
            let l = loss_sum.double_value(&[]);
            if !l.is_finite() {
                pass.ended();
                return Err(Diverged {
                    label: label.to_string(),
                    first: checked + 1,
                    last: i + 1,
                    steps: chunks.len(),
                    value: l,
                }
                .into());
            }
            checked = i + 1;
            let c = correct_sum.int64_value(&[]) as f64;
            pass.progress(
                i as u64 + 1,
                Some(format!(
                    "loss {:.3} acc {:.2}% lr {lr:.2e}",
                    l / seen as f64,
                    100.0 * c / seen as f64
                )),
            );
        }
    }
    pass.ended();
    Ok(EpochStats {
        loss: loss_sum.double_value(&[]) / seen.max(1) as f64,
        acc: correct_sum.int64_value(&[]) as f64 / seen.max(1) as f64,
        images: seen,
        seconds: start.elapsed().as_secs_f64(),
    })
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

/// Evaluates `net` in inference mode on `data` (on the network's device), reporting its
/// progress to `pass` if given.
pub fn evaluate(
    net: &Network,
    ctx: &QuantCtx,
    data: &Subset,
    norm: &Normalization,
    batch_size: usize,
    pass: Option<Pass>,
) -> Result<Eval> {
    let device = net.device();
    let ctx = QuantCtx {
        train: false,
        ..*ctx
    };
    if let Some(p) = pass {
        p.started(data.len().div_ceil(batch_size) as u64);
    }
    let mut done = 0;
    let sums = Tensor::zeros([3], (Kind::Double, device));
    tch::no_grad(|| -> Result<()> {
        for b in in_order(data, norm, batch_size, device) {
            let (_, batch) = b?;
            let logits = net.forward(&batch.images, &ctx);
            let (top1, top5) = correct(&logits, &batch.labels);
            let loss = logits.cross_entropy_loss::<Tensor>(
                &batch.labels,
                None,
                tch::Reduction::Sum,
                -100,
                0.0,
            );
            let s = Tensor::stack(
                &[
                    top1.sum(Kind::Double),
                    top5.sum(Kind::Double),
                    loss.to_kind(Kind::Double),
                ],
                0,
            );
            let _ = sums.shallow_clone().g_add_(&s);
            done += 1;
            if let Some(p) = pass {
                p.progress(done, None);
            }
        }
        Ok(())
    })?;
    if let Some(p) = pass {
        p.ended();
    }
    let v: Vec<f64> = Vec::try_from(&sums).expect("three sums");
    let n = data.len().max(1) as f64;
    let loss = if data.is_empty() { 0.0 } else { v[2] / n };
    Ok(Eval {
        top1: v[0] / n,
        top5: v[1] / n,
        loss,
        images: data.len(),
    })
}

/// Evaluates `model` fake-quantized under `policy` on `subset` (batches of 500).
pub fn eval_policy(
    model: &crate::model::Model,
    policy: &crate::quant::policy::Policy,
    scheme: crate::quant::quantizer::QuantScheme,
    subset: &Subset,
    norm: &Normalization,
    pass: Option<Pass>,
) -> Result<Eval> {
    evaluate(
        &model.net,
        &QuantCtx::new(scheme, &policy.bits),
        subset,
        norm,
        500,
        pass,
    )
}

/// Predicted class (first maximum logit) of every image of `data`, in order; `None` for an image
/// whose logits are not all finite.
pub fn predict(
    net: &Network,
    ctx: &QuantCtx,
    data: &Subset,
    norm: &Normalization,
    batch_size: usize,
) -> Result<Vec<Option<usize>>> {
    let (logits, classes) = predict_logits(net, ctx, data, norm, batch_size)?;
    Ok(logits
        .chunks(classes.max(1))
        .map(|row| {
            row.iter().all(|v| v.is_finite()).then(|| {
                row.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                        if v > best.1 { (i, v) } else { best }
                    })
                    .0
            })
        })
        .collect())
}

/// The logits of every image of `data`, in order, row-major, and the number of classes.
pub fn predict_logits(
    net: &Network,
    ctx: &QuantCtx,
    data: &Subset,
    norm: &Normalization,
    batch_size: usize,
) -> Result<(Vec<f32>, usize)> {
    let device = net.device();
    let ctx = QuantCtx {
        train: false,
        ..*ctx
    };
    let mut out = Vec::new();
    let mut classes = 0;
    tch::no_grad(|| -> Result<()> {
        for b in in_order(data, norm, batch_size, device) {
            let (_, batch) = b?;
            let logits = net.forward(&batch.images, &ctx);
            classes = logits.size()[1] as usize;
            out.extend(crate::host::to_f32(&logits));
        }
        Ok(())
    })?;
    Ok((out, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(rows: &[[f32; 4]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        crate::host::tensor(&flat, &[rows.len() as i64, 4], Device::Cpu)
    }

    #[test]
    fn correct_is_argmax_and_never_nan() {
        let l = logits(&[
            [0.1, 2.0, 0.3, 0.0],           // clear winner: class 1
            [1.0, 1.0, 1.0, 1.0],           // constant: argmax picks class 0
            [1.0, 1.0, 1.0, 1.0],           // …so class 2 is not the top-1
            [0.0, 3.0, 3.0, 0.0],           // tie between 1 and 2: the first wins
            [0.0, 3.0, 3.0, 0.0],           // …so 2 loses
            [f32::NAN, 0.0, 0.0, 0.0],      // a NaN logit: never correct
            [0.0, f32::NAN, 0.0, 0.0],      // even for the class holding it
            [f32::INFINITY, 0.0, 0.0, 0.0], // inf is not finite either
        ]);
        let labels = Tensor::from_slice(&[1i64, 0, 2, 1, 2, 0, 1, 0]);
        let (top1, top5) = correct(&l, &labels);
        assert_eq!(crate::host::to_i64(&top1), vec![1, 1, 0, 1, 0, 0, 0, 0]);
        // With 4 classes every finite row has its label in the top-5.
        assert_eq!(crate::host::to_i64(&top5), vec![1, 1, 1, 1, 1, 0, 0, 0]);
        let argmax = crate::host::to_i64(&l.narrow(0, 0, 5).argmax(1, false));
        assert_eq!(argmax, vec![1, 0, 0, 1, 1], "the rule above is argmax's");
    }
}
