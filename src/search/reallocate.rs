//! Re-allocation: the policy that meets the target at the least loss the competition measured.
//!
//! Every step of the search scores each awake arm's one-rung lowering on the bandit split (its
//! trial), on weights adapted to the bits the layer had then. The rise in cross-entropy over the
//! step's current policy is the price of that rung, measured before the layer was ever trained
//! below it: unlike a raise scored after the search (on weights adapted to the lower bits), it is
//! not biased toward the search's own choices. The re-allocation keeps each rung's most recent
//! price, treats the prices as additive (as a Hessian-aware allocation treats its sensitivities)
//! and solves the multiple-choice knapsack exactly: how far down its measured rungs each layer
//! goes so that the target is met at the least summed price.
//!
//! A greedy search lowers one rung at a time, so near the target it may take the rung that meets
//! it alone (the largest layer, overshooting) where two cheaper rungs elsewhere would have met it
//! for less; the re-allocation trades those back. The search's own policy is a candidate, so the
//! result never prices above it, and a policy is only replaced for a lower price.
//!
//! A price is the damage before any fine-tuning, as the competition sees it; how much of it the
//! collaboration then recovers is measured only for the rungs the search took, so it is not used.
//! On a long search the oldest prices were taken on a network far from the final one.

use super::lookahead::Lookahead;
use super::reward::TrialScore;
use super::state::StepRecord;
use super::target::{Arm, ArmKind, Lowering, Target};
use crate::model::LayerInfo;
use crate::model::cost::model_cost;
use crate::quant::policy::{LayerBits, Policy};
use crate::quant::quantizer::WeightQuantizer;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Smallest price decrease (nats) for which the re-allocated policy replaces the search's: below
/// it the two are the same by the measurements.
const MIN_GAIN: f64 = 1e-6;

/// Partial solutions kept per layer of the knapsack: past it, the cheapest in each of this many
/// equal slices of the metric survive (an approximation only far beyond the models measured).
const MAX_FRONTIER: usize = 20_000;

/// What the re-allocation did to a search's policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reallocation {
    /// The search's policy.
    pub searched: Policy,
    /// Its summed price (bandit cross-entropy rises of the rungs it lowered); `None` when a
    /// rung it took was never priced (its trial's logits were not finite).
    pub searched_price: Option<f64>,
    /// The re-allocated policy.
    pub policy: Policy,
    /// Its summed price.
    pub price: f64,
    /// Its rivals, cheapest first (as many as asked for, or fewer; none unless asked for): for
    /// each layer, each arm one rung above or below where `policy` has it (a rung that moves at
    /// least [`MIN_RIVAL_SHARE`] of `policy`'s metric), the least-price policy that meets the
    /// target with the layer so. The audition ([`super::audition`]) weighs them against it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rivals: Vec<Rival>,
    /// The least-price policy and its price, where the noise rule ([`Pricing::noise_ties`])
    /// took `policy` instead: priced within one standard error of it, using more of the
    /// budget. `None` where the least-price policy stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub least: Option<Rival>,
}

/// A policy that meets the target with one layer a rung away from the re-allocation's choice,
/// at the least price the measured rungs allow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rival {
    /// The policy.
    pub policy: Policy,
    /// Its summed price.
    pub price: f64,
}

/// Least share of the chosen policy's metric (its size, for a size target) that a rival's rung
/// must move: a rung on a layer too small to matter (a stem's) makes a rival that differs from
/// the choice by almost nothing, which a fine-tuning could not tell from it.
pub const MIN_RIVAL_SHARE: f64 = 0.01;

/// A rung: (arm index, bits the arm had before its one-rung lowering).
type RungKey = (usize, u32);

/// A measured rung: its price and the standard error of the rise it was taken from.
#[derive(Clone, Copy, Debug)]
struct Priced {
    price: f64,
    se: f64,
}

/// The measured price of each arm's rung: the rise in bandit cross-entropy its one-rung
/// lowering caused, from the latest step that scored it.
type Prices = HashMap<RungKey, Priced>;

/// How the re-allocation prices rungs, and how it chooses between policies the prices cannot
/// tell apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pricing {
    /// Never below the standard error of the trial's rise, so that a rung whose measured rise is
    /// within the noise is not free.
    pub floor: bool,
    /// By the rise in tempered cross-entropy (the least over softmax temperatures), the damage
    /// that rescaling the logits does not undo, rather than the plain cross-entropy's. The floor
    /// stays the plain rise's standard error (the tempered rise's is not measured).
    pub tempered: bool,
    /// Among the least-price policy and its rivals, those priced within one standard error of
    /// it (the summed variance of the rungs where the two differ) are ties by the
    /// measurements; take the one that uses the most of the budget (the largest metric that
    /// still meets the target), on the prior that more bits at the same measured damage
    /// fine-tune no worse (on Fashion-MNIST right at 12× and wrong at 8×; see the README).
    pub noise_ties: bool,
}

impl Pricing {
    /// The loss a price is taken from: `tempered` when priced so, else `plain`.
    fn loss(self, plain: Option<f64>, tempered: Option<f64>) -> Option<f64> {
        if self.tempered { tempered } else { plain }
    }
}

/// The bits `arm` moves in `bits`.
pub(super) fn moved(arm: Arm, bits: LayerBits) -> u32 {
    match arm.kind {
        ArmKind::Act => bits.a,
        ArmKind::Tied | ArmKind::Weight => bits.w,
    }
}

/// The price of a rung whose trial raised the bandit loss from `base` to `loss` with standard
/// error `se`: the rise, never below 0, and with `floor` never below `se` either, so that a
/// rung whose measured rise is within the noise is not free. Its noise is `se` (0 where not
/// measured).
fn price(loss: f64, base: f64, se: Option<f64>, floor: bool) -> Priced {
    let rise = (loss - base).max(0.0);
    let se = se.filter(|s| s.is_finite());
    let price = match se.filter(|_| floor) {
        Some(se) => rise.max(se),
        None => rise,
    };
    Priced {
        price,
        se: se.unwrap_or(0.0),
    }
}

/// Walks `steps` from the top-rung policy, collecting each rung's latest price as `pricing`
/// says, then the rungs `lookahead` priced around the policy the steps lead to (the latest
/// prices of all; priced from each arm's top, they replace the steps' altogether); returns them
/// with that policy. `None` when a step lacks the current
/// policy's bandit loss (plain, or tempered when priced so: a search recorded before it was
/// kept). Refused lowerings are never priced: their fine-tuning diverged.
fn prices(
    steps: &[StepRecord],
    lowering: &Lowering,
    names: &[String],
    pricing: Pricing,
    lookahead: Option<&Lookahead>,
) -> Result<Option<(Prices, Policy)>> {
    let arms = lowering.arms(names.len());
    let mut policy = lowering.start(names);
    let mut prices = Prices::new();
    let mut refused = Vec::new();
    for s in steps {
        let Some(base) = pricing.loss(s.bandit_loss, s.bandit_tempered_loss) else {
            return Ok(None);
        };
        if s.arms.len() != arms.len() {
            bail!(
                "step {} records {} arms; the model has {}",
                s.step,
                s.arms.len(),
                arms.len()
            );
        }
        for (i, (arm, rec)) in arms.iter().zip(&s.arms).enumerate() {
            if rec.layer != names[arm.layer] || rec.kind != arm.kind {
                bail!(
                    "step {} records arm {i} as {} ({:?}); the model's is {} ({:?})",
                    s.step,
                    rec.layer,
                    rec.kind,
                    names[arm.layer],
                    arm.kind
                );
            }
            let loss = pricing.loss(rec.loss, rec.tempered_loss);
            if let Some(loss) = loss.filter(|l| l.is_finite()) {
                let key = (i, moved(*arm, policy.bits[arm.layer]));
                prices.insert(key, price(loss, base, rec.loss_se, pricing.floor));
            }
        }
        let Some(l) = names.iter().position(|n| *n == s.chosen) else {
            bail!(
                "step {} chose {}, not a layer of the model",
                s.step,
                s.chosen
            );
        };
        if policy.bits[l] != s.bits_before {
            bail!(
                "step {} lowered {} from {}, but the steps before it leave it at {}",
                s.step,
                s.chosen,
                s.bits_before,
                policy.bits[l]
            );
        }
        if s.refused.is_some() {
            if let Some(i) = arms
                .iter()
                .position(|a| a.layer == l && a.kind == s.chosen_kind)
            {
                refused.push((i, moved(arms[i], s.bits_before)));
            }
        } else {
            policy.bits[l] = s.bits_after;
        }
    }
    if let Some(la) = lookahead {
        // Around the search's policy, or (priced from the top) around the top itself.
        let around_top = la.tops.is_some() && la.policy.bits == lowering.start(names).bits;
        if (la.policy.bits != policy.bits && !around_top)
            || la.arms.len() != arms.len()
            || la.tops.as_ref().is_some_and(|t| t.len() != arms.len())
        {
            bail!("the look-ahead priced the rungs around another policy than the search's");
        }
        // Prices of every rung from the top replace the competition's.
        if la.tops.is_some() {
            prices.clear();
        }
        let loss = |t: &TrialScore| {
            pricing
                .loss(Some(t.loss), Some(t.tempered_loss))
                .filter(|l| l.is_finite())
        };
        for (i, rungs) in la.arms.iter().enumerate() {
            // Each rung's rise is over the trial one rung above it: the policy itself, or the
            // arm at its top when priced from there. Its noise is the larger of the two
            // trials' standard errors (each against the policy).
            let top = match &la.tops {
                Some(tops) => tops[i],
                None => Some(la.current),
            };
            let Some(mut above) = top.and_then(|t| loss(&t).map(|l| (l, t.loss_se))) else {
                continue;
            };
            for r in rungs {
                let Some((l, se)) = r.trial.and_then(|t| loss(&t).map(|l| (l, t.loss_se))) else {
                    break;
                };
                let p = price(l, above.0, Some(se.max(above.1)), pricing.floor);
                prices.insert((i, r.before), p);
                above = (l, se);
            }
        }
    }
    for key in refused {
        prices.remove(&key);
    }
    Ok(Some((prices, policy)))
}

/// One way to set a layer: its bits, the summed price of its rungs below the top, its share
/// of the target's metric, and the rungs it lowers with each one's variance.
struct Choice {
    bits: LayerBits,
    price: f64,
    metric: f64,
    rungs: Vec<(RungKey, f64)>,
}

/// A layer's measured choices: each of its arms lowered rung by rung while the rung is priced
/// (both arms' combinations when untied).
fn choices(
    layer: usize,
    arms: &[(usize, Arm)],
    prices: &Prices,
    lowering: &Lowering,
    start: &Policy,
    metric: &dyn Fn(usize, LayerBits) -> f64,
) -> Vec<Choice> {
    // Each arm's chain: (policy after k lowerings, summed price, the rungs lowered).
    type Link = (Policy, f64, Vec<(RungKey, f64)>);
    let chain = |(i, arm): (usize, Arm), from: &Policy| {
        let mut out: Vec<Link> = vec![(from.clone(), 0.0, Vec::new())];
        loop {
            let (p, sum, rungs) = out.last().expect("starts non-empty");
            let key = (i, moved(arm, p.bits[layer]));
            let Some(priced) = prices.get(&key) else {
                break;
            };
            let Some(next) = lowering.lower(arm, p) else {
                break;
            };
            let mut rungs = rungs.clone();
            rungs.push((key, priced.se * priced.se));
            let sum = sum + priced.price;
            out.push((next, sum, rungs));
        }
        out
    };
    let mut out = Vec::new();
    match arms {
        [first] => {
            for (p, price, rungs) in chain(*first, start) {
                out.push((p.bits[layer], price, rungs));
            }
        }
        [first, second] => {
            for (p, price, rungs) in chain(*first, start) {
                for (q, more, others) in chain(*second, &p) {
                    let all = rungs.iter().chain(&others).copied().collect();
                    out.push((q.bits[layer], price + more, all));
                }
            }
        }
        _ => unreachable!("a layer has one or two arms"),
    }
    out.into_iter()
        .map(|(bits, price, rungs)| Choice {
            bits,
            price,
            metric: metric(layer, bits),
            rungs,
        })
        .collect()
}

/// Keeps the partial solutions no other beats on both metric and price, cheapest metric
/// first (thinned to [`MAX_FRONTIER`] slices of the metric past that many).
fn pareto(mut v: Vec<(f64, f64, Vec<u8>)>) -> Vec<(f64, f64, Vec<u8>)> {
    v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut out: Vec<(f64, f64, Vec<u8>)> = Vec::new();
    for s in v {
        if out.last().is_none_or(|last| s.1 < last.1) {
            out.push(s);
        }
    }
    if out.len() > MAX_FRONTIER {
        let (lo, hi) = (out[0].0, out[out.len() - 1].0);
        let width = (hi - lo) / MAX_FRONTIER as f64;
        let mut thin: Vec<(f64, f64, Vec<u8>)> = Vec::new();
        for s in out {
            let slice = ((s.0 - lo) / width) as usize;
            match thin.last() {
                Some(last) if ((last.0 - lo) / width) as usize == slice => {}
                _ => thin.push(s),
            }
        }
        return thin;
    }
    out
}

/// The re-allocation of a search whose `steps` led to `searched` on a model with `layers`:
/// `None` when the steps lack the prices (recorded before they were kept) or the target cannot
/// be met from the measured rungs; otherwise the least-price policy that meets `target`, which
/// is `searched` itself unless another prices lower. Rungs are priced as `pricing` says, with
/// the rungs `lookahead` priced around `searched` (if given): below it on the search's weights,
/// or every rung from the top on the FP model, whose prices then replace the competition's.
/// With `rivals` > 0, up to that many of the result's [`Reallocation::rivals`] come with it.
#[allow(clippy::too_many_arguments)]
pub fn reallocate(
    layers: &[LayerInfo],
    steps: &[StepRecord],
    searched: &Policy,
    lowering: &Lowering,
    target: &Target,
    scheme: WeightQuantizer,
    pricing: Pricing,
    lookahead: Option<&Lookahead>,
    rivals: usize,
) -> Result<Option<Reallocation>> {
    let names = &searched.names;
    let Some((prices, walked)) = prices(steps, lowering, names, pricing, lookahead)? else {
        return Ok(None);
    };
    if walked.bits != searched.bits {
        bail!("the search's steps do not lead to its policy");
    }
    let start = lowering.start(names);
    let arms: Vec<(usize, Arm)> = lowering.arms(names.len()).into_iter().enumerate().collect();
    // Each layer's share of the target's metric, which sums over layers.
    let metric = |l: usize, bits: LayerBits| {
        let one = Policy {
            names: vec![names[l].clone()],
            bits: vec![bits],
        };
        let c = model_cost(std::slice::from_ref(&layers[l]), &one, scheme);
        match target {
            Target::Bops(_) => c.bops as f64,
            Target::AvgBits(_) => layers[l].params as f64 * bits.w as f64,
            Target::Compression(_) | Target::SizeBytes(_) => c.size_bits as f64,
        }
    };
    let per_layer: Vec<Vec<Choice>> = (0..names.len())
        .map(|l| {
            let own: Vec<(usize, Arm)> = arms.iter().copied().filter(|a| a.1.layer == l).collect();
            choices(l, &own, &prices, lowering, &start, &metric)
        })
        .collect();
    let policy_of = |picks: &[u8]| Policy {
        names: names.clone(),
        bits: picks
            .iter()
            .zip(&per_layer)
            .map(|(&k, o)| o[k as usize].bits)
            .collect(),
    };
    let meets = |picks: &[u8]| target.met(&model_cost(layers, &policy_of(picks), scheme));
    let Some((price, picks)) = cheapest(&per_layer, None, &meets) else {
        return Ok(None);
    };
    let searched_price: Option<f64> = per_layer
        .iter()
        .zip(&searched.bits)
        .map(|(o, b)| o.iter().find(|c| c.bits == *b).map(|c| c.price))
        .sum::<Option<f64>>();
    let (policy, price) = match searched_price {
        Some(s) if price >= s - MIN_GAIN => (searched.clone(), s),
        _ => (policy_of(&picks), price),
    };
    // The chosen policy's choice in each layer (the search's are among the choices when it
    // was kept: it was priced).
    let chosen: Vec<usize> = per_layer
        .iter()
        .zip(&policy.bits)
        .map(|(o, b)| o.iter().position(|c| c.bits == *b).unwrap_or(0))
        .collect();
    let metric_of = |picks: &[usize]| -> f64 {
        picks
            .iter()
            .zip(&per_layer)
            .map(|(&k, o)| o[k].metric)
            .sum()
    };
    let total = metric_of(&chosen);
    // The variance of the price difference between two ways to set the layers: that of the
    // rungs one lowers and the other does not.
    let variance = |a: &[usize], b: &[usize]| -> f64 {
        let only = |x: &[(RungKey, f64)], y: &[(RungKey, f64)]| -> f64 {
            x.iter()
                .filter(|r| !y.iter().any(|q| q.0 == r.0))
                .map(|r| r.1)
                .sum()
        };
        per_layer
            .iter()
            .zip(a.iter().zip(b))
            .filter(|(_, (x, y))| x != y)
            .map(|(o, (&x, &y))| only(&o[x].rungs, &o[y].rungs) + only(&o[y].rungs, &o[x].rungs))
            .sum()
    };
    // Each rival with its choice in each layer.
    let mut found: Vec<(Rival, Vec<usize>)> = Vec::new();
    if rivals > 0 || pricing.noise_ties {
        for (l, options) in per_layer.iter().enumerate() {
            let own: Vec<Arm> = arms
                .iter()
                .filter(|a| a.1.layer == l)
                .map(|a| a.1)
                .collect();
            for k in neighbours(options, chosen[l], &own) {
                if (options[k].metric - options[chosen[l]].metric).abs() < MIN_RIVAL_SHARE * total {
                    continue;
                }
                let Some((p, picks)) = cheapest(&per_layer, Some((l, k)), &meets) else {
                    continue;
                };
                let rival = policy_of(&picks);
                if rival != policy && !found.iter().any(|r| r.0.policy == rival) {
                    let picks = picks.iter().map(|&k| k as usize).collect();
                    found.push((
                        Rival {
                            policy: rival,
                            price: p,
                        },
                        picks,
                    ));
                }
            }
        }
    }
    // The noise rule: a rival priced within one standard error of the choice that uses more
    // of the budget takes its place (the one that uses the most), and the choice becomes a
    // rival.
    let (mut policy, mut price, mut least) = (policy, price, None);
    if pricing.noise_ties {
        let tie = found
            .iter()
            .enumerate()
            .filter(|(_, (r, picks))| {
                r.price - price <= variance(&chosen, picks).sqrt() && metric_of(picks) > total
            })
            .max_by(|(_, a), (_, b)| {
                metric_of(&a.1)
                    .total_cmp(&metric_of(&b.1))
                    .then(b.0.price.total_cmp(&a.0.price))
            })
            .map(|(i, _)| i);
        if let Some(i) = tie {
            let (r, _) = found.remove(i);
            let was = Rival {
                policy: std::mem::replace(&mut policy, r.policy),
                price: std::mem::replace(&mut price, r.price),
            };
            least = Some(was.clone());
            found.push((was, chosen.clone()));
        }
    }
    let mut found: Vec<Rival> = found.into_iter().map(|(r, _)| r).collect();
    found.sort_by(|a, b| a.price.total_cmp(&b.price));
    found.truncate(rivals);
    Ok(Some(Reallocation {
        searched: searched.clone(),
        searched_price,
        policy,
        price,
        rivals: found,
        least,
    }))
}

/// The least-price way to set every layer (an index into each layer's `per_layer` choices)
/// whose policy `meets` the target, with layer `fixed.0` held at choice `fixed.1` if given, and
/// its summed price; `None` when none meets it. An exact multiple-choice knapsack over the
/// Pareto frontier of (metric, price).
fn cheapest(
    per_layer: &[Vec<Choice>],
    fixed: Option<(usize, usize)>,
    meets: &dyn Fn(&[u8]) -> bool,
) -> Option<(f64, Vec<u8>)> {
    let mut frontier = vec![(0.0, 0.0, Vec::new())];
    for (l, options) in per_layer.iter().enumerate() {
        let mut next = Vec::with_capacity(frontier.len() * options.len());
        for (m, p, picks) in &frontier {
            for (k, c) in options.iter().enumerate() {
                if fixed.is_some_and(|(fl, fk)| fl == l && fk != k) {
                    continue;
                }
                let mut picks = picks.clone();
                picks.push(k as u8);
                next.push((m + c.metric, p + c.price, picks));
            }
        }
        frontier = pareto(next);
    }
    frontier
        .into_iter()
        .filter(|(_, _, picks)| meets(picks))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(_, price, picks)| (price, picks))
}

/// The choices of a layer one rung from choice `k` on one of its `arms`, the layer's other arm
/// unchanged: the nearest bits above and the nearest below that the measured choices hold.
fn neighbours(options: &[Choice], k: usize, arms: &[Arm]) -> Vec<usize> {
    let here = options[k].bits;
    let mut out = Vec::new();
    for &arm in arms {
        let v = moved(arm, here);
        let others_same = |c: &Choice| {
            arms.iter()
                .filter(|o| o.kind != arm.kind)
                .all(|&o| moved(o, c.bits) == moved(o, here))
        };
        let along: Vec<(usize, u32)> = options
            .iter()
            .enumerate()
            .filter(|(_, c)| others_same(c) && moved(arm, c.bits) != v)
            .map(|(i, c)| (i, moved(arm, c.bits)))
            .collect();
        let above = along.iter().filter(|x| x.1 > v).min_by_key(|x| x.1);
        let below = along.iter().filter(|x| x.1 < v).max_by_key(|x| x.1);
        out.extend(above.into_iter().chain(below).map(|x| x.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::network::test_layer;
    use crate::quant::policy::Ladder;
    use crate::search::lookahead::Rung;
    use crate::search::reward::TrialScore;
    use crate::search::state::ArmRecord;

    /// The Fashion-MNIST ConvNet's four layers (their weight counts).
    fn layers() -> Vec<LayerInfo> {
        [
            ("stem", 144, 1_000),
            ("s1", 4608, 10_000),
            ("s2", 18432, 100_000),
            ("fc", 5760, 200_000),
        ]
        .iter()
        .map(|&(name, params, macs)| test_layer(name, params, macs))
        .collect()
    }

    fn names() -> Vec<String> {
        layers().into_iter().map(|l| l.name).collect()
    }

    fn lowering(tied: bool) -> Lowering {
        Lowering {
            ladder: Ladder(vec![8, 6, 4, 3, 2]),
            act_ladder: Ladder(vec![8, 6, 4, 3, 2]),
            tied,
            floor: 2,
        }
    }

    /// The records of a search that took `moves` (arm index, each arm's trial price, whether
    /// the lowering was refused) from the top rung, with a bandit loss of 0.3 before each step.
    fn steps(
        lw: &Lowering,
        moves: &[(usize, Vec<Option<f64>>, bool)],
    ) -> (Vec<StepRecord>, Policy) {
        steps_se(lw, moves, 0.001)
    }

    /// [`steps`] with every trial's rise measured to standard error `se`.
    fn steps_se(
        lw: &Lowering,
        moves: &[(usize, Vec<Option<f64>>, bool)],
        se: f64,
    ) -> (Vec<StepRecord>, Policy) {
        let names = names();
        let arms = lw.arms(names.len());
        let mut policy = lw.start(&names);
        let mut out = Vec::new();
        for (t, (chosen, prices, refused)) in moves.iter().enumerate() {
            let arm = arms[*chosen];
            let lowered = lw.lower(arm, &policy).expect("the move is possible");
            let arm_records = arms
                .iter()
                .zip(prices)
                .map(|(a, price)| ArmRecord {
                    layer: names[a.layer].clone(),
                    kind: a.kind,
                    a: price.map(|_| 0.9),
                    loss: price.map(|p| 0.3 + p),
                    loss_se: price.map(|_| se),
                    // Tempered, the same rises from a base 0.02 lower.
                    tempered_loss: price.map(|p| 0.28 + p),
                    saved: None,
                    reward: None,
                    alpha: 1.0,
                    p: 0.0,
                    r: 0.0,
                    mixed: 0.0,
                })
                .collect();
            let cost = model_cost(&layers(), &lowered, WeightQuantizer::Dorefa);
            out.push(StepRecord {
                step: t + 1,
                lambda: 0.0,
                bandit_loss: Some(0.3),
                bandit_tempered_loss: Some(0.28),
                arms: arm_records,
                chosen: names[arm.layer].clone(),
                chosen_kind: arm.kind,
                bits_before: policy.bits[arm.layer],
                bits_after: lowered.bits[arm.layer],
                val_before: 0.9,
                val_after: 0.9,
                epochs: 3,
                ft_val: Vec::new(),
                size_bits: cost.size_bits,
                compression: cost.compression,
                avg_bits: cost.avg_bits,
                bops: cost.bops,
                seconds: 1.0,
                compete_seconds: 0.5,
                refused: refused.then(|| "diverged".to_string()),
            });
            if !refused {
                policy = lowered;
            }
        }
        (out, policy)
    }

    /// The re-allocation of `records` (ending at `searched`) on [`layers`] with DoReFa weights.
    fn run(
        lw: &Lowering,
        records: &[StepRecord],
        searched: &Policy,
        target: &Target,
    ) -> Result<Option<Reallocation>> {
        run_priced(lw, records, searched, target, Pricing::default())
    }

    /// [`run`] with rungs priced as `pricing` says.
    fn run_priced(
        lw: &Lowering,
        records: &[StepRecord],
        searched: &Policy,
        target: &Target,
        pricing: Pricing,
    ) -> Result<Option<Reallocation>> {
        run_rivals(lw, records, searched, target, pricing, None, 0)
    }

    /// [`run_priced`] with the prices `la` measured beyond the competition's (if given) and up
    /// to `rivals` rivals asked for.
    fn run_rivals(
        lw: &Lowering,
        records: &[StepRecord],
        searched: &Policy,
        target: &Target,
        pricing: Pricing,
        la: Option<&Lookahead>,
        rivals: usize,
    ) -> Result<Option<Reallocation>> {
        reallocate(
            &layers(),
            records,
            searched,
            lw,
            target,
            WeightQuantizer::Dorefa,
            pricing,
            la,
            rivals,
        )
    }

    fn w(bits: &Policy) -> Vec<u32> {
        bits.bits.iter().map(|b| b.w).collect()
    }

    /// Seed 1's search to 10x: s2 went 3 → 2 (meeting 10x alone, at 11.6x) where s1 4 → 3 and
    /// fc 4 → 3 together priced less.
    fn seed1() -> Vec<(usize, Vec<Option<f64>>, bool)> {
        let p = |v: [f64; 4]| v.iter().map(|&x| Some(x)).collect::<Vec<_>>();
        vec![
            (3, p([0.002, 0.0005, 0.001, 0.0015]), false), // fc 8 → 6
            (1, p([0.003, 0.0, 0.0, 0.008]), false),       // s1 8 → 6
            (2, p([0.001, 0.02, 0.0002, 0.009]), false),   // s2 8 → 6
            (2, p([0.0, 0.02, 0.0098, 0.014]), false),     // s2 6 → 4
            (2, p([0.0006, 0.023, 0.0184, 0.015]), false), // s2 4 → 3
            (3, p([0.001, 0.047, 0.226, 0.0114]), false),  // fc 6 → 4
            (1, p([0.0, 0.0377, 0.227, 0.133]), false),    // s1 6 → 4
            (2, p([0.003, 0.0616, 0.2335, 0.12]), false),  // s2 3 → 2
        ]
    }

    #[test]
    fn an_overshooting_rung_is_traded_for_two_that_price_less() {
        let lw = lowering(true);
        let (records, searched) = steps(&lw, &seed1());
        assert_eq!(w(&searched), [8, 4, 2, 4]);
        let target = Target::Compression(10.0);
        let r = run(&lw, &records, &searched, &target)
            .unwrap()
            .expect("priced");
        assert_eq!(w(&r.policy), [8, 4, 3, 3]);
        let cost = model_cost(&layers(), &r.policy, WeightQuantizer::Dorefa);
        assert!(target.met(&cost) && cost.compression < 11.0, "{cost:?}");
        // The search's price: fc 0.0015 + 0.0114, s1 0.0 + 0.0377, s2 0.0002 + 0.0098 +
        // 0.0184 + 0.2335; the new one has s2's last rung back and fc's 4 → 3 (0.12) instead.
        let searched_price = r.searched_price.unwrap();
        assert!((searched_price - 0.3125).abs() < 1e-9, "{searched_price}");
        assert!((r.price - (searched_price - 0.2335 + 0.12)).abs() < 1e-9);
        // The latest price counts: fc 4 → 3 at 0.3 instead makes s2's rung the cheaper way.
        let mut later = seed1();
        later.push((0, vec![Some(0.0), Some(0.03), None, Some(0.3)], false));
        let (records, searched) = steps(&lw, &later);
        let r = run(&lw, &records, &searched, &target).unwrap().unwrap();
        assert_eq!(w(&searched), [6, 4, 2, 4]);
        assert_eq!(
            w(&r.policy),
            [6, 6, 2, 4],
            "s2's rung, and the slack back to s1"
        );
    }

    #[test]
    fn ties_within_the_noise_go_to_the_policy_that_uses_the_most_of_the_budget() {
        let lw = lowering(true);
        let target = Target::Compression(9.0);
        let noisy = Pricing {
            noise_ties: true,
            ..Pricing::default()
        };
        let size = |p: &Policy| model_cost(&layers(), p, WeightQuantizer::Dorefa).size_bits as f64;
        let with = |se: f64, pricing: Pricing, rivals: usize| {
            let (records, searched) = steps_se(&lw, &seed1(), se);
            run_rivals(&lw, &records, &searched, &target, pricing, None, rivals)
                .unwrap()
                .expect("priced")
        };
        // Measured to 1 nat, every rival is a tie by the measurements.
        let plain = with(1.0, Pricing::default(), 10);
        assert!(plain.least.is_none(), "off unless asked for");
        // Measured to 0.001 nats, the least price stands: no rival is within the noise.
        let precise = with(0.001, noisy, 0);
        assert_eq!(precise.policy, plain.policy);
        assert!(precise.least.is_none());
        // Within the noise, the one that uses the most of the budget wins, and the least-price
        // policy is kept beside it, as a rival too.
        let largest = plain
            .rivals
            .iter()
            .max_by(|a, b| size(&a.policy).total_cmp(&size(&b.policy)))
            .expect("rivals");
        assert!(size(&largest.policy) > size(&plain.policy));
        let tied = with(1.0, noisy, 10);
        assert_eq!(tied.policy, largest.policy);
        assert!((tied.price - largest.price).abs() < 1e-12);
        assert!(target.met(&model_cost(
            &layers(),
            &tied.policy,
            WeightQuantizer::Dorefa
        )));
        let least = tied.least.as_ref().expect("the least-price policy kept");
        assert_eq!(least.policy, plain.policy);
        assert!((least.price - plain.price).abs() < 1e-12);
        assert!(tied.rivals.iter().any(|r| r.policy == plain.policy));
        assert!(tied.rivals.iter().all(|r| r.policy != tied.policy));
        // Asked for no rivals, the rule still weighs them, and returns none.
        let alone = with(1.0, noisy, 0);
        assert_eq!(alone.policy, tied.policy);
        assert!(alone.rivals.is_empty());
    }

    #[test]
    fn rivals_hold_one_layer_a_rung_away_and_re_allocate_the_rest() {
        let lw = lowering(true);
        let (records, searched) = steps(&lw, &seed1());
        let target = Target::Compression(10.0);
        let with = |rivals| {
            run_rivals(
                &lw,
                &records,
                &searched,
                &target,
                Pricing::default(),
                None,
                rivals,
            )
            .unwrap()
            .unwrap()
        };
        let r = with(10);
        assert_eq!(w(&r.policy), [8, 4, 3, 3]);
        let rivals: Vec<(Vec<u32>, f64)> =
            r.rivals.iter().map(|x| (w(&x.policy), x.price)).collect();
        // s1 one rung down (4 → 3, priced 0.0616), and s1 one rung up (4 → 6), which s2's
        // 3 → 2 pays for with fc's rung back; the rungs s2 or fc could move alone either are
        // unpriced (s2 4, fc 2) or lead to that same rival. The stem's 8 → 6 (priced 0.003,
        // the cheapest of all) moves too few bits to be a rival.
        let want = [
            (vec![8, 3, 3, 3], r.price + 0.0616),
            (vec![8, 6, 2, 4], r.price - 0.0377 + 0.2335 - 0.12),
        ];
        assert_eq!(rivals.len(), want.len(), "{rivals:?}");
        for ((got, p), (exp, q)) in rivals.iter().zip(&want) {
            assert_eq!(got, exp);
            assert!((p - q).abs() < 1e-9, "{p} against {q}");
        }
        for x in &r.rivals {
            let cost = model_cost(&layers(), &x.policy, WeightQuantizer::Dorefa);
            assert!(target.met(&cost), "{cost:?}");
        }
        // Asked for one, the cheapest; asked for none, none, and the same choice.
        assert_eq!(with(1).rivals, r.rivals[..1]);
        let none = with(0);
        assert!(none.rivals.is_empty());
        assert_eq!(none.policy, r.policy);
    }

    #[test]
    fn an_untied_layers_neighbours_move_one_arm_one_measured_rung() {
        let choice = |w, a| Choice {
            bits: LayerBits { w, a },
            price: 0.0,
            metric: 0.0,
            rungs: Vec::new(),
        };
        // The measured choices of a layer: weights 8/6/4/3 by activations 8/4/3 (6 unmeasured
        // for activations).
        let mut options = Vec::new();
        for w in [8, 6, 4, 3] {
            for a in [8, 4, 3] {
                options.push(choice(w, a));
            }
        }
        let arm = |kind| Arm { layer: 0, kind };
        let arms = [arm(ArmKind::Weight), arm(ArmKind::Act)];
        let at = |w, a| {
            options
                .iter()
                .position(|c| c.bits == LayerBits { w, a })
                .unwrap()
        };
        let bits = |ks: Vec<usize>| -> Vec<(u32, u32)> {
            ks.iter()
                .map(|&k| (options[k].bits.w, options[k].bits.a))
                .collect()
        };
        assert_eq!(
            bits(neighbours(&options, at(6, 4), &arms)),
            [(8, 4), (4, 4), (6, 8), (6, 3)]
        );
        // At an end of a ladder, one way only.
        assert_eq!(
            bits(neighbours(&options, at(3, 8), &arms)),
            [(4, 8), (3, 4)]
        );
    }

    #[test]
    fn with_the_floor_a_rung_within_the_noise_is_not_free() {
        let lw = lowering(true);
        // The stem's 8 → 6 last measured below the step's loss (−0.0005, standard error 0.001).
        let mut moves = seed1();
        moves[7].1[0] = Some(-0.0005);
        let (records, searched) = steps(&lw, &moves);
        let target = Target::Compression(10.0);
        // Clamped to 0, the rung is free; at equal price the more compressed policy is kept.
        let free = run(&lw, &records, &searched, &target).unwrap().unwrap();
        assert_eq!(w(&free.policy), [6, 4, 3, 3]);
        // Priced at its standard error, it is not taken: 8/4/3/3 meets 10x without it.
        let pricing = Pricing {
            floor: true,
            tempered: false,
            noise_ties: false,
        };
        let floored = run_priced(&lw, &records, &searched, &target, pricing)
            .unwrap()
            .unwrap();
        assert_eq!(w(&floored.policy), [8, 4, 3, 3]);
        // Every rung now costs at least 0.001: s1's 8 → 6 (measured 0.0) and s2's 8 → 6 (0.0002)
        // rise to it. Unfloored, 8/4/3/3 priced as 6/4/3/3 (the stem was free).
        assert!(
            (floored.price - (free.price + 0.001 + 0.0008)).abs() < 1e-9,
            "{} against {}",
            floored.price,
            free.price
        );
    }

    #[test]
    fn tempered_prices_discount_a_rise_that_rescaling_the_logits_undoes() {
        let lw = lowering(true);
        // fc's 4 → 3 raised the plain loss by 0.25, more than s2's 3 → 2 (0.2335), so s2 stays at
        // 2 bits (s1 takes the slack back); but nearly all of fc's rise was the logits' scale:
        // tempered, it rose by 0.05.
        let mut moves = seed1();
        moves[7].1[3] = Some(0.25);
        let (mut records, searched) = steps(&lw, &moves);
        records[7].arms[3].tempered_loss = Some(0.28 + 0.05);
        let target = Target::Compression(10.0);
        let plain = run(&lw, &records, &searched, &target).unwrap().unwrap();
        assert_eq!(w(&plain.policy), [8, 6, 2, 4]);
        let tempered = Pricing {
            floor: false,
            tempered: true,
            noise_ties: false,
        };
        let r = run_priced(&lw, &records, &searched, &target, tempered)
            .unwrap()
            .unwrap();
        assert_eq!(w(&r.policy), [8, 4, 3, 3]);
        // fc 0.0015 + 0.0114 + 0.05, s1 0.0 + 0.0377, s2 0.0002 + 0.0098 + 0.0184.
        assert!((r.price - 0.129).abs() < 1e-9, "{r:?}");
        // A search recorded without tempered losses cannot be priced so: no re-allocation.
        records[2].bandit_tempered_loss = None;
        assert!(
            run_priced(&lw, &records, &searched, &target, tempered)
                .unwrap()
                .is_none()
        );
        assert!(run(&lw, &records, &searched, &target).unwrap().is_some());
    }

    /// Seed 1's search at 11x, and its plain re-allocation (`plain`).
    struct At11x {
        lw: Lowering,
        records: Vec<StepRecord>,
        searched: Policy,
        target: Target,
        plain: Reallocation,
    }

    impl At11x {
        /// The re-allocation with `la`'s prices beside the steps', priced as `pricing` says.
        fn ahead(&self, pricing: Pricing, la: &Lookahead) -> Result<Option<Reallocation>> {
            let (lw, records, target) = (&self.lw, &self.records, &self.target);
            run_rivals(lw, records, &self.searched, target, pricing, Some(la), 0)
        }
    }

    /// [`At11x`]. The search's policy (11.65x) is the only one its prices reach: fc was priced
    /// one rung down (4 -> 3), and 8/3/3/3 (s2's last rung back for s1's 4 -> 3 and fc's) does
    /// not meet it.
    fn seed1_at_11x() -> At11x {
        let lw = lowering(true);
        let (records, searched) = steps(&lw, &seed1());
        assert_eq!(w(&searched), [8, 4, 2, 4]);
        let target = Target::Compression(11.0);
        let plain = run(&lw, &records, &searched, &target).unwrap().unwrap();
        assert_eq!(plain.policy, searched);
        At11x {
            lw,
            records,
            searched,
            target,
            plain,
        }
    }

    /// A look-ahead below `policy` from a bandit loss of 0.3 (tempered 0.28): per arm, each
    /// rung's (bits above it, bits below it, the cumulative rise down to it).
    fn lookahead(policy: &Policy, arms: Vec<Vec<(u32, u32, f64)>>) -> Lookahead {
        let score = |rise: f64| TrialScore {
            top1: 0.9,
            loss: 0.3 + rise,
            loss_se: 0.001,
            tempered_loss: 0.28 + rise,
        };
        Lookahead {
            policy: policy.clone(),
            current: score(0.0),
            arms: arms
                .into_iter()
                .map(|rungs| {
                    rungs
                        .into_iter()
                        .map(|(before, after, rise)| Rung {
                            before,
                            after,
                            trial: Some(score(rise)),
                        })
                        .collect()
                })
                .collect(),
            tops: None,
        }
    }

    #[test]
    fn lookahead_prices_let_a_layer_go_more_than_one_rung_below_the_search() {
        let at = seed1_at_11x();
        let (searched, target, plain) = (&at.searched, &at.target, &at.plain);
        // Priced on the search's weights, fc's 4 -> 3 and 3 -> 2 cost little, and s1's 4 -> 3
        // 0.05 (its last step said 0.0616): s2's last rung (0.2335) is traded for them.
        let la = lookahead(
            searched,
            vec![
                vec![(8, 6, 0.01), (6, 4, 0.05), (4, 3, 0.2), (3, 2, 0.5)],
                vec![(4, 3, 0.05), (3, 2, 0.25)],
                vec![],
                vec![(4, 3, 0.001), (3, 2, 0.003)],
            ],
        );
        let with = |la: &Lookahead| at.ahead(Pricing::default(), la);
        let r = with(&la).unwrap().unwrap();
        assert_eq!(w(&r.policy), [8, 3, 3, 2]);
        let cost = model_cost(&layers(), &r.policy, WeightQuantizer::Dorefa);
        assert!(target.met(&cost), "{cost:?}");
        // fc's rungs are each priced over the one above: 0.001 and 0.002.
        let expected = 0.3125 - 0.2335 + 0.05 + 0.001 + 0.002;
        assert!(
            (r.price - expected).abs() < 1e-9,
            "{} against {expected}",
            r.price
        );
        assert_eq!(r.searched_price, plain.searched_price);
        // A look-ahead below another policy is an error, not a guess.
        let mut elsewhere = la.clone();
        elsewhere.policy.bits[3].w = 6;
        let e = with(&elsewhere).unwrap_err();
        assert!(format!("{e:#}").contains("another policy"), "{e:#}");
        // A rung whose trial was unusable ends that arm's look-ahead: fc cannot pass it.
        let mut broken = la.clone();
        broken.arms[3][1].trial = None;
        let r = with(&broken).unwrap().unwrap();
        assert!(r.policy.bits[3].w >= 3, "{:?}", w(&r.policy));
    }

    /// FP prices around `policy`, from a policy loss of 0.3: per arm, the bandit loss at each
    /// rung of the ladder from the top (8, 6, 4, 3, 2), the arm's own bits at 0.3.
    fn whole(policy: &Policy, losses: [[f64; 5]; 4]) -> Lookahead {
        let ladder = [8, 6, 4, 3, 2];
        let score = |loss: f64| TrialScore {
            top1: 0.9,
            loss,
            loss_se: 0.001,
            tempered_loss: loss - 0.02,
        };
        let la = lookahead(policy, Vec::new());
        Lookahead {
            arms: losses
                .iter()
                .map(|l| {
                    (1..5)
                        .map(|k| Rung {
                            before: ladder[k - 1],
                            after: ladder[k],
                            trial: Some(score(l[k])),
                        })
                        .collect()
                })
                .collect(),
            tops: Some(losses.iter().map(|l| Some(score(l[0]))).collect()),
            ..la
        }
    }

    #[test]
    fn fp_prices_replace_the_competitions_with_every_rung_from_the_top() {
        let at = seed1_at_11x();
        let (searched, target, plain) = (&at.searched, &at.target, &at.plain);
        // On the FP model s2's last two rungs are dear (0.05, 0.12) and fc's cheap.
        let la = whole(
            searched,
            [
                [0.3, 0.31, 0.36, 0.56, 1.06],
                [0.25, 0.26, 0.3, 0.32, 0.40],
                [0.10, 0.11, 0.13, 0.18, 0.3],
                [0.29, 0.292, 0.3, 0.301, 0.303],
            ],
        );
        let with = |la: &Lookahead| at.ahead(Pricing::default(), la);
        let r = with(&la).unwrap().unwrap();
        // s2 goes back up a rung (a refund of 0.12) for s1's 4 -> 3 (0.02) and fc's 4 -> 2.
        assert_eq!(w(&r.policy), [8, 3, 3, 2]);
        assert!(target.met(&model_cost(&layers(), &r.policy, WeightQuantizer::Dorefa)));
        // Every price is the FP model's, the competition's none: the search's policy sums
        // s1 0.05, s2 0.2 and fc 0.01 from the top; the result s1 0.07, s2 0.08, fc 0.013.
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(near(r.searched_price.unwrap(), 0.26), "{r:?}");
        assert!(near(r.price, 0.163), "{r:?}");
        assert_ne!(r.searched_price, plain.searched_price);
        // Tempered, the same rises.
        let tempered = Pricing {
            floor: false,
            tempered: true,
            noise_ties: false,
        };
        let t = at.ahead(tempered, &la).unwrap().unwrap();
        assert_eq!(t.policy, r.policy);
        // With the floor, a rung is never priced below the larger standard error of its two
        // trials: each of fc's rungs costs its trials' 0.004 at least (three of them rose less).
        let floored = Pricing {
            floor: true,
            tempered: false,
            noise_ties: false,
        };
        let mut noisy = la.clone();
        for r in noisy.arms[3].iter_mut() {
            r.trial.as_mut().unwrap().loss_se = 0.004;
        }
        let f = at.ahead(floored, &noisy).unwrap().unwrap();
        assert_eq!(w(&f.policy), [8, 3, 3, 2]);
        // s1 0.01 + 0.04 + 0.02, s2 0.01 + 0.02 + 0.05, fc 0.004 + 0.008 + 0.004 + 0.004.
        assert!(near(f.price, 0.07 + 0.08 + 0.02), "{f:?}");
        // An arm whose top is unusable cannot be priced down from it: s1 stays at 8 bits, and
        // nothing then meets 11x.
        let mut topless = la.clone();
        topless.tops.as_mut().unwrap()[1] = None;
        assert!(with(&topless).unwrap().is_none());
        // Tops for another number of arms are an error, not a guess.
        let mut short = la.clone();
        short.tops.as_mut().unwrap().pop();
        let e = with(&short).unwrap_err();
        assert!(format!("{e:#}").contains("another policy"), "{e:#}");
    }

    #[test]
    fn top_prices_around_the_top_replace_the_competitions_as_the_fp_prices_do() {
        let at = seed1_at_11x();
        let losses = [
            [0.3, 0.31, 0.36, 0.56, 1.06],
            [0.25, 0.26, 0.3, 0.32, 0.40],
            [0.10, 0.11, 0.13, 0.18, 0.3],
            [0.29, 0.292, 0.3, 0.301, 0.303],
        ];
        let around_policy = whole(&at.searched, losses);
        let r = at
            .ahead(Pricing::default(), &around_policy)
            .unwrap()
            .unwrap();
        // The same rungs priced around the top (every arm at 8 bits): the prices are read the
        // same way, whatever policy they were measured around.
        let top = at.lw.start(&at.searched.names);
        assert_ne!(top, at.searched);
        let around_top = whole(&top, losses);
        let t = at.ahead(Pricing::default(), &around_top).unwrap().unwrap();
        assert_eq!(w(&t.policy), [8, 3, 3, 2]);
        assert_eq!((t.policy, t.price), (r.policy, r.price));
        // Only prices from the top may be measured around it: rungs below the top, like the
        // look-ahead's below the search's policy, are of another policy than the search's.
        let below_top = Lookahead {
            tops: None,
            ..around_top
        };
        let e = at.ahead(Pricing::default(), &below_top).unwrap_err();
        assert!(format!("{e:#}").contains("another policy"), "{e:#}");
    }

    #[test]
    fn the_search_policy_stays_at_a_budget_it_meets_best() {
        let lw = lowering(true);
        let (records, searched) = steps(&lw, &seed1()[..6]);
        assert_eq!(w(&searched), [8, 6, 3, 4]);
        let r = run(&lw, &records, &searched, &Target::Compression(8.0))
            .unwrap()
            .unwrap();
        assert_eq!(r.policy, searched);
        assert_eq!(r.price, r.searched_price.unwrap());
    }

    #[test]
    fn a_refused_lowering_is_never_taken_and_records_without_prices_give_none() {
        let lw = lowering(true);
        let mut moves = seed1();
        // fc's 4 → 3 was chosen once and its fine-tuning diverged: its price no longer counts.
        moves.insert(7, (3, moves[7].1.clone(), true));
        let (records, searched) = steps(&lw, &moves);
        let r = run(&lw, &records, &searched, &Target::Compression(10.0))
            .unwrap()
            .unwrap();
        assert_eq!(w(&r.policy), [8, 6, 2, 4], "fc cannot go to 3 bits");
        let mut old = records.clone();
        old[2].bandit_loss = None;
        assert!(
            run(&lw, &old, &searched, &Target::Compression(10.0))
                .unwrap()
                .is_none()
        );
        // Steps that do not lead to the policy given are an error, not a guess.
        let e = run(&lw, &records[..3], &searched, &Target::Compression(10.0)).unwrap_err();
        assert!(format!("{e:#}").contains("do not lead"), "{e:#}");
    }

    #[test]
    fn untied_arms_combine_and_a_bops_target_counts_activations() {
        let lw = lowering(false);
        let names = names();
        let arms = lw.arms(names.len());
        assert_eq!(arms.len(), 7, "four weight arms, three activation arms");
        let act = |l: usize| {
            arms.iter()
                .position(|a| a.layer == l && a.kind == ArmKind::Act)
                .unwrap()
        };
        // Lower s2's weights 8 → 6 → 4, then its activations 8 → 6: each rung at 0.001 except
        // s2's activations at 0.05; fc's activations 8 → 6 priced at 0.001 (every other rung
        // at 0.5).
        let price = |i: usize, v: f64| {
            let mut p = vec![Some(0.5); 7];
            p[i] = Some(v);
            p[act(3)] = Some(0.001);
            p
        };
        let moves = vec![
            (2, price(2, 0.001), false),
            (2, price(2, 0.001), false),
            (act(2), price(act(2), 0.05), false),
        ];
        let (records, searched) = steps(&lw, &moves);
        assert_eq!(searched.bits[2], LayerBits { w: 4, a: 6 });
        let bops = |p: &Policy| model_cost(&layers(), p, WeightQuantizer::Dorefa).bops;
        // The search's BOPs budget is met more cheaply by fc's activations (fc has twice s2's
        // MACs) and one rung of s2's weights: 0.002 against 0.052.
        let mut cheaper = searched.clone();
        cheaper.bits[2] = LayerBits { w: 6, a: 8 };
        cheaper.bits[3].a = 6;
        assert!(bops(&cheaper) <= bops(&searched));
        let r = run(&lw, &records, &searched, &Target::Bops(bops(&searched)))
            .unwrap()
            .unwrap();
        assert_eq!(r.policy, cheaper);
        assert!((r.price - 0.002).abs() < 1e-9, "{}", r.price);
        assert!((r.searched_price.unwrap() - 0.052).abs() < 1e-9);
    }
}
