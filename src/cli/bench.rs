//! `ccq bench`: timing of one QAT training step or of inference, on random data.

use super::args::named;
use anyhow::Result;
use ccq::model::ModelKind;
use ccq::pipeline::{self, BenchConfig, BenchMode};
use clap::Args;

/// `ccq bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// `step` (QAT forward + backward + SGD) or `infer` (fake-quant inference).
    #[arg(value_parser = named::<BenchMode>(), default_value = "step")]
    pub mode: BenchMode,
    /// Architecture.
    #[arg(long, value_parser = named::<ModelKind>(), default_value = "resnet20")]
    pub model: ModelKind,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Uniform W/A bits (32 = float).
    #[arg(long, default_value_t = 4)]
    pub bits: u32,
    /// Timed iterations (after 2 warm-up ones).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Device: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Runs `ccq bench`.
pub fn bench(a: BenchArgs) -> Result<()> {
    let t = pipeline::bench(&BenchConfig {
        mode: a.mode,
        model: a.model,
        batch: a.batch,
        bits: a.bits,
        steps: a.steps,
        threads: a.threads,
        device: a.device,
    })?;
    let mode = if a.bits >= 32 {
        "FP".to_string()
    } else {
        format!("QAT W{}A{}", a.bits, a.bits)
    };
    let (name, device) = (a.model.name(), &t.device);
    match a.mode {
        BenchMode::Step => println!(
            "ccq (tch, {device}) {name} {mode} step, batch {}: {:.1} ms/step ({} threads)",
            a.batch,
            1000.0 * t.seconds_per_step,
            t.threads
        ),
        BenchMode::Infer => println!(
            "ccq (tch, {device}) {name} inference {mode}, batch {}: {:.0} images/s",
            a.batch, t.images_per_second
        ),
    }
    Ok(())
}
