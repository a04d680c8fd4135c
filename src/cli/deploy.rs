//! `ccq export`, `ccq infer`, and `ccq info` for `.ccq` files.

use super::args::DataArgs;
use anyhow::Result;
use ccq::export::format::{IntKind, IntModel};
use ccq::pipeline::{self, ExportConfig, InferConfig, IntCheck};
use clap::Args;
use std::path::{Path, PathBuf};

/// `ccq export` arguments.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A `ccq quantize` run directory (its final checkpoint) or a quantized checkpoint.
    pub source: PathBuf,
    /// Output `.ccq` file.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write an ONNX QDQ graph.
    #[arg(long)]
    pub onnx: Option<PathBuf>,
    /// Test images on which to check the integer engine against the fake-quantized model,
    /// node by node; the report goes to OUT with the extension .int.json (0: no check).
    #[arg(long, default_value_t = 256)]
    pub check_images: usize,
    /// The check's data (default: the checkpoint's).
    #[command(flatten)]
    pub data: DataArgs,
}

/// `ccq infer` arguments.
#[derive(Args, Debug)]
pub struct InferArgs {
    /// A `.ccq` model.
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Write one predicted class per line (test split order) to this file.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `ccq export`.
pub fn export(a: ExportArgs) -> Result<()> {
    let e = pipeline::export(&ExportConfig {
        source: a.source,
        out: a.out,
        onnx: a.onnx,
        check_images: a.check_images,
        data: a.data.config()?,
    })?;
    let reported = e.weight_bytes + e.float_bytes;
    println!(
        "{}: {} bytes on disk; reported: {} B of weights and scales + {} B of folded BN/bias = {reported} B ({:+.2}% for the header and graph)",
        e.out.display(),
        e.file_bytes,
        e.weight_bytes,
        e.float_bytes,
        100.0 * (e.file_bytes as f64 - reported as f64) / reported as f64
    );
    if let Some((path, bytes)) = &e.onnx {
        println!("{}: ONNX QDQ graph, {bytes} bytes", path.display());
    }
    match &e.check {
        IntCheck::Skipped(why) => println!("integer check: skipped ({why})"),
        IntCheck::Checked(path, r) => {
            println!(
                "integer check on {} test images: the engine's prediction agrees with the fake-quantized model's on {} (max |Δ logit| {:.2e}); {}",
                r.images,
                r.agree,
                r.max_abs_logit_diff,
                if r.exact() {
                    "every value within tolerance: exact".to_string()
                } else {
                    let bad = r.inexact();
                    let worst: Vec<String> = bad
                        .iter()
                        .take(3)
                        .map(|n| {
                            format!(
                                "{} {:.2}%",
                                n.name,
                                100.0 * n.differ as f64 / n.values.max(1) as f64
                            )
                        })
                        .collect();
                    format!(
                        "{} of {} nodes hold values off by more than {}× their range (rounding-boundary cases; worst: {})",
                        bad.len(),
                        r.nodes.len(),
                        r.tolerance,
                        worst.join(", ")
                    )
                }
            );
            println!("{}: the node-by-node report", path.display());
        }
    }
    Ok(())
}

/// Runs `ccq infer`.
pub fn infer(a: InferArgs) -> Result<()> {
    if let Some(t) = a.threads {
        pipeline::session::set_threads(t)?;
    }
    let i = pipeline::infer(&InferConfig {
        model: a.model.clone(),
        data: a.data.config()?,
        predictions: a.predictions,
    })?;
    println!(
        "{}: integer engine test top-1 {:.2}% on {} images, {:.0} images/s ({} threads)",
        a.model.display(),
        100.0 * i.top1,
        i.images,
        i.images as f64 / i.seconds.max(1e-9),
        rayon::current_num_threads()
    );
    Ok(())
}

/// `ccq info model.ccq`.
pub fn info_ccq(path: &Path) -> Result<()> {
    let m = IntModel::load(path)?;
    let size = std::fs::metadata(path)?.len();
    let i = &m.input;
    println!(
        "{}: {} integer model, input {}×{}×{} (fixed point, {} fractional bits), {} classes, {} ops, {size} bytes",
        path.display(),
        m.name,
        i.channels,
        i.height,
        i.width,
        i.frac_bits,
        i.classes,
        m.ops.len()
    );
    println!(
        "{:<24} {:>6} {:>9} {:>4} {:>4} {:>7} {:>10}",
        "layer", "kind", "weights", "W", "A", "scales", "packed(B)"
    );
    for l in &m.layers {
        let n = l.codes.len();
        println!(
            "{:<24} {:>6} {:>9} {:>4} {:>4} {:>7} {:>10}",
            l.name,
            if l.kind == IntKind::Conv {
                "conv"
            } else {
                "linear"
            },
            n,
            l.w_bits,
            l.a_bits,
            l.w_scale.len(),
            (n * l.w_bits as usize).div_ceil(8)
        );
    }
    Ok(())
}
