//! Quantization-aware training at a uniform or per-layer policy (`ccq qat`).

use super::data::{DataConfig, calibration_batches};
use super::session::Session;
use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::model::cost::{ModelCost, model_cost};
use crate::quant::policy::{LayerBits, Policy};
use crate::quant::quantizer::QuantScheme;
use crate::train::calibrate::calibrate;
use crate::train::checkpoint::CheckpointMeta;
use crate::train::distill::{Distill, Teacher};
use crate::train::fit::{FitPlan, fit};
use crate::train::{Eval, eval_policy};
use std::path::PathBuf;
use std::time::Instant;

/// Which bits each layer gets.
#[derive(Clone, Debug)]
pub enum Bits {
    /// The same weight/activation bits for every layer.
    Uniform(LayerBits),
    /// A policy file (`{"layers": {"stem.conv": {"w": 4, "a": 8}, ...}}`).
    PolicyFile(PathBuf),
    /// A policy.
    Policy(Policy),
}

/// A quantization-aware training job.
#[derive(Clone, Debug)]
pub struct QatConfig {
    /// Checkpoint to start from (directory, or its weights file).
    pub checkpoint: PathBuf,
    /// The bits.
    pub bits: Bits,
    /// Epochs.
    pub epochs: usize,
    /// Peak learning rate (cosine to 0).
    pub lr: f64,
    /// Quantizers.
    pub scheme: QuantScheme,
    /// Distil from the starting (full-precision) checkpoint while training (`None`: labels only).
    pub distill: Option<Distill>,
    /// Data (default: the checkpoint's).
    pub data: DataConfig,
    /// Output checkpoint directory.
    pub out: PathBuf,
    /// Shared settings.
    pub session: Session,
}

impl QatConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        self.session.validate()?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::InvalidConfig(format!(
                "learning rate {} must be positive and finite",
                self.lr
            )));
        }
        if let Some(d) = &self.distill {
            d.validate().map_err(Error::InvalidConfig)?;
        }
        if let Bits::Uniform(b) = &self.bits {
            b.validate()
                .map_err(|e| Error::InvalidConfig(format!("{e:#}")))?;
        }
        Ok(())
    }
}

/// What a QAT job produced.
#[derive(Clone, Debug)]
pub struct Qat {
    /// The checkpoint written.
    pub checkpoint: PathBuf,
    /// Validation top-1 of the starting model in full precision.
    pub fp_val: f64,
    /// Validation top-1 after calibration, before training.
    pub calibrated_val: f64,
    /// Test accuracy after training.
    pub test: Eval,
    /// Test top-1 of the source checkpoint, if it recorded one.
    pub source_test: Option<f64>,
    /// Layer names, and the cost of the policy.
    pub layers: Vec<crate::model::LayerInfo>,
    /// Cost.
    pub cost: ModelCost,
    /// Wall time of training.
    pub seconds: f64,
}

/// Calibrates and trains a checkpoint at a policy.
pub fn qat(cfg: &QatConfig, events: &dyn Events) -> Result<Qat> {
    cfg.validate()?;
    let devices = cfg.session.start()?;
    let (ck, p) = super::import::load_prepared(&cfg.checkpoint, &cfg.data, devices.device, events)?;
    let augment = cfg.data.augment(&p.source);
    let names = ck.model.layer_names();
    let policy = match &cfg.bits {
        Bits::Uniform(b) => Policy::uniform(&names, *b),
        Bits::PolicyFile(f) => Policy::load(f, &names)?,
        Bits::Policy(p) => {
            if p.names != names {
                return Err(Error::incompatible(
                    ck.dir.clone(),
                    format!(
                        "{}: the policy names layers {:?}, the model has {:?}",
                        ck.dir.display(),
                        p.names,
                        names
                    ),
                ));
            }
            p.clone()
        }
    };
    let scheme = cfg.scheme;
    let norm = ck.meta.normalization.clone();
    let model = ck.model;
    let teacher = match cfg.distill {
        None => None,
        Some(_) if ck.meta.policy.is_some() => {
            return Err(Error::InvalidConfig(format!(
                "--distill: {} was trained at a quantization policy; distillation learns from a full-precision checkpoint",
                ck.dir.display()
            )));
        }
        Some(d) => Some(Teacher::new(model.clone(), scheme, d)),
    };
    let fp = eval_policy(
        &model,
        &Policy::float(&names),
        scheme,
        &p.splits.val,
        &norm,
        None,
    )?;
    // A checkpoint already trained with these quantizers keeps its learned clips and steps.
    if ck.meta.policy.is_none() || ck.meta.scheme != scheme {
        calibrate(
            &model.net,
            &policy,
            scheme,
            &calibration_batches(&p, &norm, devices.device, augment)?,
        );
    }
    let before = eval_policy(&model, &policy, scheme, &p.splits.val, &norm, None)?;
    let cost = model_cost(&model.layers, &policy, scheme.weight);
    events.event(&Event::Note(format!(
        "QAT of {} at {} ({:.2}x compression{}): val top-1 FP {:.2}% -> {:.2}% after calibration, before training",
        ck.meta.spec.kind.name(),
        match &cfg.bits {
            Bits::Uniform(b) => format!("W/A {}/{}", b.w, b.a),
            _ => "the policy".into(),
        },
        cost.compression,
        cfg.distill.map_or(String::new(), |d| format!(
            ", distilling from the FP model: weight {}, temperature {}",
            d.weight, d.temperature
        )),
        100.0 * fp.top1,
        100.0 * before.top1
    )));
    let mut meta = CheckpointMeta::new(
        &model,
        Some(policy.clone()),
        scheme,
        norm.clone(),
        p.source.clone(),
        ck.meta.split,
    );
    meta.parent = Some(ck.dir.clone());
    let plan = FitPlan {
        epochs: cfg.epochs,
        start_epoch: 0,
        lr: cfg.lr,
        lr_end: 0.0,
        hyper: cfg.session.hyper(1e-4),
        augment,
        seed: cfg.session.seed,
        stop_after: None,
        extra_samples: 0,
        teacher: teacher.as_ref(),
    };
    let start = Instant::now();
    let out = cfg.out.clone();
    let model = fit(
        model,
        &policy,
        scheme,
        &p.splits,
        &norm,
        &plan,
        None,
        &mut |m, mom, rec| meta.record_epoch(&out, m, mom, rec),
        &crate::events::Uncancellable(events),
    )?;
    let test =
        super::train::test_and_save(&model, &policy, scheme, &p, &mut meta, &cfg.out, events)?;
    Ok(Qat {
        checkpoint: cfg.out.clone(),
        fp_val: fp.top1,
        calibrated_val: before.top1,
        test,
        source_test: ck.meta.test.map(|t| t.top1),
        layers: model.layers.clone(),
        cost,
        seconds: start.elapsed().as_secs_f64(),
    })
}
