//! The competition's trials: each awake arm's policy scored on the bandit split, without
//! training.

use super::ccq::SearchEnv;
use super::reward::{TrialScore, Trials};
use super::step::ArmScorer;
use crate::data::{Normalization, Subset, in_order};
use crate::model::{Model, QuantCtx};
use crate::quant::policy::Policy;
use crate::quant::quantizer::QuantScheme;
use crate::train::calibrate::{rescale_steps, restore_steps, saved_steps};
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
}

impl ArmScorer for BanditScorer<'_> {
    fn score(&mut self, contenders: &[Option<(usize, &Policy)>]) -> anyhow::Result<Trials> {
        score_trials(
            self.model,
            self.policy,
            contenders,
            self.scheme,
            &self.env.splits.bandit,
            self.env.norm,
            TRIAL_BATCH,
        )
    }
}

/// Bandit top-1 and cross-entropy of every contender `(layer, trial policy)` (`None` where there
/// is none, or where the trial's logits are not finite), and of the current policy: the model
/// fake-quantized under each policy, evaluated without training.
///
/// A trial changes one layer, so everything before that layer's stage is the same for every
/// trial: each batch runs the current policy once, keeps every stage's input, and each arm runs
/// only its suffix. All arms score one batch before the next; counts stay on the device until
/// the end. LSQ steps are rescaled for the trial's bits and restored afterwards.
pub fn score_trials(
    model: &Model,
    current: &Policy,
    contenders: &[Option<(usize, &Policy)>],
    scheme: QuantScheme,
    data: &Subset,
    norm: &Normalization,
    batch_size: usize,
) -> anyhow::Result<Trials> {
    let device = model.net.device();
    let rescale = scheme != QuantScheme::default();
    let ctx = QuantCtx::new(scheme, &current.bits);
    let stages: Vec<usize> = contenders
        .iter()
        .map(|c| c.map_or(0, |(layer, _)| model.net.stage_of(layer)))
        .collect();
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
    let (cur_hits, cur_loss) = (zero(), zero());
    let ce = |logits: &tch::Tensor, labels: &tch::Tensor| {
        logits
            .cross_entropy_loss::<tch::Tensor>(labels, None, tch::Reduction::Sum, -100, 0.0)
            .to_kind(tch::Kind::Double)
    };
    tch::no_grad(|| -> anyhow::Result<()> {
        for b in in_order(data, norm, batch_size, device) {
            let (_, batch) = b?;
            let (inputs, logits) = model.net.stage_inputs(&batch.images, &ctx);
            let (top1, _) = correct(&logits, &batch.labels);
            let _ = cur_hits
                .shallow_clone()
                .g_add_(&top1.sum(tch::Kind::Double));
            let _ = cur_loss.shallow_clone().g_add_(&ce(&logits, &batch.labels));
            for ((((c, hit), bad), loss), &stage) in contenders
                .iter()
                .zip(&hits)
                .zip(&bad)
                .zip(&losses)
                .zip(&stages)
            {
                let Some((layer, trial)) = c else { continue };
                let saved = rescale.then(|| {
                    let s = saved_steps(model, *layer);
                    rescale_steps(&model.net, *layer, current.bits[*layer], trial.bits[*layer]);
                    s
                });
                let tctx = QuantCtx::new(scheme, &trial.bits);
                let logits = model.net.forward_from(stage, &inputs[stage], &tctx);
                let (top1, _) = correct(&logits, &batch.labels);
                let _ = hit.shallow_clone().g_add_(&top1.sum(tch::Kind::Int64));
                let nonfinite = logits.isfinite().logical_not().sum(tch::Kind::Int64);
                let _ = bad.shallow_clone().g_add_(&nonfinite);
                let _ = loss.shallow_clone().g_add_(&ce(&logits, &batch.labels));
                if let Some(s) = saved {
                    restore_steps(model, *layer, &s);
                }
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
        .map(|(((c, h), b), l)| {
            c.filter(|_| b.int64_value(&[]) == 0)
                .map(|_| TrialScore {
                    top1: h.int64_value(&[]) as f64 / n,
                    loss: l.double_value(&[]) / n,
                })
                .filter(|t| t.loss.is_finite())
        })
        .collect();
    Ok(Trials {
        current: TrialScore {
            top1: cur_hits.double_value(&[]) / n,
            loss: cur_loss.double_value(&[]) / n,
        },
        arms,
    })
}

/// [`score_trials`] the plain way: every trial runs the whole network over the whole split.
pub fn score_trials_naive(
    model: &Model,
    current: &Policy,
    contenders: &[Option<(usize, &Policy)>],
    scheme: QuantScheme,
    data: &Subset,
    norm: &Normalization,
) -> anyhow::Result<Trials> {
    let score = |e: Eval| TrialScore {
        top1: e.top1,
        loss: e.loss,
    };
    let arms = contenders
        .iter()
        .map(|c| {
            c.map(|(layer, trial)| {
                let m = model.clone();
                if scheme != QuantScheme::default() {
                    rescale_steps(&m.net, layer, current.bits[layer], trial.bits[layer]);
                }
                eval_policy(&m, trial, scheme, data, norm, None).map(score)
            })
            .transpose()
            .map(|t| t.filter(|t| t.loss.is_finite()))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Trials {
        current: score(eval_policy(model, current, scheme, data, norm, None)?),
        arms,
    })
}
