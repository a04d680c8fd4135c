//! The CCQ settings a user chooses, with each variant's defaults, turned into a validated
//! [`SearchConfig`].

use super::session::Session;
use crate::data::Augment;
use crate::error::{Error, Result};
use crate::names::Named;
use crate::quant::policy::Ladder;
use crate::quant::quantizer::QuantScheme;
use crate::search::audition::{Audition, AuditionScore};
use crate::search::bandit::LambdaSchedule;
use crate::search::config::{FinalFrom, Finetune, SearchConfig, StopRule};
use crate::search::reward::{Reward, TrialSignal};
use crate::search::target::{Lowering, Target};
use crate::train::distill::Distill;
use crate::train::schedule::WarmRestart;

/// Training images per fine-tuning epoch of the improved variant's steps: the collaboration
/// between steps is a short touch-up, and the final fine-tuning starts from the FP weights.
pub const IMPROVED_STEP_SAMPLES: usize = 256;

/// Training images each finalist of the audition fine-tunes on: 50 batches of 128. On the
/// Fashion-MNIST ConvNet at 12x, 6,400 images already ranked the two policies that the
/// two-epoch fine-tuning separates by 0.3 points the same way on all five seeds, twice each.
pub const AUDITION_IMAGES: usize = 6400;

/// How many training images a step's fine-tuning epoch sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepSamples {
    /// The whole training split.
    All,
    /// This many images, drawn afresh each epoch.
    Images(usize),
}

impl std::str::FromStr for StepSamples {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "all" {
            return Ok(StepSamples::All);
        }
        s.parse()
            .map(StepSamples::Images)
            .map_err(|_| format!("expected a number of images or `all`, got `{s}`"))
    }
}

/// Which CCQ algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Variant {
    /// ccq's improved competition ([`crate::search::reward`]: log prices per saving, scored
    /// after re-estimating BatchNorm), λ = 0, a short touch-up between steps, the re-allocation
    /// of the measured prices (or the polish) and the final fine-tuning from the FP weights.
    #[default]
    Improved,
    /// The paper's algorithm, as published.
    Reference,
}

impl Named for Variant {
    const ALL: &'static [Self] = &[Variant::Improved, Variant::Reference];
    const WHAT: &'static str = "variant";
    fn name(&self) -> &'static str {
        match self {
            Variant::Improved => "improved",
            Variant::Reference => "reference",
        }
    }
}
crate::from_str_by_name!(Variant);

impl Variant {
    /// The variant's λ schedule: the paper's (0 on odd steps, 0.6·(T−t)/T + 0.4 on even ones),
    /// or, improved, 0 on every step (pure competition, the draw by the measured prices).
    pub fn lambda(&self) -> LambdaSchedule {
        match self {
            Variant::Reference => LambdaSchedule::default(),
            Variant::Improved => LambdaSchedule {
                odd: 0.0,
                a: 0.0,
                b: 0.0,
            },
        }
    }
}

/// The CCQ settings; `None` fields take the variant's default.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchSettings {
    /// Maximum number of steps T.
    pub qsteps: usize,
    /// Bit ladder, highest first.
    pub ladder: Ladder,
    /// A layer lowered to this many bits or fewer goes to sleep.
    pub floor_bits: u32,
    /// Weights and activations on separate ladders (separate arms) instead of tied.
    pub untied: bool,
    /// Activation ladder when untied (default: the weight ladder).
    pub act_ladder: Option<Ladder>,
    /// Which CCQ.
    pub variant: Variant,
    /// η of the exponential weights (reference 1, improved 2).
    pub eta: Option<f64>,
    /// What a trial is judged by (reference top-1, improved loss).
    pub trial_signal: Option<TrialSignal>,
    /// Divide a trial's loss increase by the fraction of the model it saves.
    pub per_saving: Option<bool>,
    /// Standardise rewards across competing arms.
    pub standardise: Option<bool>,
    /// Log-weights carry over to the next step times this (reference 0).
    pub carry: Option<f64>,
    /// Judge arms by their log price (reference off, improved on).
    pub log_price: Option<bool>,
    /// Trials re-estimate the BatchNorm statistics their change affects before they are scored
    /// (off in both variants).
    pub trial_bn: Option<bool>,
    /// Keep the best fine-tuning epoch's weights rather than the last.
    pub keep_best: Option<bool>,
    /// Re-estimate the BatchNorm statistics at the step's policy after each fine-tuning epoch
    /// of a step (reference off, improved on).
    pub step_bn: Option<bool>,
    /// Once the target is met, raise single layers back while it stays met.
    pub polish: Option<bool>,
    /// Let the polish swap a rung between two layers (default off in both variants).
    pub polish_swaps: Option<bool>,
    /// Re-allocate the rungs by the competition's measured prices once the target is met
    /// (reference off, improved on).
    pub reallocate: Option<bool>,
    /// In the re-allocation, price each rung at least at its trial's standard error (reference
    /// off, improved on).
    pub price_floor: Option<bool>,
    /// In the re-allocation, price each rung by its rise in tempered cross-entropy, the damage
    /// that rescaling the logits does not undo (reference off, improved on).
    pub tempered_prices: Option<bool>,
    /// In the re-allocation, take the rival that uses the most of the budget among those priced
    /// within one standard error of the least price (default off in both variants).
    pub noise_ties: Option<bool>,
    /// Before the re-allocation, price every rung below the search's policy on the search's
    /// weights (default off in both variants).
    pub lookahead_prices: Option<bool>,
    /// Before the re-allocation, price every rung around the search's policy on the FP model
    /// calibrated at it, and re-allocate by those prices alone (default off in both variants).
    pub fp_prices: Option<bool>,
    /// Before the re-allocation, price every rung of every layer alone at the top on the FP
    /// model calibrated there, and re-allocate by those prices alone (default off in both
    /// variants).
    pub top_prices: Option<bool>,
    /// Policies the audition weighs after the re-allocation: its own and up to this many less
    /// one of its rivals (default off in both variants; 0 or 1: off).
    pub audition: Option<usize>,
    /// Training images each finalist of the audition fine-tunes on (default
    /// [`AUDITION_IMAGES`]).
    pub audition_images: Option<usize>,
    /// What the audition scores its finalists by (default: tempered loss).
    pub audition_score: Option<AuditionScore>,
    /// Count only the saving that goes toward the nearest unmet goal (default off in both
    /// variants).
    pub budget_aware: Option<bool>,
    /// Score trials on the first this-many bandit images only (default: the whole split, in
    /// both variants).
    pub trial_images: Option<usize>,
    /// λ schedule (default: [`Variant::lambda`]).
    pub lambda: Option<LambdaSchedule>,
    /// lr_min of the fine-tuning schedule.
    pub lr: f64,
    /// lr_max of the cosine phase.
    pub lr_max: f64,
    /// Epochs at lr_min before the cosine.
    pub ft_const_epochs: usize,
    /// Epochs of the cosine.
    pub ft_cosine_epochs: usize,
    /// Minimum fine-tuning epochs per step (reference 3, improved 1).
    pub ft_min_epochs: Option<usize>,
    /// Maximum fine-tuning epochs per step (reference 15; improved: the minimum).
    pub ft_max_epochs: Option<usize>,
    /// Retries of a diverged fine-tuning.
    pub ft_retries: usize,
    /// Testing aid: step and factor multiplying that step's fine-tuning learning rate.
    pub debug_lr_scale: Option<(usize, f64)>,
    /// Training images per fine-tuning epoch of a step (reference: the whole training split;
    /// improved: [`IMPROVED_STEP_SAMPLES`]).
    pub ft_samples: Option<StepSamples>,
    /// When a step's fine-tuning stops.
    pub stop: StopRule,
    /// Epochs of the brief fine-tuning at the top rung before the search.
    pub init_epochs: usize,
    /// Epochs of a last fine-tuning once the search stops (0: none, as the reference).
    pub final_epochs: usize,
    /// Where that fine-tuning starts (reference: the search's weights; improved: the
    /// full-precision model, calibrated at the final policy).
    pub final_from: Option<FinalFrom>,
    /// Distil from the full-precision model in the last fine-tuning (`ccq compare`: in every
    /// method's); `None`: the labels alone.
    pub distill: Option<Distill>,
    /// Quantizers.
    pub scheme: QuantScheme,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            qsteps: 30,
            ladder: Ladder::default(),
            floor_bits: 3,
            untied: false,
            act_ladder: None,
            variant: Variant::Improved,
            eta: None,
            trial_signal: None,
            per_saving: None,
            standardise: None,
            carry: None,
            log_price: None,
            trial_bn: None,
            keep_best: None,
            step_bn: None,
            polish: None,
            polish_swaps: None,
            reallocate: None,
            price_floor: None,
            tempered_prices: None,
            noise_ties: None,
            lookahead_prices: None,
            fp_prices: None,
            top_prices: None,
            audition: None,
            audition_images: None,
            audition_score: None,
            budget_aware: None,
            trial_images: None,
            lambda: None,
            lr: 0.001,
            lr_max: 0.005,
            ft_const_epochs: 5,
            ft_cosine_epochs: 10,
            ft_min_epochs: None,
            ft_max_epochs: None,
            ft_retries: 2,
            debug_lr_scale: None,
            ft_samples: None,
            stop: StopRule::BestRatio(0.99),
            init_epochs: 1,
            final_epochs: 3,
            final_from: None,
            distill: None,
            scheme: QuantScheme::default(),
        }
    }
}

impl SearchSettings {
    /// The search configuration for `target`, validated.
    pub fn config(
        &self,
        target: Option<Target>,
        session: &Session,
        augment: Option<Augment>,
    ) -> Result<SearchConfig> {
        if !(2..=8).contains(&self.floor_bits) {
            return Err(Error::InvalidConfig(
                "--floor-bits must be within 2..8".into(),
            ));
        }
        let improved = self.variant == Variant::Improved;
        let ft_min_epochs = self.ft_min_epochs.unwrap_or(if improved { 1 } else { 3 });
        let ft_max_epochs =
            self.ft_max_epochs
                .unwrap_or(if improved { ft_min_epochs.max(1) } else { 15 });
        if ft_min_epochs > ft_max_epochs || ft_max_epochs == 0 {
            return Err(Error::InvalidConfig(
                "need 1 ≤ --ft-max-epochs and --ft-min-epochs ≤ --ft-max-epochs".into(),
            ));
        }
        if self.polish_swaps == Some(true)
            && !self.polish.unwrap_or(self.variant == Variant::Improved)
        {
            return Err(Error::InvalidConfig(
                "--polish-swaps true needs the polish (--polish true; the reference variant has none)"
                    .into(),
            ));
        }
        for (flag, on, others) in [
            (
                "--fp-prices",
                self.fp_prices,
                &[("--lookahead-prices", self.lookahead_prices)][..],
            ),
            (
                "--top-prices",
                self.top_prices,
                &[
                    ("--lookahead-prices", self.lookahead_prices),
                    ("--fp-prices", self.fp_prices),
                ][..],
            ),
        ] {
            if on != Some(true) {
                continue;
            }
            if !self.reallocate.unwrap_or(self.variant == Variant::Improved) {
                return Err(Error::InvalidConfig(format!(
                    "{flag} true prices the re-allocation, so it needs it (--reallocate true; the reference variant has none)"
                )));
            }
            if let Some((other, _)) = others.iter().find(|(_, o)| *o == Some(true)) {
                return Err(Error::InvalidConfig(format!(
                    "{flag} true replaces every price, so {other} true would add nothing: set one of them"
                )));
            }
        }
        let reallocates = self.reallocate.unwrap_or(improved);
        if self.noise_ties == Some(true) && !reallocates {
            return Err(Error::InvalidConfig(
                "--noise-ties true chooses between the re-allocation's policies, so it needs it (--reallocate true; the reference variant has none)"
                    .into(),
            ));
        }
        // Off unless asked for, in both variants: measured level on Fashion-MNIST and not
        // better on ResNet-20 (see the README).
        let finalists = self.audition.unwrap_or(0);
        if finalists > 1 && !reallocates {
            return Err(Error::InvalidConfig(
                "--audition weighs the re-allocation's policy against its rivals, so it needs it (--reallocate true; the reference variant has none), or --audition 0"
                    .into(),
            ));
        }
        for (set, flag) in [
            (self.audition_images.is_some(), "--audition-images"),
            (self.audition_score.is_some(), "--audition-score"),
        ] {
            if set && finalists <= 1 {
                return Err(Error::InvalidConfig(format!(
                    "{flag} sets the audition, which is off: add --audition N (N ≥ 2)"
                )));
            }
        }
        if self.audition_images == Some(0) {
            return Err(Error::InvalidConfig(
                "--audition-images must be at least 1 (to turn the audition off: --audition 0)"
                    .into(),
            ));
        }
        let audition = (finalists > 1).then(|| Audition {
            finalists,
            images: self.audition_images.unwrap_or(AUDITION_IMAGES),
            score: self.audition_score.unwrap_or(AuditionScore::Tempered),
        });
        if let Some(d) = &self.distill {
            d.validate().map_err(Error::InvalidConfig)?;
        }
        let base = match self.variant {
            Variant::Reference => Reward::reference(),
            Variant::Improved => Reward::improved(),
        };
        let reward = Reward {
            signal: self.trial_signal.unwrap_or(base.signal),
            per_saving: self.per_saving.unwrap_or(base.per_saving),
            standardise: self.standardise.unwrap_or(base.standardise),
            carry: self.carry.unwrap_or(base.carry),
            log_price: self.log_price.unwrap_or(base.log_price),
            trial_bn: self.trial_bn.unwrap_or(base.trial_bn),
        };
        let cfg = SearchConfig {
            lowering: Lowering {
                ladder: self.ladder.clone(),
                act_ladder: self
                    .act_ladder
                    .clone()
                    .unwrap_or_else(|| self.ladder.clone()),
                tied: !self.untied,
                floor: self.floor_bits,
            },
            eta: self.eta.unwrap_or(if improved { 2.0 } else { 1.0 }),
            reward,
            polish: self.polish.unwrap_or(improved),
            polish_swaps: self.polish_swaps.unwrap_or(false),
            reallocate: self.reallocate.unwrap_or(improved),
            price_floor: self.price_floor.unwrap_or(improved),
            tempered_prices: self.tempered_prices.unwrap_or(improved),
            noise_ties: self.noise_ties.unwrap_or(false),
            lookahead_prices: self.lookahead_prices.unwrap_or(false),
            fp_prices: self.fp_prices.unwrap_or(false),
            top_prices: self.top_prices.unwrap_or(false),
            audition,
            // Off in both variants: measured worse in `ccq compare` (see the README).
            budget_aware: self.budget_aware.unwrap_or(false),
            trial_images: self.trial_images,
            lambda: self.lambda.unwrap_or(self.variant.lambda()),
            qsteps: self.qsteps,
            target,
            finetune: Finetune {
                schedule: WarmRestart {
                    lr_min: self.lr,
                    lr_max: self.lr_max,
                    const_epochs: self.ft_const_epochs,
                    cosine_epochs: self.ft_cosine_epochs,
                },
                min_epochs: ft_min_epochs,
                max_epochs: ft_max_epochs,
                stop: self.stop,
                epoch_samples: match self.ft_samples {
                    Some(StepSamples::All) => None,
                    Some(StepSamples::Images(n)) => Some(n),
                    None if improved => Some(IMPROVED_STEP_SAMPLES),
                    None => None,
                },
                retries: self.ft_retries,
                debug_lr_scale: self.debug_lr_scale,
                keep_best: self.keep_best.unwrap_or(improved),
                step_bn: self.step_bn.unwrap_or(improved),
            },
            init_epochs: self.init_epochs,
            final_epochs: self.final_epochs,
            final_from: self.final_from.unwrap_or(if improved {
                FinalFrom::Fp
            } else {
                FinalFrom::Search
            }),
            distill: self.distill,
            hyper: session.hyper(1e-4),
            scheme: self.scheme,
            seed: session.seed,
            augment,
        };
        cfg.validate()
            .map_err(|e| Error::InvalidConfig(format!("{e:#}")))?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reward(s: &SearchSettings) -> Result<Reward> {
        s.config(None, &Session::default(), None).map(|c| c.reward)
    }

    /// Asserts that `r` is an invalid-config error naming `flag`.
    fn refused<T: std::fmt::Debug>(r: Result<T>, flag: &str) {
        match r {
            Err(Error::InvalidConfig(m)) => assert!(m.contains(flag), "{m}"),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn log_price_is_on_in_the_improved_variant_and_refused_where_it_cannot_apply() {
        assert!(reward(&SearchSettings::default()).unwrap().log_price);
        let reference = SearchSettings {
            variant: Variant::Reference,
            ..SearchSettings::default()
        };
        assert!(!reward(&reference).unwrap().log_price);
        let off = SearchSettings {
            log_price: Some(false),
            ..SearchSettings::default()
        };
        assert!(!reward(&off).unwrap().log_price);
        let on = SearchSettings {
            log_price: Some(true),
            ..SearchSettings::default()
        };
        // Asked for with a signal it cannot price, it is an error that says why.
        for bad in [
            SearchSettings {
                trial_signal: Some(TrialSignal::Top1),
                ..on.clone()
            },
            SearchSettings {
                per_saving: Some(false),
                ..on.clone()
            },
            SearchSettings {
                variant: Variant::Reference,
                ..on.clone()
            },
        ] {
            refused(reward(&bad), "--log-price");
        }
    }

    #[test]
    fn polish_swaps_are_off_by_default_and_need_the_polish() {
        let cfg = |s: &SearchSettings| s.config(None, &Session::default(), None);
        let default = cfg(&SearchSettings::default()).unwrap();
        assert!(default.polish && !default.polish_swaps);
        let on = SearchSettings {
            polish_swaps: Some(true),
            ..SearchSettings::default()
        };
        assert!(cfg(&on).unwrap().polish_swaps);
        for bad in [
            SearchSettings {
                polish: Some(false),
                ..on.clone()
            },
            SearchSettings {
                variant: Variant::Reference,
                ..on.clone()
            },
        ] {
            refused(cfg(&bad), "--polish-swaps");
        }
    }

    #[test]
    fn trial_batchnorm_is_off_in_both_variants_and_can_be_switched_on() {
        for variant in [Variant::Improved, Variant::Reference] {
            let settings = SearchSettings {
                variant,
                ..SearchSettings::default()
            };
            assert!(!reward(&settings).unwrap().trial_bn, "{variant:?}");
            let switched = SearchSettings {
                trial_bn: Some(true),
                ..settings
            };
            assert!(reward(&switched).unwrap().trial_bn, "{variant:?}");
        }
    }

    #[test]
    fn step_batchnorm_is_on_in_the_improved_variant_and_can_be_switched() {
        let cfg = |s: &SearchSettings| s.config(None, &Session::default(), None).unwrap();
        for (variant, default) in [(Variant::Improved, true), (Variant::Reference, false)] {
            let settings = SearchSettings {
                variant,
                ..SearchSettings::default()
            };
            assert_eq!(cfg(&settings).finetune.step_bn, default);
            let switched = SearchSettings {
                step_bn: Some(!default),
                ..settings
            };
            assert_eq!(cfg(&switched).finetune.step_bn, !default);
        }
    }

    #[test]
    fn reallocation_its_price_floor_and_tempered_prices_are_on_in_the_improved_variant_and_can_be_switched()
     {
        let cfg = |s: &SearchSettings| s.config(None, &Session::default(), None).unwrap();
        for (variant, default) in [(Variant::Improved, true), (Variant::Reference, false)] {
            let settings = SearchSettings {
                variant,
                ..SearchSettings::default()
            };
            let c = cfg(&settings);
            let on = |c: &SearchConfig| (c.reallocate, c.price_floor, c.tempered_prices);
            assert_eq!(on(&c), (default, default, default));
            let switched = SearchSettings {
                reallocate: Some(!default),
                price_floor: Some(!default),
                tempered_prices: Some(!default),
                ..settings
            };
            let c = cfg(&switched);
            assert_eq!(on(&c), (!default, !default, !default));
        }
    }

    #[test]
    fn noise_ties_are_off_in_both_variants_and_need_the_reallocation() {
        let cfg = |s: &SearchSettings| s.config(None, &Session::default(), None);
        let reference = SearchSettings {
            variant: Variant::Reference,
            ..SearchSettings::default()
        };
        for s in [SearchSettings::default(), reference.clone()] {
            let c = cfg(&s).unwrap();
            assert!(!c.noise_ties && !c.pricing().noise_ties);
        }
        let on = SearchSettings {
            noise_ties: Some(true),
            ..SearchSettings::default()
        };
        let c = cfg(&on).unwrap();
        assert!(c.noise_ties && c.pricing().noise_ties);
        for without in [
            SearchSettings {
                reallocate: Some(false),
                ..on.clone()
            },
            SearchSettings {
                noise_ties: Some(true),
                ..reference
            },
        ] {
            let e = cfg(&without).unwrap_err().to_string();
            assert!(
                e.contains("--noise-ties true") && e.contains("--reallocate true"),
                "{e}"
            );
        }
        // Off is not written, so that settings recorded before it still read the same.
        let off = serde_json::to_value(cfg(&SearchSettings::default()).unwrap()).unwrap();
        assert!(off.get("noise_ties").is_none());
        assert_eq!(serde_json::to_value(&c).unwrap()["noise_ties"], true);
    }

    #[test]
    fn the_audition_is_off_in_both_variants_and_needs_the_reallocation() {
        let cfg = |s: &SearchSettings| s.config(None, &Session::default(), None);
        assert_eq!(cfg(&SearchSettings::default()).unwrap().audition, None);
        let reference = SearchSettings {
            variant: Variant::Reference,
            ..SearchSettings::default()
        };
        assert_eq!(cfg(&reference).unwrap().audition, None);
        let on = SearchSettings {
            audition: Some(3),
            ..SearchSettings::default()
        };
        assert_eq!(
            cfg(&on).unwrap().audition,
            Some(Audition {
                finalists: 3,
                images: AUDITION_IMAGES,
                score: AuditionScore::Tempered,
            })
        );
        // Its size, images and score can be set; 0 or 1 finalists (nothing to weigh) is off.
        let set = SearchSettings {
            audition: Some(5),
            audition_images: Some(1000),
            audition_score: Some(AuditionScore::Loss),
            ..SearchSettings::default()
        };
        assert_eq!(
            cfg(&set).unwrap().audition,
            Some(Audition {
                finalists: 5,
                images: 1000,
                score: AuditionScore::Loss,
            })
        );
        for off in [0, 1] {
            let s = SearchSettings {
                audition: Some(off),
                ..SearchSettings::default()
            };
            assert_eq!(cfg(&s).unwrap().audition, None);
        }
        // It weighs the re-allocation's policy, so it needs the re-allocation; and no images
        // is refused rather than read as off.
        for bad in [
            SearchSettings {
                reallocate: Some(false),
                audition: Some(3),
                ..SearchSettings::default()
            },
            SearchSettings {
                audition: Some(3),
                ..reference.clone()
            },
        ] {
            refused(cfg(&bad), "--audition");
        }
        let none = SearchSettings {
            audition_images: Some(0),
            ..on.clone()
        };
        refused(cfg(&none), "--audition-images");
        // Its images without the audition would be ignored: refused, naming the flag.
        let alone = SearchSettings {
            audition_images: Some(1000),
            ..SearchSettings::default()
        };
        refused(cfg(&alone), "--audition N");
        let alone = SearchSettings {
            audition_score: Some(AuditionScore::Loss),
            ..SearchSettings::default()
        };
        refused(cfg(&alone), "--audition-score sets the audition");
    }

    #[test]
    fn lookahead_prices_are_off_in_both_variants_and_can_be_switched_on() {
        let cfg = |s: &SearchSettings| s.config(None, &Session::default(), None).unwrap();
        for variant in [Variant::Improved, Variant::Reference] {
            let settings = SearchSettings {
                variant,
                ..SearchSettings::default()
            };
            assert!(!cfg(&settings).lookahead_prices);
            let on = SearchSettings {
                lookahead_prices: Some(true),
                ..settings
            };
            assert!(cfg(&on).lookahead_prices);
        }
    }

    #[test]
    fn fp_prices_are_off_in_both_variants_and_need_the_reallocation_alone() {
        let cfg = |s: &SearchSettings| s.config(None, &Session::default(), None);
        let on = SearchSettings {
            fp_prices: Some(true),
            ..SearchSettings::default()
        };
        assert!(!cfg(&SearchSettings::default()).unwrap().fp_prices);
        assert!(cfg(&on).unwrap().fp_prices);
        let reference = SearchSettings {
            variant: Variant::Reference,
            ..SearchSettings::default()
        };
        assert!(!cfg(&reference).unwrap().fp_prices);
        // The reference has no re-allocation to price; with one switched on it may.
        let refused = |s: SearchSettings, flag: &str| match cfg(&s) {
            Err(Error::InvalidConfig(m)) => assert!(m.contains(flag), "{m}"),
            other => panic!("{other:?}"),
        };
        let bare = SearchSettings {
            fp_prices: Some(true),
            ..reference.clone()
        };
        refused(bare.clone(), "--reallocate");
        let reallocating = SearchSettings {
            reallocate: Some(true),
            ..bare
        };
        assert!(cfg(&reallocating).unwrap().fp_prices);
        refused(
            SearchSettings {
                reallocate: Some(false),
                ..on.clone()
            },
            "--reallocate",
        );
        // Both price sets at once: one replaces the other, so it is refused.
        refused(
            SearchSettings {
                lookahead_prices: Some(true),
                ..on
            },
            "--lookahead-prices",
        );
    }

    #[test]
    fn top_prices_are_off_in_both_variants_and_need_the_reallocation_alone() {
        let cfg = |s: &SearchSettings| s.config(None, &Session::default(), None);
        let on = SearchSettings {
            top_prices: Some(true),
            ..SearchSettings::default()
        };
        let c = cfg(&on).unwrap();
        assert!(c.top_prices && !c.fp_prices && !c.lookahead_prices);
        for variant in [Variant::Improved, Variant::Reference] {
            let settings = SearchSettings {
                variant,
                ..SearchSettings::default()
            };
            assert!(!cfg(&settings).unwrap().top_prices);
        }
        let refused = |s: SearchSettings, flag: &str| match cfg(&s) {
            Err(Error::InvalidConfig(m)) => {
                assert!(m.contains("--top-prices") && m.contains(flag), "{m}")
            }
            other => panic!("{other:?}"),
        };
        // The reference has no re-allocation to price; with one switched on it may.
        let reference = SearchSettings {
            variant: Variant::Reference,
            ..on.clone()
        };
        refused(reference.clone(), "--reallocate");
        let reallocating = SearchSettings {
            reallocate: Some(true),
            ..reference
        };
        assert!(cfg(&reallocating).unwrap().top_prices);
        // Either other price set beside it would be replaced, so it is refused.
        for (flag, other) in [
            (
                "--lookahead-prices",
                SearchSettings {
                    lookahead_prices: Some(true),
                    ..on.clone()
                },
            ),
            (
                "--fp-prices",
                SearchSettings {
                    fp_prices: Some(true),
                    ..on.clone()
                },
            ),
        ] {
            refused(other, flag);
        }
    }

    #[test]
    fn trials_are_scored_on_the_first_trial_images_of_the_bandit_split() {
        use crate::data::{Dataset, Subset};
        use std::sync::Arc;
        let data = Arc::new(Dataset::in_memory(
            vec![0; 10],
            vec![0; 10],
            [1, 1, 1],
            vec!["c".into()],
        ));
        let bandit = Subset {
            data,
            idx: vec![9, 3, 7, 1, 5],
        };
        let cfg = |s: &SearchSettings| s.config(None, &Session::default(), None);
        for variant in [Variant::Improved, Variant::Reference] {
            let settings = SearchSettings {
                variant,
                ..SearchSettings::default()
            };
            let c = cfg(&settings).unwrap();
            assert_eq!(c.trial_images, None);
            assert_eq!(c.trial_split(&bandit).idx, bandit.idx);
            let three = SearchSettings {
                trial_images: Some(3),
                ..settings.clone()
            };
            assert_eq!(cfg(&three).unwrap().trial_split(&bandit).idx, [9, 3, 7]);
            let more = SearchSettings {
                trial_images: Some(50),
                ..settings.clone()
            };
            assert_eq!(cfg(&more).unwrap().trial_split(&bandit).idx, bandit.idx);
            let none = SearchSettings {
                trial_images: Some(0),
                ..settings
            };
            let e = cfg(&none).unwrap_err().to_string();
            assert!(e.contains("--trial-images must be at least 1"), "{e}");
        }
    }

    #[test]
    fn each_variant_has_its_own_collaboration_lambda_and_final_start() {
        let cfg = |s: &SearchSettings| s.config(None, &Session::default(), None);
        let improved = cfg(&SearchSettings::default()).unwrap();
        assert_eq!(
            improved.lambda,
            LambdaSchedule {
                odd: 0.0,
                a: 0.0,
                b: 0.0
            }
        );
        let ft = &improved.finetune;
        assert_eq!(
            (ft.min_epochs, ft.max_epochs, ft.epoch_samples),
            (1, 1, Some(IMPROVED_STEP_SAMPLES))
        );
        assert_eq!(improved.final_from, FinalFrom::Fp);
        let reference = cfg(&SearchSettings {
            variant: Variant::Reference,
            ..SearchSettings::default()
        })
        .unwrap();
        assert_eq!(reference.lambda, LambdaSchedule::default());
        let ft = &reference.finetune;
        assert_eq!(
            (ft.min_epochs, ft.max_epochs, ft.epoch_samples),
            (3, 15, None)
        );
        assert_eq!(reference.final_from, FinalFrom::Search);
        // Given, they hold in either variant: the whole split, and a minimum that lifts the
        // improved variant's maximum with it.
        let given = cfg(&SearchSettings {
            ft_samples: Some(StepSamples::All),
            ft_min_epochs: Some(3),
            ..SearchSettings::default()
        })
        .unwrap();
        let ft = &given.finetune;
        assert_eq!(
            (ft.min_epochs, ft.max_epochs, ft.epoch_samples),
            (3, 3, None)
        );
        refused(
            cfg(&SearchSettings {
                ft_min_epochs: Some(4),
                ft_max_epochs: Some(2),
                ..SearchSettings::default()
            }),
            "--ft-min-epochs",
        );
        assert_eq!("all".parse(), Ok(StepSamples::All));
        assert_eq!("2000".parse(), Ok(StepSamples::Images(2000)));
        assert!(
            "lots"
                .parse::<StepSamples>()
                .unwrap_err()
                .contains("`lots`")
        );
    }
}
