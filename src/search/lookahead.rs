//! Look-ahead prices: rungs priced in one trial round, beyond those the competition priced.
//!
//! The competition prices only each arm's next rung, so the re-allocation
//! ([`super::reallocate`]) can take a layer at most one rung below where the search left it: a
//! layer the search kept high (a classifier it never lowered) cannot go lower, however cheap its
//! lower rungs would be. One trial round on the search's weights fills that gap
//! ([`Reach::Below`]): each arm lowered one, two, … rungs down to the floor, each scored on the
//! bandit split as the competition scores its trials. The price of a rung is the rise of that
//! arm's trial loss over the trial one rung above it (over the policy itself for the first).
//!
//! The competition's prices are damage before fine-tuning on the search's network, which the
//! final fine-tuning does not start from when it starts from the full-precision model
//! (`--final-from fp`). [`Reach::Whole`] prices every rung of every arm, from the ladder's top
//! to the floor, around the search's policy on the FP model calibrated at that policy: the
//! network that fine-tuning starts from. The re-allocation then uses those prices alone.
//!
//! [`Reach::Top`] prices every rung of every arm alone, the others at the ladder's top, on the
//! FP model calibrated at the top (the search's start), keeping the BatchNorm statistics
//! calibrated there rather than re-estimating them per trial: each layer's damage from the
//! network it starts from, on its own, as a sensitivity analysis measures it. These prices do
//! not depend on the search's policy.

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

/// Which rungs [`measure`] prices around a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Each arm's rungs below its bits in the policy (`--lookahead-prices`).
    Below,
    /// Each arm's rungs from its ladder's top to the floor, the others kept at the policy
    /// (`--fp-prices`).
    Whole,
    /// Each arm's rungs from its ladder's top to the floor, the others at the top, without
    /// re-estimating BatchNorm per trial (`--top-prices`); measured around the top policy.
    Top,
}

impl Reach {
    /// The reach `cfg` asks for: the whole ladder with `--fp-prices`, alone at the top with
    /// `--top-prices`, else below the policy.
    pub fn of(cfg: &SearchConfig) -> Self {
        if cfg.top_prices {
            Reach::Top
        } else if cfg.fp_prices {
            Reach::Whole
        } else {
            Reach::Below
        }
    }

    /// Whether the rungs are priced from each ladder's top on the FP model, replacing the
    /// competition's prices (else below the policy on the search's weights).
    pub fn from_top(self) -> bool {
        self != Reach::Below
    }

    /// The policy the rungs are priced around, for a search that ended at `searched`: the top
    /// (every arm at its ladder's top) for [`Reach::Top`], else `searched` itself.
    pub fn around(self, cfg: &SearchConfig, searched: &Policy) -> Policy {
        match self {
            Reach::Top => cfg.lowering.start(&searched.names),
            _ => searched.clone(),
        }
    }
}

/// Rungs around a policy, priced on one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lookahead {
    /// The policy the rungs are around.
    pub policy: Policy,
    /// Its own score on the bandit split.
    pub current: TrialScore,
    /// Per arm (in [`super::target::Lowering::arms`] order), its rungs from where it starts down
    /// to the floor, highest first: from the policy's bits ([`Reach::Below`]), or from the
    /// ladder's top ([`Reach::Whole`], [`Reach::Top`]).
    pub arms: Vec<Vec<Rung>>,
    /// With [`Reach::Whole`] or [`Reach::Top`]: per arm, the policy with that arm at its ladder's
    /// top, scored (the base of its first rung; the policy's own score where the arm is at the
    /// top already; `None`: its logits were not finite). `None` with [`Reach::Below`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tops: Option<Vec<Option<TrialScore>>>,
}

impl Lookahead {
    /// The number of rungs priced.
    pub fn rungs(&self) -> usize {
        self.arms.iter().map(Vec::len).sum()
    }
}

/// Scores the rungs `reach` says around `policy` on `model` with the search's trial settings in
/// `cfg`: the same bandit images, and the same BatchNorm re-estimation when its trials
/// re-estimate (never with [`Reach::Top`], which keeps the statistics `model` has). A trial at
/// the policy itself is its own score, not scored again.
pub fn measure(
    model: &Model,
    policy: &Policy,
    cfg: &SearchConfig,
    splits: &Splits,
    norm: &Normalization,
    reach: Reach,
) -> Result<Lookahead> {
    let arms = cfg.lowering.arms(policy.bits.len());
    // The policies to score, with the arm each changes; a trial refers to one by index, or
    // to the policy itself (None).
    let mut scored_policies: Vec<(usize, Policy)> = Vec::new();
    let mut slot = |arm: usize, p: Policy| -> Option<usize> {
        (p != *policy).then(|| {
            scored_policies.push((arm, p));
            scored_policies.len() - 1
        })
    };
    // Per arm: its top's slot (Whole only), then (bits above the rung, below it, the slot).
    let mut plan = Vec::with_capacity(arms.len());
    for (i, arm) in arms.iter().enumerate() {
        let (mut p, top) = match reach {
            Reach::Below => (policy.clone(), None),
            Reach::Whole | Reach::Top => {
                let top = cfg.lowering.topped(*arm, policy);
                (top.clone(), Some(slot(i, top)))
            }
        };
        let mut rungs = Vec::new();
        while let Some(next) = cfg.lowering.lower(*arm, &p) {
            let (before, after) = (
                moved(*arm, p.bits[arm.layer]),
                moved(*arm, next.bits[arm.layer]),
            );
            rungs.push((before, after, slot(i, next.clone())));
            p = next;
        }
        plan.push((top, rungs));
    }
    let contenders: Vec<Option<(usize, &Policy)>> = scored_policies
        .iter()
        .map(|(i, p)| Some((arms[*i].layer, p)))
        .collect();
    let bn_batches = if cfg.reward.trial_bn && reach != Reach::Top {
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
    let score = |s: Option<usize>| s.map_or(Some(scored.current), |k| scored.arms[k]);
    let mut out = Vec::with_capacity(plan.len());
    let mut tops = Vec::with_capacity(plan.len());
    for (top, rungs) in plan {
        tops.push(top.map(score));
        out.push(
            rungs
                .into_iter()
                .map(|(before, after, s)| Rung {
                    before,
                    after,
                    trial: score(s),
                })
                .collect(),
        );
    }
    Ok(Lookahead {
        policy: policy.clone(),
        current: scored.current,
        arms: out,
        tops: reach
            .from_top()
            .then(|| tops.into_iter().flatten().collect()),
    })
}

/// The full-precision model `fp` calibrated at `policy` (quantizer ranges and BatchNorm
/// statistics on the calibration images), as the final fine-tuning from FP starts: the network
/// [`Reach::Whole`] prices are measured on (at the search's policy), and [`Reach::Top`]'s (at
/// the top).
pub fn fp_at(
    fp: &Model,
    policy: &Policy,
    cfg: &SearchConfig,
    splits: &Splits,
    norm: &Normalization,
) -> Result<Model> {
    let model = fp.clone();
    let calib =
        crate::data::calibration_images(&splits.train, norm, model.net.device(), cfg.augment)?;
    crate::train::calibrate::calibrate(&model.net, policy, cfg.scheme, &calib);
    Ok(model)
}

/// The re-allocation of the search's `policy` with look-ahead prices: the rungs that `cfg` asks
/// for ([`Reach::of`]) priced around [`Reach::around`] on `model` ([`measure`]: the search's
/// weights, or the FP model calibrated at that policy when [`Reach::from_top`]), then `realloc`
/// given them. Reports how many rungs were priced, in how long, and whether the result differs
/// from `plain` (the re-allocation without them); returns the prices with the result.
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
    let reach = Reach::of(cfg);
    let around = reach.around(cfg, policy);
    let priced = measure(model, &around, cfg, splits, norm, reach)?;
    let seconds = started.elapsed().as_secs_f64();
    let with = realloc(Some(&priced))?;
    events.event(&Event::LookaheadPriced {
        whole: reach == Reach::Whole,
        top: reach == Reach::Top,
        rungs: priced.rungs(),
        seconds,
        changed: with.as_ref().map(|r| &r.policy) != plain.map(|r| &r.policy),
    });
    Ok((priced, with))
}
