//! Checkpoints: a directory with `model.safetensors` (weights, BN statistics, quantizer
//! parameters) and `checkpoint.json` (model, policy, normalisation, data, accuracy), both written
//! atomically (temporary file, then rename).

use super::run_settings::RunSettings;
use super::trainer::{EpochStats, Eval};
use crate::data::{DataSource, Normalization, SplitSpec};
use crate::model::{Model, ModelSpec, build};
use crate::quant::policy::Policy;
use crate::quant::quantizer::QuantScheme;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// Weights file name inside a checkpoint directory.
pub const WEIGHTS: &str = "model.safetensors";
/// Metadata file name inside a checkpoint directory.
pub const META: &str = "checkpoint.json";
const FORMAT: &str = "ccq-checkpoint";
const VERSION: u32 = 1;

/// One epoch of a training run, as recorded in the metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch index (0-based) within its job.
    pub epoch: usize,
    /// Training statistics.
    pub train: EpochStats,
    /// Validation accuracy after the epoch.
    pub val: Eval,
}

/// Everything about a checkpoint except its tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Always `ccq-checkpoint`.
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Architecture and input shape.
    pub spec: ModelSpec,
    /// Quantizable layer names, in policy order.
    pub layers: Vec<String>,
    /// Bit policy (`None`: full precision).
    pub policy: Option<Policy>,
    /// Quantizers the weights were trained with.
    pub scheme: QuantScheme,
    /// Input normalisation (from the training split).
    pub normalization: Normalization,
    /// Dataset it was trained on.
    pub data: DataSource,
    /// How validation and bandit images were carved from the training files.
    pub split: SplitSpec,
    /// Epochs trained in the job that wrote it.
    pub epochs: usize,
    /// Validation accuracy.
    pub val: Option<Eval>,
    /// Test accuracy (reported only).
    pub test: Option<Eval>,
    /// Per-epoch history of the job that wrote it.
    pub history: Vec<EpochRecord>,
    /// Checkpoint this one was fine-tuned from, if any.
    pub parent: Option<PathBuf>,
    /// CRC-32 of the weights file saved with this metadata (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_crc32: Option<u32>,
    /// The settings of the training job that wrote it (`ccq train`), which `--resume` must
    /// repeat (absent in older checkpoints and in derived ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<RunSettings>,
}

impl CheckpointMeta {
    /// Metadata for a fresh checkpoint of `model`.
    pub fn new(
        model: &Model,
        policy: Option<Policy>,
        scheme: QuantScheme,
        normalization: Normalization,
        data: DataSource,
        split: SplitSpec,
    ) -> Self {
        CheckpointMeta {
            format: FORMAT.into(),
            version: VERSION,
            spec: model.spec.clone(),
            layers: model.layer_names(),
            policy,
            scheme,
            normalization,
            data,
            split,
            epochs: 0,
            val: None,
            test: None,
            history: Vec::new(),
            parent: None,
            weights_crc32: None,
            training: None,
        }
    }
}

impl CheckpointMeta {
    /// Metadata for a checkpoint derived from the one in `dir` (same model, data and split; no
    /// history or test accuracy yet).
    pub fn derived_from(&self, dir: &Path) -> CheckpointMeta {
        CheckpointMeta {
            parent: Some(dir.to_path_buf()),
            history: Vec::new(),
            test: None,
            training: None,
            ..self.clone()
        }
    }

    /// Records a finished epoch and saves the checkpoint with the optimiser's momentum (what a
    /// resumable job does every epoch), so that a resumed job continues exactly.
    pub fn record_epoch(
        &mut self,
        dir: &Path,
        model: &Model,
        momentum: Option<&Tensor>,
        rec: &EpochRecord,
    ) -> Result<()> {
        self.epochs = rec.epoch + 1;
        self.val = Some(rec.val);
        self.history.push(rec.clone());
        save_with_momentum(dir, model, self, momentum)
    }
}

/// A loaded checkpoint.
pub struct Checkpoint {
    /// Where it was read from (the directory).
    pub dir: PathBuf,
    /// Metadata.
    pub meta: CheckpointMeta,
    /// The model with its weights, on the device it was loaded onto.
    pub model: Model,
    /// SGD momentum over the flat parameter buffer, saved by an unfinished training job.
    pub momentum: Option<Tensor>,
}

/// Name of the momentum buffer inside the weights file of an unfinished training job.
pub const MOMENTUM: &str = "optim.momentum";

pub use ccq_runtime::{tmp_path, write_atomic};

/// Saves `model` and `meta` into directory `dir` (created if needed).
pub fn save(dir: &Path, model: &Model, meta: &CheckpointMeta) -> Result<()> {
    save_with_momentum(dir, model, meta, None)
}

/// [`save`], plus the optimiser's momentum buffer (stored as [`MOMENTUM`] in the weights file).
pub fn save_with_momentum(
    dir: &Path,
    model: &Model,
    meta: &CheckpointMeta,
    momentum: Option<&Tensor>,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let weights = dir.join(WEIGHTS);
    let tmp = tmp_path(&weights);
    let mut named: Vec<(String, Tensor)> = Vec::new();
    model.net.visit(&mut |name, t, _| {
        named.push((
            name.to_string(),
            t.detach().to_device(Device::Cpu).contiguous(),
        ));
    });
    if let Some(m) = momentum {
        named.push((
            MOMENTUM.into(),
            m.detach().to_device(Device::Cpu).contiguous(),
        ));
    }
    let written = Tensor::write_safetensors(&named, &tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))
        .and_then(|_| file_crc32(&tmp));
    let crc = match written {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // Two-phase commit: the new metadata (naming the new weights' CRC) is staged first, then
    // the weights and the metadata are renamed into place. A kill between the two renames
    // leaves `checkpoint.json.next`, which `load_meta` resolves by the weights' CRC.
    let meta = CheckpointMeta {
        weights_crc32: Some(crc),
        ..meta.clone()
    };
    let next = dir.join(NEXT_META);
    let staged = write_atomic(&next, serde_json::to_string_pretty(&meta)?.as_bytes());
    if let Err(e) = staged {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &weights)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), weights.display()))?;
    std::fs::rename(&next, dir.join(META))
        .with_context(|| format!("cannot rename {} into place", next.display()))
}

/// Staged metadata of a save in progress (see [`save`]).
const NEXT_META: &str = "checkpoint.json.next";

/// CRC-32 of a file's bytes.
fn file_crc32(path: &Path) -> Result<u32> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(crc32fast::hash(&bytes))
}

/// Reads the tensors of a weights file into `model` (names and shapes must match exactly);
/// returns the momentum buffer if the file holds one.
fn read_weights(weights: &Path, model: &Model) -> Result<Option<Tensor>> {
    let kind = model.spec.kind.name();
    let read = Tensor::read_safetensors(weights)
        .map_err(|e| anyhow::anyhow!("{}: cannot read weights: {e}", weights.display()))?;
    let mut file: BTreeMap<String, Tensor> = read.into_iter().collect();
    let momentum = file.remove(MOMENTUM);
    let (mut missing, mut wrong) = (Vec::new(), Vec::new());
    model.net.visit(&mut |name, t, _| match file.remove(name) {
        None => missing.push(name.to_string()),
        Some(v) if v.size() != t.size() || v.kind() != t.kind() => wrong.push(format!(
            "{name}: {:?} {:?} instead of {:?}",
            v.kind(),
            v.size(),
            t.size()
        )),
        Some(v) => tch::no_grad(|| t.shallow_clone().copy_(&v)),
    });
    let unexpected: Vec<&String> = file.keys().take(5).collect();
    if !missing.is_empty() || !wrong.is_empty() || !unexpected.is_empty() {
        bail!(
            "{}: weights do not match a {kind} model (missing: {:?}, unexpected: {:?}, wrong shape: {:?})",
            weights.display(),
            missing.iter().take(5).collect::<Vec<_>>(),
            unexpected,
            wrong.iter().take(3).collect::<Vec<_>>()
        );
    }
    let finite = model.net.flat.isfinite().all().int64_value(&[]) != 0;
    if !finite {
        bail!(
            "{}: the weights hold NaN or infinite values",
            weights.display()
        );
    }
    if let Some(m) = &momentum {
        let ok = m.size() == model.net.flat.size()
            && m.kind() == model.net.flat.kind()
            && m.isfinite().all().int64_value(&[]) != 0;
        if !ok {
            bail!(
                "{}: `{MOMENTUM}` is not a finite buffer of the model's {} parameters",
                weights.display(),
                model.net.flat.numel()
            );
        }
    }
    Ok(momentum.map(|m| m.to_device(model.net.flat.device())))
}

/// The checkpoint directory for a user-given path (the directory itself or its weights file).
pub fn resolve_dir(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        Ok(path.to_path_buf())
    } else if path.is_file() {
        Ok(path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")))
    } else {
        bail!("checkpoint {} does not exist", path.display())
    }
}

/// Reads only the metadata of a checkpoint; an error is typed as bad input naming `path`.
pub fn load_meta(path: &Path) -> Result<(PathBuf, CheckpointMeta)> {
    read_meta(path).map_err(|e| bad_input(path, e))
}

/// A loading error typed as bad input ([`crate::error::Error::BadInput`]) naming `path`.
fn bad_input(path: &Path, e: anyhow::Error) -> anyhow::Error {
    if e.chain()
        .any(|c| c.downcast_ref::<crate::error::Error>().is_some())
    {
        return e;
    }
    crate::error::Error::bad_input(path, format!("{e:#}")).into()
}

fn read_meta(path: &Path) -> Result<(PathBuf, CheckpointMeta)> {
    let dir = resolve_dir(path)?;
    let meta_path = dir.join(META);
    let text = std::fs::read_to_string(&meta_path).with_context(|| {
        format!(
            "{}: not a ccq checkpoint (cannot read {META})",
            dir.display()
        )
    })?;
    let meta =
        CheckpointMeta::from_json(&text).with_context(|| format!("{}", meta_path.display()))?;
    // An interrupted save: its staged metadata is the right one iff the weights are the new ones.
    let next = dir.join(NEXT_META);
    if next.is_file() {
        let staged = std::fs::read_to_string(&next)
            .ok()
            .and_then(|t| CheckpointMeta::from_json(&t).ok());
        if let Some(staged) = staged
            && staged.weights_crc32.is_some()
            && staged.weights_crc32 == file_crc32(&dir.join(WEIGHTS)).ok()
        {
            // Finish the save when the directory is writable; the choice stands either way.
            let _ = std::fs::rename(&next, &meta_path);
            return Ok((dir, staged));
        }
        let _ = std::fs::remove_file(&next);
    }
    Ok((dir, meta))
}

impl CheckpointMeta {
    /// Parses and validates the text of a `checkpoint.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let meta: CheckpointMeta =
            serde_json::from_str(text).context("corrupt checkpoint metadata")?;
        if meta.format != FORMAT {
            bail!("format `{}` is not a ccq checkpoint", meta.format);
        }
        if meta.version != VERSION {
            bail!(
                "checkpoint version {} is not supported (this ccq reads version {VERSION})",
                meta.version
            );
        }
        meta.validate().context("invalid checkpoint metadata")?;
        Ok(meta)
    }

    /// Checks what later code relies on: bits in range, one normalisation entry per channel
    /// with a finite mean and a positive finite std, a policy as long as the layer table.
    pub fn validate(&self) -> Result<()> {
        self.spec.validate()?;
        let n = &self.normalization;
        let c = self.spec.channels;
        if n.mean.len() != c || n.std.len() != c {
            bail!(
                "normalization has {} means and {} stds for {c} input channels",
                n.mean.len(),
                n.std.len()
            );
        }
        if let Some(i) = n.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            bail!(
                "normalization std[{i}] = {} is not positive and finite",
                n.std[i]
            );
        }
        if let Some(i) = n.mean.iter().position(|m| !m.is_finite()) {
            bail!("normalization mean[{i}] is not finite");
        }
        if let Some(p) = &self.policy {
            if p.bits.len() != self.layers.len() || p.names.len() != self.layers.len() {
                bail!(
                    "the policy's layers do not match the layer table ({} entries for {} layers)",
                    p.bits.len(),
                    self.layers.len()
                );
            }
            for (name, b) in p.names.iter().zip(&p.bits) {
                b.validate()
                    .with_context(|| format!("policy layer `{name}`"))?;
            }
        }
        Ok(())
    }
}

/// Loads a checkpoint onto `device`, checking that model, weights and policy agree; an error
/// is typed as bad input naming `path`.
pub fn load(path: &Path, device: Device) -> Result<Checkpoint> {
    read(path, device).map_err(|e| bad_input(path, e))
}

fn read(path: &Path, device: Device) -> Result<Checkpoint> {
    let (dir, meta) = load_meta(path)?;
    let model = build(&meta.spec, device)?;
    if model.layer_names() != meta.layers {
        bail!(
            "{}: its layer list does not match a {} model",
            dir.display(),
            meta.spec.kind.name()
        );
    }
    if let Some(p) = &meta.policy
        && p.names != meta.layers
    {
        bail!(
            "{}: the policy's layers do not match the model's",
            dir.display()
        );
    }
    let weights = dir.join(WEIGHTS);
    if !weights.is_file() {
        bail!("{}: missing {WEIGHTS}", dir.display());
    }
    if let Some(want) = meta.weights_crc32 {
        let got = file_crc32(&weights)?;
        if got != want {
            bail!(
                "{}: CRC-32 {got:08x} differs from the {want:08x} that {META} records; the weights are corrupt or from another save",
                weights.display()
            );
        }
    }
    let momentum = read_weights(&weights, &model)?;
    Ok(Checkpoint {
        dir,
        meta,
        model,
        momentum,
    })
}
