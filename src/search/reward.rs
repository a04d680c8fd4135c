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
//! - `carry`: log-weights decay by this factor from step to step instead of resetting;
//! - `log_price`: the arm's price, `(max(increase, 0) + se) / saving` with `se` the standard
//!   error of the increase on the bandit split, judged on a log scale. Prices span orders of
//!   magnitude (a 0.01% layer that breaks the network next to a 36% layer that costs nothing),
//!   and on a linear scale one such outlier flattens every other arm's z-score to the same
//!   value; and an increase within the trial's noise counts as that noise, so a small layer's
//!   lucky draw divided by its tiny saving does not outbid a large layer's real saving.

use serde::{Deserialize, Serialize};

/// What a trial is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialSignal {
    /// Bandit top-1 (the reference).
    Top1,
    /// Bandit cross-entropy increase over the current policy.
    Loss,
    /// Increase in tempered bandit cross-entropy (each policy's at the softmax temperature
    /// that minimises it): the damage that rescaling the logits does not undo.
    Tempered,
}

impl crate::names::Named for TrialSignal {
    const ALL: &'static [Self] = &[TrialSignal::Top1, TrialSignal::Loss, TrialSignal::Tempered];
    const WHAT: &'static str = "trial signal";
    fn name(&self) -> &'static str {
        match self {
            TrialSignal::Top1 => "top1",
            TrialSignal::Loss => "loss",
            TrialSignal::Tempered => "tempered",
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
    /// Reward `−ln((max(increase, 0) + se) / saving)` (needs a loss signal, per saving).
    #[serde(default)]
    pub log_price: bool,
    /// Each trial re-estimates the BatchNorm statistics its change affects before it is scored
    /// ([`super::trials::score_trials`]).
    #[serde(default)]
    pub trial_bn: bool,
}

impl Reward {
    /// The paper's competition.
    pub fn reference() -> Self {
        Reward {
            signal: TrialSignal::Top1,
            per_saving: false,
            standardise: false,
            carry: 0.0,
            log_price: false,
            trial_bn: false,
        }
    }

    /// The improved competition (ccq's default).
    pub fn improved() -> Self {
        Reward {
            signal: TrialSignal::Loss,
            per_saving: true,
            standardise: true,
            carry: 0.5,
            log_price: true,
            trial_bn: false,
        }
    }

    /// Why these settings cannot be used together, if they cannot.
    pub fn conflict(&self) -> Option<&'static str> {
        (self.log_price && (self.signal == TrialSignal::Top1 || !self.per_saving))
            .then_some("--log-price needs --trial-signal loss or tempered and --per-saving true")
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
    /// Standard error of `loss` minus the current policy's, from the per-image differences
    /// (0 for the current policy itself).
    pub loss_se: f64,
    /// Mean cross-entropy at the softmax temperature that minimises it
    /// ([`super::trials::temperatures`]): the damage that rescaling the logits cannot undo.
    pub tempered_loss: f64,
}

/// Every trial's result, and the current policy's.
#[derive(Clone, Debug, PartialEq)]
pub struct Trials {
    /// The current policy (no lowering).
    pub current: TrialScore,
    /// Per arm; `None` where the arm does not compete or its trial is unusable.
    pub arms: Vec<Option<TrialScore>>,
}

/// The smallest standard error a log price assumes (a trial identical to the current policy on
/// every image has none, and its price would be 0).
const MIN_SE: f64 = 1e-6;

/// A trial's rise in the loss `signal` names over the current policy's (the tempered one, or
/// the plain cross-entropy). The standard error stays the plain rise's.
fn rise(signal: TrialSignal, t: &TrialScore, current: &TrialScore) -> f64 {
    match signal {
        TrialSignal::Tempered => t.tempered_loss - current.tempered_loss,
        _ => t.loss - current.loss,
    }
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
                _ if r.log_price => {
                    let increase = rise(r.signal, &t, &trials.current).max(0.0);
                    -((increase + t.loss_se.max(MIN_SE)) / s.max(1e-6)).ln()
                }
                _ => {
                    let increase = rise(r.signal, &t, &trials.current);
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
        let t = |top1, loss| {
            Some(TrialScore {
                top1,
                loss,
                loss_se: 0.0,
                tempered_loss: loss,
            })
        };
        Trials {
            current: TrialScore {
                top1: 0.9,
                loss: 0.30,
                loss_se: 0.0,
                tempered_loss: 0.30,
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
            log_price: false,
            trial_bn: false,
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
        let linear = Reward {
            log_price: false,
            ..Reward::improved()
        };
        let z = rewards(&linear, &trials(), &saved);
        let v: Vec<f64> = z.iter().flatten().copied().collect();
        let mean = v.iter().sum::<f64>() / 3.0;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 3.0;
        assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-9, "{z:?}");
        assert!(z[3] > z[0] && z[0] > z[2], "order kept: {z:?}");
    }

    /// Trials as MobileNetV2's first step had them: one tiny layer breaks the network, small
    /// layers improve the loss within its noise, and the largest layer costs a little.
    fn outlier_trials() -> (Trials, Vec<f64>) {
        let t = |loss, loss_se| {
            Some(TrialScore {
                top1: 0.0,
                loss,
                loss_se,
                tempered_loss: loss,
            })
        };
        let trials = Trials {
            current: TrialScore {
                top1: 0.0,
                loss: 0.9686,
                loss_se: 0.0,
                tempered_loss: 0.9686,
            },
            arms: vec![
                t(3.1137, 0.05),  // 0.008% of the model, breaks it
                t(0.9638, 0.002), // 0.09%, a lucky draw
                t(0.9612, 0.003), // 0.19%, a lucky draw
                t(0.9698, 0.003), // 7.9%, costs a little
                t(0.9890, 0.004), // 7.9%, costs more
            ],
        };
        (trials, vec![0.00008, 0.0009, 0.0019, 0.079, 0.079])
    }

    #[test]
    fn log_price_ranks_savings_past_outliers_and_noise() {
        let (trials, saved) = outlier_trials();
        let priced = Reward::improved();
        assert!(priced.log_price, "the improved variant's default");
        let linear = Reward {
            log_price: false,
            ..priced
        };
        let z = rewards(&linear, &trials, &saved);
        // On a linear scale the outlier flattens the rest to within 0.01 of each other, and the
        // lucky small layers lead.
        let rest: Vec<f64> = z[1..].iter().flatten().copied().collect();
        let spread = rest.iter().cloned().fold(f64::MIN, f64::max)
            - rest.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread < 0.01, "{z:?}");
        assert!(z[1] > z[3], "{z:?}");
        let z = rewards(&priced, &trials, &saved);
        let z: Vec<f64> = z.into_iter().flatten().collect();
        // The largest layer that costs least leads; the small layers' gains within the noise
        // count as the noise; the breaking layer is last; the spread is meaningful.
        assert!(z[3] > z[4] && z[4] > z[2] && z[2] > z[0], "{z:?}");
        assert!(z[3] - z[1] > 0.5, "{z:?}");
        // Raw values are log prices: layer 3's is ln((0.0012 + 0.003) / 0.079).
        let raw = rewards(
            &Reward {
                standardise: false,
                ..priced
            },
            &trials,
            &saved,
        );
        let want = -((0.9698f64 - 0.9686 + 0.003) / 0.079).ln();
        assert!((raw[3].unwrap() - want).abs() < 1e-9, "{raw:?}");
    }

    #[test]
    fn the_tempered_signal_prices_the_rise_in_tempered_loss() {
        // Arm 0 mostly rescales the logits: a large plain rise, a small tempered one. Arm 1
        // scrambles the features: the same plain rise, and the tempered loss rises as much.
        let score = |loss, tempered_loss| TrialScore {
            top1: 0.0,
            loss,
            loss_se: 0.01,
            tempered_loss,
        };
        let trials = Trials {
            current: score(0.30, 0.28),
            arms: vec![Some(score(0.50, 0.30)), Some(score(0.50, 0.48))],
        };
        let saved = [0.1, 0.1];
        let raw = |signal| {
            let r = Reward {
                signal,
                standardise: false,
                ..Reward::improved()
            };
            assert_eq!(r.conflict(), None);
            rewards(&r, &trials, &saved)
        };
        let price = |rise: f64| Some(-((rise + 0.01) / 0.1f64).ln());
        let plain = raw(TrialSignal::Loss);
        assert_eq!(plain, vec![price(0.20), price(0.20)]);
        let tempered = raw(TrialSignal::Tempered);
        assert!(
            (tempered[0].unwrap() - price(0.02).unwrap()).abs() < 1e-12,
            "{tempered:?}"
        );
        assert!(
            (tempered[1].unwrap() - price(0.20).unwrap()).abs() < 1e-12,
            "{tempered:?}"
        );
        assert!(
            tempered[0] > tempered[1],
            "the rescaling is the cheaper lowering"
        );
    }

    #[test]
    fn log_price_needs_the_loss_signal_per_saving() {
        let priced = Reward::improved();
        assert_eq!(priced.conflict(), None);
        let top1 = Reward {
            signal: TrialSignal::Top1,
            ..priced
        };
        assert!(top1.conflict().is_some());
        let flat = Reward {
            per_saving: false,
            ..priced
        };
        assert!(flat.conflict().is_some());
        assert_eq!(Reward::reference().conflict(), None);
    }
}
