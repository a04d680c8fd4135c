//! The CCQ flags `ccq quantize` and `ccq compare` share, onto the library's search settings.

use super::args::{DistillArgs, QuantArgs, named};
use super::price_flags::PriceFlags;
use anyhow::Result;
use ccq::pipeline::{SearchSettings, StepSamples, Variant};
use ccq::quant::policy::Ladder;
use ccq::search::bandit::LambdaSchedule;
use ccq::search::config::{FinalFrom, StopRule};
use ccq::search::reward::TrialSignal;
use clap::Args;

/// The CCQ constants, shared by `ccq quantize` and `ccq compare`.
#[derive(Args, Debug, Clone)]
pub struct SearchFlags {
    /// Maximum number of steps T.
    #[arg(long, default_value_t = 30)]
    pub qsteps: usize,
    /// Bit ladder, highest first.
    #[arg(long, default_value = "8,6,4,3,2")]
    pub ladder: String,
    /// A layer lowered to this many bits or fewer goes to sleep.
    #[arg(long, default_value_t = 3)]
    pub floor_bits: u32,
    /// Weights and activations on separate ladders (separate arms) instead of tied.
    #[arg(long)]
    pub untied: bool,
    /// Activation ladder when --untied (default: the weight ladder).
    #[arg(long)]
    pub act_ladder: Option<String>,
    /// Which CCQ: `improved` (ccq's default) or `reference` (the paper's algorithm as published,
    /// for reproduction). The settings below default to the variant's values.
    #[arg(long, value_parser = named::<Variant>(), default_value = "improved")]
    pub variant: Variant,
    /// η of the exponential weights (default: reference 1, improved 2).
    #[arg(long)]
    pub eta: Option<f64>,
    /// What a trial is judged by: `top1` on the bandit split (reference), the cross-entropy
    /// increase over the current policy, `loss` (improved), or its tempered increase.
    #[arg(long, value_parser = named::<TrialSignal>())]
    pub trial_signal: Option<TrialSignal>,
    /// Divide a trial's loss increase by the fraction of the model it saves (improved: true).
    #[arg(long)]
    pub per_saving: Option<bool>,
    /// Standardise rewards across competing arms before exp(η·) (improved: true).
    #[arg(long)]
    pub standardise: Option<bool>,
    /// Log-weights carry over to the next step times this (reference 0: reset; improved 0.5).
    #[arg(long)]
    pub carry: Option<f64>,
    /// Judge each arm by the log of its price, `(max(loss increase, 0) + its standard error) /
    /// fraction saved`, so that an outlier cannot flatten the others and a gain within the
    /// trial's noise counts as that noise (needs the loss signal per saving; improved: true).
    #[arg(long)]
    pub log_price: Option<bool>,
    /// Each trial first re-estimates the BatchNorm statistics its lowering affects (on 1,024
    /// training images), so that damage a recalibration undoes is not priced (off in both
    /// variants: on ResNet-20 it made the search half as long again and its 12× policies worse).
    #[arg(long)]
    pub trial_bn: Option<bool>,
    /// Keep the best fine-tuning epoch's weights rather than the last (improved: true).
    #[arg(long)]
    pub keep_best: Option<bool>,
    /// Re-estimate BatchNorm statistics at the step's policy after each step's fine-tuning epoch,
    /// so the next trials' current policy is scored as they are (improved: true).
    #[arg(long)]
    pub step_bn: Option<bool>,
    /// Once the target is met, raise single layers back while it stays met (improved: true).
    #[arg(long)]
    pub polish: Option<bool>,
    /// Let the polish also trade a rung between two layers (one up, one down) where the pair
    /// keeps the target and the bandit loss falls (default false in both variants).
    #[arg(long)]
    pub polish_swaps: Option<bool>,
    #[command(flatten)]
    pub prices: PriceFlags,
    /// Count only the saving toward the nearest unmet goal, in the reward and the memory prior
    /// (default false in both variants: it measured worse).
    #[arg(long)]
    pub budget_aware: Option<bool>,
    /// Score the competition's and the polish's trials on the first N bandit images only (a
    /// random sample; default all): faster and noisier, for large models on slow hardware
    #[arg(long, value_name = "N")]
    pub trial_images: Option<usize>,
    /// λ on odd steps (default 0).
    #[arg(long)]
    pub lambda_odd: Option<f64>,
    /// λ on even steps is `a·(T−t)/T + b`: this is a (reference 0.6, improved 0).
    #[arg(long)]
    pub lambda_a: Option<f64>,
    /// ... and this is b (reference 0.4, improved 0).
    #[arg(long)]
    pub lambda_b: Option<f64>,
    /// lr_min of the fine-tuning schedule (the reference's --lr).
    #[arg(long, default_value_t = 0.001)]
    pub lr: f64,
    /// lr_max of the cosine phase.
    #[arg(long, default_value_t = 0.005)]
    pub lr_max: f64,
    /// Epochs at lr_min before the cosine.
    #[arg(long, default_value_t = 5)]
    pub ft_const_epochs: usize,
    /// Epochs of the cosine.
    #[arg(long, default_value_t = 10)]
    pub ft_cosine_epochs: usize,
    /// Minimum fine-tuning epochs per step (reference 3, improved 1).
    #[arg(long)]
    pub ft_min_epochs: Option<usize>,
    /// Maximum fine-tuning epochs per step (reference 15; improved: the minimum).
    #[arg(long)]
    pub ft_max_epochs: Option<usize>,
    /// Retries of a diverged fine-tuning (each from the step's start at half the learning rate);
    /// after the last one the lowering is refused and the search goes on without that arm.
    #[arg(long, default_value_t = 2)]
    pub ft_retries: usize,
    /// Testing aid: `STEP:FACTOR` multiplies the learning rate of that step's fine-tuning.
    #[arg(long, hide = true, value_parser = parse_lr_scale)]
    pub debug_lr_scale: Option<(usize, f64)>,
    /// Training images per fine-tuning epoch of a step, or `all` (reference: the whole
    /// training split; improved: 256, a short touch-up between steps).
    #[arg(long)]
    pub ft_samples: Option<StepSamples>,
    /// Stop fine-tuning when val ≥ ratio × the step's best val (reference 0.99).
    #[arg(long, default_value_t = 0.99, conflicts_with = "stop_within")]
    pub stop_ratio: f64,
    /// Instead: stop when val is within this many points of the pre-step val.
    #[arg(long)]
    pub stop_within: Option<f64>,
    /// Epochs of the brief fine-tuning at the top rung before the search.
    #[arg(long, default_value_t = 1)]
    pub init_epochs: usize,
    /// Epochs of a last fine-tuning once the search stops (cosine from --lr-max to 0; 0 = none,
    /// as the reference).
    #[arg(long, default_value_t = 3)]
    pub final_epochs: usize,
    /// Where the last fine-tuning starts: search (the search's weights), fp (the full-precision
    /// model, calibrated and trained at the final policy), best (both, keeping the higher
    /// validation top-1; twice the epochs). Default: fp (improved), search (reference).
    #[arg(long, value_parser = named::<FinalFrom>())]
    pub final_from: Option<FinalFrom>,
    #[command(flatten)]
    pub quant: QuantArgs,
    #[command(flatten)]
    pub distill: DistillArgs,
}

impl SearchFlags {
    /// The settings for a search of the model read from `source` (`None`: one trained here).
    pub fn settings(&self, source: Option<&std::path::Path>) -> Result<SearchSettings> {
        Ok(SearchSettings {
            qsteps: self.qsteps,
            ladder: Ladder::parse(&self.ladder)?,
            floor_bits: self.floor_bits,
            untied: self.untied,
            act_ladder: self.act_ladder.as_deref().map(Ladder::parse).transpose()?,
            variant: self.variant,
            eta: self.eta,
            trial_signal: self.trial_signal,
            per_saving: self.per_saving,
            standardise: self.standardise,
            carry: self.carry,
            log_price: self.log_price,
            trial_bn: self.trial_bn,
            keep_best: self.keep_best,
            step_bn: self.step_bn,
            polish: self.polish,
            polish_swaps: self.polish_swaps,
            reallocate: self.prices.reallocate,
            price_floor: self.prices.price_floor,
            tempered_prices: self.prices.tempered_prices,
            noise_ties: self.prices.noise_ties,
            lookahead_prices: self.prices.lookahead_prices,
            fp_prices: self.prices.fp_prices,
            top_prices: self.prices.top_prices,
            audition: self.prices.audition,
            audition_images: self.prices.audition_images,
            audition_score: self.prices.audition_score,
            budget_aware: self.budget_aware,
            trial_images: self.trial_images,
            lambda: match (self.lambda_odd, self.lambda_a, self.lambda_b) {
                (None, None, None) => None,
                (odd, a, b) => {
                    let base = self.variant.lambda();
                    Some(LambdaSchedule {
                        odd: odd.unwrap_or(base.odd),
                        a: a.unwrap_or(base.a),
                        b: b.unwrap_or(base.b),
                    })
                }
            },
            lr: self.lr,
            lr_max: self.lr_max,
            ft_const_epochs: self.ft_const_epochs,
            ft_cosine_epochs: self.ft_cosine_epochs,
            ft_min_epochs: self.ft_min_epochs,
            ft_max_epochs: self.ft_max_epochs,
            ft_retries: self.ft_retries,
            debug_lr_scale: self.debug_lr_scale,
            ft_samples: self.ft_samples,
            stop: match self.stop_within {
                Some(p) => StopRule::WithinPoints(p),
                None => StopRule::BestRatio(self.stop_ratio),
            },
            init_epochs: self.init_epochs,
            final_epochs: self.final_epochs,
            final_from: self.final_from,
            distill: self.distill.distill(),
            scheme: self.quant.scheme(source),
        })
    }
}

/// Parses `STEP:FACTOR`.
fn parse_lr_scale(s: &str) -> Result<(usize, f64), String> {
    let (a, b) = s.split_once(':').ok_or("expected STEP:FACTOR")?;
    let step = a.parse().map_err(|e| format!("step `{a}`: {e}"))?;
    let f: f64 = b.parse().map_err(|e| format!("factor `{b}`: {e}"))?;
    if !f.is_finite() || f <= 0.0 {
        return Err(format!("factor {f} must be positive and finite"));
    }
    Ok((step, f))
}
