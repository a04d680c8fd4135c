//! Full-precision training (`ccq train`), resumable epoch by epoch.

use super::data::{DataConfig, prepare};
use super::session::Session;
use crate::data::Normalization;
use crate::error::{Error, Result};
use crate::events::Pass;
use crate::events::{Event, Events};
use crate::model::{ModelKind, ModelSpec, build};
use crate::quant::policy::Policy;
use crate::quant::quantizer::QuantScheme;
use crate::train::checkpoint::{self, CheckpointMeta};
use crate::train::fit::{FitPlan, fit};
use crate::train::run_settings::{RunSettings, data_differences};
use crate::train::{Eval, eval_policy};
use std::path::PathBuf;
use std::time::Instant;

/// A full-precision training job.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Architecture.
    pub model: ModelKind,
    /// Data.
    pub data: DataConfig,
    /// Epochs.
    pub epochs: usize,
    /// Peak learning rate (cosine to 0 over the run).
    pub lr: f64,
    /// Checkpoint directory.
    pub out: PathBuf,
    /// Continue an interrupted run in `out` from its last finished epoch.
    pub resume: bool,
    /// Stop after this many epochs in this call (the job stays resumable).
    pub stop_after: Option<usize>,
    /// Shared settings.
    pub session: Session,
}

impl TrainConfig {
    /// A job with ccq's defaults: 10 epochs at peak learning rate 0.05, on the default data.
    pub fn new(model: ModelKind, out: impl Into<PathBuf>) -> Self {
        TrainConfig {
            model,
            data: DataConfig::default(),
            epochs: 10,
            lr: 0.05,
            out: out.into(),
            resume: false,
            stop_after: None,
            session: Session::default(),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        self.session.validate()?;
        if self.epochs == 0 {
            return Err(Error::InvalidConfig("epochs must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::InvalidConfig(format!(
                "learning rate {} must be positive and finite",
                self.lr
            )));
        }
        if self.stop_after == Some(0) {
            return Err(Error::InvalidConfig("stop after must be at least 1".into()));
        }
        Ok(())
    }
}

/// What a training job produced.
#[derive(Clone, Debug)]
pub struct Trained {
    /// The checkpoint directory.
    pub checkpoint: PathBuf,
    /// Epochs trained so far.
    pub epochs: usize,
    /// Epochs the job asks for.
    pub total_epochs: usize,
    /// Test accuracy, once every epoch has run (`None`: stopped early, resumable).
    pub test: Option<Eval>,
    /// Wall time of this call.
    pub seconds: f64,
}

/// Trains a full-precision model, saving a resumable checkpoint after every epoch.
pub fn train(cfg: &TrainConfig, events: &dyn Events) -> Result<Trained> {
    cfg.validate()?;
    let devices = cfg.session.start()?;
    let source = cfg.data.source(None)?;
    let augment = cfg.data.augment(&source);
    let p = prepare(source.clone(), cfg.data.split(), events)?;
    let d = &p.splits.train.data;
    let spec = ModelSpec {
        kind: cfg.model,
        channels: d.channels,
        height: d.height,
        width: d.width,
        classes: d.classes.len(),
        graph: None,
    };
    let mut model = build(&spec, devices.device)?;
    let norm = Normalization::from_subset(&p.splits.train)
        .map_err(|e| Error::bad_input(p.source.dir.clone(), format!("{e:#}")))?;
    let mut meta = CheckpointMeta::new(
        &model,
        None,
        QuantScheme::default(),
        norm.clone(),
        source,
        cfg.data.split(),
    );
    let hyper = cfg.session.hyper(5e-4);
    let settings = RunSettings {
        epochs: cfg.epochs,
        lr: cfg.lr,
        seed: cfg.session.seed,
        hyper,
        augment,
    };
    meta.training = Some(settings.clone());
    let mut start_epoch = 0;
    let mut momentum = None;
    if cfg.resume && cfg.out.join(checkpoint::META).is_file() {
        let ck = checkpoint::load(&cfg.out, devices.device)?;
        if ck.meta.spec != spec || ck.meta.policy.is_some() {
            return Err(Error::incompatible(
                cfg.out.clone(),
                format!(
                    "--resume: {} holds a different model or a quantized one",
                    cfg.out.display()
                ),
            ));
        }
        // A resumed job continues exactly only with the settings it was started with.
        let mut diff = data_differences((&ck.meta.data, &ck.meta.split), (&meta.data, &meta.split));
        if let Some(then) = &ck.meta.training {
            diff.extend(settings.differences(then));
        }
        if !diff.is_empty() {
            return Err(Error::incompatible(
                cfg.out.clone(),
                format!(
                    "--resume: {} was trained with other settings: {}; repeat the command it was started with, or train into a new --out",
                    cfg.out.display(),
                    diff.join(", ")
                ),
            ));
        }
        start_epoch = ck.meta.epochs;
        events.event(&Event::Resumed {
            path: &cfg.out,
            unit: "epoch",
            after: start_epoch,
        });
        meta = ck.meta;
        meta.training = Some(settings);
        model = ck.model;
        momentum = ck.momentum;
        // A finished and tested run has nothing left to do: its checkpoint stays as it is.
        if meta.epochs >= cfg.epochs
            && let Some(test) = meta.test
        {
            events.event(&Event::Note(format!(
                "{} already finished its {} epochs (test top-1 {:.2}%); nothing to resume, nothing rewritten",
                cfg.out.display(),
                meta.epochs,
                100.0 * test.top1
            )));
            return Ok(Trained {
                checkpoint: cfg.out.clone(),
                epochs: meta.epochs,
                total_epochs: cfg.epochs,
                test: Some(test),
                seconds: 0.0,
            });
        }
    }
    let policy = Policy::float(&model.layer_names());
    let plan = FitPlan {
        epochs: cfg.epochs,
        start_epoch,
        lr: cfg.lr,
        lr_end: 0.0,
        hyper,
        augment,
        seed: cfg.session.seed,
        stop_after: cfg.stop_after,
        extra_samples: 0,
        teacher: None,
    };
    events.event(&Event::Note(format!(
        "training {} ({} weights) for {} epochs",
        cfg.model.name(),
        model.layers.iter().map(|l| l.params).sum::<usize>(),
        cfg.epochs
    )));
    let start = Instant::now();
    let out = cfg.out.clone();
    let model = fit(
        model,
        &policy,
        QuantScheme::default(),
        &p.splits,
        &norm,
        &plan,
        momentum,
        &mut |m, mom, rec| meta.record_epoch(&out, m, mom, rec),
        events,
    )?;
    if meta.epochs < cfg.epochs {
        return Ok(Trained {
            checkpoint: cfg.out.clone(),
            epochs: meta.epochs,
            total_epochs: cfg.epochs,
            test: None,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    let test = test_and_save(
        &model,
        &policy,
        QuantScheme::default(),
        &p,
        &mut meta,
        &cfg.out,
        events,
    )?;
    Ok(Trained {
        checkpoint: cfg.out.clone(),
        epochs: meta.epochs,
        total_epochs: cfg.epochs,
        test: Some(test),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The last act of a training job: test accuracy of `model` under `policy`, recorded in `meta`
/// and saved with the model as the checkpoint in `out`.
pub(super) fn test_and_save(
    model: &crate::model::Model,
    policy: &Policy,
    scheme: QuantScheme,
    p: &super::data::Prepared,
    meta: &mut CheckpointMeta,
    out: &std::path::Path,
    events: &dyn Events,
) -> Result<Eval> {
    let test = eval_policy(
        model,
        policy,
        scheme,
        &p.splits.test,
        &meta.normalization.clone(),
        Some(Pass {
            events,
            phase: "test",
        }),
    )?;
    meta.test = Some(test);
    checkpoint::save(out, model, meta)?;
    events.event(&Event::CheckpointWritten { path: out });
    Ok(test)
}
