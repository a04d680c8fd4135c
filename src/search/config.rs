//! A search's settings: the competition's, the collaboration's, and the target.

use super::bandit::LambdaSchedule;
use super::reward::Reward;
use super::target::{Lowering, Target};
use crate::data::{Augment, Subset};
use crate::quant::quantizer::QuantScheme;
use crate::train::Hyper;
use crate::train::schedule::WarmRestart;
use serde::{Deserialize, Serialize};

/// When a step's collaborative fine-tuning stops (after at least `min_epochs`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopRule {
    /// Validation top-1 ≥ ratio × the best validation top-1 seen in this step (reference: 0.99).
    BestRatio(f64),
    /// Validation top-1 within this many points of the accuracy before the step.
    WithinPoints(f64),
}

/// Where the last fine-tuning after the search starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalFrom {
    /// The search's own weights, fine-tuned further (the collaboration's result; the
    /// reference).
    #[default]
    Search,
    /// The full-precision model the search started from, calibrated for the final policy and
    /// trained at it: the search then only chooses the policy. Measured better where the
    /// search's steps left the weights worse than training at the final policy directly.
    Fp,
    /// Both, keeping the one with the higher validation top-1 (twice the epochs).
    Best,
}

impl crate::names::Named for FinalFrom {
    const ALL: &'static [Self] = &[FinalFrom::Search, FinalFrom::Fp, FinalFrom::Best];
    const WHAT: &'static str = "final fine-tuning start";
    fn name(&self) -> &'static str {
        match self {
            FinalFrom::Search => "search",
            FinalFrom::Fp => "fp",
            FinalFrom::Best => "best",
        }
    }
}
crate::from_str_by_name!(FinalFrom);

impl FinalFrom {
    /// The kept result among `(start, result, validation top-1)` candidates, in the order tried
    /// (the search's weights first): the highest validation top-1, the first on a tie; a NaN
    /// never wins over a number. `None` for no candidates.
    pub fn keep<T>(candidates: Vec<(&'static str, T, f64)>) -> Option<(&'static str, T, f64)> {
        candidates.into_iter().reduce(|best, c| {
            if c.2 > best.2 || (best.2.is_nan() && !c.2.is_nan()) {
                c
            } else {
                best
            }
        })
    }
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
    /// After each fine-tuning epoch, before validation, re-estimate every BatchNorm's running
    /// statistics at the step's policy on [`super::trials::TRIAL_BN_BATCHES`] batches of
    /// training images. Training normalises with each batch's own statistics, so the running
    /// ones (momentum 0.1) otherwise lag the lowered weights, and validation and the next
    /// step's trials are scored with them.
    #[serde(default)]
    pub step_bn: bool,
}

fn default_retries() -> usize {
    2
}

impl SearchConfig {
    /// The images the trials are scored on: the first [`SearchConfig::trial_images`] of
    /// `bandit` (a random sample of it: the split is carved from a seeded permutation), or all
    /// of it.
    pub fn trial_split(&self, bandit: &Subset) -> Subset {
        match self.trial_images {
            Some(n) => bandit.take(n),
            None => bandit.clone(),
        }
    }

    /// How the re-allocation prices rungs and breaks ties within the noise.
    pub fn pricing(&self) -> super::reallocate::Pricing {
        super::reallocate::Pricing {
            floor: self.price_floor,
            tempered: self.tempered_prices,
            noise_ties: self.noise_ties,
        }
    }
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
    /// Let the polish also swap a rung between two layers ([`super::polish`]).
    #[serde(default)]
    pub polish_swaps: bool,
    /// Once the target is met, re-allocate the rungs by the prices the competition measured
    /// ([`super::reallocate`]); the polish runs only where that keeps the search's policy.
    #[serde(default)]
    pub reallocate: bool,
    /// In the re-allocation, price each rung at least at its trial's standard error, so that a
    /// rise within the noise is not free.
    #[serde(default)]
    pub price_floor: bool,
    /// In the re-allocation, price each rung by the rise in tempered cross-entropy (the least
    /// over softmax temperatures), which a change of the logits' scale does not move.
    #[serde(default)]
    pub tempered_prices: bool,
    /// In the re-allocation, take the rival that uses the most of the budget among those priced
    /// within one standard error of the least price ([`super::reallocate::Pricing::noise_ties`]).
    /// Off is not written, so that settings recorded before it still match.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub noise_ties: bool,
    /// Before the re-allocation, price every rung below the search's policy on its weights
    /// ([`super::lookahead`]), so that a layer may go more than one rung below where the search
    /// left it.
    #[serde(default)]
    pub lookahead_prices: bool,
    /// Before the re-allocation, price every rung of every arm, from its ladder's top to the
    /// floor, around the search's policy on the FP model calibrated at it (where the final
    /// fine-tuning from FP starts; [`super::lookahead`]), and re-allocate by those prices alone.
    #[serde(default)]
    pub fp_prices: bool,
    /// Before the re-allocation, price every rung of every arm, from its ladder's top to the
    /// floor, each arm alone with the others at the top, on the FP model calibrated at the top
    /// (the search's start) with its BatchNorm statistics kept as calibrated
    /// ([`super::lookahead::Reach::Top`]), and re-allocate by those prices alone.
    #[serde(default)]
    pub top_prices: bool,
    /// After the re-allocation, audition its policy against its cheapest rivals: each
    /// fine-tuned briefly from the FP model and scored on the bandit split
    /// ([`super::audition`]); `None`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audition: Option<super::audition::Audition>,
    /// Count only the saving that goes toward the nearest unmet goal (reward and memory
    /// prior), so that near the target an arm that meets it with little overshoot wins.
    #[serde(default)]
    pub budget_aware: bool,
    /// Score the competition's trials, and the polish's, on the first this-many images of the
    /// bandit split only (None: all of it); a faster, noisier signal for large models.
    #[serde(default)]
    pub trial_images: Option<usize>,
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
    /// Where that last fine-tuning starts.
    #[serde(default)]
    pub final_from: FinalFrom,
    /// Distil from the full-precision model in that last fine-tuning (`ccq compare`: in every
    /// method's fine-tuning); `None`: the labels alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<crate::train::distill::Distill>,
    /// Optimiser.
    pub hyper: Hyper,
    /// Quantizers.
    pub scheme: QuantScheme,
    /// Seed of sampling and shuffling.
    pub seed: u64,
    /// Augmentation during fine-tuning.
    pub augment: Option<Augment>,
}

#[cfg(test)]
mod tests {
    use super::FinalFrom;

    #[test]
    fn the_kept_start_is_the_best_on_validation_and_the_first_on_a_tie() {
        let keep = |v: &[(&'static str, f64)]| {
            FinalFrom::keep(v.iter().map(|&(s, x)| (s, (), x)).collect()).map(|k| k.0)
        };
        assert_eq!(keep(&[("search", 0.91), ("fp", 0.92)]), Some("fp"));
        assert_eq!(keep(&[("search", 0.92), ("fp", 0.91)]), Some("search"));
        assert_eq!(keep(&[("search", 0.92), ("fp", 0.92)]), Some("search"));
        assert_eq!(keep(&[("search", f64::NAN), ("fp", 0.5)]), Some("fp"));
        assert_eq!(keep(&[]), None);
    }
}
