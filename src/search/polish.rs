//! Budget polish: after the search, give back bits the target does not need.
//!
//! A search moves one rung at a time, so its last step usually overshoots the target (a 12×
//! target met at 13.5×, say). The polish raises single layers one rung while the target stays
//! met, each time the raise that lowers the bandit split's cross-entropy the most per fraction
//! of the model's size it adds, and stops when no raise lowers it. The sensitivities are
//! measured the way the competition measures them (prefix-reusing trials, no training).

use super::target::{Lowering, Target};
use super::trials::{TRIAL_BATCH, score_trials};
use crate::data::{Normalization, Subset};
use crate::model::Model;
use crate::model::cost::model_cost;
use crate::quant::policy::{LayerBits, Policy};
use crate::quant::quantizer::QuantScheme;
use crate::train::calibrate::rescale_steps;
use serde::{Deserialize, Serialize};

/// One raise the polish made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Raise {
    /// Layer name.
    pub layer: String,
    /// Bits before.
    pub before: LayerBits,
    /// Bits after.
    pub after: LayerBits,
    /// Bandit cross-entropy after the raise.
    pub loss: f64,
}

/// Polishes `policy` for `model` (whose LSQ steps are rescaled for every raise it keeps);
/// returns the new policy and the raises, in order.
pub fn polish(
    model: &Model,
    policy: &Policy,
    lowering: &Lowering,
    target: &Target,
    scheme: QuantScheme,
    bandit: &Subset,
    norm: &Normalization,
) -> anyhow::Result<(Policy, Vec<Raise>)> {
    let arms = lowering.arms(policy.bits.len());
    let mut policy = policy.clone();
    let mut raises = Vec::new();
    let size = |p: &Policy| model_cost(&model.layers, p, scheme.weight).size_bits as f64;
    loop {
        let base = size(&policy);
        let raised: Vec<Option<Policy>> = arms
            .iter()
            .map(|&a| {
                lowering
                    .raise(a, &policy)
                    .filter(|p| target.met(&model_cost(&model.layers, p, scheme.weight)))
            })
            .collect();
        if raised.iter().all(Option::is_none) {
            break;
        }
        let contenders: Vec<Option<(usize, &Policy)>> = arms
            .iter()
            .zip(&raised)
            .map(|(a, p)| p.as_ref().map(|p| (a.layer, p)))
            .collect();
        let trials = score_trials(
            model,
            &policy,
            &contenders,
            scheme,
            bandit,
            norm,
            TRIAL_BATCH,
        )?;
        let best = trials
            .arms
            .iter()
            .zip(&raised)
            .enumerate()
            .filter_map(|(i, (t, p))| {
                let (t, p) = (t.as_ref()?, p.as_ref()?);
                let gain = trials.current.loss - t.loss;
                let added = (size(p) - base) / base.max(1.0);
                (gain > 0.0).then_some((i, gain / added.max(1e-9), t.loss))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((i, _, loss)) = best else {
            break;
        };
        let next = raised[i].clone().expect("a scored raise");
        let layer = arms[i].layer;
        let (before, after) = (policy.bits[layer], next.bits[layer]);
        if scheme != QuantScheme::default() {
            rescale_steps(&model.net, layer, before, after);
        }
        raises.push(Raise {
            layer: policy.names[layer].clone(),
            before,
            after,
            loss,
        });
        policy = next;
    }
    Ok((policy, raises))
}
