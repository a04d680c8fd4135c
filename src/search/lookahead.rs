//! Look-ahead prices: every rung below a policy, priced on the weights that reached it.
//!
//! The competition prices only each arm's next rung, so the re-allocation
//! ([`super::reallocate`]) can take a layer at most one rung below where the search left it: a
//! layer the search kept high (a classifier it never lowered) cannot go lower, however cheap its
//! lower rungs would be. One trial round on the search's weights fills that gap: each arm lowered
//! one, two, … rungs down to the floor, each scored on the bandit split as the competition scores
//! its trials. The price of a rung is the rise of that arm's trial loss over the trial one rung
//! above it (over the policy itself for the first).

use super::config::SearchConfig;
use super::reallocate::{Reallocation, moved};
use super::reward::TrialScore;
use super::trials::{TRIAL_BATCH, TRIAL_BN_BATCHES, score_trials};
use crate::data::{Normalization, Splits};
use crate::events::{Event, Events};
use crate::model::Model;
use crate::quant::policy::Policy;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One rung below the policy: the arm's bits before it, after it, and the trial of the arm
/// lowered down to `after` (`None`: its logits were not finite).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rung {
    /// The arm's bits above the rung.
    pub before: u32,
    /// Its bits below it.
    pub after: u32,
    /// The arm lowered from the policy down to `after`, scored on the bandit split.
    pub trial: Option<TrialScore>,
}

/// The rungs below a policy, priced on one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lookahead {
    /// The policy the rungs are below.
    pub policy: Policy,
    /// Its own score on the bandit split.
    pub current: TrialScore,
    /// Per arm (in [`super::target::Lowering::arms`] order), its rungs from the policy's bits
    /// down to the floor, highest first.
    pub arms: Vec<Vec<Rung>>,
}

impl Lookahead {
    /// The number of rungs priced.
    pub fn rungs(&self) -> usize {
        self.arms.iter().map(Vec::len).sum()
    }
}

/// Scores every rung below `policy` on `model` with the search's trial settings in `cfg`: the
/// same bandit images, and the same BatchNorm re-estimation when its trials re-estimate.
pub fn measure(
    model: &Model,
    policy: &Policy,
    cfg: &SearchConfig,
    splits: &Splits,
    norm: &Normalization,
) -> Result<Lookahead> {
    let arms = cfg.lowering.arms(policy.bits.len());
    // (arm, bits above the rung, bits below it, the arm lowered that far).
    let mut trials = Vec::new();
    for (i, arm) in arms.iter().enumerate() {
        let mut p = policy.clone();
        while let Some(next) = cfg.lowering.lower(*arm, &p) {
            let (before, after) = (
                moved(*arm, p.bits[arm.layer]),
                moved(*arm, next.bits[arm.layer]),
            );
            trials.push((i, before, after, next.clone()));
            p = next;
        }
    }
    let contenders: Vec<Option<(usize, &Policy)>> = trials
        .iter()
        .map(|(i, _, _, p)| Some((arms[*i].layer, p)))
        .collect();
    let bn_batches = if cfg.reward.trial_bn {
        crate::data::calibration_batches(
            &splits.train,
            norm,
            model.net.device(),
            TRIAL_BN_BATCHES,
            cfg.augment,
        )?
    } else {
        Vec::new()
    };
    let scored = score_trials(
        model,
        policy,
        &contenders,
        cfg.scheme,
        &cfg.trial_split(&splits.bandit),
        norm,
        TRIAL_BATCH,
        &bn_batches,
    )?;
    let mut out = vec![Vec::new(); arms.len()];
    for ((i, before, after, _), trial) in trials.into_iter().zip(scored.arms) {
        out[i].push(Rung {
            before,
            after,
            trial,
        });
    }
    Ok(Lookahead {
        policy: policy.clone(),
        current: scored.current,
        arms: out,
    })
}

/// The re-allocation of the search's `policy` with look-ahead prices: the rungs below it priced
/// on `model` ([`measure`]), then `realloc` given them. Reports how many rungs were priced, in
/// how long, and whether the result differs from `plain` (the re-allocation without them);
/// returns the prices with the result.
#[allow(clippy::too_many_arguments)]
pub fn reallocate_ahead(
    model: &Model,
    policy: &Policy,
    cfg: &SearchConfig,
    splits: &Splits,
    norm: &Normalization,
    plain: Option<&Reallocation>,
    realloc: impl Fn(Option<&Lookahead>) -> Result<Option<Reallocation>>,
    events: &dyn Events,
) -> Result<(Lookahead, Option<Reallocation>)> {
    let started = Instant::now();
    let priced = measure(model, policy, cfg, splits, norm)?;
    let seconds = started.elapsed().as_secs_f64();
    let with = realloc(Some(&priced))?;
    events.event(&Event::LookaheadPriced {
        rungs: priced.rungs(),
        seconds,
        changed: with.as_ref().map(|r| &r.policy) != plain.map(|r| &r.policy),
    });
    Ok((priced, with))
}
