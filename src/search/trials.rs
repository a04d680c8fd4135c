//! The competition's trials: each awake arm's policy scored on the bandit split, without
//! training.

use super::ccq::SearchEnv;
use super::reward::{TrialScore, Trials};
use super::step::ArmScorer;
use crate::data::{Normalization, Subset, in_order};
use crate::model::{Model, QuantCtx};
use crate::quant::policy::Policy;
use crate::quant::quantizer::QuantScheme;
use crate::train::calibrate::{
    reestimate_batchnorm, reestimation_ctx, rescale_steps, restore_steps, saved_steps,
};
use crate::train::trainer::correct;
use crate::train::{Eval, eval_policy};

/// Images per batch when scoring trials.
pub const TRIAL_BATCH: usize = 500;

/// Trial accuracies on the bandit split, the real [`ArmScorer`].
pub(super) struct BanditScorer<'a> {
    pub model: &'a Model,
    pub policy: &'a Policy,
    pub scheme: QuantScheme,
    pub env: &'a SearchEnv<'a>,
    /// The images trials are scored on ([`crate::search::config::SearchConfig::trial_split`]).
    pub bandit: Subset,
    /// Batches each trial re-estimates the BatchNorm statistics on (empty: none).
    pub bn_batches: Vec<tch::Tensor>,
}

impl ArmScorer for BanditScorer<'_> {
    fn score(&mut self, contenders: &[Option<(usize, &Policy)>]) -> anyhow::Result<Trials> {
        score_trials(
            self.model,
            self.policy,
            contenders,
            self.scheme,
            &self.bandit,
            self.env.norm,
            TRIAL_BATCH,
            &self.bn_batches,
        )
    }
}

/// Softmax temperatures a tempered cross-entropy is the least over: `2^(k/4)` for k = −8..=8,
/// from ¼ to 4 (1 among them, so a tempered loss never exceeds the plain one).
pub fn temperatures() -> Vec<f64> {
    (-8..=8).map(|k| 2f64.powf(k as f64 / 4.0)).collect()
}

/// The summed cross-entropy of `logits` against `labels` at each of [`temperatures`]
/// (`inverse`: their inverses, shaped `[K, 1, 1]`), as a `[K]` tensor of doubles.
fn tempered_sums(logits: &tch::Tensor, labels: &tch::Tensor, inverse: &tch::Tensor) -> tch::Tensor {
    let k = inverse.size()[0];
    let logp = (logits.to_kind(tch::Kind::Double).unsqueeze(0) * inverse).log_softmax(-1, None);
    let picked = logp.gather(2, &labels.view([1, -1, 1]).expand([k, -1, 1], false), false);
    -picked.sum_dim_intlist([1i64, 2].as_slice(), false, tch::Kind::Double)
}

/// The inverse temperatures [`tempered_sums`] takes, on `device`.
fn inverse_temperatures(device: tch::Device) -> tch::Tensor {
    let inv: Vec<f64> = temperatures().iter().map(|t| 1.0 / t).collect();
    tch::Tensor::from_slice(&inv)
        .view([-1, 1, 1])
        .to_device(device)
}

/// The least of the summed cross-entropies [`tempered_sums`] accumulated, as a mean over `n`.
fn least_mean(sums: &tch::Tensor, n: f64) -> f64 {
    sums.min().double_value(&[]) / n
}

/// Training batches a trial re-estimates BatchNorm on when the search asks for it
/// ([`super::reward::Reward::trial_bn`]).
pub const TRIAL_BN_BATCHES: usize = 4;

/// Copies `values` into the `buffers` they were taken from.
fn set_buffers(buffers: &[tch::Tensor], values: &[tch::Tensor]) {
    tch::no_grad(|| {
        for (b, v) in buffers.iter().zip(values) {
            b.shallow_clone().copy_(v);
        }
    });
}

/// Copies of `buffers`.
fn copies(buffers: &[tch::Tensor]) -> Vec<tch::Tensor> {
    buffers.iter().map(|b| b.copy()).collect()
}

/// Every BatchNorm buffer of a model (views) and a copy of the values they hold.
struct OwnStatistics {
    buffers: Vec<tch::Tensor>,
    values: Vec<tch::Tensor>,
}

impl OwnStatistics {
    fn of(model: &Model) -> Self {
        let buffers = model.net.batchnorm_buffers(0);
        let values = copies(&buffers);
        OwnStatistics { buffers, values }
    }

    /// Index of the first buffer of stage `stage` on (they are the last ones, in order).
    fn first_of_stage(&self, model: &Model, stage: usize) -> usize {
        self.buffers.len() - model.net.batchnorm_buffers(stage).len()
    }

    /// Puts the model's own values back into the buffers from index `from` on.
    fn restore_from(&self, from: usize) {
        set_buffers(&self.buffers[from..], &self.values[from..]);
    }
}

/// The values of the BatchNorm buffers from index `from` on (those of the trial's stage on),
/// re-estimated on `batches` through the model quantized at `trial` (its LSQ steps already set
/// for it); every statistic of the model is restored afterwards. The BatchNorms before the
/// trial's stage see its input unchanged, so they keep the model's own.
fn trial_statistics(
    model: &Model,
    own: &OwnStatistics,
    from: usize,
    trial: &Policy,
    scheme: QuantScheme,
    batches: &[tch::Tensor],
) -> Vec<tch::Tensor> {
    reestimate_batchnorm(&model.net, trial, scheme, batches);
    let stats = copies(&own.buffers[from..]);
    own.restore_from(0);
    stats
}

/// Rescales the LSQ steps of `layers` from `current`'s bits to `trial`'s (when the scheme has
/// them); returns what [`restore`] puts back.
fn rescale(
    model: &Model,
    current: &Policy,
    trial: &Policy,
    layers: &[usize],
    scheme: QuantScheme,
) -> Vec<(usize, (tch::Tensor, tch::Tensor))> {
    if scheme == QuantScheme::default() {
        return Vec::new();
    }
    layers
        .iter()
        .map(|&l| {
            let s = saved_steps(model, l);
            rescale_steps(&model.net, l, current.bits[l], trial.bits[l]);
            (l, s)
        })
        .collect()
}

/// Puts back the steps [`rescale`] changed.
fn restore(model: &Model, saved: &[(usize, (tch::Tensor, tch::Tensor))]) {
    for (l, s) in saved {
        restore_steps(model, *l, s);
    }
}

/// The layers whose bits differ between `current` and `trial`.
fn changed_layers(current: &Policy, trial: &Policy) -> Vec<usize> {
    current
        .bits
        .iter()
        .zip(&trial.bits)
        .enumerate()
        .filter(|(_, (c, t))| c != t)
        .map(|(l, _)| l)
        .collect()
}

/// Standard error of the mean of `n` per-image differences with sum `sum` and sum of squares
/// `sq`.
fn standard_error(sum: f64, sq: f64, n: f64) -> f64 {
    if n < 2.0 {
        return 0.0;
    }
    let mean = sum / n;
    ((sq - n * mean * mean).max(0.0) / (n - 1.0) / n).sqrt()
}

/// A trial's BatchNorm statistics, swapped in for its forward passes.
struct BnSwap {
    /// Index of the first buffer it replaces (its stage's first BatchNorm).
    from: usize,
    /// The trial's re-estimated values of the buffers from there on.
    trial: Vec<tch::Tensor>,
}

/// Every contender's BatchNorm statistics from its stage on, re-estimated on `batches` as
/// [`trial_statistics`] does (a reset, then the batches in training mode with momentum
/// 1/(k+1)), but with the stages before a trial's run once per batch for all of them: in
/// training mode a BatchNorm normalises with its batch's statistics, so a stage's input does
/// not depend on the running statistics, and the stages before a trial's are the current
/// policy's. `None` for a missing contender, without `batches`, or for a trial that changes no
/// BatchNorm's input. The model's own statistics are restored.
#[allow(clippy::too_many_arguments)]
fn prefix_statistics(
    model: &Model,
    own: &OwnStatistics,
    current: &Policy,
    contenders: &[Option<(usize, &Policy)>],
    changed: &[Vec<usize>],
    stages: &[usize],
    scheme: QuantScheme,
    batches: &[tch::Tensor],
) -> Vec<Option<BnSwap>> {
    let mut stats: Vec<Option<BnSwap>> = contenders
        .iter()
        .zip(stages)
        .map(|(c, &stage)| {
            c.as_ref()?;
            let from = own.first_of_stage(model, stage);
            (!batches.is_empty() && from < own.buffers.len()).then(|| BnSwap {
                from,
                trial: Vec::new(),
            })
        })
        .collect();
    if stats.iter().all(Option::is_none) {
        return stats;
    }
    tch::no_grad(|| {
        for (k, b) in batches.iter().enumerate() {
            let (inputs, _) = model
                .net
                .stage_inputs(b, &reestimation_ctx(scheme, current, k));
            for (((c, layers), &stage), swap) in
                contenders.iter().zip(changed).zip(stages).zip(&mut stats)
            {
                let (Some((_, trial)), Some(w)) = (c, swap) else {
                    continue;
                };
                let saved = rescale(model, current, trial, layers, scheme);
                if k == 0 {
                    model.net.reset_batchnorm();
                } else {
                    set_buffers(&own.buffers[w.from..], &w.trial);
                }
                let _ = model.net.forward_from(
                    stage,
                    &inputs[stage],
                    &reestimation_ctx(scheme, trial, k),
                );
                w.trial = copies(&own.buffers[w.from..]);
                restore(model, &saved);
            }
        }
    });
    own.restore_from(0);
    stats
}

/// Bandit top-1, cross-entropy and the standard error of its increase of every contender
/// `(layer, trial policy)` (`None` where there is none, or where the trial's logits are not
/// finite), and of the current policy: the model fake-quantized under each policy, evaluated
/// without training.
///
/// A trial changes one layer (two for the polish's swaps), so everything before the earliest
/// changed layer's stage is the same as under the current policy: each batch runs the current
/// policy once, keeps every stage's input, and each arm runs only its suffix. All arms score one
/// batch before the next; counts stay on the device until the end. LSQ steps are rescaled for
/// the trial's bits and restored afterwards.
///
/// With `bn_batches`, each trial first re-estimates the BatchNorm statistics its change affects
/// (those from its stage on) on those batches, and is scored with them: the damage a lowering
/// does that recalibrating the network's statistics would undo is not counted. The model's own
/// statistics are restored after every trial.
#[allow(clippy::too_many_arguments)]
pub fn score_trials(
    model: &Model,
    current: &Policy,
    contenders: &[Option<(usize, &Policy)>],
    scheme: QuantScheme,
    data: &Subset,
    norm: &Normalization,
    batch_size: usize,
    bn_batches: &[tch::Tensor],
) -> anyhow::Result<Trials> {
    let device = model.net.device();
    let ctx = QuantCtx::new(scheme, &current.bits);
    // The layers each trial changes (one for a lowering, two for the polish's swaps): it runs
    // from the earliest one's stage.
    let changed: Vec<Vec<usize>> = contenders
        .iter()
        .map(|c| c.map_or_else(Vec::new, |(_, trial)| changed_layers(current, trial)))
        .collect();
    let stages: Vec<usize> = changed
        .iter()
        .map(|c| c.iter().map(|&l| model.net.stage_of(l)).min().unwrap_or(0))
        .collect();
    // Per trial: the re-estimated statistics of the BatchNorms from its stage on.
    let own = OwnStatistics::of(model);
    let statistics = prefix_statistics(
        model, &own, current, contenders, &changed, &stages, scheme, bn_batches,
    );
    let hits: Vec<tch::Tensor> = contenders
        .iter()
        .map(|_| tch::Tensor::zeros([], (tch::Kind::Int64, device)))
        .collect();
    // Rows of non-finite logits per trial: any makes the trial unusable.
    let bad: Vec<tch::Tensor> = contenders
        .iter()
        .map(|_| tch::Tensor::zeros([], (tch::Kind::Int64, device)))
        .collect();
    let zero = || tch::Tensor::zeros([], (tch::Kind::Double, device));
    let losses: Vec<tch::Tensor> = contenders.iter().map(|_| zero()).collect();
    // Σ (trial − current) and Σ (trial − current)² of the per-image cross-entropies.
    let diffs: Vec<tch::Tensor> = contenders.iter().map(|_| zero()).collect();
    let squares: Vec<tch::Tensor> = contenders.iter().map(|_| zero()).collect();
    let (cur_hits, cur_loss) = (zero(), zero());
    // Summed cross-entropy at each temperature, per trial and for the current policy.
    let inverse = inverse_temperatures(device);
    let k = inverse.size()[0];
    let tempered_zero = || tch::Tensor::zeros([k], (tch::Kind::Double, device));
    let tempered: Vec<tch::Tensor> = contenders.iter().map(|_| tempered_zero()).collect();
    let cur_tempered = tempered_zero();
    // Per image, and summed as the evaluation sums it (in the logits' precision).
    let ce = |logits: &tch::Tensor, labels: &tch::Tensor, r: tch::Reduction| {
        logits
            .cross_entropy_loss::<tch::Tensor>(labels, None, r, -100, 0.0)
            .to_kind(tch::Kind::Double)
    };
    let (each, sum) = (tch::Reduction::None, tch::Reduction::Sum);
    tch::no_grad(|| -> anyhow::Result<()> {
        for b in in_order(data, norm, batch_size, device) {
            let (_, batch) = b?;
            let (inputs, logits) = model.net.stage_inputs(&batch.images, &ctx);
            let (top1, _) = correct(&logits, &batch.labels);
            let _ = cur_hits
                .shallow_clone()
                .g_add_(&top1.sum(tch::Kind::Double));
            let cur_ce = ce(&logits, &batch.labels, each);
            let _ = cur_loss
                .shallow_clone()
                .g_add_(&ce(&logits, &batch.labels, sum));
            let _ = cur_tempered.shallow_clone().g_add_(&tempered_sums(
                &logits,
                &batch.labels,
                &inverse,
            ));
            for (((((((((c, hit), bad), loss), dsum), sq), &stage), layers), swap), temp) in
                contenders
                    .iter()
                    .zip(&hits)
                    .zip(&bad)
                    .zip(&losses)
                    .zip(&diffs)
                    .zip(&squares)
                    .zip(&stages)
                    .zip(&changed)
                    .zip(&statistics)
                    .zip(&tempered)
            {
                let Some((_, trial)) = c else { continue };
                let saved = rescale(model, current, trial, layers, scheme);
                if let Some(w) = swap {
                    set_buffers(&own.buffers[w.from..], &w.trial);
                }
                let tctx = QuantCtx::new(scheme, &trial.bits);
                let logits = model.net.forward_from(stage, &inputs[stage], &tctx);
                if let Some(w) = swap {
                    own.restore_from(w.from);
                }
                let (top1, _) = correct(&logits, &batch.labels);
                let _ = hit.shallow_clone().g_add_(&top1.sum(tch::Kind::Int64));
                let nonfinite = logits.isfinite().logical_not().sum(tch::Kind::Int64);
                let _ = bad.shallow_clone().g_add_(&nonfinite);
                let _ = loss
                    .shallow_clone()
                    .g_add_(&ce(&logits, &batch.labels, sum));
                let d = ce(&logits, &batch.labels, each) - &cur_ce;
                let _ = dsum.shallow_clone().g_add_(&d.sum(tch::Kind::Double));
                let _ = sq.shallow_clone().g_add_(&(&d * &d).sum(tch::Kind::Double));
                let _ =
                    temp.shallow_clone()
                        .g_add_(&tempered_sums(&logits, &batch.labels, &inverse));
                restore(model, &saved);
            }
        }
        Ok(())
    })?;
    let n = data.len().max(1) as f64;
    let arms = contenders
        .iter()
        .zip(&hits)
        .zip(&bad)
        .zip(&losses)
        .zip(diffs.iter().zip(&squares))
        .zip(&tempered)
        .map(|(((((c, h), b), l), (d, sq)), temp)| {
            c.filter(|_| b.int64_value(&[]) == 0)
                .map(|_| TrialScore {
                    top1: h.int64_value(&[]) as f64 / n,
                    loss: l.double_value(&[]) / n,
                    loss_se: standard_error(d.double_value(&[]), sq.double_value(&[]), n),
                    tempered_loss: least_mean(temp, n),
                })
                .filter(|t| {
                    t.loss.is_finite() && t.loss_se.is_finite() && t.tempered_loss.is_finite()
                })
        })
        .collect();
    Ok(Trials {
        current: TrialScore {
            top1: cur_hits.double_value(&[]) / n,
            loss: cur_loss.double_value(&[]) / n,
            loss_se: 0.0,
            tempered_loss: least_mean(&cur_tempered, n),
        },
        arms,
    })
}

/// [`score_trials`] the plain way: every trial runs the whole network over the whole split, on a
/// copy of the model (its BatchNorm statistics re-estimated from the first changed layer's stage
/// on, with `bn_batches`).
pub fn score_trials_naive(
    model: &Model,
    current: &Policy,
    contenders: &[Option<(usize, &Policy)>],
    scheme: QuantScheme,
    data: &Subset,
    norm: &Normalization,
    bn_batches: &[tch::Tensor],
) -> anyhow::Result<Trials> {
    let (base, base_tempered) = image_losses(model, current, scheme, data, norm)?;
    let score = |e: Eval, se: f64, tempered: f64| TrialScore {
        top1: e.top1,
        loss: e.loss,
        loss_se: se,
        tempered_loss: tempered,
    };
    let arms = contenders
        .iter()
        .map(|c| {
            c.map(|(_, trial)| {
                let m = model.clone();
                let layers = changed_layers(current, trial);
                rescale(&m, current, trial, &layers, scheme);
                if !bn_batches.is_empty() {
                    let stage = layers.iter().map(|&l| m.net.stage_of(l)).min().unwrap_or(0);
                    let own = OwnStatistics::of(&m);
                    let from = own.first_of_stage(&m, stage);
                    let stats = trial_statistics(&m, &own, from, trial, scheme, bn_batches);
                    set_buffers(&own.buffers[from..], &stats);
                }
                let (losses, tempered) = image_losses(&m, trial, scheme, data, norm)?;
                let d: Vec<f64> = losses.iter().zip(&base).map(|(t, c)| t - c).collect();
                let se = standard_error(
                    d.iter().sum(),
                    d.iter().map(|x| x * x).sum(),
                    d.len() as f64,
                );
                eval_policy(&m, trial, scheme, data, norm, None).map(|e| score(e, se, tempered))
            })
            .transpose()
            .map(|t| t.filter(|t| t.loss.is_finite()))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Trials {
        current: score(
            eval_policy(model, current, scheme, data, norm, None)?,
            0.0,
            base_tempered,
        ),
        arms,
    })
}

/// Each image's cross-entropy under `policy`, in order, one batch at a time; and the tempered
/// mean cross-entropy (the least over [`temperatures`]).
fn image_losses(
    model: &Model,
    policy: &Policy,
    scheme: QuantScheme,
    data: &Subset,
    norm: &Normalization,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let ctx = QuantCtx::new(scheme, &policy.bits);
    let mut out = Vec::with_capacity(data.len());
    let inverse = inverse_temperatures(model.net.device());
    let sums = tch::Tensor::zeros([inverse.size()[0]], (tch::Kind::Double, model.net.device()));
    tch::no_grad(|| -> anyhow::Result<()> {
        for b in in_order(data, norm, TRIAL_BATCH, model.net.device()) {
            let (_, batch) = b?;
            let logits = model.net.forward(&batch.images, &ctx);
            let ce = logits
                .cross_entropy_loss::<tch::Tensor>(
                    &batch.labels,
                    None,
                    tch::Reduction::None,
                    -100,
                    0.0,
                )
                .to_kind(tch::Kind::Double);
            out.extend(Vec::<f64>::try_from(&ce)?);
            let _ = sums
                .shallow_clone()
                .g_add_(&tempered_sums(&logits, &batch.labels, &inverse));
        }
        Ok(())
    })?;
    let n = out.len().max(1) as f64;
    Ok((out, least_mean(&sums, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tempered_loss_is_the_least_over_the_temperatures() {
        let t = temperatures();
        assert_eq!((t.len(), t[0], t[8], t[16]), (17, 0.25, 1.0, 4.0));
        // One image, confidently wrong (logit 8 on class 1, label 0): at T = 1 its
        // cross-entropy is ln(1 + e^8); the least is at the hottest temperature, 4: ln(1 + e^2).
        let logits = tch::Tensor::from_slice(&[0.0f32, 8.0]).view([1, 2]);
        let labels = tch::Tensor::from_slice(&[0i64]);
        let inverse = inverse_temperatures(tch::Device::Cpu);
        let sums = tempered_sums(&logits, &labels, &inverse);
        let plain = sums.double_value(&[8]);
        assert!((plain - (1.0 + 8f64.exp()).ln()).abs() < 1e-9, "{plain}");
        let least = least_mean(&sums, 1.0);
        assert!((least - (1.0 + 2f64.exp()).ln()).abs() < 1e-9, "{least}");
        // Confidently right, the coldest temperature is best: ln(1 + e^-32).
        let right = tempered_sums(&logits, &tch::Tensor::from_slice(&[1i64]), &inverse);
        let least = least_mean(&right, 1.0);
        assert!(
            (least - (1.0 + (-32f64).exp()).ln()).abs() < 1e-12,
            "{least}"
        );
    }
}
