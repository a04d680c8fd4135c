//! `ccq train`, `ccq qat`, `ccq eval`, `ccq info`.

use super::args::{CommonArgs, DataArgs, named};
use anyhow::{Context, Result, bail};
use ccq::data::{DataSource, Normalization, SplitSpec, Splits, make_batch};
use ccq::model::cost::{cost_table, model_cost};
use ccq::model::{ModelKind, ModelSpec, QuantCtx, build};
use ccq::progress;
use ccq::quant::policy::{LayerBits, Policy};
use ccq::quant::quantizer::{ActQuantizer, QuantScheme, WeightQuantizer};
use ccq::train::calibrate::calibrate;
use ccq::train::checkpoint::{self, Checkpoint, CheckpointMeta};
use ccq::train::fit::{FitPlan, fit};
use ccq::train::{Devices, eval_policy};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

/// `ccq train`: full-precision training.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Architecture.
    #[arg(long, value_parser = named::<ModelKind>(), default_value = "convnet")]
    pub model: ModelKind,
    #[command(flatten)]
    pub data: DataArgs,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Peak learning rate (cosine to 0 over the run).
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Output checkpoint directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue an interrupted run in --out from its last finished epoch.
    #[arg(long)]
    pub resume: bool,
    /// Stop this invocation after N epochs (continue later with --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `ccq qat`: quantization-aware training at a uniform or explicit policy.
#[derive(Args, Debug)]
pub struct QatArgs {
    /// Checkpoint to start from (directory, or its weights file).
    pub checkpoint: PathBuf,
    /// Uniform bits for every layer, `W/A` (e.g. 4/4).
    #[arg(long, conflicts_with = "policy", required_unless_present = "policy")]
    pub bits: Option<String>,
    /// Per-layer policy JSON (`{"layers": {"stem.conv": {"w": 4, "a": 8}, ...}}`).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Peak learning rate (cosine to 0 over the run).
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    #[command(flatten)]
    pub quant: QuantArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Output checkpoint directory.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Quantizer choice.
#[derive(Args, Debug, Clone)]
pub struct QuantArgs {
    /// Weight quantizer.
    #[arg(long, value_parser = named::<WeightQuantizer>(), default_value = "dorefa")]
    pub weight_quant: WeightQuantizer,
    /// Activation quantizer.
    #[arg(long, value_parser = named::<ActQuantizer>(), default_value = "pact")]
    pub act_quant: ActQuantizer,
}

impl QuantArgs {
    /// The scheme.
    pub fn scheme(&self) -> QuantScheme {
        QuantScheme {
            weight: self.weight_quant,
            act: self.act_quant,
        }
    }
}

/// `ccq eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint (directory, or its weights file).
    pub checkpoint: PathBuf,
    /// Write one predicted class per line (test split order) to this file.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `ccq info` (a checkpoint, or a `.ccq` file).
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Checkpoint (directory, or its weights file).
    pub checkpoint: PathBuf,
}

/// Loaded data with its splits.
pub struct Prepared {
    /// The four splits.
    pub splits: Splits,
    /// Where it came from.
    pub source: DataSource,
}

/// Loads `source` and carves `split`.
pub fn prepare(source: DataSource, split: SplitSpec) -> Result<Prepared> {
    let data = source.load()?;
    let splits = split.carve(&data)?;
    progress::println(format!(
        "data: {} ({:?}), {} classes, {}×{}×{}; train {} / val {} / bandit {} / test {}",
        source.dir.display(),
        source.format,
        data.train.classes.len(),
        data.train.channels,
        data.train.height,
        data.train.width,
        splits.train.len(),
        splits.val.len(),
        splits.bandit.len(),
        splits.test.len()
    ));
    Ok(Prepared { splits, source })
}

/// Data for a job on an existing checkpoint: its dataset unless --data is given; checks shapes.
pub fn prepare_for(ckpt: &Checkpoint, data: &DataArgs) -> Result<Prepared> {
    let own = data.data.is_none() && data.format.is_none();
    let source = data.source(Some(&ckpt.meta.data))?;
    let recorded = ckpt.meta.split;
    if !own && data.split() != recorded {
        let show = |s: SplitSpec| {
            format!(
                "--val-size {} --bandit-size {} --split-seed {}",
                s.val, s.bandit, s.seed
            )
        };
        bail!(
            "{}: the model was trained with the split `{}`, but this job asks for `{}`; its validation and bandit images could include images the model trained on. Give the recorded split flags (or leave out --data/--format to use the checkpoint's data)",
            ckpt.dir.display(),
            show(recorded),
            show(data.split())
        );
    }
    let p = prepare(source, recorded)?;
    let d = &p.splits.test.data;
    let s = &ckpt.meta.spec;
    if (d.channels, d.height, d.width) != (s.channels, s.height, s.width) {
        bail!(
            "{}: the model takes {}×{}×{} inputs but the data has {}×{}×{} images",
            ckpt.dir.display(),
            s.channels,
            s.height,
            s.width,
            d.channels,
            d.height,
            d.width
        );
    }
    if d.classes.len() > s.classes {
        bail!(
            "{}: the model has {} classes but the data has {}",
            ckpt.dir.display(),
            s.classes,
            d.classes.len()
        );
    }
    Ok(p)
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// Runs `ccq train`.
pub fn train(a: TrainArgs) -> Result<()> {
    a.common.apply()?;
    let devices = a.common.devices()?;
    let source = a.data.source(None)?;
    let augment = a.data.augment(&source)?;
    let p = prepare(source.clone(), a.data.split())?;
    let d = &p.splits.train.data;
    let spec = ModelSpec {
        kind: a.model,
        channels: d.channels,
        height: d.height,
        width: d.width,
        classes: d.classes.len(),
    };
    let mut model = build(&spec, devices.device)?;
    let norm = Normalization::from_subset(&p.splits.train);
    let mut meta = CheckpointMeta::new(
        &model,
        None,
        QuantScheme::default(),
        norm.clone(),
        source,
        a.data.split(),
    );
    let mut start_epoch = 0;
    let mut momentum = None;
    if a.resume && a.out.join(checkpoint::META).is_file() {
        let ck = checkpoint::load(&a.out, devices.device)?;
        if ck.meta.spec != spec || ck.meta.policy.is_some() {
            bail!(
                "--resume: {} holds a different model or a quantized one",
                a.out.display()
            );
        }
        start_epoch = ck.meta.epochs;
        progress::println(format!(
            "resuming {} after epoch {start_epoch}",
            a.out.display()
        ));
        meta = ck.meta;
        model = ck.model;
        momentum = ck.momentum;
    }
    let policy = Policy::float(&model.layer_names());
    let plan = FitPlan {
        epochs: a.epochs,
        start_epoch,
        lr: a.lr,
        lr_end: 0.0,
        hyper: a.common.hyper(5e-4),
        augment,
        seed: a.common.seed,
        stop_after: a.stop_after,
    };
    progress::println(format!(
        "training {} ({} weights) for {} epochs",
        a.model.name(),
        model.layers.iter().map(|l| l.params).sum::<usize>(),
        a.epochs
    ));
    let start = Instant::now();
    let out = a.out.clone();
    let model = fit(
        model,
        &policy,
        QuantScheme::default(),
        &p.splits,
        &norm,
        &plan,
        momentum,
        &mut |m, mom, rec| meta.record_epoch(&out, m, mom, rec),
    )?;
    if meta.epochs < a.epochs {
        println!(
            "stopped after epoch {} of {}; continue with the same command and --resume ({})",
            meta.epochs,
            a.epochs,
            a.out.display()
        );
        return Ok(());
    }
    let test = eval_policy(
        &model,
        &policy,
        QuantScheme::default(),
        &p.splits.test,
        &norm,
        Some("test"),
    );
    meta.test = Some(test);
    checkpoint::save(&a.out, &model, &meta)?;
    println!(
        "{}: FP32 test top-1 {} top-5 {} after {} epochs ({:.1}s); checkpoint {}",
        a.model.name(),
        pct(test.top1),
        pct(test.top5),
        meta.epochs,
        start.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

/// A few training batches (no augmentation) for calibration.
pub fn calibration_batches(
    p: &Prepared,
    norm: &Normalization,
    devices: &Devices,
    n: usize,
) -> Vec<tch::Tensor> {
    let len = p.splits.train.len();
    (0..n)
        .map(|b| {
            let order: Vec<usize> = (b * 256..((b + 1) * 256).min(len)).collect();
            make_batch(&p.splits.train, &order, norm, None, devices.device).images
        })
        .filter(|t| t.size()[0] > 0)
        .collect()
}

/// Runs `ccq qat`.
pub fn qat(a: QatArgs) -> Result<()> {
    a.common.apply()?;
    let devices = a.common.devices()?;
    let ck = checkpoint::load(&a.checkpoint, devices.device)?;
    let p = prepare_for(&ck, &a.data)?;
    let augment = a.data.augment(&p.source)?;
    let names = ck.model.layer_names();
    let policy = match (&a.bits, &a.policy) {
        (Some(b), _) => Policy::uniform(&names, LayerBits::parse(b)?),
        (None, Some(f)) => Policy::load(f, &names)?,
        (None, None) => bail!("give --bits W/A or --policy FILE"),
    };
    let scheme = a.quant.scheme();
    let norm = ck.meta.normalization.clone();
    let model = ck.model;
    let fp = eval_policy(
        &model,
        &Policy::float(&names),
        scheme,
        &p.splits.val,
        &norm,
        None,
    );
    // A checkpoint already trained with these quantizers keeps its learned clips and steps.
    if ck.meta.policy.is_none() || ck.meta.scheme != scheme {
        calibrate(
            &model.net,
            &policy,
            scheme,
            &calibration_batches(&p, &norm, &devices, 4),
        );
    }
    let before = eval_policy(&model, &policy, scheme, &p.splits.val, &norm, None);
    let cost = model_cost(&model.layers, &policy, scheme.weight);
    progress::println(format!(
        "QAT of {} at {} ({:.2}x compression): val top-1 FP {} -> {} after calibration, before training",
        ck.meta.spec.kind.name(),
        a.bits
            .as_deref()
            .map(|b| format!("W/A {b}"))
            .unwrap_or_else(|| "the policy".into()),
        cost.compression,
        pct(fp.top1),
        pct(before.top1)
    ));
    let mut meta = CheckpointMeta::new(
        &model,
        Some(policy.clone()),
        scheme,
        norm.clone(),
        p.source.clone(),
        ck.meta.split,
    );
    meta.parent = Some(ck.dir.clone());
    let plan = FitPlan {
        epochs: a.epochs,
        start_epoch: 0,
        lr: a.lr,
        lr_end: 0.0,
        hyper: a.common.hyper(1e-4),
        augment,
        seed: a.common.seed,
        stop_after: None,
    };
    let start = Instant::now();
    let out = a.out.clone();
    let model = fit(
        model,
        &policy,
        scheme,
        &p.splits,
        &norm,
        &plan,
        None,
        &mut |m, mom, rec| meta.record_epoch(&out, m, mom, rec),
    )?;
    let test = eval_policy(&model, &policy, scheme, &p.splits.test, &norm, Some("test"));
    meta.test = Some(test);
    checkpoint::save(&a.out, &model, &meta)?;
    print!("{}", cost_table(&model.layers, &cost));
    println!(
        "QAT test top-1 {} (source checkpoint: {}) after {} epochs ({:.1}s); checkpoint {}",
        pct(test.top1),
        ck.meta
            .test
            .map(|t| pct(t.top1))
            .unwrap_or_else(|| "n/a".into()),
        a.epochs,
        start.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

/// Runs `ccq eval`.
pub fn eval(a: EvalArgs) -> Result<()> {
    a.common.apply()?;
    let devices = a.common.devices()?;
    let ck = checkpoint::load(&a.checkpoint, devices.device)?;
    let p = prepare_for(&ck, &a.data)?;
    let policy = ck
        .meta
        .policy
        .clone()
        .unwrap_or_else(|| Policy::float(&ck.meta.layers));
    let start = Instant::now();
    let e = eval_policy(
        &ck.model,
        &policy,
        ck.meta.scheme,
        &p.splits.test,
        &ck.meta.normalization,
        Some("test"),
    );
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}: test top-1 {} top-5 {} loss {:.4} on {} images ({:.0} images/s)",
        ck.dir.display(),
        pct(e.top1),
        pct(e.top5),
        e.loss,
        e.images,
        e.images as f64 / secs.max(1e-9)
    );
    if let Some(path) = &a.predictions {
        let preds = ccq::train::trainer::predict(
            &ck.model.net,
            &QuantCtx::new(ck.meta.scheme, &policy.bits),
            &p.splits.test,
            &ck.meta.normalization,
            500,
        );
        let text: String = preds
            .iter()
            .map(|p| p.map_or("nan\n".to_string(), |c| format!("{c}\n")))
            .collect();
        checkpoint::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}

/// Runs `ccq info`.
pub fn info(a: InfoArgs) -> Result<()> {
    if a.checkpoint.is_file() && a.checkpoint.extension().is_some_and(|e| e == "ccq") {
        return super::deploy::info_ccq(&a.checkpoint);
    }
    let (dir, meta) = checkpoint::load_meta(&a.checkpoint)?;
    let model = build(&meta.spec, tch::Device::Cpu).context("rebuilding the model")?;
    let policy = meta
        .policy
        .clone()
        .unwrap_or_else(|| Policy::float(&meta.layers));
    println!(
        "checkpoint {}: {} on {}×{}×{} inputs, {} classes; {}; data {}",
        dir.display(),
        meta.spec.kind.name(),
        meta.spec.channels,
        meta.spec.height,
        meta.spec.width,
        meta.spec.classes,
        if meta.policy.is_some() {
            format!(
                "quantized ({:?} weights, {:?} activations)",
                meta.scheme.weight, meta.scheme.act
            )
        } else {
            "full precision".into()
        },
        meta.data.dir.display()
    );
    print!(
        "{}",
        cost_table(
            &model.layers,
            &model_cost(&model.layers, &policy, meta.scheme.weight)
        )
    );
    if let Some(v) = meta.val {
        println!("validation top-1 {}", pct(v.top1));
    }
    if let Some(t) = meta.test {
        println!("test top-1 {} top-5 {}", pct(t.top1), pct(t.top5));
    }
    println!("epochs trained: {}", meta.epochs);
    Ok(())
}
