//! A user's ONNX model as a full-precision checkpoint: imported, given its preprocessing and
//! data, and measured, so every job that takes a checkpoint takes an `.onnx` file too.

use super::data::{DataConfig, Prepared, calibration_batches, prepare_for};
use crate::data::Normalization;
use crate::error::{Error, Result};
use crate::events::{Events, Pass};
use crate::model::onnx_import::{Imported, import};
use crate::model::unfold::unfold_batchnorm;
use crate::quant::policy::Policy;
use crate::quant::quantizer::QuantScheme;
use crate::train::checkpoint::{self, Checkpoint, CheckpointMeta};
use crate::train::eval_policy;
use std::collections::BTreeMap;
use std::path::Path;
use tch::Device;

/// Whether `path` names an ONNX model (by its `.onnx` extension).
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Reads `path` as an ONNX model; errors are bad input naming the file.
pub fn read_onnx(path: &Path, device: Device) -> Result<Imported> {
    import(path, device).map_err(|e| Error::bad_input(path, format!("{e:#}")))
}

/// The input normalisation of an imported model: `--mean`/`--std` when given, else the file's
/// `mean`/`std` metadata, else none (`x / 255`). One value stands for every channel.
pub fn normalization(
    path: &Path,
    flags: Option<&Normalization>,
    metadata: &BTreeMap<String, String>,
    channels: usize,
) -> Result<Normalization> {
    let parse = |key: &str| -> Result<Option<Vec<f32>>> {
        let Some(text) = metadata.get(key) else {
            return Ok(None);
        };
        text.split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|s| s.trim().parse::<f32>())
            .collect::<std::result::Result<Vec<f32>, _>>()
            .map(Some)
            .map_err(|e| {
                Error::bad_input(
                    path,
                    format!("{}: metadata `{key}` = `{text}`: {e}", path.display()),
                )
            })
    };
    let (mean, std, from) = match flags {
        Some(n) => (n.mean.clone(), n.std.clone(), "--mean/--std"),
        None => match (parse("mean")?, parse("std")?) {
            (Some(m), Some(s)) => (m, s, "the model's metadata"),
            (None, None) => (vec![0.0], vec![1.0], "the default"),
            _ => {
                return Err(Error::bad_input(
                    path,
                    format!(
                        "{}: metadata has `mean` or `std` but not both",
                        path.display()
                    ),
                ));
            }
        },
    };
    let widen = |v: Vec<f32>, what: &str| -> Result<Vec<f32>> {
        match v.len() {
            1 => Ok(vec![v[0]; channels]),
            n if n == channels => Ok(v),
            n => Err(Error::InvalidConfig(format!(
                "{what} from {from} has {n} values; the model has {channels} input channels (give 1 or {channels})"
            ))),
        }
    };
    let n = Normalization {
        mean: widen(mean, "mean")?,
        std: widen(std, "std")?,
    };
    if n.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || n.mean.iter().any(|m| !m.is_finite()) {
        return Err(Error::InvalidConfig(format!(
            "normalisation from {from}: every mean must be finite and every std positive"
        )));
    }
    Ok(n)
}

/// An ONNX model as a full-precision checkpoint on `data`, with its validation and test
/// accuracy measured (saved into `save` when given, atomically), and the data it was measured
/// on, loaded once for the job that imports it.
pub fn onnx_checkpoint(
    path: &Path,
    norm: Option<&Normalization>,
    data: &DataConfig,
    device: Device,
    save: Option<&Path>,
    events: &dyn Events,
) -> Result<(Checkpoint, Prepared)> {
    if data.is_unset() {
        return Err(Error::InvalidConfig(format!(
            "{}: an imported model needs its data: give --data and --format",
            path.display()
        )));
    }
    let imported = read_onnx(path, device)?;
    let model = imported.model;
    let spec = &model.spec;
    let norm = normalization(path, norm, &imported.metadata, spec.channels)?;
    let source = data.source(None)?;
    let meta = CheckpointMeta::new(
        &model,
        None,
        QuantScheme::default(),
        norm,
        source.clone(),
        data.split(),
    );
    let mut ck = Checkpoint {
        dir: path.to_path_buf(),
        meta,
        model,
        momentum: None,
    };
    let p = prepare_for(&ck, data, events)?;
    // BatchNorm back after the convs the exporter folded it into (see `model::unfold`), with
    // statistics of the evaluation transform: the exported function is what is restored.
    let batches = calibration_batches(&p, &ck.meta.normalization, device, None)?;
    if let Some(m) = unfold_batchnorm(&ck.model, &batches)
        .map_err(|e| Error::bad_input(path, format!("{}: {e:#}", path.display())))?
    {
        ck.meta.spec = m.spec.clone();
        ck.model = m;
    }
    let float = Policy::float(&ck.model.layer_names());
    let measure = |subset, phase| {
        eval_policy(
            &ck.model,
            &float,
            ck.meta.scheme,
            subset,
            &ck.meta.normalization,
            Some(Pass { events, phase }),
        )
    };
    let val = measure(&p.splits.val, "val")?;
    let test = measure(&p.splits.test, "test")?;
    if !(val.top1.is_finite() && test.top1.is_finite() && val.loss.is_finite()) {
        return Err(Error::bad_input(
            path,
            format!(
                "{}: the imported model gives non-finite logits on the data",
                path.display()
            ),
        ));
    }
    ck.meta.val = Some(val);
    ck.meta.test = Some(test);
    if let Some(dir) = save {
        checkpoint::save(dir, &ck.model, &ck.meta)?;
        ck.dir = dir.to_path_buf();
    }
    Ok((ck, p))
}

/// Loads the checkpoint at `path`, or imports it on `data` when it is an ONNX model (with
/// `data.normalization` or the file's metadata as its preprocessing), and the job's data.
pub fn load_prepared(
    path: &Path,
    data: &DataConfig,
    device: Device,
    events: &dyn Events,
) -> Result<(Checkpoint, Prepared)> {
    if is_onnx(path) {
        return onnx_checkpoint(
            path,
            data.normalization.as_ref(),
            data,
            device,
            None,
            events,
        );
    }
    if data.normalization.is_some() {
        return Err(Error::InvalidConfig(format!(
            "--mean/--std set the preprocessing of an imported ONNX model; the checkpoint {} records its own",
            path.display()
        )));
    }
    let ck = checkpoint::load(path, device)?;
    let p = prepare_for(&ck, data, events)?;
    Ok((ck, p))
}

/// The weight quantizer a job on the model read from `source` uses unless told otherwise: a
/// quantized checkpoint's own; LSQ per channel for an ONNX file or a checkpoint of an imported
/// model (whose convs may carry a folded BatchNorm that DoReFa's rescaling to [−1, 1] would
/// undo); DoReFa for ccq's own models (and when the checkpoint cannot be read: loading it
/// reports why).
pub fn default_weight_quantizer(source: Option<&Path>) -> crate::quant::quantizer::WeightQuantizer {
    use crate::quant::quantizer::WeightQuantizer;
    let Some(path) = source else {
        return WeightQuantizer::Dorefa;
    };
    if is_onnx(path) {
        return WeightQuantizer::LsqChannel;
    }
    match crate::train::checkpoint::load_meta(path) {
        Ok((_, m)) if m.policy.is_some() => m.scheme.weight,
        Ok((_, m)) if m.spec.kind == crate::model::ModelKind::Imported => {
            WeightQuantizer::LsqChannel
        }
        _ => WeightQuantizer::Dorefa,
    }
}
