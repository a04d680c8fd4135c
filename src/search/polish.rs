//! Budget polish: after the search, give back bits the target does not need.
//!
//! A search moves one rung at a time, so its last step usually overshoots the target (a 12×
//! target met at 13.5×, say). The polish raises single layers one rung while the target stays
//! met, each time the raise that lowers the bandit split's cross-entropy the most per fraction
//! of the model's size it adds, and stops when no raise lowers it. The sensitivities are
//! measured the way the competition measures them (prefix-reusing trials, no training).
//!
//! With swaps, a move may also raise one layer and lower another one rung each (re-allocating
//! a rung between layers), where the raise alone would break the target and the pair keeps it:
//! a search that lowered the wrong one of two layers can trade back, which single raises cannot
//! do once the slack is gone. Swaps are ranked with the raises, by the loss they remove per size
//! they add; one that frees bytes ranks first. Pairs are drawn from the [`SWAP_CANDIDATES`] most
//! helpful of those raises and as many least harmful lowerings, so a polish step costs at most
//! two trials per arm plus `SWAP_CANDIDATES²`.

use super::target::{Arm, Lowering, Target};
use super::trials::{TRIAL_BATCH, score_trials};
use crate::data::{Normalization, Subset};
use crate::model::Model;
use crate::model::cost::model_cost;
use crate::quant::policy::{LayerBits, Policy};
use crate::quant::quantizer::QuantScheme;
use crate::train::calibrate::rescale_steps;
use serde::{Deserialize, Serialize};

/// Raises and lowerings paired into swaps at each polish step (each side).
pub const SWAP_CANDIDATES: usize = 4;

/// Smallest bandit-loss decrease a polish move must make (nats): below it, two evaluations of
/// one policy may differ by rounding alone.
const MIN_GAIN: f64 = 1e-6;

/// One move the polish made: a raise, with the layer lowered in exchange when it was a swap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Raise {
    /// Layer name.
    pub layer: String,
    /// Bits before.
    pub before: LayerBits,
    /// Bits after.
    pub after: LayerBits,
    /// Bandit cross-entropy after the move.
    pub loss: f64,
    /// The layer lowered one rung in exchange (a swap), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lowered: Option<Lowered>,
}

/// The lowering half of a swap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lowered {
    /// Layer name.
    pub layer: String,
    /// Bits before.
    pub before: LayerBits,
    /// Bits after.
    pub after: LayerBits,
}

/// A candidate move: the raised arm, the lowered arm (for a swap) and the resulting policy.
struct Move {
    raise: Arm,
    lower: Option<Arm>,
    policy: Policy,
}

/// Polishes `policy` for `model` (whose LSQ steps are rescaled for every move it keeps), with
/// swaps when `swaps`; returns the new policy and the moves, in order.
#[allow(clippy::too_many_arguments)]
pub fn polish(
    model: &Model,
    policy: &Policy,
    lowering: &Lowering,
    target: &Target,
    swaps: bool,
    scheme: QuantScheme,
    bandit: &Subset,
    norm: &Normalization,
) -> anyhow::Result<(Policy, Vec<Raise>)> {
    let arms = lowering.arms(policy.bits.len());
    let mut policy = policy.clone();
    let mut raises = Vec::new();
    let size = |p: &Policy| model_cost(&model.layers, p, scheme.weight).size_bits as f64;
    let meets = |p: &Policy| target.met(&model_cost(&model.layers, p, scheme.weight));
    // Each trial's bandit loss (None where its logits were not finite).
    let score = |current: &Policy, trials: Vec<(usize, &Policy)>| {
        let contenders: Vec<Option<(usize, &Policy)>> = trials.into_iter().map(Some).collect();
        score_trials(
            model,
            current,
            &contenders,
            scheme,
            bandit,
            norm,
            TRIAL_BATCH,
            &[],
        )
    };
    // Each kept move lowers the loss measured on the same weights, so no policy comes back;
    // the cap only guards against rounding.
    for _ in 0..4 * arms.len().max(1) {
        let base = size(&policy);
        let ups: Vec<Move> = arms
            .iter()
            .filter_map(|&a| {
                let p = lowering.raise(a, &policy)?;
                // Without swaps, only raises that keep the target need scoring.
                (swaps || meets(&p)).then_some(Move {
                    raise: a,
                    lower: None,
                    policy: p,
                })
            })
            .collect();
        if ups.is_empty() {
            break;
        }
        // Lowerings are scored only where some raise needs one.
        let downs: Vec<(Arm, Policy)> = if ups.iter().any(|m| !meets(&m.policy)) {
            arms.iter()
                .filter_map(|&a| Some((a, lowering.lower(a, &policy)?)))
                .collect()
        } else {
            Vec::new()
        };
        // The raises and the lowerings in one pass over the bandit split.
        let trials = score(
            &policy,
            ups.iter()
                .map(|m| (m.raise.layer, &m.policy))
                .chain(downs.iter().map(|(a, p)| (a.layer, p)))
                .collect(),
        )?;
        let current = trials.current.loss;
        let (up_scores, down_scores) = trials.arms.split_at(ups.len());
        let mut moves: Vec<(Move, f64)> = ups
            .into_iter()
            .zip(up_scores)
            .filter_map(|(m, t)| Some((m, t.as_ref()?.loss)))
            .collect();
        if !downs.is_empty() {
            // A swap is for a raise that breaks the target alone: one that keeps it is a
            // candidate by itself, and a lowering beside it would only add a trial's noise.
            let mut best_ups: Vec<&(Move, f64)> =
                moves.iter().filter(|(m, _)| !meets(&m.policy)).collect();
            best_ups.sort_by(|a, b| a.1.total_cmp(&b.1));
            let mut best_downs: Vec<(Arm, f64)> = downs
                .iter()
                .zip(down_scores)
                .filter_map(|((a, _), t)| Some((*a, t.as_ref()?.loss)))
                .collect();
            best_downs.sort_by(|a, b| a.1.total_cmp(&b.1));
            let pairs: Vec<Move> = best_ups
                .iter()
                .take(SWAP_CANDIDATES)
                .flat_map(|(up, _)| {
                    best_downs
                        .iter()
                        .take(SWAP_CANDIDATES)
                        .filter(|(d, _)| d.layer != up.raise.layer)
                        .filter_map(|(d, _)| {
                            let p = lowering.lower(*d, &up.policy)?;
                            meets(&p).then_some(Move {
                                raise: up.raise,
                                lower: Some(*d),
                                policy: p,
                            })
                        })
                })
                .collect();
            if !pairs.is_empty() {
                let scored = score(
                    &policy,
                    pairs.iter().map(|m| (m.raise.layer, &m.policy)).collect(),
                )?;
                moves.extend(
                    pairs
                        .into_iter()
                        .zip(&scored.arms)
                        .filter_map(|(m, t)| Some((m, t.as_ref()?.loss))),
                );
            }
        }
        // Raises that break the target were scored only to rank the swaps.
        moves.retain(|(m, _)| m.lower.is_some() || meets(&m.policy));
        let best = moves
            .into_iter()
            .filter(|(_, loss)| current - loss > MIN_GAIN)
            .map(|(m, loss)| {
                let added = (size(&m.policy) - base) / base.max(1.0);
                let rank = (current - loss) / added.max(1e-9);
                (m, loss, rank)
            })
            .max_by(|a, b| a.2.total_cmp(&b.2));
        let Some((m, loss, _)) = best else {
            break;
        };
        let layer = m.raise.layer;
        let (before, after) = (policy.bits[layer], m.policy.bits[layer]);
        if scheme != QuantScheme::default() {
            rescale_steps(&model.net, layer, before, after);
        }
        let lowered = m.lower.map(|d| {
            let (b, a) = (policy.bits[d.layer], m.policy.bits[d.layer]);
            if scheme != QuantScheme::default() {
                rescale_steps(&model.net, d.layer, b, a);
            }
            Lowered {
                layer: policy.names[d.layer].clone(),
                before: b,
                after: a,
            }
        });
        raises.push(Raise {
            layer: policy.names[layer].clone(),
            before,
            after,
            loss,
            lowered,
        });
        policy = m.policy;
    }
    Ok((policy, raises))
}
