//! The competitive-collaborative search: layers compete for the next bit reduction on the bandit
//! split, then all layers fine-tune together. State is saved after every step; a killed run
//! resumes from its last finished step and ends with the same policy as an uninterrupted one.
//!
//! A step runs four phases, each a function of its own: [`compete`] (trials on the bandit
//! split, the exponential weights and the seeded draw), [`select`] (the chosen lowering applied
//! and measured), [`collaborate_step`] (all layers fine-tune together, or the lowering is
//! refused), and [`persist`] (the step recorded and saved).

use super::audition;
use super::bandit::Competition;
use super::collaborate::{Collaboration, collaborate, finetune};
use super::config::{FinalFrom, Finetune, SearchConfig};
use super::lookahead;
use super::polish::polish;
use super::reallocate::{Reallocation, reallocate};
use super::run_dir::RunDir;
use super::state::{ArmRecord, PolicyReport, SearchState, StepRecord};
use super::step::{Contest, Decision, Plan, decide, plan};
use super::target::Arm;
use super::trials::{BanditScorer, TRIAL_BN_BATCHES};
use crate::data::{Normalization, Splits, Subset};
use crate::events::{Event, Events, Pass};
use crate::model::Model;
use crate::model::cost::model_cost;
use crate::names::Named;
use crate::quant::policy::{LayerBits, Policy};
use crate::quant::quantizer::QuantScheme;
use crate::train::calibrate::{rescale_steps, restore_steps, saved_steps};
use crate::train::checkpoint::CheckpointMeta;
use crate::train::distill::Teacher;
use crate::train::fit::{FitPlan, fit};
use crate::train::{Eval, eval_policy};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Instant;

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
    /// Compression milestones to add to those the state records
    /// ([`SearchState::milestones`]): the first checkpoint reaching each is kept in `at-<R>x/`.
    pub keep: Vec<f64>,
    /// Where progress goes (and whether to stop after the current step).
    pub events: &'a dyn Events,
}

/// Evaluates `model` under `policy` on `subset`, reporting progress as `label` if given.
pub(super) fn eval(
    model: &Model,
    policy: &Policy,
    scheme: QuantScheme,
    subset: &Subset,
    env: &SearchEnv,
    label: Option<&str>,
) -> anyhow::Result<Eval> {
    let pass = label.map(|phase| Pass {
        events: env.events,
        phase,
    });
    eval_policy(model, policy, scheme, subset, env.norm, pass)
}

/// The last fine-tuning of `model` at the final policy (calibrated first when `fresh`: a model
/// that has not trained at it); returns it and its last validation top-1.
fn final_tune(
    model: Model,
    state: &SearchState,
    env: &SearchEnv,
    fresh: bool,
    teacher: Option<&Teacher>,
) -> Result<(Model, f64)> {
    let cfg = &state.config;
    if fresh {
        // The calibration images of a new search.
        let device = model.net.device();
        let calib =
            crate::data::calibration_images(&env.splits.train, env.norm, device, cfg.augment)?;
        crate::train::calibrate::calibrate(&model.net, &state.policy, cfg.scheme, &calib);
    }
    let plan = FitPlan {
        epochs: cfg.final_epochs,
        start_epoch: 0,
        lr: cfg.finetune.schedule.lr_max,
        lr_end: 0.0,
        hyper: cfg.hyper,
        augment: cfg.augment,
        seed: cfg.seed ^ 0xF1A1,
        stop_after: None,
        extra_samples: 0,
        teacher,
    };
    let mut val = f64::NAN;
    let model = fit(
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
        &crate::events::Uncancellable(env.events),
    )?;
    Ok((model, val))
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

/// Starts a search from a full-precision `model`: top-rung quantization, calibration, a brief
/// fine-tuning; writes the initial state into `run`.
pub fn init(
    run: &RunDir,
    model: Model,
    cfg: SearchConfig,
    source: PathBuf,
    env: &SearchEnv,
    calib: &[tch::Tensor],
) -> Result<(Model, SearchState)> {
    std::fs::create_dir_all(run.path())
        .with_context(|| format!("cannot create {}", run.path().display()))?;
    let names = model.layer_names();
    let fp_val = eval(
        &model,
        &Policy::float(&names),
        cfg.scheme,
        &env.splits.val,
        env,
        Some("fp val"),
    )?
    .top1;
    let policy = cfg.lowering.start(&names);
    crate::train::calibrate::calibrate(&model.net, &policy, cfg.scheme, calib);
    let (model, val) = if cfg.init_epochs > 0 {
        let init_ft = Finetune {
            min_epochs: cfg.init_epochs,
            max_epochs: cfg.init_epochs,
            ..cfg.finetune.clone()
        };
        let c = SearchConfig {
            finetune: init_ft,
            ..cfg.clone()
        };
        let (m, _, val, _) = finetune(model, &policy, &c, env, 0, fp_val, 1.0)?;
        (m, val)
    } else {
        let v = eval(&model, &policy, cfg.scheme, &env.splits.val, env, None)?.top1;
        (model, v)
    };
    env.events.event(&Event::SearchStarted {
        fp_val,
        bits: policy.bits.get(1).copied().unwrap_or(policy.bits[0]),
        val,
        epochs: cfg.init_epochs,
    });
    let mut state = SearchState {
        final_start: None,
        milestones: Vec::new(),
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
        reallocation: None,
        lookahead: None,
        audition: None,
        refused: Vec::new(),
    };
    state.add_milestones(&env.keep);
    let meta = state_meta(env, &state);
    run.save(&model, &meta, &state)?;
    // A milestone the start already meets is kept here: no step will first reach it.
    let start = model_cost(&model.layers, &state.policy, state.config.scheme.weight).compression;
    for &r in state.milestones.iter().filter(|&&r| start >= r) {
        run.keep_milestone(r, &model, &meta)?;
    }
    Ok((model, state))
}

/// Phase 1 of a step (competition): every awake arm's trial scored on the bandit split, the
/// exponential weights updated, the memory prior mixed in, and one arm drawn with the step's
/// seeded generator. The carried log-weights are stored in `state`.
pub fn compete(
    model: &Model,
    state: &mut SearchState,
    arms: &[Arm],
    contest: &Contest,
    competition: &mut Competition,
    env: &SearchEnv,
    t: usize,
) -> Result<Decision> {
    let cfg = &state.config;
    let bn_batches = statistics_batches(cfg.reward.trial_bn, cfg, env, model.net.device())?;
    let mut scorer = BanditScorer {
        model,
        policy: &state.policy,
        scheme: cfg.scheme,
        env,
        bandit: cfg.trial_split(&env.splits.bandit),
        bn_batches,
    };
    let d = decide(cfg, arms, contest, competition, &mut scorer, t)?;
    state.log_weights = competition.log_w.clone();
    let names = model.layer_names();
    for (i, a) in arms.iter().enumerate() {
        if let Some(s) = d.trials.arms[i] {
            env.events.event(&Event::TrialScored {
                step: t,
                layer: &names[a.layer],
                top1: s.top1,
                loss: s.loss,
                reward: d.rewards[i],
                probability: d.mixed[i],
            });
        }
    }
    Ok(d)
}

/// The [`TRIAL_BN_BATCHES`] training batches the search re-estimates BatchNorm statistics on
/// (the trials' and, with [`super::config::Finetune::step_bn`], the steps'); none unless
/// `wanted`.
pub(super) fn statistics_batches(
    wanted: bool,
    cfg: &SearchConfig,
    env: &SearchEnv,
    device: tch::Device,
) -> Result<Vec<tch::Tensor>> {
    if !wanted {
        return Ok(Vec::new());
    }
    crate::data::calibration_batches(
        &env.splits.train,
        env.norm,
        device,
        TRIAL_BN_BATCHES,
        cfg.augment,
    )
}

/// The chosen lowering, applied.
pub struct Selection {
    /// The arm.
    pub arm: Arm,
    /// Its bits before and after.
    pub before: LayerBits,
    /// Bits after.
    pub after: LayerBits,
    /// The lowered policy.
    pub lowered: Policy,
    /// The lowered layer's learned steps before the lowering (restored if it is refused).
    steps_before: (tch::Tensor, tch::Tensor),
    /// Validation top-1 right after lowering, before fine-tuning.
    pub val_before: f64,
}

/// Phase 2 (selection): lowers the chosen arm in `model` (LSQ steps rescaled for the new bits)
/// and measures validation top-1 before any fine-tuning.
pub fn select(model: &Model, state: &SearchState, arm: Arm, env: &SearchEnv) -> Result<Selection> {
    let cfg = &state.config;
    let before = state.policy.bits[arm.layer];
    let lowered = cfg
        .lowering
        .lower(arm, &state.policy)
        .context("chosen arm cannot be lowered")?;
    let after = lowered.bits[arm.layer];
    let steps_before = saved_steps(model, arm.layer);
    rescale_steps(&model.net, arm.layer, before, after);
    let val_before = eval(model, &lowered, cfg.scheme, &env.splits.val, env, None)?.top1;
    Ok(Selection {
        arm,
        before,
        after,
        lowered,
        steps_before,
        val_before,
    })
}

/// What the collaboration of a step produced.
pub struct Collaborated {
    /// The policy after the step (the state's own when the lowering was refused).
    pub policy: Policy,
    /// The chosen layer's bits after the step.
    pub after: LayerBits,
    /// Fine-tuning epochs used.
    pub epochs: usize,
    /// Validation top-1 after fine-tuning.
    pub val_after: f64,
    /// Validation top-1 after each epoch.
    pub ft_val: Vec<f64>,
    /// Why the lowering was refused, if it was.
    pub refused: Option<String>,
}

/// Phase 3 (collaboration): all layers fine-tune together under the lowered policy. If the
/// fine-tuning diverges at every retry, the model and policy go back to before the step and
/// the arm is marked refused in `state`. Returns the model to carry on with.
pub fn collaborate_step(
    model: Model,
    state: &mut SearchState,
    chosen: usize,
    sel: &Selection,
    env: &SearchEnv,
    t: usize,
) -> Result<(Model, Collaborated)> {
    let cfg = state.config.clone();
    let start = (cfg.finetune.retries > 0).then(|| model.clone());
    let layer = model.layer_names()[sel.arm.layer].clone();
    match collaborate(model, start.as_ref(), &sel.lowered, &cfg, env, t, state.val)? {
        Collaboration::Done(m, epochs, val, vals) => Ok((
            *m,
            Collaborated {
                policy: sel.lowered.clone(),
                after: sel.after,
                epochs,
                val_after: val,
                ft_val: vals,
                refused: None,
            },
        )),
        Collaboration::Diverged(why) => {
            // Back to the weights and policy before the step; the arm sits out.
            let Some(model) = start else {
                bail!("step {t}: {why} (no retries with --ft-retries 0)");
            };
            restore_steps(&model, sel.arm.layer, &sel.steps_before);
            state.refused.push(chosen);
            env.events.event(&Event::Refused {
                step: t,
                layer: &layer,
                why: why.clone(),
            });
            Ok((
                model,
                Collaborated {
                    policy: state.policy.clone(),
                    after: sel.before,
                    epochs: 0,
                    val_after: state.val,
                    ft_val: Vec::new(),
                    refused: Some(why),
                },
            ))
        }
    }
}

/// Phase 4 (persistence): records step `t` in `state`, saves its checkpoint, the step log and
/// the state (in that order), keeps milestone checkpoints, and only then reports the step.
#[allow(clippy::too_many_arguments)]
pub fn persist(
    run: &RunDir,
    model: &Model,
    state: &mut SearchState,
    arms: &[Arm],
    competition: &Competition,
    d: &Decision,
    sel: &Selection,
    c: Collaborated,
    seconds: (f64, f64),
    env: &SearchEnv,
    t: usize,
) -> Result<()> {
    let names = model.layer_names();
    let cost = model_cost(&model.layers, &c.policy, state.config.scheme.weight);
    let arm_records = arms
        .iter()
        .enumerate()
        .map(|(i, a)| ArmRecord {
            layer: names[a.layer].clone(),
            kind: a.kind,
            a: d.trials.arms[i].map(|s| s.top1),
            loss: d.trials.arms[i].map(|s| s.loss),
            loss_se: d.trials.arms[i].map(|s| s.loss_se),
            tempered_loss: d.trials.arms[i].map(|s| s.tempered_loss),
            saved: d.trials.arms[i].map(|_| d.saved[i]),
            reward: d.rewards[i],
            alpha: competition.alpha[i],
            p: d.p[i],
            r: d.r[i],
            mixed: d.mixed[i],
        })
        .collect();
    let record = StepRecord {
        step: t,
        lambda: d.lambda,
        bandit_loss: Some(d.trials.current.loss),
        bandit_tempered_loss: Some(d.trials.current.tempered_loss),
        arms: arm_records,
        chosen: names[sel.arm.layer].clone(),
        chosen_kind: sel.arm.kind,
        bits_before: sel.before,
        bits_after: c.after,
        val_before: sel.val_before,
        val_after: c.val_after,
        epochs: c.epochs,
        ft_val: c.ft_val,
        size_bits: cost.size_bits,
        compression: cost.compression,
        avg_bits: cost.avg_bits,
        bops: cost.bops,
        seconds: seconds.0,
        compete_seconds: seconds.1,
        refused: c.refused,
    };
    state.policy = c.policy;
    state.val = c.val_after;
    state.step = t;
    state.seconds += record.seconds;
    state.steps.push(record);
    let old = std::mem::replace(&mut state.checkpoint, format!("step-{t:03}"));
    let meta = state_meta(env, state);
    run.save(model, &meta, state)?;
    // Reported once saved: a step whose save fails never appears as done.
    env.events.event(&Event::StepChosen {
        step: t,
        layer: &names[sel.arm.layer],
        before: sel.before,
        after: c.after,
        val_before: sel.val_before,
        val_after: c.val_after,
        epochs: c.epochs,
        compression: cost.compression,
        avg_bits: cost.avg_bits,
        lambda: d.lambda,
    });
    // Only the step that first reached a milestone keeps it: one passed before a resume that
    // added it is replayed from the step records instead (`SearchState::policy_after`).
    let this = state.steps.len() - 1;
    for &r in &state.milestones {
        if state.steps.iter().position(|s| s.compression >= r) == Some(this) {
            run.keep_milestone(r, model, &meta)?;
        }
    }
    run.remove_checkpoint(&old);
    Ok(())
}

/// Runs (or continues) the search until the target is met, no arm is awake, `qsteps` is
/// reached, `env.stop_after` steps have run in this invocation, or the events cancel it (each
/// checked before a step starts); then, once the search is over, the polish and the final
/// fine-tuning.
pub fn run(
    run: &RunDir,
    mut model: Model,
    mut state: SearchState,
    env: &SearchEnv,
) -> Result<(Model, SearchState)> {
    let cfg = state.config.clone();
    state.add_milestones(&env.keep);
    let arms = cfg.lowering.arms(model.layers.len());
    let search = Pass {
        events: env.events,
        phase: "search",
    };
    search.started(cfg.qsteps as u64);
    search.progress(state.step as u64, None);
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
            &state.milestones,
        ) {
            Plan::Stop(why) => {
                state.finished = Some(why);
                break;
            }
            Plan::Compete(c) => c,
        };
        if env.stop_after.is_some_and(|n| ran >= n) || env.events.cancelled() {
            break;
        }
        let t = state.step + 1;
        let d = compete(
            &model,
            &mut state,
            &arms,
            &contest,
            &mut competition,
            env,
            t,
        )?;
        let compete_seconds = started.elapsed().as_secs_f64();
        let sel = select(&model, &state, arms[d.chosen], env)?;
        let (m, c) = collaborate_step(model, &mut state, d.chosen, &sel, env, t)?;
        model = m;
        let seconds = (started.elapsed().as_secs_f64(), compete_seconds);
        persist(
            run,
            &model,
            &mut state,
            &arms,
            &competition,
            &d,
            &sel,
            c,
            seconds,
            env,
            t,
        )?;
        ran += 1;
        search.progress(
            t as u64,
            Some(format!(
                "{:.2}x, val {:.2}%",
                state.steps.last().map_or(0.0, |s| s.compression),
                100.0 * state.val
            )),
        );
    }
    search.ended();
    if state.finished.is_some() && !state.final_done && !env.events.cancelled() {
        model = conclude(run, model, &mut state, env)?;
    }
    Ok((model, state))
}

/// Moves `model` to a re-allocated policy (rescaling the LSQ steps of every layer whose bits
/// changed) and reports it.
pub fn adopt(model: &Model, r: &Reallocation, scheme: QuantScheme, events: &dyn Events) {
    rescale_between(model, &r.searched, &r.policy, scheme);
    report_reallocation(r, events);
}

/// Moves `model` from policy `from` to `to`: rescales the LSQ steps of every layer whose bits
/// differ (nothing to do for the other schemes).
pub fn rescale_between(model: &Model, from: &Policy, to: &Policy, scheme: QuantScheme) {
    if scheme != QuantScheme::default() {
        for (l, (b, a)) in from.bits.iter().zip(&to.bits).enumerate() {
            if b != a {
                rescale_steps(&model.net, l, *b, *a);
            }
        }
    }
}

/// Reports what a re-allocation changed (for a policy whose searched weights are not at hand).
pub fn report_reallocation(r: &Reallocation, events: &dyn Events) {
    let changes = r.searched.changes_to(&r.policy);
    events.event(&Event::Reallocated {
        changes,
        searched_price: r.searched_price,
        price: r.price,
        least: r.least.as_ref().map(|l| l.price),
    });
}

/// After the search: the re-allocation and the budget polish (each if set; the polish only where
/// the re-allocation kept the search's policy), the final fine-tuning (if any, from where
/// `final_from` says; it is not cancellable, being short and not resumable midway), and the
/// state saved with `final_done`.
fn conclude(
    run: &RunDir,
    mut model: Model,
    state: &mut SearchState,
    env: &SearchEnv,
) -> Result<Model> {
    let cfg = state.config.clone();
    let mut reallocated = false;
    let met = |t: &super::target::Target, p: &Policy| {
        t.met(&model_cost(&model.layers, p, cfg.scheme.weight))
    };
    let reallocation = match &cfg.target {
        Some(t) if cfg.reallocate && met(t, &state.policy) => {
            let realloc = |la: Option<&lookahead::Lookahead>| {
                reallocate(
                    &model.layers,
                    &state.steps,
                    &state.policy,
                    &cfg.lowering,
                    t,
                    cfg.scheme.weight,
                    cfg.pricing(),
                    la,
                    cfg.audition.map_or(0, |a| a.finalists - 1),
                )
            };
            let plain = realloc(None)?;
            let reach = lookahead::Reach::of(&cfg);
            if cfg.lookahead_prices || reach.from_top() {
                // The FP model calibrated where the rungs are priced, or the search's weights.
                let fp = if reach.from_top() {
                    let ck = crate::train::checkpoint::load(&state.source, model.net.device())
                        .with_context(|| {
                            format!(
                                "the FP or top prices (--fp-prices, --top-prices) need the full-precision model {}",
                                state.source.display()
                            )
                        })?;
                    Some(lookahead::fp_at(
                        &ck.model,
                        &reach.around(&cfg, &state.policy),
                        &cfg,
                        env.splits,
                        env.norm,
                    )?)
                } else {
                    None
                };
                let (priced, with) = lookahead::reallocate_ahead(
                    fp.as_ref().unwrap_or(&model),
                    &state.policy,
                    &cfg,
                    env.splits,
                    env.norm,
                    plain.as_ref(),
                    realloc,
                    env.events,
                )?;
                state.lookahead = Some(priced);
                with
            } else {
                plain
            }
        }
        _ => None,
    };
    let mut reallocation = reallocation;
    if let (Some(settings), Some(r)) = (cfg.audition, reallocation.as_mut())
        && !r.rivals.is_empty()
    {
        let ck = crate::train::checkpoint::load(&state.source, model.net.device()).with_context(
            || {
                format!(
                    "the audition (--audition) needs the full-precision model {}",
                    state.source.display()
                )
            },
        )?;
        let auditioned = audition::audition(
            &ck.model, r, &cfg, settings, env.splits, env.norm, env.events,
        )?;
        if let Some(a) = auditioned {
            r.price = a.finalists[a.chosen].price;
            r.policy = a.winner().clone();
            state.audition = Some(a);
        }
    }
    if let Some(r) = reallocation.filter(|r| r.policy != state.policy) {
        adopt(&model, &r, cfg.scheme, env.events);
        state.policy = r.policy.clone();
        state.reallocation = Some(r);
        reallocated = true;
    }
    if cfg.polish
        && !reallocated
        && let Some(target) = &cfg.target
        && target.met(&model_cost(&model.layers, &state.policy, cfg.scheme.weight))
    {
        let (policy, raises) = polish(
            &model,
            &state.policy,
            &cfg.lowering,
            target,
            cfg.polish_swaps,
            cfg.scheme,
            &cfg.trial_split(&env.splits.bandit),
            env.norm,
        )?;
        for r in &raises {
            env.events.event(&Event::Raised {
                layer: &r.layer,
                before: r.before,
                after: r.after,
                loss: r.loss,
                lowered: r
                    .lowered
                    .as_ref()
                    .map(|l| (l.layer.as_str(), l.before, l.after)),
            });
        }
        state.policy = policy;
        state.polish = raises;
    }
    if cfg.final_epochs > 0 {
        let started = Instant::now();
        let before = state.val;
        let device = model.net.device();
        let mut candidates = Vec::new();
        let from_fp = matches!(cfg.final_from, FinalFrom::Fp | FinalFrom::Best);
        // Read once: the start of the FP fine-tuning and the teacher are the same model.
        let fp = if from_fp || cfg.distill.is_some() {
            let ck = crate::train::checkpoint::load(&state.source, device).with_context(|| {
                format!(
                    "the final fine-tuning (--final-from {}, --distill) needs the full-precision model {}",
                    cfg.final_from.name(),
                    state.source.display(),
                )
            })?;
            Some(ck.model)
        } else {
            None
        };
        let teacher = cfg
            .distill
            .zip(fp.as_ref())
            .map(|(d, m)| Teacher::new(m.clone(), cfg.scheme, d));
        if matches!(cfg.final_from, FinalFrom::Search | FinalFrom::Best) {
            let (m, v) = final_tune(model, state, env, false, teacher.as_ref())?;
            candidates.push(("search", m, v));
        }
        if let Some(fp) = fp.filter(|_| from_fp) {
            let (m, v) = final_tune(fp, state, env, true, teacher.as_ref())?;
            candidates.push(("fp", m, v));
        }
        let (from, tuned, val) = FinalFrom::keep(candidates).expect("final_from names a start");
        model = tuned;
        env.events.event(&Event::FinalTuned {
            before,
            after: val,
            epochs: cfg.final_epochs,
            from,
        });
        state.val = val;
        state.final_start = Some(from.to_string());
        state.seconds += started.elapsed().as_secs_f64();
    }
    state.final_done = true;
    run.save(&model, &state_meta(env, state), state)?;
    Ok(model)
}

/// Writes the final checkpoint (with its test top-1) and `policy.json`; returns the policy
/// report.
pub fn finish(
    run: &RunDir,
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
    )?;
    let cost = model_cost(&model.layers, &state.policy, state.config.scheme.weight);
    let mut meta = state_meta(env, state);
    meta.test = Some(test);
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
    run.save_final(model, &meta, &report)?;
    Ok(report)
}
