//! Test accuracy of a checkpoint (`ccq eval`), and what a checkpoint holds (`ccq info`).

use super::data::DataConfig;
use super::session::Session;
use crate::error::Result;
use crate::events::{Events, Pass};
use crate::model::cost::{ModelCost, model_cost};
use crate::model::{LayerInfo, QuantCtx, build};
use crate::quant::policy::Policy;
use crate::train::checkpoint::{self, CheckpointMeta, write_atomic};
use crate::train::trainer::{predict, predict_logits};
use crate::train::{Eval, eval_policy};
use std::path::PathBuf;
use std::time::Instant;

/// An evaluation job.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// Checkpoint (directory, or its weights file).
    pub checkpoint: PathBuf,
    /// Also write one predicted class per line (test split order; `nan` for an image whose
    /// logits are not finite) to this file.
    pub predictions: Option<PathBuf>,
    /// Also write the logits (little-endian f32, `[images, classes]` row-major, test split
    /// order) to this file.
    pub logits: Option<PathBuf>,
    /// Data (default: the checkpoint's).
    pub data: DataConfig,
    /// Shared settings.
    pub session: Session,
}

/// What an evaluation measured.
#[derive(Clone, Debug)]
pub struct Evaluated {
    /// The checkpoint's directory.
    pub checkpoint: PathBuf,
    /// Test accuracy and loss.
    pub test: Eval,
    /// Wall time.
    pub seconds: f64,
}

/// Evaluates a checkpoint (at its own policy) on the test split.
pub fn evaluate(cfg: &EvalConfig, events: &dyn Events) -> Result<Evaluated> {
    cfg.session.validate()?;
    let devices = cfg.session.start()?;
    let (ck, p) = super::import::load_prepared(&cfg.checkpoint, &cfg.data, devices.device, events)?;
    let policy = ck
        .meta
        .policy
        .clone()
        .unwrap_or_else(|| Policy::float(&ck.meta.layers));
    let start = Instant::now();
    let test = eval_policy(
        &ck.model,
        &policy,
        ck.meta.scheme,
        &p.splits.test,
        &ck.meta.normalization,
        Some(Pass {
            events,
            phase: "test",
        }),
    )?;
    let seconds = start.elapsed().as_secs_f64();
    if cfg.predictions.is_some() || cfg.logits.is_some() {
        let ctx = QuantCtx::new(ck.meta.scheme, &policy.bits);
        let net = &ck.model.net;
        let norm = &ck.meta.normalization;
        if let Some(path) = &cfg.predictions {
            let preds = predict(net, &ctx, &p.splits.test, norm, 500)?;
            let text: String = preds
                .iter()
                .map(|p| p.map_or("nan\n".to_string(), |c| format!("{c}\n")))
                .collect();
            write_atomic(path, text.as_bytes())?;
        }
        if let Some(path) = &cfg.logits {
            let (logits, _) = predict_logits(net, &ctx, &p.splits.test, norm, 500)?;
            let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
            write_atomic(path, &bytes)?;
        }
    }
    Ok(Evaluated {
        checkpoint: ck.dir,
        test,
        seconds,
    })
}

/// What a checkpoint holds, read without its weights.
#[derive(Clone, Debug)]
pub struct CheckpointInfo {
    /// Its directory.
    pub dir: PathBuf,
    /// Its metadata.
    pub meta: CheckpointMeta,
    /// The model's layers.
    pub layers: Vec<LayerInfo>,
    /// The cost of its policy (full precision when it has none).
    pub cost: ModelCost,
    /// For an ONNX model: its input and output names and the preprocessing its metadata gives.
    pub onnx: Option<OnnxInterface>,
}

/// What an ONNX model's file says about how to feed it.
#[derive(Clone, Debug)]
pub struct OnnxInterface {
    /// The graph input's name.
    pub input: String,
    /// The graph output's name.
    pub output: String,
    /// Its `metadata_props`.
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// Reads a checkpoint's metadata (or imports an ONNX model) and costs its policy.
pub fn inspect(checkpoint: &std::path::Path) -> Result<CheckpointInfo> {
    if super::import::is_onnx(checkpoint) {
        let imported = super::import::read_onnx(checkpoint, tch::Device::Cpu)?;
        let model = imported.model;
        let norm = super::import::normalization(
            checkpoint,
            None,
            &imported.metadata,
            model.spec.channels,
        )?;
        let meta = CheckpointMeta::new(
            &model,
            None,
            Default::default(),
            norm,
            Default::default(),
            DataConfig::default().split(),
        );
        let cost = model_cost(
            &model.layers,
            &Policy::float(&meta.layers),
            meta.scheme.weight,
        );
        return Ok(CheckpointInfo {
            dir: checkpoint.to_path_buf(),
            meta,
            layers: model.layers,
            cost,
            onnx: Some(OnnxInterface {
                input: imported.input_name,
                output: imported.output_name,
                metadata: imported.metadata,
            }),
        });
    }
    let (dir, meta) = checkpoint::load_meta(checkpoint)?;
    let model = build(&meta.spec, tch::Device::Cpu)?;
    let policy = meta
        .policy
        .clone()
        .unwrap_or_else(|| Policy::float(&meta.layers));
    let cost = model_cost(&model.layers, &policy, meta.scheme.weight);
    Ok(CheckpointInfo {
        dir,
        meta,
        layers: model.layers,
        cost,
        onnx: None,
    })
}
