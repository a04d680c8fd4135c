//! `ccq export`, `ccq infer`, and `ccq info` for `.ccq` files.

use super::args::DataArgs;
use anyhow::{Context, Result, bail};
use ccq::data::{DataSource, Subset};
use ccq::export::convert::to_int_model;
use ccq::export::engine::Engine;
use ccq::export::format::{IntKind, IntModel};
use ccq::export::onnx;
use ccq::model::cost::model_cost;
use ccq::search::ccq::{FINAL, STATE};
use ccq::train::checkpoint;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

fn checkpoint_of(source: &Path) -> PathBuf {
    if source.join(STATE).is_file() {
        source.join(FINAL)
    } else {
        source.to_path_buf()
    }
}

/// Runs `ccq export`.
pub fn export(a: ExportArgs) -> Result<()> {
    let dir = checkpoint_of(&a.source);
    if a.source.join(STATE).is_file() && !dir.is_dir() {
        bail!(
            "{}: the search has not finished (no {FINAL}/ checkpoint yet); finish it with ccq quantize --resume",
            a.source.display()
        );
    }
    let ck = checkpoint::load(&dir, tch::Device::Cpu)?;
    let Some(policy) = ck.meta.policy.clone() else {
        bail!(
            "{}: a full-precision checkpoint; export a quantized one (ccq qat or ccq quantize)",
            ck.dir.display()
        );
    };
    let (model, _) = to_int_model(&ck.model, &policy, ck.meta.scheme, &ck.meta.normalization)?;
    Engine::new(model.clone()).context("the exported graph is inconsistent")?;
    let size = model.save(&a.out)?;
    let cost = model_cost(&ck.model.layers, &policy, ck.meta.scheme.weight);
    let float_bytes = cost.float_params as u64 * 4;
    let reported = cost.size_bytes() + float_bytes;
    println!(
        "{}: {size} bytes on disk; reported: {} B of weights and scales + {float_bytes} B of folded BN/bias = {reported} B ({:+.2}% for the header and graph)",
        a.out.display(),
        cost.size_bytes(),
        100.0 * (size as f64 - reported as f64) / reported as f64
    );
    if let Some(path) = &a.onnx {
        let bytes = onnx::to_onnx(&model)?;
        checkpoint::write_atomic(path, &bytes)?;
        println!("{}: ONNX QDQ graph, {} bytes", path.display(), bytes.len());
    }
    Ok(())
}

/// Runs `ccq infer`.
pub fn infer(a: InferArgs) -> Result<()> {
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()?;
    }
    let model = IntModel::load(&a.model)?;
    let engine = Engine::new(model)?;
    let source = a.data.source(Some(&DataSource::default()))?;
    let data = source.load()?;
    let test = Subset::all(data.test.clone());
    let i = &engine.model.input;
    if (data.test.channels, data.test.height, data.test.width) != (i.channels, i.height, i.width) {
        bail!(
            "{}: the model takes {}×{}×{} inputs but {} has {}×{}×{} images",
            a.model.display(),
            i.channels,
            i.height,
            i.width,
            source.dir.display(),
            data.test.channels,
            data.test.height,
            data.test.width
        );
    }
    let start = Instant::now();
    let logits = engine.logits(&data.test.pixels)?;
    let secs = start.elapsed().as_secs_f64();
    let preds: Vec<usize> = logits.iter().map(|l| argmax(l)).collect();
    let correct = preds
        .iter()
        .zip(&data.test.labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    println!(
        "{}: integer engine test top-1 {:.2}% on {} images, {:.0} images/s ({} threads)",
        a.model.display(),
        100.0 * correct as f64 / test.len().max(1) as f64,
        test.len(),
        test.len() as f64 / secs.max(1e-9),
        rayon::current_num_threads()
    );
    if let Some(p) = &a.predictions {
        let text: String = preds.iter().map(|p| format!("{p}\n")).collect();
        checkpoint::write_atomic(p, text.as_bytes())?;
    }
    Ok(())
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
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
