//! `ccq train`, `ccq qat`, `ccq eval`, `ccq info`: flags onto the library's jobs, results
//! printed.

use super::args::{CommonArgs, DataArgs, DistillArgs, QuantArgs, named};
use super::progress::Console;
use anyhow::Result;
use ccq::model::ModelKind;
use ccq::model::cost::cost_table;
use ccq::pipeline::{self, Bits, EvalConfig, QatConfig, TrainConfig};
use ccq::quant::policy::LayerBits;
use clap::Args;
use std::path::PathBuf;

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
    /// Checkpoint to start from (directory, or its weights file), or an ONNX model (`.onnx`).
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
    pub distill: DistillArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Output checkpoint directory.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `ccq eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint (directory, or its weights file), or an ONNX model (`.onnx`).
    pub checkpoint: PathBuf,
    /// Write one predicted class per line (test split order) to this file.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Write the logits (little-endian f32, [images, classes] row-major) to this file.
    #[arg(long)]
    pub logits: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// A fraction as a percentage with two decimals.
pub fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// Runs `ccq train`.
pub fn train(a: TrainArgs) -> Result<()> {
    let console = Console::new(a.common.quiet);
    let cfg = TrainConfig {
        model: a.model,
        data: a.data.config()?,
        epochs: a.epochs,
        lr: a.lr,
        out: a.out,
        resume: a.resume,
        stop_after: a.stop_after,
        session: a.common.session(),
    };
    let t = pipeline::train(&cfg, &console)?;
    match t.test {
        None => println!(
            "stopped after epoch {} of {}; continue with the same command and --resume ({})",
            t.epochs,
            t.total_epochs,
            t.checkpoint.display()
        ),
        Some(test) => println!(
            "{}: FP32 test top-1 {} top-5 {} after {} epochs ({:.1}s); checkpoint {}",
            a.model.name(),
            pct(test.top1),
            pct(test.top5),
            t.epochs,
            t.seconds,
            t.checkpoint.display()
        ),
    }
    Ok(())
}

/// Runs `ccq qat`.
pub fn qat(a: QatArgs) -> Result<()> {
    let console = Console::new(a.common.quiet);
    let bits = match (&a.bits, &a.policy) {
        (Some(b), _) => Bits::Uniform(LayerBits::parse(b)?),
        (_, Some(f)) => Bits::PolicyFile(f.clone()),
        (None, None) => anyhow::bail!("give --bits W/A or --policy FILE"),
    };
    let cfg = QatConfig {
        scheme: a.quant.scheme(Some(&a.checkpoint)),
        checkpoint: a.checkpoint,
        bits,
        epochs: a.epochs,
        lr: a.lr,
        distill: a.distill.distill(),
        data: a.data.config()?,
        out: a.out,
        session: a.common.session(),
    };
    let q = pipeline::qat(&cfg, &console)?;
    print!("{}", cost_table(&q.layers, &q.cost));
    println!(
        "QAT test top-1 {} (source checkpoint: {}) after {} epochs ({:.1}s); checkpoint {}",
        pct(q.test.top1),
        q.source_test.map_or("n/a".into(), pct),
        cfg.epochs,
        q.seconds,
        q.checkpoint.display()
    );
    Ok(())
}

/// Runs `ccq eval`.
pub fn eval(a: EvalArgs) -> Result<()> {
    let console = Console::new(a.common.quiet);
    let cfg = EvalConfig {
        checkpoint: a.checkpoint,
        predictions: a.predictions,
        logits: a.logits,
        data: a.data.config()?,
        session: a.common.session(),
    };
    let e = pipeline::evaluate(&cfg, &console)?;
    println!(
        "{}: test top-1 {} top-5 {} loss {:.4} on {} images ({:.0} images/s)",
        e.checkpoint.display(),
        pct(e.test.top1),
        pct(e.test.top5),
        e.test.loss,
        e.test.images,
        e.test.images as f64 / e.seconds.max(1e-9)
    );
    Ok(())
}
