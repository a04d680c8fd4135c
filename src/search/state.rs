//! What a search records: each step's arms and choice, the resumable state, the final policy.

use super::config::SearchConfig;
use super::polish::Raise;
use super::reallocate::Reallocation;
use super::target::ArmKind;
use crate::model::cost::ModelCost;
use crate::quant::policy::{LayerBits, Policy};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    /// Standard error of the trial's cross-entropy increase (per-image differences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_se: Option<f64>,
    /// Bandit cross-entropy of the trial at the softmax temperature that minimises it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tempered_loss: Option<f64>,
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
    /// The same at the softmax temperature that minimises it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandit_tempered_loss: Option<f64>,
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
    /// What the re-allocation changed after the search, if it changed the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reallocation: Option<Reallocation>,
    /// The rungs priced before the re-allocation: below the search's policy on its weights
    /// (with `--lookahead-prices`), every rung around it on the FP model (`--fp-prices`), or
    /// every rung of each layer alone around the top on the FP model (`--top-prices`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookahead: Option<super::lookahead::Lookahead>,
    /// The audition of the re-allocation's policy against its rivals (`--audition`), when it
    /// had rivals to weigh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audition: Option<super::audition::Auditioned>,
    /// The raises the budget polish made after the search.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub polish: Vec<Raise>,
    /// Where the kept final fine-tuning started (`search` or `fp`), once it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_start: Option<String>,
    /// Compression milestones, ascending: the first checkpoint reaching each is kept in
    /// `at-<R>x/`, and a budget-aware search aims at the nearest unmet one. Recorded so that a
    /// resume through any entry point (`ccq quantize --resume` of a comparison's search
    /// included) keeps and aims at the same ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub milestones: Vec<f64>,
}

fn first_version() -> u32 {
    1
}

impl SearchState {
    /// Adds the milestones of `more` not recorded yet, keeping the list ascending.
    pub fn add_milestones(&mut self, more: &[f64]) {
        for &r in more {
            if !self.milestones.contains(&r) {
                self.milestones.push(r);
            }
        }
        self.milestones.sort_by(f64::total_cmp);
    }

    /// The policy the search held after its first `steps` steps (of layers `names`): the start
    /// policy with each step's lowering applied in order, a refused one changing nothing.
    /// It is what a checkpoint kept at that step holds, for a step whose weights were not kept.
    pub fn policy_after(&self, names: &[String], steps: usize) -> Policy {
        let mut policy = self.config.lowering.start(names);
        for s in self
            .steps
            .iter()
            .take(steps)
            .filter(|s| s.refused.is_none())
        {
            if let Some(i) = policy.names.iter().position(|n| *n == s.chosen) {
                policy.bits[i] = s.bits_after;
            }
        }
        policy
    }
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

/// Parses and validates the text of a `state.json`.
pub fn parse_state(text: &str) -> Result<SearchState> {
    let state: SearchState = serde_json::from_str(text).context("corrupt search state")?;
    state.validate().context("invalid search state")?;
    Ok(state)
}
