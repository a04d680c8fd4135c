//! The competitive-collaborative search: layers compete for the next bit reduction on the bandit
//! split, then all layers fine-tune together. State is saved after every step; a killed run
//! resumes from its last finished step and ends with the same policy as an uninterrupted one.

use super::bandit::{LambdaSchedule, normalise, update_weights};
use super::polish::{Raise, polish};
use super::reward::{Reward, TrialScore, Trials};
use super::step::{ArmScorer, Decision, Plan, decide, plan};
use super::target::{Arm, ArmKind, Lowering, Target};
use crate::data::{Augment, Normalization, Splits, Subset, in_order};
use crate::model::cost::{ModelCost, model_cost};
use crate::model::{Model, QuantCtx};
use crate::progress;
use crate::quant::policy::{LayerBits, Policy};
use crate::quant::quantizer::{QuantScheme, WeightQuantizer};
use crate::train::calibrate::rescale_steps;
use crate::train::checkpoint::{self, CheckpointMeta, write_atomic};
use crate::train::fit::{FitPlan, epoch_rng, fit};
use crate::train::schedule::WarmRestart;
use crate::train::trainer::correct;
use crate::train::{Eval, Hyper, eval_policy, sgd, train_epoch};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// When a step's collaborative fine-tuning stops (after at least `min_epochs`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopRule {
    /// Validation top-1 ≥ ratio × the best validation top-1 seen in this step (reference: 0.99).
    BestRatio(f64),
    /// Validation top-1 within this many points of the accuracy before the step.
    WithinPoints(f64),
}

/// The collaboration phase of a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finetune {
    /// Learning-rate schedule (warm restart each step).
    pub schedule: WarmRestart,
    /// Epochs before the stop rule is consulted (reference: 3).
    pub min_epochs: usize,
    /// Hard cap on epochs per step.
    pub max_epochs: usize,
    /// Accuracy-driven stop.
    pub stop: StopRule,
    /// Images per fine-tuning epoch (None: the whole training split).
    pub epoch_samples: Option<usize>,
    /// Retries of a diverged fine-tuning, each from the step's starting state at half the
    /// previous learning rate; after the last one the step's lowering is refused.
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// Testing aid: multiply the learning rate of step `.0`'s fine-tuning by `.1`.
    #[serde(default)]
    pub debug_lr_scale: Option<(usize, f64)>,
    /// Keep the weights of the epoch with the best validation top-1, not the last epoch's
    /// (the reference keeps the last).
    #[serde(default)]
    pub keep_best: bool,
}

fn default_retries() -> usize {
    2
}

/// Every setting of a search (saved with its state so a resume uses the same).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// Ladders, floor, tied or not.
    pub lowering: Lowering,
    /// Learning rate of the exponential weights (reference: 1).
    pub eta: f64,
    /// How trials become rewards (reference: top-1, reset every step).
    #[serde(default)]
    pub reward: Reward,
    /// Once the target is met, give back the bits it does not need ([`super::polish`]).
    #[serde(default)]
    pub polish: bool,
    /// Count only the saving that goes toward the nearest unmet goal (reward and memory
    /// prior), so that near the target an arm that meets it with little overshoot wins.
    #[serde(default)]
    pub budget_aware: bool,
    /// λ schedule.
    pub lambda: LambdaSchedule,
    /// Maximum number of steps T.
    pub qsteps: usize,
    /// Stop when met.
    pub target: Option<Target>,
    /// Collaboration settings.
    pub finetune: Finetune,
    /// Epochs of the brief fine-tuning at the top rung before the search.
    pub init_epochs: usize,
    /// Epochs of a last fine-tuning (cosine from lr_max to 0, whole training split) once the
    /// search stops; 0 = none, as the reference.
    #[serde(default)]
    pub final_epochs: usize,
    /// Optimiser.
    pub hyper: Hyper,
    /// Quantizers.
    pub scheme: QuantScheme,
    /// Seed of sampling and shuffling.
    pub seed: u64,
    /// Augmentation during fine-tuning.
    pub augment: Option<Augment>,
}

/// One competitor's numbers in a step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArmRecord {
    /// Layer name.
    pub layer: String,
    /// What it lowers.
    pub kind: ArmKind,
    /// Bandit top-1 of the trial (None: asleep).
    pub a: Option<f64>,
    /// Bandit cross-entropy of the trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Fraction of the target's metric (size, or BOPs) the lowering saves; in a budget-aware
    /// search, only the part that goes toward the nearest unmet goal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<f64>,
    /// The reward η multiplied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
    /// Exponential weight after the update.
    pub alpha: f64,
    /// Inter-layer probability.
    pub p: f64,
    /// Memory prior.
    pub r: f64,
    /// Mixed probability.
    #[serde(rename = "P")]
    pub mixed: f64,
}

/// One line of `steps.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step t (1-based).
    pub step: usize,
    /// λ_t.
    pub lambda: f64,
    /// Bandit cross-entropy of the policy before the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandit_loss: Option<f64>,
    /// Every arm.
    pub arms: Vec<ArmRecord>,
    /// Chosen layer.
    pub chosen: String,
    /// What moved.
    pub chosen_kind: ArmKind,
    /// Its bits before.
    pub bits_before: LayerBits,
    /// Its bits after.
    pub bits_after: LayerBits,
    /// Validation top-1 right after lowering, before fine-tuning.
    pub val_before: f64,
    /// Validation top-1 after fine-tuning.
    pub val_after: f64,
    /// Fine-tuning epochs used.
    pub epochs: usize,
    /// Validation top-1 after each fine-tuning epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ft_val: Vec<f64>,
    /// Weight size in bits after the step.
    pub size_bits: u64,
    /// Compression after the step.
    pub compression: f64,
    /// Average weight bits after the step.
    pub avg_bits: f64,
    /// BOPs after the step.
    pub bops: u64,
    /// Wall time of the step.
    pub seconds: f64,
    /// Wall time of the competition (trial scoring) within the step.
    #[serde(default)]
    pub compete_seconds: f64,
    /// Why the chosen lowering was refused (its fine-tuning diverged at every retry); the
    /// policy and weights then stay as before the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Resumable state of a search, `state.json` in the run directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchState {
    /// Format version ([`super::validate::STATE_VERSION`]; files from before it was recorded
    /// read as version 1).
    #[serde(default = "first_version")]
    pub version: u32,
    /// Settings.
    pub config: SearchConfig,
    /// Steps finished.
    pub step: usize,
    /// Current policy.
    pub policy: Policy,
    /// Checkpoint directory (inside the run) with the weights after `step`.
    pub checkpoint: String,
    /// The full-precision checkpoint the search started from.
    pub source: PathBuf,
    /// Validation top-1 of the FP model.
    pub fp_val: f64,
    /// Validation top-1 after the top-rung fine-tuning.
    pub start_val: f64,
    /// Current validation top-1.
    pub val: f64,
    /// Why the search ended, once it has.
    pub finished: Option<String>,
    /// Wall time spent so far, over all invocations.
    pub seconds: f64,
    /// Step records.
    pub steps: Vec<StepRecord>,
    /// Whether the final fine-tuning has run.
    #[serde(default)]
    pub final_done: bool,
    /// Arms (indices into the arm list) whose lowering was refused; they sit out the search.
    #[serde(default)]
    pub refused: Vec<usize>,
    /// Log-weights carried between steps (with `reward.carry` > 0), one per arm.
    #[serde(default)]
    pub log_weights: Vec<f64>,
    /// The raises the budget polish made after the search.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub polish: Vec<Raise>,
}

fn first_version() -> u32 {
    1
}

/// Trial accuracies on the bandit split, the real [`ArmScorer`].
struct BanditScorer<'a> {
    model: &'a Model,
    policy: &'a Policy,
    scheme: QuantScheme,
    env: &'a SearchEnv<'a>,
}

impl ArmScorer for BanditScorer<'_> {
    fn score(&mut self, contenders: &[Option<(usize, &Policy)>]) -> Trials {
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

/// Exponential weights over the arms: reset every step (the reference), or log-weights that
/// carry over with decay.
#[derive(Clone, Debug, PartialEq)]
pub struct Competition {
    /// α per arm.
    pub alpha: Vec<f64>,
    /// log α per arm, carried between steps when `carry` > 0.
    pub log_w: Vec<f64>,
}

impl Competition {
    /// α = 1 for awake arms, 0 for asleep ones.
    pub fn new(awake: &[bool]) -> Self {
        let mut c = Competition {
            alpha: vec![0.0; awake.len()],
            log_w: vec![0.0; awake.len()],
        };
        c.reset(awake);
        c
    }

    /// The reset at the end of a step: awake arms back to 1, asleep arms at 0.
    pub fn reset(&mut self, awake: &[bool]) {
        for (a, w) in self.alpha.iter_mut().zip(awake) {
            *a = if *w { 1.0 } else { 0.0 };
        }
    }

    /// Updates with the trial accuracies and returns the inter-layer probabilities.
    pub fn score(&mut self, acc: &[Option<f64>], eta: f64) -> Vec<f64> {
        update_weights(&mut self.alpha, acc, eta);
        normalise(&self.alpha)
    }

    /// Updates with `rewards` and returns the inter-layer probabilities. With `carry` = 0 this
    /// is [`Competition::score`] after a reset; otherwise `log α ← carry·log α + η·reward` for
    /// the arms that compete, and the others get probability 0 (their log-weight is kept).
    pub fn update(&mut self, rewards: &[Option<f64>], eta: f64, carry: f64) -> Vec<f64> {
        if carry == 0.0 {
            let awake: Vec<bool> = rewards.iter().map(Option::is_some).collect();
            self.reset(&awake);
            return self.score(rewards, eta);
        }
        for (lw, r) in self.log_w.iter_mut().zip(rewards) {
            if let Some(r) = r {
                *lw = carry * *lw + eta * r;
            }
        }
        let max = rewards
            .iter()
            .zip(&self.log_w)
            .filter(|(r, _)| r.is_some())
            .map(|(_, &l)| l)
            .fold(f64::NEG_INFINITY, f64::max);
        for ((a, r), &l) in self.alpha.iter_mut().zip(rewards).zip(&self.log_w) {
            *a = if r.is_some() { (l - max).exp() } else { 0.0 };
        }
        normalise(&self.alpha)
    }
}

/// Images per batch when scoring trials.
pub const TRIAL_BATCH: usize = 500;

/// The learned steps of layer `index` (LSQ activation and weight steps), copied.
fn saved_steps(model: &Model, index: usize) -> (tch::Tensor, tch::Tensor) {
    let mut out = None;
    model.net.for_each_quant(&mut |i, q, _| {
        if i == index {
            out = Some((q.act_step.copy(), q.w_step.copy()));
        }
    });
    out.expect("layer index within the model")
}

fn restore_steps(model: &Model, index: usize, saved: &(tch::Tensor, tch::Tensor)) {
    model.net.for_each_quant(&mut |i, q, _| {
        if i == index {
            tch::no_grad(|| {
                q.act_step.shallow_clone().copy_(&saved.0);
                q.w_step.shallow_clone().copy_(&saved.1);
            });
        }
    });
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
) -> Trials {
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
    tch::no_grad(|| {
        for (_, batch) in in_order(data, norm, batch_size, device) {
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
    });
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
    Trials {
        current: TrialScore {
            top1: cur_hits.double_value(&[]) / n,
            loss: cur_loss.double_value(&[]) / n,
        },
        arms,
    }
}

/// [`score_trials`] the plain way: every trial runs the whole network over the whole split.
pub fn score_trials_naive(
    model: &Model,
    current: &Policy,
    contenders: &[Option<(usize, &Policy)>],
    scheme: QuantScheme,
    data: &Subset,
    norm: &Normalization,
) -> Trials {
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
                score(eval_policy(&m, trial, scheme, data, norm, None))
            })
            .filter(|t| t.loss.is_finite())
        })
        .collect();
    Trials {
        current: score(eval_policy(model, current, scheme, data, norm, None)),
        arms,
    }
}

/// File names in a run directory.
pub const STATE: &str = "state.json";
/// Step log.
pub const STEPS: &str = "steps.jsonl";
/// Final policy.
pub const POLICY: &str = "policy.json";
/// Final checkpoint directory.
pub const FINAL: &str = "final";

/// What the search needs besides its state.
pub struct SearchEnv<'a> {
    /// Splits.
    pub splits: &'a Splits,
    /// Input normalisation.
    pub norm: &'a Normalization,
    /// Checkpoint metadata template (model, data, split) for the checkpoints the run writes.
    pub meta: CheckpointMeta,
    /// Stop this invocation after this many steps (the run stays resumable).
    pub stop_after: Option<usize>,
    /// Compression milestones: the first checkpoint reaching each is kept in `at-<R>x/`.
    pub keep: Vec<f64>,
}

/// Directory of the kept checkpoint for compression milestone `r`.
pub fn milestone_dir(run: &Path, r: f64) -> PathBuf {
    run.join(format!("at-{r}x"))
}

fn eval(
    model: &Model,
    policy: &Policy,
    scheme: QuantScheme,
    subset: &crate::data::Subset,
    env: &SearchEnv,
    label: Option<&str>,
) -> Eval {
    eval_policy(model, policy, scheme, subset, env.norm, label)
}

/// Checkpoint metadata for the model of `state`.
fn state_meta(env: &SearchEnv, state: &SearchState) -> CheckpointMeta {
    let mut meta = env.meta.clone();
    meta.policy = Some(state.policy.clone());
    meta.scheme = state.config.scheme;
    meta.val = Some(Eval {
        top1: state.val,
        ..Default::default()
    });
    meta
}

/// How a step's fine-tuning ended.
enum Collaboration {
    /// It finished: the model, epochs used, the kept validation top-1 and every epoch's.
    Done(Box<Model>, usize, f64, Vec<f64>),
    /// It diverged at every retry; why.
    Diverged(String),
}

/// Fine-tunes every layer together under `policy`. A diverged fine-tuning starts again from
/// `start` (the step's starting state, needed when retries are on) at half the learning rate, up
/// to `retries` times.
#[allow(clippy::too_many_arguments)]
fn collaborate(
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
                progress::println(format!(
                    "step {step}: fine-tuning diverged ({d}); retrying from the step's start at half the learning rate"
                ));
                scale /= 2.0;
                model = start.expect("kept when retrying").clone();
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// One fine-tuning attempt with the schedule's learning rates times `scale`.
#[allow(clippy::too_many_arguments)]
fn finetune(
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
            &label,
        )?;
        last = eval(&model, policy, cfg.scheme, &env.splits.val, env, None).top1;
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

fn save_step(
    run: &Path,
    name: &str,
    model: &Model,
    state: &SearchState,
    env: &SearchEnv,
) -> Result<()> {
    let meta = state_meta(env, state);
    checkpoint::save(&run.join(name), model, &meta)?;
    let mut lines = String::new();
    for s in &state.steps {
        lines.push_str(&serde_json::to_string(s)?);
        lines.push('\n');
    }
    write_atomic(&run.join(STEPS), lines.as_bytes())?;
    write_atomic(
        &run.join(STATE),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )
}

/// Loads the state of a run directory.
pub fn load_state(run: &Path) -> Result<SearchState> {
    let p = run.join(STATE);
    if !p.is_file() && run.join("fp").is_dir() {
        bail!(
            "{}: the search had not started yet (it was still training the FP model in {}/fp); rerun the original `ccq quantize --out {0}` command, which continues that training",
            run.display(),
            run.display()
        );
    }
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "{}: not a ccq quantize run (cannot read {STATE})",
            run.display()
        )
    })?;
    parse_state(&text).with_context(|| format!("{}", p.display()))
}

/// Parses and validates the text of a `state.json`.
pub fn parse_state(text: &str) -> Result<SearchState> {
    let state: SearchState = serde_json::from_str(text).context("corrupt search state")?;
    state.validate().context("invalid search state")?;
    Ok(state)
}

/// Starts a search from a full-precision `model`: top-rung quantization, calibration, a brief
/// fine-tuning; writes the initial state into `run`.
pub fn init(
    run: &Path,
    model: Model,
    cfg: SearchConfig,
    source: PathBuf,
    env: &SearchEnv,
    calib: &[tch::Tensor],
) -> Result<(Model, SearchState)> {
    std::fs::create_dir_all(run).with_context(|| format!("cannot create {}", run.display()))?;
    let names = model.layer_names();
    let fp_val = eval(
        &model,
        &Policy::float(&names),
        cfg.scheme,
        &env.splits.val,
        env,
        Some("fp val"),
    )
    .top1;
    let policy = cfg.lowering.start(&names);
    crate::train::calibrate::calibrate(&model.net, &policy, cfg.scheme, calib);
    let (model, _, val) = if cfg.init_epochs > 0 {
        let init_ft = Finetune {
            min_epochs: cfg.init_epochs,
            max_epochs: cfg.init_epochs,
            ..cfg.finetune.clone()
        };
        let c = SearchConfig {
            finetune: init_ft,
            ..cfg.clone()
        };
        let (m, used, val, _) = finetune(model, &policy, &c, env, 0, fp_val, 1.0)?;
        (m, used, val)
    } else {
        let v = eval(&model, &policy, cfg.scheme, &env.splits.val, env, None).top1;
        (model, 0, v)
    };
    progress::println(format!(
        "start: FP val top-1 {:.2}%, {} val top-1 {:.2}% after {} epoch(s)",
        100.0 * fp_val,
        policy.bits.get(1).copied().unwrap_or(policy.bits[0]),
        100.0 * val,
        cfg.init_epochs
    ));
    let state = SearchState {
        version: super::validate::STATE_VERSION,
        config: cfg,
        step: 0,
        policy,
        checkpoint: "step-000".into(),
        source,
        fp_val,
        start_val: val,
        val,
        finished: None,
        seconds: 0.0,
        steps: Vec::new(),
        final_done: false,
        log_weights: Vec::new(),
        polish: Vec::new(),
        refused: Vec::new(),
    };
    save_step(run, &state.checkpoint, &model, &state, env)?;
    Ok((model, state))
}

/// Runs (or continues) the search until the target is met, no arm is awake, `qsteps` is
/// reached, or `env.stop_after` steps have run in this invocation.
pub fn run(
    run: &Path,
    mut model: Model,
    mut state: SearchState,
    env: &SearchEnv,
) -> Result<(Model, SearchState)> {
    let cfg = state.config.clone();
    let names = model.layer_names();
    let arms = cfg.lowering.arms(names.len());
    let scheme_w: WeightQuantizer = cfg.scheme.weight;
    let bar = progress::bar(cfg.qsteps as u64, "search");
    bar.set_position(state.step as u64);
    let mut ran = 0;
    let mut competition = Competition::new(&vec![true; arms.len()]);
    if state.log_weights.len() == arms.len() {
        competition.log_w = state.log_weights.clone();
    }
    while state.finished.is_none() {
        let started = Instant::now();
        let contest = match plan(
            &cfg,
            &model.layers,
            &arms,
            &state.policy,
            &state.refused,
            state.step,
            &env.keep,
        ) {
            Plan::Stop(why) => {
                state.finished = Some(why);
                break;
            }
            Plan::Compete(c) => c,
        };
        if env.stop_after.is_some_and(|n| ran >= n) {
            break;
        }
        let t = state.step + 1;
        // 1–4. Competition on the bandit split (each awake arm one rung lower, no training),
        // memory prior, mixing, seeded selection.
        let compete_started = Instant::now();
        let mut scorer = BanditScorer {
            model: &model,
            policy: &state.policy,
            scheme: cfg.scheme,
            env,
        };
        let Decision {
            trials: scores,
            saved,
            rewards,
            p,
            r,
            lambda,
            mixed,
            chosen,
        } = decide(&cfg, &arms, &contest, &mut competition, &mut scorer, t)?;
        state.log_weights = competition.log_w.clone();
        let compete_seconds = compete_started.elapsed().as_secs_f64();
        let arm: Arm = arms[chosen];
        let before = state.policy.bits[arm.layer];
        let lowered = cfg
            .lowering
            .lower(arm, &state.policy)
            .context("chosen arm cannot be lowered")?;
        let after = lowered.bits[arm.layer];
        let steps_before = saved_steps(&model, arm.layer);
        rescale_steps(&model.net, arm.layer, before, after);
        let start = (cfg.finetune.retries > 0).then(|| model.clone());
        let val_before = eval(&model, &lowered, cfg.scheme, &env.splits.val, env, None).top1;
        // 5. Collaboration: all layers fine-tune together.
        let (lowered, after, epochs, val_after, ft_val, refused) =
            match collaborate(model, start.as_ref(), &lowered, &cfg, env, t, state.val)? {
                Collaboration::Done(m, epochs, val, vals) => {
                    model = *m;
                    (lowered, after, epochs, val, vals, None)
                }
                Collaboration::Diverged(why) => {
                    // Back to the weights and policy before the step; the arm sits out.
                    let Some(s) = start else {
                        bail!("step {t}: {why} (no retries with --ft-retries 0)");
                    };
                    model = s;
                    restore_steps(&model, arm.layer, &steps_before);
                    state.refused.push(chosen);
                    progress::println(format!(
                        "step {t}: lowering {} refused: {why}",
                        names[arm.layer]
                    ));
                    (
                        state.policy.clone(),
                        before,
                        0,
                        state.val,
                        Vec::new(),
                        Some(why),
                    )
                }
            };
        let cost = model_cost(&model.layers, &lowered, scheme_w);
        let arm_records = arms
            .iter()
            .enumerate()
            .map(|(i, a)| ArmRecord {
                layer: names[a.layer].clone(),
                kind: a.kind,
                a: scores.arms[i].map(|s| s.top1),
                loss: scores.arms[i].map(|s| s.loss),
                saved: scores.arms[i].map(|_| saved[i]),
                reward: rewards[i],
                alpha: competition.alpha[i],
                p: p[i],
                r: r[i],
                mixed: mixed[i],
            })
            .collect();
        // 6. Reset happens at the top of the next step (α back to 1 for awake arms).
        state.policy = lowered;
        state.val = val_after;
        state.step = t;
        let record = StepRecord {
            step: t,
            lambda,
            bandit_loss: Some(scores.current.loss),
            arms: arm_records,
            chosen: names[arm.layer].clone(),
            chosen_kind: arm.kind,
            bits_before: before,
            bits_after: after,
            val_before,
            val_after,
            epochs,
            ft_val,
            size_bits: cost.size_bits,
            compression: cost.compression,
            avg_bits: cost.avg_bits,
            bops: cost.bops,
            seconds: started.elapsed().as_secs_f64(),
            compete_seconds,
            refused,
        };
        // Reported once saved: a step whose save fails never appears as done.
        let line = format!(
            "step {t:>3}: {} {} → {} | val {:.2}% → {:.2}% after {epochs} epoch(s) | {:.2}x, avg {:.2} bits | λ {lambda:.2}",
            record.chosen,
            before,
            after,
            100.0 * val_before,
            100.0 * val_after,
            cost.compression,
            cost.avg_bits
        );
        state.seconds += record.seconds;
        state.steps.push(record);
        let old = std::mem::replace(&mut state.checkpoint, format!("step-{t:03}"));
        save_step(run, &state.checkpoint, &model, &state, env)?;
        progress::println(line);
        for &r in &env.keep {
            let dir = milestone_dir(run, r);
            if cost.compression >= r && !dir.join(checkpoint::META).is_file() {
                checkpoint::save(&dir, &model, &state_meta(env, &state))?;
            }
        }
        let _ = std::fs::remove_dir_all(run.join(old));
        ran += 1;
        bar.set_position(t as u64);
        bar.set_message(format!(
            "{:.2}x, val {:.2}%",
            cost.compression,
            100.0 * val_after
        ));
    }
    bar.finish_and_clear();
    if state.finished.is_some() {
        if cfg.polish
            && !state.final_done
            && let Some(target) = &cfg.target
            && target.met(&model_cost(&model.layers, &state.policy, scheme_w))
        {
            let (policy, raises) = polish(
                &model,
                &state.policy,
                &cfg.lowering,
                target,
                cfg.scheme,
                &env.splits.bandit,
                env.norm,
            );
            for r in &raises {
                progress::println(format!(
                    "polish: {} {} → {} (bandit loss {:.4})",
                    r.layer, r.before, r.after, r.loss
                ));
            }
            state.policy = policy;
            state.polish = raises;
        }
        if cfg.final_epochs > 0 && !state.final_done {
            let started = Instant::now();
            let plan = FitPlan {
                epochs: cfg.final_epochs,
                start_epoch: 0,
                lr: cfg.finetune.schedule.lr_max,
                lr_end: 0.0,
                hyper: cfg.hyper,
                augment: cfg.augment,
                seed: cfg.seed ^ 0xF1A1,
                stop_after: None,
            };
            let mut val = state.val;
            model = fit(
                model,
                &state.policy,
                cfg.scheme,
                env.splits,
                env.norm,
                &plan,
                None,
                &mut |_, _, rec| {
                    val = rec.val.top1;
                    Ok(())
                },
            )?;
            progress::println(format!(
                "final fine-tuning: val top-1 {:.2}% → {:.2}% in {} epoch(s)",
                100.0 * state.val,
                100.0 * val,
                cfg.final_epochs
            ));
            state.val = val;
            state.final_done = true;
            state.seconds += started.elapsed().as_secs_f64();
        }
        save_step(run, &state.checkpoint, &model, &state, env)?;
    }
    Ok((model, state))
}

/// The `policy.json` of a finished run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyReport {
    /// Per-layer bits (the format `ccq qat --policy` reads).
    pub layers: std::collections::BTreeMap<String, LayerBits>,
    /// Layer order.
    pub order: Vec<String>,
    /// Cost.
    pub cost: ModelCost,
    /// FP validation top-1.
    pub fp_val: f64,
    /// Final validation top-1.
    pub val: f64,
    /// Final test top-1 (reported only).
    pub test: f64,
    /// Steps run.
    pub steps: usize,
    /// Why it stopped.
    pub finished: String,
}

/// Writes the final checkpoint and `policy.json`; returns the report.
pub fn finish(
    run: &Path,
    model: &Model,
    state: &SearchState,
    env: &SearchEnv,
) -> Result<PolicyReport> {
    let Some(reason) = state.finished.clone() else {
        bail!("the search has not finished");
    };
    let test = eval(
        model,
        &state.policy,
        state.config.scheme,
        &env.splits.test,
        env,
        Some("test"),
    );
    let cost = model_cost(&model.layers, &state.policy, state.config.scheme.weight);
    let mut meta = state_meta(env, state);
    meta.test = Some(test);
    checkpoint::save(&run.join(FINAL), model, &meta)?;
    let report = PolicyReport {
        layers: state
            .policy
            .names
            .iter()
            .cloned()
            .zip(state.policy.bits.iter().copied())
            .collect(),
        order: state.policy.names.clone(),
        cost,
        fp_val: state.fp_val,
        val: state.val,
        test: test.top1,
        steps: state.step,
        finished: reason,
    };
    write_atomic(
        &run.join(POLICY),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    Ok(report)
}
