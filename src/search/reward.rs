//! How the competition turns trial results into the exponential weights' update.
//!
//! The reference (`Reward::reference`) adds `η · top-1` of each trial to a weight that is reset
//! every step. The improved variant (`Reward::improved`) is still an exponentially weighted
//! competition, with four changes, each a setting of its own:
//! - `signal: Loss`: the trial's bandit cross-entropy increase over the current policy, a finer
//!   signal than top-1;
//! - `per_saving`: that increase divided by the fraction of the model's size (or BOPs) the
//!   lowering saves, so a layer holding 0.5% of the bits must cost far less to win than one
//!   holding 60%;
//! - `standardise`: rewards as z-scores across the arms that compete, so that η sets how sharply
//!   the weights discriminate whatever the rewards' scale;
//! - `carry`: log-weights decay by this factor from step to step instead of resetting.

use serde::{Deserialize, Serialize};

/// What a trial is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialSignal {
    /// Bandit top-1 (the reference).
    Top1,
    /// Bandit cross-entropy increase over the current policy.
    Loss,
}

impl crate::names::Named for TrialSignal {
    const ALL: &'static [Self] = &[TrialSignal::Top1, TrialSignal::Loss];
    const WHAT: &'static str = "trial signal";
    fn name(&self) -> &'static str {
        match self {
            TrialSignal::Top1 => "top1",
            TrialSignal::Loss => "loss",
        }
    }
}
crate::from_str_by_name!(TrialSignal);

/// The competition's reward settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reward {
    /// What a trial is judged by.
    pub signal: TrialSignal,
    /// Divide the loss increase by the fraction of the target's metric the lowering saves.
    pub per_saving: bool,
    /// Standardise rewards across competing arms (z-scores) before `exp(η·)`.
    pub standardise: bool,
    /// Factor by which log-weights carry over to the next step (0: reset, the reference).
    pub carry: f64,
}

impl Reward {
    /// The paper's competition.
    pub fn reference() -> Self {
        Reward {
            signal: TrialSignal::Top1,
            per_saving: false,
            standardise: false,
            carry: 0.0,
        }
    }

    /// The improved competition (ccq's default).
    pub fn improved() -> Self {
        Reward {
            signal: TrialSignal::Loss,
            per_saving: true,
            standardise: true,
            carry: 0.5,
        }
    }
}

impl Default for Reward {
    fn default() -> Self {
        Reward::reference()
    }
}

/// A trial's result on the bandit split.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialScore {
    /// Top-1 in [0, 1].
    pub top1: f64,
    /// Mean cross-entropy.
    pub loss: f64,
}

/// Every trial's result, and the current policy's.
#[derive(Clone, Debug, PartialEq)]
pub struct Trials {
    /// The current policy (no lowering).
    pub current: TrialScore,
    /// Per arm; `None` where the arm does not compete or its trial is unusable.
    pub arms: Vec<Option<TrialScore>>,
}

/// Each competing arm's reward (the value `η` multiplies), `None` for the others.
/// `saved[i]`: the fraction of the target's metric that lowering arm `i` saves.
pub fn rewards(r: &Reward, trials: &Trials, saved: &[f64]) -> Vec<Option<f64>> {
    let raw: Vec<Option<f64>> = trials
        .arms
        .iter()
        .zip(saved)
        .map(|(t, &s)| {
            t.map(|t| match r.signal {
                TrialSignal::Top1 => t.top1,
                TrialSignal::Loss => {
                    let increase = t.loss - trials.current.loss;
                    -if r.per_saving {
                        increase / s.max(1e-6)
                    } else {
                        increase
                    }
                }
            })
        })
        .collect();
    if !r.standardise {
        return raw;
    }
    let v: Vec<f64> = raw.iter().flatten().copied().collect();
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    raw.into_iter()
        .map(|x| x.map(|x| if sd > 1e-12 { (x - mean) / sd } else { 0.0 }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trials() -> Trials {
        let t = |top1, loss| Some(TrialScore { top1, loss });
        Trials {
            current: TrialScore {
                top1: 0.9,
                loss: 0.30,
            },
            arms: vec![t(0.89, 0.31), None, t(0.85, 0.40), t(0.90, 0.30)],
        }
    }

    #[test]
    fn reference_reward_is_top1() {
        let r = rewards(&Reward::reference(), &trials(), &[0.1, 0.2, 0.5, 0.01]);
        assert_eq!(r, vec![Some(0.89), None, Some(0.85), Some(0.90)]);
    }

    #[test]
    fn loss_per_saving_and_standardised() {
        let plain = Reward {
            signal: TrialSignal::Loss,
            per_saving: false,
            standardise: false,
            carry: 0.0,
        };
        let saved = [0.1, 0.2, 0.5, 0.01];
        let r = rewards(&plain, &trials(), &saved);
        assert!((r[0].unwrap() + 0.01).abs() < 1e-12 && r[1].is_none());
        // Per saving: arm 2 costs 10x arm 0's loss but saves 5x as much.
        let per = rewards(
            &Reward {
                per_saving: true,
                ..plain
            },
            &trials(),
            &saved,
        );
        assert!((per[0].unwrap() + 0.1).abs() < 1e-9, "{per:?}");
        assert!((per[2].unwrap() + 0.2).abs() < 1e-9, "{per:?}");
        assert!(per[3].unwrap().abs() < 1e-9, "free lowering");
        let z = rewards(&Reward::improved(), &trials(), &saved);
        let v: Vec<f64> = z.iter().flatten().copied().collect();
        let mean = v.iter().sum::<f64>() / 3.0;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 3.0;
        assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-9, "{z:?}");
        assert!(z[3] > z[0] && z[0] > z[2], "order kept: {z:?}");
    }
}
