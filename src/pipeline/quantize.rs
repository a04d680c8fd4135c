//! The main job (`ccq quantize`): a CCQ search from a full-precision model to a policy that
//! meets the target, new or resumed.

use super::data::{DataConfig, Prepared, calibration_batches, prepare_for};
use super::search_settings::SearchSettings;
use super::session::Session;
use super::train::{TrainConfig, train};
use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::model::ModelKind;
use crate::search::ccq::{self as search, SearchEnv};
use crate::search::run_dir::RunDir;
use crate::search::state::{PolicyReport, SearchState};
use crate::search::target::{Target, check_reachable};
use crate::train::checkpoint;
use std::path::PathBuf;
use std::time::Instant;

/// Where a new search starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// From this full-precision checkpoint.
    Checkpoint(PathBuf),
    /// From a model trained first, into the run's `fp/` (resumable).
    Train {
        /// Architecture.
        model: ModelKind,
        /// Epochs.
        epochs: usize,
        /// Peak learning rate.
        lr: f64,
    },
}

/// A CCQ search job.
#[derive(Clone, Debug)]
pub struct QuantizeConfig {
    /// The run directory.
    pub run: PathBuf,
    /// Continue the search in `run` with its saved settings (`start`, `target`, `search` and
    /// the data's split are then those of the run; `data` may only point at the same data).
    pub resume: bool,
    /// Where a new search starts.
    pub start: Start,
    /// When the search may stop (`None`: after `qsteps` steps).
    pub target: Option<Target>,
    /// CCQ settings.
    pub search: SearchSettings,
    /// Data (default: the checkpoint's).
    pub data: DataConfig,
    /// Stop this call after this many steps (the run stays resumable).
    pub stop_after: Option<usize>,
    /// Shared settings.
    pub session: Session,
}

impl QuantizeConfig {
    /// A new search of `start` into `run`, to `target`, with the default settings.
    pub fn new(run: impl Into<PathBuf>, start: Start, target: Option<Target>) -> Self {
        QuantizeConfig {
            run: run.into(),
            resume: false,
            start,
            target,
            search: SearchSettings::default(),
            data: DataConfig::default(),
            stop_after: None,
            session: Session::default(),
        }
    }

    /// Checks the settings that do not need the model (the same for new and resumed runs;
    /// a resumed run's saved settings are validated when its state is read).
    pub fn validate(&self) -> Result<()> {
        self.session.validate()?;
        if let Some(t) = &self.target {
            t.validate()
                .map_err(|e| Error::InvalidConfig(format!("{e:#}")))?;
        }
        if self.stop_after == Some(0) {
            return Err(Error::InvalidConfig("stop after must be at least 1".into()));
        }
        if !self.resume {
            self.search
                .config(self.target, &self.session, None)
                .map(|_| ())?;
        }
        Ok(())
    }
}

/// Where a search stands after a call.
#[derive(Clone, Debug)]
pub struct Quantized {
    /// The run directory.
    pub run: PathBuf,
    /// The state (steps, policy, settings).
    pub state: SearchState,
    /// The final policy with its cost and accuracy, once the search has finished.
    pub report: Option<PolicyReport>,
    /// The model's layers (for cost tables).
    pub layers: Vec<crate::model::LayerInfo>,
    /// Wall time of this call.
    pub seconds: f64,
}

/// Runs (or resumes) a search until it finishes, `stop_after` steps have run, or `events`
/// cancels it after a step; a finished search writes `final/` and `policy.json`.
pub fn quantize(cfg: &QuantizeConfig, events: &dyn Events) -> Result<Quantized> {
    cfg.validate()?;
    let devices = cfg.session.start()?;
    let start = Instant::now();
    let run = RunDir::new(&cfg.run);
    let (state, ck, imported) = if cfg.resume {
        let state = run.load_state()?;
        // A resumed search keeps its saved settings; a target that differs is refused, not
        // silently replaced by the saved one.
        if let Some(t) = cfg.target
            && state.config.target != Some(t)
        {
            let saved = state.config.target.map_or("no target".into(), |s| s.flag());
            return Err(Error::incompatible(
                cfg.run.clone(),
                format!(
                    "{}: this search was started with {saved}, and a resumed search keeps its settings; drop {} to continue it, or start a new --out for the new target",
                    cfg.run.display(),
                    t.flag()
                ),
            ));
        }
        let ck = checkpoint::load(&run.checkpoint(&state.checkpoint), devices.device)?;
        events.event(&Event::Resumed {
            path: run.path(),
            unit: "step",
            after: state.step,
        });
        (Some(state), ck, None)
    } else {
        if run.has_search() {
            return Err(Error::incompatible(
                cfg.run.clone(),
                format!(
                    "{} already holds a search; continue it with --resume {0}, or choose another --out",
                    cfg.run.display()
                ),
            ));
        }
        let (fp, imported) = full_precision(cfg, &run, devices.device, events)?;
        let ck = checkpoint::load(&fp, devices.device)?;
        if ck.meta.policy.is_some() {
            return Err(Error::incompatible(
                ck.dir.clone(),
                format!(
                    "{}: CCQ starts from a full-precision checkpoint, this one is already quantized",
                    ck.dir.display()
                ),
            ));
        }
        (None, ck, imported)
    };
    // An imported model's data is loaded already (measured on import).
    let p = match imported {
        Some(p) => p,
        None => prepare_for(&ck, &cfg.data, events)?,
    };
    let norm = ck.meta.normalization.clone();
    let env = SearchEnv {
        splits: &p.splits,
        norm: &norm,
        meta: ck.meta.derived_from(&ck.dir),
        stop_after: cfg.stop_after,
        keep: Vec::new(),
        events,
    };
    let (model, state) = match state {
        Some(s) => (ck.model, s),
        None => {
            let sc = cfg
                .search
                .config(cfg.target, &cfg.session, cfg.data.augment(&p.source))?;
            if let Some(t) = &sc.target {
                check_reachable(t, &ck.model.layers, &sc.lowering, sc.scheme.weight)
                    .map_err(|e| Error::UnreachableTarget(format!("{e:#}")))?;
            }
            let calib = calibration_batches(&p, &norm, devices.device, sc.augment)?;
            search::init(&run, ck.model, sc, ck.dir.clone(), &env, &calib)?
        }
    };
    let (model, state) = search::run(&run, model, state, &env)?;
    let report = if state.finished.is_some() {
        Some(search::finish(&run, &model, &state, &env)?)
    } else {
        None
    };
    Ok(Quantized {
        run: cfg.run.clone(),
        state,
        report,
        layers: model.layers.clone(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The full-precision checkpoint a new search starts from: the given one, one imported from
/// ONNX into the run's `fp/` (with the data it was measured on), or one trained (resumably)
/// into `fp/`.
fn full_precision(
    cfg: &QuantizeConfig,
    run: &RunDir,
    device: tch::Device,
    events: &dyn Events,
) -> Result<(PathBuf, Option<Prepared>)> {
    Ok(match &cfg.start {
        Start::Checkpoint(c) if super::import::is_onnx(c) => {
            // The imported model becomes the run's full-precision checkpoint, so that the
            // search and a resumed run read it like any other.
            let fp = run.fp_checkpoint();
            events.event(&Event::Note(format!(
                "importing {} into {}",
                c.display(),
                fp.display()
            )));
            let (_, p) = super::import::onnx_checkpoint(
                c,
                cfg.data.normalization.as_ref(),
                &cfg.data,
                device,
                Some(&fp),
                events,
            )?;
            (fp, Some(p))
        }
        Start::Checkpoint(c) => (c.clone(), None),
        Start::Train { model, epochs, lr } => {
            let fp = run.fp_checkpoint();
            events.event(&Event::Note(format!(
                "no checkpoint given: training {} for {epochs} epochs into {}",
                model.name(),
                fp.display()
            )));
            let trained = train(
                &TrainConfig {
                    model: *model,
                    data: cfg.data.clone(),
                    epochs: *epochs,
                    lr: *lr,
                    out: fp.clone(),
                    resume: true,
                    stop_after: None,
                    session: Session {
                        threads: None,
                        ..cfg.session.clone()
                    },
                },
                events,
            )?;
            if trained.test.is_none() {
                // Cancelled during the FP training: the same call continues it.
                return Err(Error::Cancelled(format!(
                    "cancelled while training the full-precision model in {}; run the same job again to continue",
                    fp.display()
                )));
            }
            (fp, None)
        }
    })
}
