//! `ccq quantize`: the CCQ search, end to end.

use super::args::{CommonArgs, DataArgs, named};
use super::progress::Console;
use super::search_flags::SearchFlags;
use anyhow::{Result, bail};
use ccq::model::ModelKind;
use ccq::model::cost::cost_table;
use ccq::pipeline::{self, QuantizeConfig, Start};
use ccq::search::target::Target;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use std::path::PathBuf;

/// `ccq quantize` arguments.
#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Full-precision checkpoint to quantize, or an ONNX model (`.onnx`, imported into RUN_DIR/fp;
    /// give --data and --format) (default: train --model on the data first, into RUN_DIR/fp).
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
    /// Continue the run in this directory with its saved settings (search flags and a start
    /// are refused with it; so is a target other than its own).
    #[arg(long, conflicts_with_all = ["out", "checkpoint", "model", "fp_epochs", "fp_lr"])]
    pub resume: Option<PathBuf>,
    /// Stop this invocation after N steps (resume later with --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl QuantizeArgs {
    /// The requested target, if any.
    pub fn target(&self) -> Option<Target> {
        if let Some(r) = self.target_compression {
            Some(Target::Compression(r))
        } else if let Some(b) = self.target_size {
            Some(Target::SizeBytes(b))
        } else if let Some(b) = self.target_avg_bits {
            Some(Target::AvgBits(b))
        } else {
            self.target_bops.map(Target::Bops)
        }
    }
}

/// The search flags given on the command line `m` (their long names).
fn given_search_flags(m: &ArgMatches) -> Vec<String> {
    SearchFlags::augment_args(clap::Command::new("search"))
        .get_arguments()
        .filter(|arg| m.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|arg| arg.get_long().map(|l| format!("--{l}")))
        .collect()
}

/// Runs `ccq quantize` (`m`: its command line, to tell given flags from defaults).
pub fn quantize(a: QuantizeArgs, m: &ArgMatches) -> Result<()> {
    let console = Console::new(a.common.quiet);
    if a.resume.is_some() {
        let given = given_search_flags(m);
        if !given.is_empty() {
            bail!(
                "--resume continues a search with its saved settings, so {} cannot be given with it; start a new --out to change them",
                given.join(", ")
            );
        }
    }
    let (run, resume) = match (&a.resume, &a.out) {
        (Some(r), _) => (r.clone(), true),
        (None, Some(o)) => (o.clone(), false),
        (None, None) => bail!("give --out RUN_DIR (or --resume RUN_DIR)"),
    };
    let start = match &a.checkpoint {
        Some(c) => Start::Checkpoint(c.clone()),
        None => Start::Train {
            model: a.model,
            epochs: a.fp_epochs,
            lr: a.fp_lr,
        },
    };
    let cfg = QuantizeConfig {
        run,
        resume,
        start,
        target: a.target(),
        search: a.search.settings(a.checkpoint.as_deref())?,
        data: a.data.config()?,
        stop_after: a.stop_after,
        session: a.common.session(),
    };
    let q = pipeline::quantize(&cfg, &console)?;
    let Some(report) = q.report else {
        println!(
            "stopped after step {} as asked; continue with: ccq quantize --resume {}",
            q.state.step,
            q.run.display()
        );
        return Ok(());
    };
    print!("{}", cost_table(&q.layers, &report.cost));
    println!(
        "CCQ finished ({}) after {} steps: val top-1 {:.2}% (FP {:.2}%), test top-1 {:.2}%, compression {:.2}x, {} B of weights; {:.0}s this invocation, {:.0}s of search in total; run {}",
        report.finished,
        report.steps,
        100.0 * report.val,
        100.0 * report.fp_val,
        100.0 * report.test,
        report.cost.compression,
        report.cost.size_bytes(),
        q.seconds,
        q.state.seconds,
        q.run.display()
    );
    Ok(())
}
