//! Deployment: a quantized checkpoint to the packed-integer `.ccq` format (and ONNX QDQ), and
//! the integer engine run on a test split.

use super::data::DataConfig;
use crate::data::DataSource;
use crate::error::{Error, Result};
use crate::export::convert::to_int_model;
use crate::export::engine::Engine;
use crate::export::format::IntModel;
use crate::export::int_check::IntReport;
use crate::export::onnx;
use crate::model::cost::model_cost;
use crate::search::run_dir::RunDir;
use crate::train::checkpoint::{self, write_atomic};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// An export job.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// A `ccq quantize` run directory (its final checkpoint) or a quantized checkpoint.
    pub source: PathBuf,
    /// Output `.ccq` file.
    pub out: PathBuf,
    /// Also write an ONNX QDQ graph here.
    pub onnx: Option<PathBuf>,
    /// Test images on which the integer engine is checked against the fake-quantized model
    /// (the report goes beside the `.ccq` file, [`int_report_path`]); 0: no check.
    pub check_images: usize,
    /// Where those images come from (default: the checkpoint's data; if that is not on this
    /// machine, the check is skipped and says so).
    pub data: DataConfig,
}

impl ExportConfig {
    /// An export of `source` to `out`: no ONNX graph; the integer check on 256 test images of
    /// the checkpoint's data.
    pub fn new(source: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        ExportConfig {
            source: source.into(),
            out: out.into(),
            onnx: None,
            check_images: 256,
            data: DataConfig::default(),
        }
    }
}

/// Where the integer check of `out` (a `.ccq` file) is written: `out` with the extension
/// `int.json`.
pub fn int_report_path(out: &Path) -> PathBuf {
    out.with_extension("int.json")
}

/// The integer check of an export.
#[derive(Clone, Debug)]
pub enum IntCheck {
    /// Checked; the report was written to the path.
    Checked(PathBuf, IntReport),
    /// Not checked, with why.
    Skipped(String),
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The `.ccq` file.
    pub out: PathBuf,
    /// Its size on disk.
    pub file_bytes: u64,
    /// Weights and scales, as the cost model counts them.
    pub weight_bytes: u64,
    /// Folded BatchNorm and bias parameters.
    pub float_bytes: u64,
    /// The ONNX file and its size, if one was asked for.
    pub onnx: Option<(PathBuf, usize)>,
    /// The integer engine against the fake-quantized model.
    pub check: IntCheck,
}

/// Exports a quantized checkpoint (or a finished run's) to `.ccq`, checked by building the
/// engine on it before it is written.
pub fn export(cfg: &ExportConfig) -> Result<Exported> {
    let run = RunDir::new(&cfg.source);
    let dir = if run.has_search() {
        if !run.final_checkpoint().is_dir() {
            return Err(Error::incompatible(
                cfg.source.clone(),
                format!(
                    "{}: the search has not finished (no {}/ checkpoint yet); finish it with ccq quantize --resume",
                    cfg.source.display(),
                    crate::search::run_dir::FINAL
                ),
            ));
        }
        run.final_checkpoint()
    } else {
        cfg.source.clone()
    };
    let ck = checkpoint::load(&dir, tch::Device::Cpu)?;
    let Some(policy) = ck.meta.policy.clone() else {
        return Err(Error::incompatible(
            ck.dir.clone(),
            format!(
                "{}: a full-precision checkpoint; export a quantized one (ccq qat or ccq quantize)",
                ck.dir.display()
            ),
        ));
    };
    let (model, probes) = to_int_model(&ck.model, &policy, ck.meta.scheme, &ck.meta.normalization)?;
    let engine = Engine::new(model.clone())
        .map_err(|e| Error::Internal(format!("the exported graph is inconsistent: {e:#}")))?;
    let check = int_check(cfg, &ck, &policy, &engine, &probes)?;
    let file_bytes = model.save(&cfg.out)?;
    let cost = model_cost(&ck.model.layers, &policy, ck.meta.scheme.weight);
    let onnx = match &cfg.onnx {
        Some(path) => {
            let bytes = onnx::to_onnx(&model, ck.model.graph.io.as_ref())?;
            write_atomic(path, &bytes)?;
            Some((path.clone(), bytes.len()))
        }
        None => None,
    };
    Ok(Exported {
        out: cfg.out.clone(),
        file_bytes,
        weight_bytes: cost.size_bytes(),
        float_bytes: cost.float_params as u64 * 4,
        onnx,
        check,
    })
}

/// Runs the integer check of an export ([`crate::export::int_check`]) and writes its report.
fn int_check(
    cfg: &ExportConfig,
    ck: &checkpoint::Checkpoint,
    policy: &crate::quant::policy::Policy,
    engine: &Engine,
    probes: &crate::export::convert::Probes,
) -> Result<IntCheck> {
    if cfg.check_images == 0 {
        return Ok(IntCheck::Skipped("not asked for".into()));
    }
    let source = cfg.data.source(Some(&ck.meta.data))?;
    if cfg.data.is_unset() && !source.dir.is_dir() {
        return Ok(IntCheck::Skipped(format!(
            "the checkpoint's data ({}) is not on this machine; give --data to check",
            source.dir.display()
        )));
    }
    let bad = |e: anyhow::Error| Error::bad_input(source.dir.clone(), format!("{e:#}"));
    let test = std::sync::Arc::new(engine_test_split(engine, &source, &ck.dir)?);
    let ids: Vec<usize> = (0..cfg.check_images.min(test.len())).collect();
    let pixels = test.images(&ids).map_err(bad)?;
    let subset = crate::data::Subset::all(test);
    let inputs = crate::data::make_batch(
        &subset,
        &ids,
        &ck.meta.normalization,
        None,
        tch::Device::Cpu,
    )
    .map_err(bad)?
    .images;
    let ctx = crate::model::QuantCtx::new(ck.meta.scheme, &policy.bits);
    let report =
        crate::export::int_check::check(engine, probes, &ck.model, &ctx, &pixels, &inputs)?;
    let path = int_report_path(&cfg.out);
    let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?;
    write_atomic(&path, json.as_bytes())?;
    Ok(IntCheck::Checked(path, report))
}

/// A job that runs a `.ccq` model with the integer engine on a test split.
#[derive(Clone, Debug)]
pub struct InferConfig {
    /// The `.ccq` model.
    pub model: PathBuf,
    /// Data (default: Fashion-MNIST); only its test files are read.
    pub data: DataConfig,
    /// Also write one predicted class per line (test order) here.
    pub predictions: Option<PathBuf>,
}

/// What the engine measured.
#[derive(Clone, Debug)]
pub struct Inferred {
    /// Test top-1 in [0, 1].
    pub top1: f64,
    /// Images.
    pub images: usize,
    /// Wall time of the engine.
    pub seconds: f64,
}

/// Runs the integer engine on the test files.
pub fn infer(cfg: &InferConfig) -> Result<Inferred> {
    let model = IntModel::load(&cfg.model)?;
    let engine = Engine::new(model).map_err(|e| {
        Error::bad_input(cfg.model.clone(), format!("{}: {e:#}", cfg.model.display()))
    })?;
    let source = cfg.data.source(Some(&DataSource::default()))?;
    let test = engine_test_split(&engine, &source, &cfg.model)?;
    // A streamed test split is decoded and run in chunks; the time counts the engine only.
    let mut logits = Vec::with_capacity(test.len());
    let mut seconds = 0.0;
    let ids: Vec<usize> = (0..test.len()).collect();
    for chunk in ids.chunks(1024) {
        let pixels = match test.pixels() {
            Some(p) => std::borrow::Cow::Borrowed(
                &p[chunk[0] * test.image_len()..][..chunk.len() * test.image_len()],
            ),
            None => std::borrow::Cow::Owned(
                test.images(chunk)
                    .map_err(|e| Error::bad_input(source.dir.clone(), format!("{e:#}")))?,
            ),
        };
        let start = Instant::now();
        logits.extend(engine.logits(&pixels)?);
        seconds += start.elapsed().as_secs_f64();
    }
    let preds: Vec<usize> = logits.iter().map(|l| argmax(l)).collect();
    let correct = preds
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    let images = test.labels.len();
    if let Some(p) = &cfg.predictions {
        let text: String = preds.iter().map(|p| format!("{p}\n")).collect();
        write_atomic(p, text.as_bytes())?;
    }
    Ok(Inferred {
        top1: correct as f64 / images.max(1) as f64,
        images,
        seconds,
    })
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

/// Whether `path` names a `.ccq` file.
pub fn is_ccq_file(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e == "ccq")
}

/// The test split of `source` for `engine` (the integer model read from `model`): an error
/// naming both when its images are not the model's input size.
fn engine_test_split(
    engine: &Engine,
    source: &DataSource,
    model: &Path,
) -> Result<crate::data::Dataset> {
    let test = source
        .load_test()
        .map_err(|e| Error::bad_input(source.dir.clone(), format!("{e:#}")))?;
    let i = &engine.model.input;
    if (test.channels, test.height, test.width) != (i.channels, i.height, i.width) {
        return Err(Error::incompatible(
            model.to_path_buf(),
            format!(
                "{}: the model takes {}×{}×{} inputs but {} has {}×{}×{} images",
                model.display(),
                i.channels,
                i.height,
                i.width,
                source.dir.display(),
                test.channels,
                test.height,
                test.width
            ),
        ));
    }
    Ok(test)
}
