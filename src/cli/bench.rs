//! `ccq bench`: timing of one QAT training step or of inference, on random data, or of the
//! data loader on a dataset.

use super::args::named;
use anyhow::Result;
use ccq::model::ModelKind;
use ccq::pipeline::{self, BenchConfig, BenchMode, LoaderBenchConfig};
use clap::Args;

/// `ccq bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// `step` (QAT forward + backward + SGD), `infer` (fake-quant inference), or `load` (one
    /// training pass of the data loader over --data, with no model: images/s and peak memory).
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
    /// `load`: batches to time (default: the whole training split).
    #[arg(long)]
    pub batches: Option<usize>,
    /// `load`: the data.
    #[command(flatten)]
    pub data: super::args::DataArgs,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `ccq bench`.
pub fn bench(a: BenchArgs) -> Result<()> {
    if a.mode == BenchMode::Load {
        let console = super::progress::Console::new(a.quiet);
        let t = pipeline::bench_loader(
            &LoaderBenchConfig {
                data: a.data.config()?,
                batch: a.batch,
                batches: a.batches,
                threads: a.threads,
            },
            &console,
        )?;
        let rss = t.peak_rss.map_or("unknown".into(), |b| {
            format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
        });
        println!(
            "loader ({}): load {:.1} s, statistics {:.1} s, pass {} images in {:.1} s: {:.0} images/s; peak RSS {rss}",
            if t.streamed { "streamed" } else { "in memory" },
            t.load_seconds,
            t.stats_seconds,
            t.images,
            t.seconds,
            t.images_per_second
        );
        return Ok(());
    }
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
        BenchMode::Infer | BenchMode::Load => println!(
            "ccq (tch, {device}) {name} inference {mode}, batch {}: {:.0} images/s",
            a.batch, t.images_per_second
        ),
    }
    Ok(())
}
