//! One step's decisions, apart from training: which arms are awake, whether the search stops,
//! and which arm the competition picks. The trial accuracies come through [`ArmScorer`], so the
//! selection can be tested with injected scores.

use super::bandit::Competition;
use super::bandit::{memory_prior, mix, sample};
use super::config::SearchConfig;
use super::reward::{Trials, rewards};
use super::target::{Arm, Target, saving};
use crate::model::LayerInfo;
use crate::model::cost::model_cost;
use crate::quant::policy::Policy;
use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Where the competition's trial accuracies come from: the bandit split in a real run.
pub trait ArmScorer {
    /// Scores of each contender `(layer, trial policy)` and of the current policy; `None` where
    /// there is no contender, or where the trial is unusable (its logits were not finite).
    fn score(&mut self, contenders: &[Option<(usize, &Policy)>]) -> anyhow::Result<Trials>;
}

/// What the next step does.
pub enum Plan {
    /// The search is over, for this reason.
    Stop(String),
    /// Compete among the awake arms.
    Compete(Contest),
}

/// A step's competitors.
pub struct Contest {
    /// Each arm's trial policy and what it saves in the target's metric (`None`: at its floor).
    pub trials: Vec<Option<(Policy, f64)>>,
    /// Whether each arm takes part.
    pub awake: Vec<bool>,
    /// The current policy's total in the target's metric (weight bits, or BOPs).
    pub total: f64,
    /// With a budget-aware search: how much of that metric is still to shed to reach the
    /// nearest unmet goal (the target, or a compression milestone on the way).
    pub need: Option<f64>,
}

/// The plan for the step after `step` finished steps under `policy`. An arm sleeps when it is
/// at its floor, when its lowering was refused, or (with a target) when lowering it saves
/// nothing in the target's metric. The search stops once the target is met, no arm is awake, or
/// `qsteps` steps have run, checked in that order. `milestones` are compressions to keep on
/// the way (a comparison keeps one policy per budget); a budget-aware search aims at the
/// nearest unmet one.
pub fn plan(
    cfg: &SearchConfig,
    layers: &[LayerInfo],
    arms: &[Arm],
    policy: &Policy,
    refused: &[usize],
    step: usize,
    milestones: &[f64],
) -> Plan {
    let scheme = cfg.scheme.weight;
    let trials: Vec<Option<(Policy, f64)>> = arms
        .iter()
        .map(|&a| {
            cfg.lowering.lower(a, policy).map(|p| {
                let saved = saving(layers, policy, &p, scheme, cfg.target.as_ref());
                (p, saved)
            })
        })
        .collect();
    let awake: Vec<bool> = trials
        .iter()
        .enumerate()
        .map(|(i, t)| {
            !refused.contains(&i)
                && t.as_ref()
                    .is_some_and(|(_, saved)| cfg.target.is_none() || *saved > 0.0)
        })
        .collect();
    let cost = model_cost(layers, policy, scheme);
    if let Some(t) = &cfg.target
        && t.met(&cost)
    {
        return Plan::Stop(format!("target met: {}", t.describe(&cost)));
    }
    if !awake.iter().any(|&a| a) {
        return Plan::Stop("no layer awake".into());
    }
    if step >= cfg.qsteps {
        return Plan::Stop(format!("reached --qsteps {}", cfg.qsteps));
    }
    let total = if cfg.target.as_ref().is_some_and(|t| t.is_bops()) {
        cost.bops as f64
    } else {
        cost.size_bits as f64
    };
    let need = cfg
        .budget_aware
        .then(|| nearest_shortfall(cfg.target.as_ref(), milestones, &cost))
        .flatten();
    Plan::Compete(Contest {
        trials,
        awake,
        total,
        need,
    })
}

/// The smallest positive shortfall among the goals `cost` has not met: the target, and (for a
/// size target) the compression milestones. `None` when there is no unmet goal.
fn nearest_shortfall(
    target: Option<&Target>,
    milestones: &[f64],
    cost: &crate::model::cost::ModelCost,
) -> Option<f64> {
    let target = target?;
    let on_size = !target.is_bops();
    std::iter::once(*target)
        .chain(
            milestones
                .iter()
                .filter(|_| on_size)
                .map(|&r| Target::Compression(r)),
        )
        .map(|g| g.shortfall(cost))
        .filter(|&s| s > 0.0)
        .min_by(f64::total_cmp)
}

/// The competition's outcome for one step.
pub struct Decision {
    /// Trial scores per arm (`None`: asleep or unusable), and the current policy's.
    pub trials: Trials,
    /// Fraction of the target's metric each competing arm saves (0 for the others).
    pub saved: Vec<f64>,
    /// The reward η multiplied, per competing arm.
    pub rewards: Vec<Option<f64>>,
    /// Inter-layer probabilities from the exponential weights.
    pub p: Vec<f64>,
    /// Memory prior.
    pub r: Vec<f64>,
    /// λ_t.
    pub lambda: f64,
    /// Mixed distribution `(1 − λ)·p + λ·r`.
    pub mixed: Vec<f64>,
    /// Index of the chosen arm, drawn from `mixed` with the step's seeded generator.
    pub chosen: usize,
}

/// Runs step `t`'s competition: scores the awake arms, turns the scores into rewards
/// ([`crate::search::reward`]), updates the weights, mixes in the memory prior and draws an arm. An awake arm whose trial is unusable (no
/// score) sits this step out entirely: zero weight and no share of the prior.
pub fn decide(
    cfg: &SearchConfig,
    arms: &[Arm],
    contest: &Contest,
    competition: &mut Competition,
    scorer: &mut dyn ArmScorer,
    t: usize,
) -> Result<Decision> {
    let (trials, awake, total) = (&contest.trials, &contest.awake[..], contest.total);
    let contenders: Vec<Option<(usize, &Policy)>> = arms
        .iter()
        .enumerate()
        .map(|(i, a)| {
            trials[i]
                .as_ref()
                .filter(|_| awake[i])
                .map(|(p, _)| (a.layer, p))
        })
        .collect();
    let mut scores = scorer.score(&contenders)?;
    let usable: Vec<bool> = awake
        .iter()
        .zip(&scores.arms)
        .map(|(&w, a)| w && a.is_some_and(|s| s.top1.is_finite() && s.loss.is_finite()))
        .collect();
    if !usable.iter().any(|&u| u) {
        bail!("step {t}: every awake arm's trial gave non-finite logits; the model has diverged");
    }
    for (a, &u) in scores.arms.iter_mut().zip(&usable) {
        if !u {
            *a = None;
        }
    }
    // Budget-aware: what a lowering saves beyond the nearest goal's shortfall does not count,
    // in the reward or in the memory prior, so a large overshoot earns nothing.
    let cap = contest.need.unwrap_or(f64::INFINITY);
    let savings: Vec<f64> = trials
        .iter()
        .zip(&usable)
        .map(|(t, &w)| t.as_ref().filter(|_| w).map_or(0.0, |(_, s)| s.min(cap)))
        .collect();
    let saved: Vec<f64> = savings.iter().map(|s| s / total.max(1.0)).collect();
    let rewards = rewards(&cfg.reward, &scores, &saved);
    let p = competition.update(&rewards, cfg.eta, cfg.reward.carry);
    let r = memory_prior(&savings, &usable);
    let lambda = cfg.lambda.at(t, cfg.qsteps);
    let mixed = mix(&p, &r, lambda);
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(1_000_003 * t as u64));
    let chosen = sample(&mixed, &mut rng).context("no arm has positive probability")?;
    Ok(Decision {
        trials: scores,
        saved,
        rewards,
        p,
        r,
        lambda,
        mixed,
        chosen,
    })
}
