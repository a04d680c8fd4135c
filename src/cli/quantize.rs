//! `ccq quantize`: the CCQ search, end to end.

use super::args::{CommonArgs, DataArgs, named};
use super::jobs::{QuantArgs, TrainArgs, calibration_batches, prepare_for, train};
use anyhow::{Result, bail};
use ccq::data::Normalization;
use ccq::model::ModelKind;
use ccq::model::cost::cost_table;
use ccq::progress;
use ccq::quant::policy::Ladder;
use ccq::search::bandit::LambdaSchedule;
use ccq::search::ccq::{self as search, Finetune, SearchConfig, SearchEnv, StopRule};
use ccq::search::reward::{Reward, TrialSignal};
use ccq::search::target::{Lowering, Target, check_reachable};
use ccq::train::checkpoint;
use ccq::train::schedule::WarmRestart;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

/// Which CCQ algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// ccq's improved competition (see `ccq::search::reward`) and best-epoch collaboration.
    Improved,
    /// The paper's algorithm, as published.
    Reference,
}

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
    #[arg(long, value_enum, default_value = "improved")]
    pub variant: Variant,
    /// η of the exponential weights (default: reference 1, improved 2).
    #[arg(long)]
    pub eta: Option<f64>,
    /// What a trial is judged by: `top1` on the bandit split (reference) or the cross-entropy
    /// increase over the current policy, `loss` (improved).
    #[arg(long)]
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
    /// Keep the best fine-tuning epoch's weights rather than the last (improved: true).
    #[arg(long)]
    pub keep_best: Option<bool>,
    /// Once the target is met, raise single layers back while it stays met (improved: true).
    #[arg(long)]
    pub polish: Option<bool>,
    /// Count only the saving that goes toward the nearest unmet goal, in the reward and the
    /// memory prior, so that overshooting the target earns nothing (improved: true).
    #[arg(long)]
    pub budget_aware: Option<bool>,
    /// λ on odd steps.
    #[arg(long, default_value_t = 0.0)]
    pub lambda_odd: f64,
    /// λ on even steps is `a·(T−t)/T + b`: this is a.
    #[arg(long, default_value_t = 0.6)]
    pub lambda_a: f64,
    /// ... and this is b.
    #[arg(long, default_value_t = 0.4)]
    pub lambda_b: f64,
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
    /// Minimum fine-tuning epochs per step.
    #[arg(long, default_value_t = 3)]
    pub ft_min_epochs: usize,
    /// Maximum fine-tuning epochs per step.
    #[arg(long, default_value_t = 15)]
    pub ft_max_epochs: usize,
    /// Retries of a diverged fine-tuning (each from the step's start at half the learning rate);
    /// after the last one the lowering is refused and the search goes on without that arm.
    #[arg(long, default_value_t = 2)]
    pub ft_retries: usize,
    /// Testing aid: `STEP:FACTOR` multiplies the learning rate of that step's fine-tuning.
    #[arg(long, hide = true, value_parser = parse_lr_scale)]
    pub debug_lr_scale: Option<(usize, f64)>,
    /// Training images per fine-tuning epoch (default: the whole training split).
    #[arg(long)]
    pub ft_samples: Option<usize>,
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
    #[command(flatten)]
    pub quant: QuantArgs,
}

/// `ccq quantize` arguments.
#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Full-precision checkpoint to quantize (default: train --model on the data first, into RUN_DIR/fp).
    pub checkpoint: Option<PathBuf>,
    /// Architecture to train when no checkpoint is given.
    #[arg(long, value_parser = named::<ModelKind>(), default_value = "convnet")]
    pub model: ModelKind,
    /// Epochs of that full-precision training.
    #[arg(long, default_value_t = 10)]
    pub fp_epochs: usize,
    /// Peak learning rate of that full-precision training.
    #[arg(long, default_value_t = 0.05)]
    pub fp_lr: f64,
    #[command(flatten)]
    pub data: DataArgs,
    /// Stop when FP32/quantized weight size reaches this ratio.
    #[arg(long, group = "target")]
    pub target_compression: Option<f64>,
    /// Stop when quantized weights (scales included) fit in this many bytes.
    #[arg(long, group = "target")]
    pub target_size: Option<u64>,
    /// Stop when the average weight bits reach this.
    #[arg(long, group = "target")]
    pub target_avg_bits: Option<f64>,
    /// Stop when BOPs per image reach this.
    #[arg(long, group = "target")]
    pub target_bops: Option<u64>,
    #[command(flatten)]
    pub search: SearchFlags,
    /// Run directory.
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory (its saved settings are used).
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Stop this invocation after N steps (resume later with --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl QuantizeArgs {
    /// The requested target, if any.
    pub fn target(&self) -> Result<Option<Target>> {
        let t = if let Some(r) = self.target_compression {
            if r <= 1.0 {
                bail!("--target-compression must be above 1");
            }
            Some(Target::Compression(r))
        } else if let Some(b) = self.target_size {
            Some(Target::SizeBytes(b))
        } else if let Some(b) = self.target_avg_bits {
            if !(b > 0.0 && b <= 32.0) {
                bail!("--target-avg-bits must be in (0, 32]");
            }
            Some(Target::AvgBits(b))
        } else {
            self.target_bops.map(Target::Bops)
        };
        Ok(t)
    }
}

impl SearchFlags {
    /// The search settings for `target` and `common` flags.
    pub fn config(
        &self,
        target: Option<Target>,
        common: &CommonArgs,
        augment: Option<ccq::data::Augment>,
    ) -> Result<SearchConfig> {
        let ladder = Ladder::parse(&self.ladder)?;
        let act_ladder = match &self.act_ladder {
            Some(s) => Ladder::parse(s)?,
            None => ladder.clone(),
        };
        if !(2..=8).contains(&self.floor_bits) {
            bail!("--floor-bits must be within 2..8");
        }
        if self.ft_min_epochs > self.ft_max_epochs || self.ft_max_epochs == 0 {
            bail!("need 1 ≤ --ft-max-epochs and --ft-min-epochs ≤ --ft-max-epochs");
        }
        let stop = match self.stop_within {
            Some(p) => StopRule::WithinPoints(p),
            None => StopRule::BestRatio(self.stop_ratio),
        };
        let base = match self.variant {
            Variant::Reference => Reward::reference(),
            Variant::Improved => Reward::improved(),
        };
        let improved = self.variant == Variant::Improved;
        let reward = Reward {
            signal: self.trial_signal.unwrap_or(base.signal),
            per_saving: self.per_saving.unwrap_or(base.per_saving),
            standardise: self.standardise.unwrap_or(base.standardise),
            carry: self.carry.unwrap_or(base.carry),
        };
        let cfg = SearchConfig {
            lowering: Lowering {
                ladder,
                act_ladder,
                tied: !self.untied,
                floor: self.floor_bits,
            },
            eta: self.eta.unwrap_or(if improved { 2.0 } else { 1.0 }),
            reward,
            polish: self.polish.unwrap_or(improved),
            budget_aware: self.budget_aware.unwrap_or(improved),
            lambda: LambdaSchedule {
                odd: self.lambda_odd,
                a: self.lambda_a,
                b: self.lambda_b,
            },
            qsteps: self.qsteps,
            target,
            finetune: Finetune {
                schedule: WarmRestart {
                    lr_min: self.lr,
                    lr_max: self.lr_max,
                    const_epochs: self.ft_const_epochs,
                    cosine_epochs: self.ft_cosine_epochs,
                },
                min_epochs: self.ft_min_epochs,
                max_epochs: self.ft_max_epochs,
                stop,
                epoch_samples: self.ft_samples,
                retries: self.ft_retries,
                debug_lr_scale: self.debug_lr_scale,
                keep_best: self.keep_best.unwrap_or(improved),
            },
            init_epochs: self.init_epochs,
            final_epochs: self.final_epochs,
            hyper: common.hyper(1e-4),
            scheme: self.quant.scheme(),
            seed: common.seed,
            augment,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Runs `ccq quantize`.
pub fn quantize(a: QuantizeArgs) -> Result<()> {
    a.common.apply()?;
    let devices = a.common.devices()?;
    let start = Instant::now();
    let (run, state, ck) = if let Some(run) = &a.resume {
        let state = search::load_state(run)?;
        let ck = checkpoint::load(&run.join(&state.checkpoint), devices.device)?;
        progress::println(format!(
            "resuming {} after step {}",
            run.display(),
            state.step
        ));
        (run.clone(), Some(state), ck)
    } else {
        let run = a.out.clone().expect("clap requires --out without --resume");
        if run.join(search::STATE).is_file() {
            bail!(
                "{} already holds a search; continue it with --resume {0}, or choose another --out",
                run.display()
            );
        }
        let fp = match &a.checkpoint {
            Some(c) => c.clone(),
            None => {
                let fp = run.join("fp");
                progress::println(format!(
                    "no checkpoint given: training {} for {} epochs into {}",
                    a.model.name(),
                    a.fp_epochs,
                    fp.display()
                ));
                train(TrainArgs {
                    model: a.model,
                    data: a.data.clone(),
                    epochs: a.fp_epochs,
                    lr: a.fp_lr,
                    out: fp.clone(),
                    resume: true,
                    stop_after: None,
                    common: CommonArgs {
                        threads: None,
                        ..a.common.clone()
                    },
                })?;
                fp
            }
        };
        let ck = checkpoint::load(&fp, devices.device)?;
        if ck.meta.policy.is_some() {
            bail!(
                "{}: CCQ starts from a full-precision checkpoint, this one is already quantized",
                ck.dir.display()
            );
        }
        (run, None, ck)
    };
    let p = prepare_for(&ck, &a.data)?;
    let norm: Normalization = ck.meta.normalization.clone();
    let meta = ck.meta.derived_from(&ck.dir);
    let env = SearchEnv {
        splits: &p.splits,
        norm: &norm,
        meta,
        stop_after: a.stop_after,
        keep: Vec::new(),
    };
    let (model, state) = match state {
        Some(s) => (ck.model, s),
        None => {
            let cfg = a
                .search
                .config(a.target()?, &a.common, a.data.augment(&p.source)?)?;
            if let Some(t) = &cfg.target {
                check_reachable(t, &ck.model.layers, &cfg.lowering, cfg.scheme.weight)?;
            }
            let calib = calibration_batches(&p, &norm, &devices, 4);
            search::init(&run, ck.model, cfg, ck.dir.clone(), &env, &calib)?
        }
    };
    let (model, state) = search::run(&run, model, state, &env)?;
    if state.finished.is_none() {
        println!(
            "stopped after step {} as asked; continue with: ccq quantize --resume {}",
            state.step,
            run.display()
        );
        return Ok(());
    }
    let report = search::finish(&run, &model, &state, &env)?;
    print!("{}", cost_table(&model.layers, &report.cost));
    println!(
        "CCQ finished ({}) after {} steps: val top-1 {:.2}% (FP {:.2}%), test top-1 {:.2}%, compression {:.2}x, {} B of weights; {:.0}s this invocation, {:.0}s of search in total; run {}",
        report.finished,
        report.steps,
        100.0 * report.val,
        100.0 * report.fp_val,
        100.0 * report.test,
        report.cost.compression,
        report.cost.size_bytes(),
        start.elapsed().as_secs_f64(),
        state.seconds,
        run.display()
    );
    Ok(())
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
