//! The collaboration: after a lowering, all layers fine-tune together, with retries at half the
//! learning rate when the fine-tuning diverges.

use super::ccq::{SearchEnv, eval, statistics_batches};
use super::config::{SearchConfig, StopRule};
use crate::events::{Event, Pass};
use crate::model::{Model, QuantCtx};
use crate::quant::policy::Policy;
use crate::train::calibrate::reestimate_batchnorm;
use crate::train::fit::epoch_rng;
use crate::train::{sgd, train_epoch};
use anyhow::Result;

/// How a step's fine-tuning ended.
pub(super) enum Collaboration {
    /// It finished: the model, epochs used, the kept validation top-1 and every epoch's.
    Done(Box<Model>, usize, f64, Vec<f64>),
    /// It diverged at every retry; why.
    Diverged(String),
}

/// Fine-tunes every layer together under `policy`. A diverged fine-tuning starts again from
/// `start` (the step's starting state, needed when retries are on) at half the learning rate, up
/// to `retries` times.
#[allow(clippy::too_many_arguments)]
pub(super) fn collaborate(
    model: Model,
    start: Option<&Model>,
    policy: &Policy,
    cfg: &SearchConfig,
    env: &SearchEnv,
    step: usize,
    pre_val: f64,
) -> Result<Collaboration> {
    let ft = &cfg.finetune;
    let mut scale = match ft.debug_lr_scale {
        Some((s, f)) if s == step => f,
        _ => 1.0,
    };
    let mut model = model;
    for attempt in 0..=ft.retries {
        match finetune(model, policy, cfg, env, step, pre_val, scale) {
            Ok((m, used, val, vals)) => {
                return Ok(Collaboration::Done(Box::new(m), used, val, vals));
            }
            Err(e) => {
                let Some(d) = e.downcast_ref::<crate::train::trainer::Diverged>() else {
                    return Err(e);
                };
                if attempt == ft.retries {
                    return Ok(Collaboration::Diverged(format!(
                        "fine-tuning diverged {} time(s), the last at learning-rate scale {scale}: {d}",
                        attempt + 1
                    )));
                }
                env.events.event(&Event::Retrying {
                    step,
                    why: d.to_string(),
                });
                scale /= 2.0;
                model = start.expect("kept when retrying").clone();
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// One fine-tuning attempt with the schedule's learning rates times `scale`.
#[allow(clippy::too_many_arguments)]
pub(super) fn finetune(
    model: Model,
    policy: &Policy,
    cfg: &SearchConfig,
    env: &SearchEnv,
    step: usize,
    pre_val: f64,
    scale: f64,
) -> Result<(Model, usize, f64, Vec<f64>)> {
    let ft = &cfg.finetune;
    let ctx = QuantCtx::new(cfg.scheme, &policy.bits);
    let mut optim = sgd(&cfg.hyper);
    let (mut best, mut last, mut used) = (0.0f64, pre_val, 0);
    let mut kept: Option<(Model, f64)> = None;
    let mut vals = Vec::new();
    let statistics = statistics_batches(ft.step_bn, cfg, env, model.net.device())?;
    for e in 0..ft.max_epochs {
        let mut rng = epoch_rng(cfg.seed ^ ((step as u64) << 32), e);
        let lr_at = |t: f64| scale * ft.schedule.lr(e as f64 + t);
        let label = format!("ft {}", e + 1);
        train_epoch(
            &model.net,
            &mut optim,
            &ctx,
            &env.splits.train,
            env.norm,
            &cfg.hyper,
            cfg.augment,
            &mut rng,
            ft.epoch_samples,
            &lr_at,
            None,
            Pass {
                events: env.events,
                phase: &label,
            },
        )?;
        // Empty unless step_bn: then the running statistics are those of this epoch's weights.
        reestimate_batchnorm(&model.net, policy, cfg.scheme, &statistics);
        last = eval(&model, policy, cfg.scheme, &env.splits.val, env, None)?.top1;
        vals.push(last);
        if ft.keep_best && last > best {
            kept = Some((model.clone(), last));
        }
        best = best.max(last);
        used = e + 1;
        if used >= ft.min_epochs {
            let stop = match ft.stop {
                StopRule::BestRatio(r) => last >= r * best,
                StopRule::WithinPoints(pts) => last >= pre_val - pts / 100.0,
            };
            if stop {
                break;
            }
        }
    }
    // With keep_best, the best epoch's weights (strictly better than the last epoch's).
    match kept {
        Some((m, v)) if v > last => Ok((m, used, v, vals)),
        _ => Ok((model, used, last, vals)),
    }
}
