//! `ccq compare` (CCQ vs Hessian-aware vs uniform vs random at the same budgets) and
//! `ccq report RUN_DIR` (the page for a single CCQ run).

use super::args::{CommonArgs, DataArgs, named};
use super::progress::Console;
use super::search_flags::SearchFlags;
use anyhow::Result;
use ccq::pipeline::{self, CompareConfig};
use ccq::search::baselines::Method;
use clap::Args;
use std::path::PathBuf;

/// `ccq compare` arguments.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Full-precision checkpoint, or an ONNX model (`.onnx`).
    pub checkpoint: PathBuf,
    /// Compression budgets, e.g. 8,10,12.
    #[arg(long, value_delimiter = ',', required = true)]
    pub target_compression: Vec<f64>,
    /// Methods to run.
    #[arg(
        long,
        value_parser = named::<Method>(),
        value_delimiter = ',',
        default_value = "ccq,hawq,uniform,uniform-ends8,random"
    )]
    pub methods: Vec<Method>,
    /// Fine-tuning epochs every method gets after allocation.
    #[arg(long, default_value_t = 2)]
    pub ft_epochs: usize,
    /// Peak learning rate of that fine-tuning (cosine to 0).
    #[arg(long, default_value_t = 0.005)]
    pub ft_lr: f64,
    /// Fine-tune each policy this many times, each with its own seed (the first with --seed),
    /// and report the mean test top-1 and its spread: one fine-tuning's noise is about as large
    /// as the differences between policies. Continuing a comparison with more adds only the
    /// fine-tunings each result lacks.
    #[arg(long, default_value_t = 1)]
    pub ft_repeats: usize,
    /// Images for the Hessian traces.
    #[arg(long, default_value_t = 512)]
    pub hessian_images: usize,
    /// Hutchinson samples per layer (each one Hessian-vector product of that layer's block).
    #[arg(long, default_value_t = 16)]
    pub hessian_samples: usize,
    /// Also give every other method of --methods as many training epochs as CCQ spent reaching
    /// each budget (its search's fine-tuning, in whole-training-split epochs, plus its own
    /// --ft-epochs, twice with --final-from best; a fraction is trained as a partial last epoch);
    /// reported beside the equal-fine-tuning results as `<method> (equal compute)`.
    #[arg(long)]
    pub equal_compute: bool,
    /// Fine-tune only CCQ's final policy at each budget, not also the search's own policy where
    /// the re-allocation or polish changed it (the `ccq (not re-allocated)` and `ccq (no
    /// polish)` rows), which otherwise doubles CCQ's fine-tunings at those budgets.
    #[arg(long)]
    pub final_policy_only: bool,
    /// Also fine-tune the search's start policy (every layer at the ladder's top, e.g. W8A8)
    /// from the FP model as every method is, and report each result against it as well as
    /// against FP: what is left is the quantization's cost, without the fine-tuning's own gain.
    #[arg(long)]
    pub control: bool,
    /// Output directory (report.html, report.json, the CCQ run in ccq/).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub search: SearchFlags,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `ccq report` arguments.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A `ccq quantize` run directory.
    pub run: PathBuf,
}

/// Runs `ccq compare`.
pub fn compare(a: CompareArgs) -> Result<()> {
    let console = Console::new(a.common.quiet);
    let cfg = CompareConfig {
        checkpoint: a.checkpoint.clone(),
        budgets: a.target_compression,
        methods: a.methods,
        ft_epochs: a.ft_epochs,
        ft_lr: a.ft_lr,
        ft_repeats: a.ft_repeats,
        hessian_images: a.hessian_images,
        hessian_samples: a.hessian_samples,
        equal_compute: a.equal_compute,
        search_policy_rows: !a.final_policy_only,
        control: a.control,
        out: a.out,
        search: a.search.settings(Some(&a.checkpoint))?,
        data: a.data.config()?,
        session: a.common.session(),
    };
    let c = pipeline::compare(&cfg, &console)?;
    let r = &c.report;
    let vs_control = |x| {
        r.vs_control(x)
            .map_or(String::new(), |d| format!(" {d:>+10.2}"))
    };
    let control_head = if r.control.is_some() {
        " vs control"
    } else {
        ""
    };
    println!(
        "{:<14} {:>7} {:>9} {:>11} {:>9} {:>10}{control_head} {:>9}",
        "method", "budget", "size(B)", "compression", "test", "vs FP", "time(s)"
    );
    for x in r.ordered() {
        if x.bits.is_empty() {
            let note = x.note.as_deref().unwrap_or("");
            println!("{:<14} {:>6}x {note}", x.method, x.budget);
        } else {
            println!(
                "{:<14} {:>6}x {:>9} {:>10.2}x {:>9} {:>10}{} {:>9.0}",
                x.method,
                x.budget,
                x.size_bytes,
                x.compression,
                ccq::report::pct(x.test_top1),
                x.vs_fp_text(),
                vs_control(x),
                x.seconds
            );
        }
    }
    if let Some(k) = &r.control {
        println!(
            "control: the start policy ({}, {:.2}x) fine-tuned the same way, test top-1 {}",
            ccq::report::uniform_bits(k),
            k.compression,
            ccq::report::pct(k.test_top1)
        );
    }
    for v in r.ccq_versus() {
        let interval = v.half_width.map_or(String::new(), |h| format!(" ± {h:.2}"));
        println!(
            "ccq vs {} at {}x: {:+.2}{interval} points over {} paired fine-tunings: {}",
            v.method,
            v.budget,
            v.points,
            v.pairs,
            v.verdict_text()
        );
    }
    println!(
        "FP32 test top-1 {:.2}%; report {}",
        100.0 * r.fp_test.unwrap_or(f64::NAN),
        c.html.display()
    );
    Ok(())
}

/// Runs `ccq report RUN_DIR`.
pub fn report(a: ReportArgs) -> Result<()> {
    println!("{}", pipeline::report_run(&a.run)?.display());
    Ok(())
}
