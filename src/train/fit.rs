//! Multi-epoch training with per-epoch validation: full-precision training and uniform or
//! per-layer quantization-aware training share it.

use super::checkpoint::EpochRecord;
use super::distill::Teacher;
use super::optim::{FlatSgd, Hyper};
use super::schedule::cosine;
use super::trainer::{evaluate, train_epoch};
use crate::data::{Augment, Normalization, Splits};
use crate::events::{Event, Events, Pass};
use crate::model::{Model, QuantCtx};
use crate::quant::policy::Policy;
use crate::quant::quantizer::QuantScheme;
use anyhow::Result;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Called after each epoch with the model, the optimiser's momentum and the epoch's record.
pub type OnEpoch<'a> = dyn FnMut(&Model, Option<&tch::Tensor>, &EpochRecord) -> Result<()> + 'a;

/// How to train.
#[derive(Clone, Debug)]
pub struct FitPlan<'a> {
    /// Total epochs of the job.
    pub epochs: usize,
    /// First epoch to run (non-zero when resuming).
    pub start_epoch: usize,
    /// Peak learning rate (start of the cosine).
    pub lr: f64,
    /// Final learning rate (end of the cosine).
    pub lr_end: f64,
    /// Optimiser settings.
    pub hyper: Hyper,
    /// Data augmentation.
    pub augment: Option<Augment>,
    /// Seed of the shuffling (each epoch derives its own).
    pub seed: u64,
    /// Stop this call after this many epochs (the job stays resumable); `None`: run to the end.
    pub stop_after: Option<usize>,
    /// Images of one more, partial epoch after the `epochs` whole ones (0: none), so that a job
    /// can train for a fractional number of epochs; the cosine spans all of it.
    pub extra_samples: usize,
    /// The full-precision model to distil from (`None`: the labels alone).
    pub teacher: Option<&'a Teacher>,
}

impl FitPlan<'_> {
    /// The job's length in whole-training-split epochs, for a split of `train_len` images.
    pub fn length(&self, train_len: usize) -> f64 {
        self.epochs as f64 + self.extra_fraction(train_len)
    }

    /// The partial epoch as a fraction of a whole one (at most 1).
    fn extra_fraction(&self, train_len: usize) -> f64 {
        (self.extra_samples.min(train_len) as f64) / (train_len.max(1) as f64)
    }
}

/// RNG of epoch `epoch` of a job seeded with `seed`: identical whether or not the job resumed.
pub fn epoch_rng(seed: u64, epoch: usize) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (epoch as u64 + 1))
}

/// Trains `model` under `policy` (per-iteration cosine from `lr` to `lr_end` over all epochs,
/// the partial one of `extra_samples` included),
/// evaluating on the validation split after each epoch and calling `on_epoch` with the model and
/// the optimiser's momentum (e.g. to save). `momentum`: the buffer saved by the job being resumed.
/// Progress goes to `events`; once it reports cancellation, no epoch after the one just saved
/// runs (the job resumes from there).
#[allow(clippy::too_many_arguments)]
pub fn fit(
    model: Model,
    policy: &Policy,
    scheme: QuantScheme,
    splits: &Splits,
    norm: &Normalization,
    plan: &FitPlan,
    momentum: Option<tch::Tensor>,
    on_epoch: &mut OnEpoch,
    events: &dyn Events,
) -> Result<Model> {
    let ctx = QuantCtx::new(scheme, &policy.bits);
    let mut optim = FlatSgd::resumed(&plan.hyper, momentum);
    let train_len = splits.train.len();
    let partial = plan.extra_samples > 0 && train_len > 0;
    let all = plan.epochs + usize::from(partial);
    let end = plan
        .stop_after
        .map_or(all, |n| all.min(plan.start_epoch + n));
    let total = plan.length(train_len);
    for epoch in plan.start_epoch..end {
        let mut rng = epoch_rng(plan.seed, epoch);
        // The partial epoch covers its fraction of the schedule.
        let (samples, span) = if epoch == plan.epochs {
            (Some(plan.extra_samples), plan.extra_fraction(train_len))
        } else {
            (None, 1.0)
        };
        let lr_at = |t: f64| cosine(plan.lr, plan.lr_end, (epoch as f64 + span * t) / total);
        let label = format!("epoch {}/{all}", epoch + 1);
        let stats = train_epoch(
            &model.net,
            &mut optim,
            &ctx,
            &splits.train,
            norm,
            &plan.hyper,
            plan.augment,
            &mut rng,
            samples,
            &lr_at,
            plan.teacher,
            Pass {
                events,
                phase: &label,
            },
        )?;
        let val = evaluate(&model.net, &ctx, &splits.val, norm, 500, None)?;
        events.event(&Event::EpochEnded {
            epoch: epoch + 1,
            epochs: all,
            train_loss: stats.loss,
            train_acc: stats.acc,
            val_top1: val.top1,
            seconds: stats.seconds,
            images: stats.images,
        });
        on_epoch(
            &model,
            optim.momentum(),
            &EpochRecord {
                epoch,
                train: stats,
                val,
            },
        )?;
        if events.cancelled() {
            break;
        }
    }
    Ok(model)
}
