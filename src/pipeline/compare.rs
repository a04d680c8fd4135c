//! CCQ against the Hessian-aware, uniform and random baselines at the same budgets
//! (`ccq compare`), resumable: every finished result is saved in the report as it comes.

use super::data::{DataConfig, Prepared, calibration_batches};
use super::search_settings::SearchSettings;
use super::session::Session;
use crate::data::Normalization;
use crate::error::{Error, Result};
use crate::events::{Event, Events, Pass};
use crate::model::cost::model_cost;
use crate::model::{LayerInfo, Model};
use crate::names::Named;
use crate::quant::policy::{Ladder, LayerBits, Policy};
use crate::quant::quantizer::QuantScheme;
use crate::report::{MethodResult, Report, html};
use crate::search::audition;
use crate::search::baselines::{ActBits, Method, hawq, hessian_traces, random, uniform};
use crate::search::ccq::{self as search, SearchEnv};
use crate::search::config::{FinalFrom, SearchConfig};
use crate::search::extend::retarget;
use crate::search::lookahead::{self, Lookahead};
use crate::search::polish::polish;
use crate::search::reallocate::reallocate;
use crate::search::run_dir::RunDir;
use crate::search::state::SearchState;
use crate::search::target::{Target, check_reachable};
use crate::train::checkpoint::{self, Checkpoint, write_atomic};
use crate::train::distill::Teacher;
use crate::train::fit::{FitPlan, fit};
use crate::train::{Devices, eval_policy};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod repeats;

/// A comparison job.
#[derive(Clone, Debug)]
pub struct CompareConfig {
    /// Full-precision checkpoint.
    pub checkpoint: PathBuf,
    /// Compression budgets.
    pub budgets: Vec<f64>,
    /// Methods to run.
    pub methods: Vec<Method>,
    /// Fine-tuning epochs every method gets after allocation.
    pub ft_epochs: usize,
    /// Peak learning rate of that fine-tuning (cosine to 0).
    pub ft_lr: f64,
    /// Fine-tunings of each policy, each with its own seed (the first with the session's); a
    /// result's test top-1 is their mean, and each is kept in the report.
    pub ft_repeats: usize,
    /// Images for the Hessian traces.
    pub hessian_images: usize,
    /// Hutchinson samples per layer (each one Hessian-vector product of that layer's block).
    pub hessian_samples: usize,
    /// Also give every other method as many training epochs as CCQ spent reaching each budget.
    pub equal_compute: bool,
    /// Also fine-tune and report CCQ's search policy wherever the re-allocation or the polish
    /// changed it (`ccq (not re-allocated)`, `ccq (no polish)`), at twice CCQ's fine-tunings
    /// there.
    pub search_policy_rows: bool,
    /// Also fine-tune the search's start policy (every layer at the ladder's top, e.g. W8A8)
    /// from the FP model as every method is, and give each result against it: the control that
    /// separates the quantization's cost from what the fine-tuning itself adds to an FP model
    /// that was not trained to convergence.
    pub control: bool,
    /// Output directory (report.html, report.json, the CCQ run in ccq/).
    pub out: PathBuf,
    /// CCQ settings.
    pub search: SearchSettings,
    /// Data (default: the checkpoint's).
    pub data: DataConfig,
    /// Shared settings.
    pub session: Session,
}

impl CompareConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        self.session.validate()?;
        if self.budgets.is_empty() {
            return Err(Error::InvalidConfig("give at least one budget".into()));
        }
        if self.budgets.iter().any(|r| !(r.is_finite() && *r > 1.0)) {
            return Err(Error::InvalidConfig(
                "--target-compression values must be above 1".into(),
            ));
        }
        if self.methods.is_empty() {
            return Err(Error::InvalidConfig("give at least one method".into()));
        }
        if self.ft_repeats == 0 {
            return Err(Error::InvalidConfig(
                "--ft-repeats must be at least 1".into(),
            ));
        }
        if !(self.ft_lr.is_finite() && self.ft_lr > 0.0) {
            return Err(Error::InvalidConfig(format!(
                "fine-tuning learning rate {} must be positive and finite",
                self.ft_lr
            )));
        }
        self.search.config(None, &self.session, None).map(|_| ())
    }
}

/// What a comparison produced.
#[derive(Clone, Debug)]
pub struct Compared {
    /// Every result, with the FP accuracy and CCQ's steps.
    pub report: Report,
    /// The page.
    pub html: PathBuf,
}

/// Suffix of CCQ's result without the budget polish.
pub const NO_POLISH: &str = " (no polish)";

/// Suffix of CCQ's result at the search's own policy, where the re-allocation changed it.
pub const NOT_REALLOCATED: &str = " (not re-allocated)";

/// Suffix of a CCQ row re-allocated without the look-ahead prices (`--lookahead-prices`): the
/// control of the one priced with them.
pub const NO_LOOKAHEAD: &str = " (no look-ahead)";

/// Suffix of a CCQ row re-allocated without the FP prices (`--fp-prices`): the control of the
/// one priced with them.
pub const NO_FP_PRICES: &str = " (no FP prices)";

/// Suffix of a CCQ row re-allocated without the top prices (`--top-prices`): the control of the
/// one priced with them.
pub const NO_TOP_PRICES: &str = " (no top prices)";

/// Suffix of a CCQ row at the re-allocation's own choice where the audition (`--audition`)
/// chose a rival: the control of the one it chose.
pub const NO_AUDITION: &str = " (no audition)";
/// Suffix of CCQ's least-price policy, where the noise rule (`--noise-ties`) took another.
pub const LEAST_PRICE: &str = " (least price)";

/// The look-ahead prices of a CCQ milestone (or its FP or top prices), in its directory.
pub const LOOKAHEAD: &str = "lookahead.json";

pub use crate::report::EQUAL;

/// The method name of the control (`--control`).
pub const CONTROL: &str = "control";

/// Settings file of a comparison: what its results depend on (budgets and methods may grow).
const SETTINGS: &str = "compare.json";

/// The file in a comparison's directory that keeps HAWQ-style's Hessian traces.
const TRACES: &str = "hessian-traces.json";

/// What every part of a comparison shares.
struct Bench<'a> {
    cfg: &'a CompareConfig,
    p: &'a Prepared,
    norm: &'a Normalization,
    devices: &'a Devices,
    ck: &'a Checkpoint,
    search: SearchConfig,
    scheme: QuantScheme,
    fp_test: f64,
    /// The compression CCQ's search starts at: every layer at the ladder's top.
    start_compression: f64,
    /// The FP model every method's fine-tuning distils from (`--distill`).
    teacher: Option<Teacher>,
    events: &'a dyn Events,
    /// The fine-tunings from FP run so far ([`Bench::tuned_from_fp`]).
    measured: RefCell<Measured>,
}

/// Test top-1 and seconds of the fine-tunings from FP, by policy bits, epochs (their bits) and
/// repeat.
type Measured = HashMap<(Vec<LayerBits>, u64, usize), (f64, f64)>;

/// Runs a comparison (or continues one in `out` made with the same settings).
pub fn compare(cfg: &CompareConfig, events: &dyn Events) -> Result<Compared> {
    cfg.validate()?;
    let devices = cfg.session.start()?;
    let (ck, p) = super::import::load_prepared(&cfg.checkpoint, &cfg.data, devices.device, events)?;
    if ck.meta.policy.is_some() {
        return Err(Error::incompatible(
            ck.dir.clone(),
            format!(
                "{}: compare starts from a full-precision checkpoint",
                ck.dir.display()
            ),
        ));
    }
    let search_cfg = cfg
        .search
        .config(None, &cfg.session, cfg.data.augment(&p.source))?;
    let scheme = search_cfg.scheme;
    // Every method shares the ladder and floor. If not even the smallest budget is in reach
    // there is nothing to compare; otherwise each budget out of reach is noted in the report.
    let smallest = cfg.budgets.iter().copied().fold(f64::INFINITY, f64::min);
    if let Err(e) = reachable(&ck.model.layers, &search_cfg, smallest) {
        return Err(Error::UnreachableTarget(format!(
            "--target-compression {}: no method can meet any of these budgets: {e:#}",
            cfg.budgets
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )));
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::Write {
        path: cfg.out.clone(),
        message: format!("cannot create {}: {e}", cfg.out.display()),
    })?;
    let norm = ck.meta.normalization.clone();
    let fp_test = eval_policy(
        &ck.model,
        &Policy::float(&ck.model.layer_names()),
        scheme,
        &p.splits.test,
        &norm,
        Some(Pass {
            events,
            phase: "fp test",
        }),
    )?
    .top1;
    check_settings(&cfg.out, settings(cfg, &ck, &search_cfg, &p)?)?;
    let teacher = search_cfg
        .distill
        .map(|d| Teacher::new(ck.model.clone(), scheme, d));
    let start = search_cfg.lowering.start(&ck.model.layer_names());
    let start_compression = model_cost(&ck.model.layers, &start, scheme.weight).compression;
    let bench = Bench {
        cfg,
        p: &p,
        norm: &norm,
        devices: &devices,
        ck: &ck,
        search: search_cfg,
        scheme,
        fp_test,
        start_compression,
        teacher,
        events,
        measured: RefCell::default(),
    };
    let mut report = bench.load_report()?;
    let stale = drop_stale_baselines(&mut report, ActBits::of(&bench.search.lowering));
    let (again, dropped): (Vec<_>, Vec<_>) = stale.iter().partition(|(method, budget)| {
        let base = method.strip_suffix(EQUAL).unwrap_or(method);
        cfg.budgets.contains(budget)
            && cfg.methods.iter().any(|m| m.name() == base)
            && (base == method.as_str() || cfg.equal_compute)
    });
    let named = |rows: &[&(String, f64)]| {
        rows.iter()
            .map(|(m, b)| format!("{m} at {b}x"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let why = "an earlier ccq set their activations outside the activation ladder (tied to the weights despite --untied)";
    if !again.is_empty() {
        events.event(&Event::Note(format!(
            "recomputing {}: {why}",
            named(&again)
        )));
    }
    if !dropped.is_empty() {
        events.event(&Event::Note(format!(
            "dropped {} from the report, not recomputed: {why}, and this run does not ask for them (name their methods and budgets to measure them again)",
            named(&dropped)
        )));
    }
    bench.add_repeats(&mut report)?;
    if cfg.control && report.control.is_none() {
        report.control = Some(bench.control(&start)?);
        save_report(&cfg.out, &report)?;
    }
    let mut budgets = cfg.budgets.clone();
    budgets.sort_by(|x, y| x.total_cmp(y));
    let mut traces: Option<(Vec<f64>, f64)> = None;
    for &m in &cfg.methods {
        if m == Method::Ccq {
            bench.ccq(&budgets, &mut report)?;
            continue;
        }
        for &b in &budgets {
            if !done(&report, m.name(), b) {
                bench.baseline(m, b, &mut traces, &mut report)?;
            }
        }
    }
    if cfg.equal_compute {
        bench.equal_compute(&mut report)?;
    }
    save_report(&cfg.out, &report)?;
    Ok(Compared {
        report,
        html: cfg.out.join("report.html"),
    })
}

/// Whether `report` holds `method`'s result at `budget`.
fn done(report: &Report, method: &str, budget: f64) -> bool {
    report
        .results
        .iter()
        .any(|x| x.method == method && x.budget == budget)
}

impl Bench<'_> {
    /// The report saved in `out`, or a new one.
    fn load_report(&self) -> Result<Report> {
        let path = self.cfg.out.join("report.json");
        if let Ok(t) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&t).map_err(|e| {
                Error::bad_input(
                    path.clone(),
                    format!(
                        "{}: corrupt report; delete it to start over ({e})",
                        path.display()
                    ),
                )
            });
        }
        let kind = self.ck.meta.spec.kind.name();
        let lowering = &self.search.lowering;
        let acts = match ActBits::of(lowering) {
            ActBits::Tied => "activations tied to the weights".to_string(),
            ActBits::Fixed(a) => format!(
                "activations untied on ladder {:?}, the baselines' at {a} bits",
                lowering.act_ladder.0
            ),
        };
        Ok(Report {
            title: format!("ccq compare: {kind} on {}", self.p.source.dir.display()),
            model: kind.into(),
            layers: self.ck.model.layer_names(),
            fp_test: Some(self.fp_test),
            ft_epochs: self.cfg.ft_epochs,
            results: vec![],
            ccq_steps: vec![],
            control: None,
            notes: vec![format!(
                "quantizers {:?}/{:?}; ladder {:?}; {acts}; floor {} bits for every method; HAWQ traces from {} images × {} Hutchinson samples per layer (exact Hessian-vector products, one block at a time); budgets are weight compression vs FP32 with scales counted",
                self.scheme.weight,
                self.scheme.act,
                lowering.ladder.0,
                lowering.floor,
                self.cfg.hessian_images,
                self.cfg.hessian_samples
            )],
        })
    }

    /// The control: the search's start policy `start` fine-tuned from the FP model as every
    /// method is (`--ft-epochs`, `--ft-repeats`).
    fn control(&self, start: &Policy) -> Result<MethodResult> {
        // Its budget is its own compression, to two decimals as the report prints it.
        let at = (100.0 * self.start_compression).round() / 100.0;
        let epochs = self.cfg.ft_epochs as f64;
        self.finish(CONTROL, at, start, 0.0, epochs)
    }

    /// Whether CCQ's ladder and floor can reach `b`.
    fn reachable(&self, b: f64) -> Result<(), anyhow::Error> {
        reachable(&self.ck.model.layers, &self.search, b)
    }

    /// CCQ: one search to the largest reachable budget, keeping the first checkpoint past each
    /// budget; each is polished (if set) and fine-tuned like every other method. A budget the
    /// search stopped short of (no arm awake, `--qsteps`) is skipped with its reason.
    fn ccq(&self, budgets: &[f64], report: &mut Report) -> Result<()> {
        let reachable: Vec<f64> = budgets
            .iter()
            .copied()
            .filter(|b| self.reachable(*b).is_ok())
            .collect();
        let name = Method::Ccq.name();
        if budgets.iter().any(|b| !done(report, name, *b)) && !reachable.is_empty() {
            let (run, state) = self.ccq_search(&reachable)?;
            report.ccq_steps = state.steps.clone();
            for &b in &reachable {
                if done(report, name, b) {
                    continue;
                }
                match reached(&state, self.start_compression, b) {
                    Some(n) => self.ccq_result(&run, &state, b, n, report)?,
                    None => {
                        let end = state.steps.last().map_or(0.0, |s| s.compression);
                        let why = state.finished.as_deref().unwrap_or("not finished");
                        let note = format!("CCQ: its search stopped at {end:.2}x ({why})");
                        report.results.push(self.skipped(Method::Ccq, b, note));
                    }
                }
                save_report(&self.cfg.out, report)?;
            }
        }
        for &b in budgets.iter().filter(|b| !reachable.contains(b)) {
            if !done(report, name, b) {
                let e = self.reachable(b).expect_err("filtered as unreachable");
                report
                    .results
                    .push(self.skipped(Method::Ccq, b, format!("CCQ: {e}")));
            }
        }
        save_report(&self.cfg.out, report)
    }

    /// The directory of CCQ's search: `out/ccq`.
    fn ccq_run(&self) -> RunDir {
        RunDir::new(self.cfg.out.join("ccq"))
    }

    /// The search (new or resumed) in `out/ccq`, to the largest budget, keeping milestones; a
    /// search aimed at a smaller one (a larger budget added since) goes on to it.
    fn ccq_search(&self, reachable: &[f64]) -> Result<(RunDir, SearchState)> {
        let run = self.ccq_run();
        let max = reachable.iter().copied().fold(0.0, f64::max);
        let env = SearchEnv {
            splits: &self.p.splits,
            norm: self.norm,
            meta: self.ck.meta.derived_from(&self.ck.dir),
            stop_after: None,
            keep: reachable.to_vec(),
            events: self.events,
        };
        let (model, state) = if run.has_search() {
            let mut state = run.load_state()?;
            let restored = retarget(&run, &mut state, max, self.devices.device).map_err(|e| {
                Error::incompatible(
                    run.path(),
                    format!(
                        "{}: this comparison's CCQ search was aimed at its largest budget then, and cannot go on to {max}x: {e:#}; list {max}x in a new --out",
                        run.path().display()
                    ),
                )
            })?;
            match restored {
                Some(model) => (model, state),
                None => {
                    let path = run.checkpoint(&state.checkpoint);
                    (checkpoint::load(&path, self.devices.device)?.model, state)
                }
            }
        } else {
            // Every method gets the same fine-tuning after allocation: no final phase here.
            let mut cfg = self.cfg.search.config(
                Some(Target::Compression(max)),
                &self.cfg.session,
                self.cfg.data.augment(&self.p.source),
            )?;
            cfg.final_epochs = 0;
            search::init(
                &run,
                self.ck.model.clone(),
                cfg,
                self.ck.dir.clone(),
                &env,
                &self.calibration()?,
            )?
        };
        let (_, state) = search::run(&run, model, state, &env)?;
        if state.finished.is_none() {
            return Err(Error::Cancelled(format!(
                "the CCQ search in {} was cancelled; run the same comparison again to continue it",
                run.path().display()
            )));
        }
        Ok((run, state))
    }

    /// The search's policy at budget `b` (the first step that reached it) and its weights
    /// there where the search kept them: the milestone checkpoint, or else, for a budget added
    /// to the comparison after the search had passed it, the policy replayed from the step
    /// records (no weights). `n` is the number of steps that first reached `b` (0: the start).
    fn ccq_at(
        &self,
        run: &RunDir,
        state: &SearchState,
        b: f64,
        n: usize,
    ) -> Result<(Policy, Option<Model>)> {
        let dir = run.milestone(b);
        if dir.join(checkpoint::META).is_file() {
            let kept = checkpoint::load(&dir, self.devices.device)
                .map_err(|e| Error::bad_input(&dir, format!("CCQ's {b}x checkpoint: {e:#}")))?;
            let policy = kept.meta.policy.clone().ok_or_else(|| {
                Error::bad_input(&dir, format!("{}: no policy in it", dir.display()))
            })?;
            return Ok((policy, Some(kept.model)));
        }
        if state.config.budget_aware {
            return Err(Error::incompatible(
                run.path(),
                format!(
                    "{}: {b}x was added after this comparison's budget-aware search had passed it (step {n}) without aiming at it; list it from the start, in a new --out",
                    run.path().display(),
                ),
            ));
        }
        Ok((state.policy_after(&self.ck.model.layer_names(), n), None))
    }

    /// CCQ's result at budget `b`, which `n` steps first reached, from the search's policy there
    /// ([`Self::ccq_at`]), re-allocated from the prices the search had measured by then, or else
    /// polished (each if set); when either changes the policy, the search's own result is shown
    /// beside it (unless [`CompareConfig::search_policy_rows`] is off).
    fn ccq_result(
        &self,
        run: &RunDir,
        state: &SearchState,
        b: f64,
        n: usize,
        report: &mut Report,
    ) -> Result<()> {
        let (mut policy, model) = self.ccq_at(run, state, b, n)?;
        let searched = policy.clone();
        let search_secs = seconds_to_reach(state, self.start_compression, b);
        let name = Method::Ccq.name();
        let target = Target::Compression(b);
        let layers = &self.ck.model.layers;
        // A budget the start met keeps the start: nothing was priced, and nothing can go up.
        let realloc = |lookahead: Option<&Lookahead>| {
            reallocate(
                layers,
                &state.steps[..n],
                &policy,
                &self.search.lowering,
                &target,
                self.scheme.weight,
                self.search.pricing(),
                lookahead,
                self.search.audition.map_or(0, |a| a.finalists - 1),
            )
        };
        let failed =
            |e: anyhow::Error| Error::Internal(format!("re-allocating CCQ's {b}x policy: {e:#}"));
        let reach = lookahead::Reach::of(&self.search);
        let priced_ahead =
            self.search.reallocate && (self.search.lookahead_prices || reach.from_top()) && n > 0;
        // Without the look-ahead: the control its rows are measured against.
        let plain = if self.search.reallocate && n > 0 {
            realloc(None).map_err(failed)?
        } else {
            None
        };
        let reallocation = if priced_ahead {
            // The FP model calibrated where the rungs are priced, or the search's weights.
            let fp;
            let on = if reach.from_top() {
                fp = lookahead::fp_at(
                    &self.ck.model,
                    &reach.around(&self.search, &policy),
                    &self.search,
                    &self.p.splits,
                    self.norm,
                )
                .map_err(failed)?;
                &fp
            } else {
                let what = "the look-ahead prices (--lookahead-prices)";
                self.searched(model.as_ref(), b, what)?
            };
            let (priced, with) = lookahead::reallocate_ahead(
                on,
                &policy,
                &self.search,
                &self.p.splits,
                self.norm,
                plain.as_ref(),
                realloc,
                self.events,
            )
            .map_err(failed)?;
            self.keep_lookahead(run, &priced, b)?;
            with
        } else {
            plain.clone()
        };
        // The audition of the re-allocation's choice against its rivals, on the FP model.
        let mut reallocation = reallocation;
        let mut auditioned = None;
        if let (Some(settings), Some(r)) = (self.search.audition, reallocation.as_mut())
            && !r.rivals.is_empty()
        {
            let a = audition::audition(
                &self.ck.model,
                r,
                &self.search,
                settings,
                &self.p.splits,
                self.norm,
                self.events,
            )
            .map_err(|e| Error::Internal(format!("auditioning CCQ's {b}x finalists: {e:#}")))?;
            if let Some(a) = a {
                r.price = a.finalists[a.chosen].price;
                r.policy = a.winner().clone();
                auditioned = Some(a);
            }
        }
        // The least-price policy, where the noise rule took another.
        let least = reallocation
            .as_ref()
            .and_then(|r| r.least.as_ref())
            .map(|l| l.policy.clone());
        let reallocation = reallocation.filter(|r| r.policy != policy);
        // The search's own policy beside the one that replaced it.
        let beside = |suffix: &str, policy: &Policy, report: &mut Report| -> Result<()> {
            if self.cfg.search_policy_rows {
                let method = format!("{name}{suffix}");
                let raw = self.ccq_finish(&method, b, model.as_ref(), policy, search_secs)?;
                report.results.push(raw);
            }
            Ok(())
        };
        if let Some(r) = reallocation {
            beside(NOT_REALLOCATED, &policy, report)?;
            match &model {
                Some(m) => search::adopt(m, &r, self.scheme, self.events),
                None => search::report_reallocation(&r, self.events),
            }
            policy = r.policy;
        } else if self.search.polish && n > 0 {
            let (polished, raises) = polish(
                self.searched(model.as_ref(), b, "the budget polish (--polish)")?,
                &policy,
                &self.search.lowering,
                &target,
                self.search.polish_swaps,
                self.scheme,
                &self.search.trial_split(&self.p.splits.bandit),
                self.norm,
            )?;
            if !raises.is_empty() {
                beside(NO_POLISH, &policy, report)?;
                policy = polished;
            }
        }
        // The look-ahead's (or the FP prices') control: the re-allocation without them,
        // wherever the two differ (unless that is the search's own policy, shown as such), with
        // or without the search policy rows.
        let searched_shown = self.cfg.search_policy_rows && policy != searched;
        // A control row: `own` fine-tuned beside as `ccq<suffix>`, on the search's weights
        // moved to it and back.
        let control = |suffix: &str, own: &Policy, report: &mut Report| -> Result<()> {
            if let Some(m) = &model {
                search::rescale_between(m, &policy, own, self.scheme);
            }
            let method = format!("{name}{suffix}");
            let raw = self.ccq_finish(&method, b, model.as_ref(), own, search_secs)?;
            report.results.push(raw);
            if let Some(m) = &model {
                search::rescale_between(m, own, &policy, self.scheme);
            }
            Ok(())
        };
        if priced_ahead
            && let Some(without) = plain
                .map(|p| p.policy)
                .filter(|p| *p != policy && !(searched_shown && *p == searched))
        {
            let suffix = match reach {
                lookahead::Reach::Top => NO_TOP_PRICES,
                lookahead::Reach::Whole => NO_FP_PRICES,
                lookahead::Reach::Below => NO_LOOKAHEAD,
            };
            control(suffix, &without, report)?;
        }
        // The audition's control: the re-allocation's own choice, where a rival won (unless
        // that is the search's own policy, shown as such).
        if let Some(a) = auditioned.as_ref().filter(|a| a.chosen != 0) {
            let own = &a.finalists[0].policy;
            if !(searched_shown && *own == searched) {
                control(NO_AUDITION, own, report)?;
            }
        }
        // The noise rule's control: the least-price policy, where a tie within the noise took
        // another (unless shown already: the search's own, or the audition's control).
        let shown_by_audition = |p: &Policy| {
            auditioned
                .as_ref()
                .is_some_and(|a| a.chosen != 0 && a.finalists[0].policy == *p)
        };
        if let Some(own) = least.as_ref().filter(|l| {
            **l != policy && !(searched_shown && **l == searched) && !shown_by_audition(l)
        }) {
            control(LEAST_PRICE, own, report)?;
        }
        // The audition is part of the allocation's time.
        let allocation_secs = search_secs + auditioned.as_ref().map_or(0.0, |a| a.seconds);
        let mut r = self.ccq_finish(name, b, model.as_ref(), &policy, allocation_secs)?;
        if let Some(a) = &auditioned {
            r.audition_epochs = Some(a.epochs(self.p.splits.train.len()));
            let text = a.describe();
            r.note = Some(match r.note.take() {
                Some(n) => format!("{n}; {text}"),
                None => text,
            });
        }
        report.results.push(r);
        Ok(())
    }

    /// Keeps the look-ahead prices of CCQ's budget `b` beside its weights there, as
    /// `lookahead.json`.
    fn keep_lookahead(&self, run: &RunDir, priced: &Lookahead, b: f64) -> Result<()> {
        let path = run.milestone(b).join(LOOKAHEAD);
        let json =
            serde_json::to_string_pretty(priced).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&path, json.as_bytes())?;
        Ok(())
    }

    /// The search's weights at budget `b`, which `what` needs; an error when they were not
    /// kept (a budget added after the search had passed it).
    fn searched<'m>(&self, model: Option<&'m Model>, b: f64, what: &str) -> Result<&'m Model> {
        model.ok_or_else(|| {
            let run = self.ccq_run();
            Error::incompatible(
                run.path(),
                format!(
                    "{}: {b}x was added after this comparison's CCQ search had passed it, so its weights there were not kept, and {what} needs them; list {b}x from the start, in a new --out",
                    run.path().display()
                ),
            )
        })
    }

    /// CCQ's policy fine-tuned for `--ft-epochs` from where `final_from` says: the search's
    /// weights `searched`, the FP model, or both, keeping the higher validation top-1.
    fn ccq_finish(
        &self,
        method: &str,
        budget: f64,
        searched: Option<&Model>,
        policy: &Policy,
        search_secs: f64,
    ) -> Result<MethodResult> {
        let from = self.search.final_from;
        let epochs = self.cfg.ft_epochs as f64;
        if from == FinalFrom::Fp {
            // The FP start alone: the fine-tuning every method gets.
            return self.finish(method, budget, policy, search_secs, epochs);
        }
        // From the search's weights, and with `best` from the FP model too.
        let start = Instant::now();
        let what = format!("--final-from {}", from.name());
        let searched = self.searched(searched, budget, &what)?;
        let tried = if from == FinalFrom::Best { 2 } else { 1 };
        let (mut tests, mut starts) = (Vec::new(), Vec::new());
        for repeat in 0..self.cfg.ft_repeats {
            let (m, v) = self.tune(searched.clone(), policy, false, epochs, repeat)?;
            let mut candidates = vec![("search", m, v)];
            if from == FinalFrom::Best {
                let (m, v) = self.tune(self.ck.model.clone(), policy, true, epochs, repeat)?;
                candidates.push(("fp", m, v));
            }
            let (start_name, model, _) = FinalFrom::keep(candidates)
                .ok_or_else(|| Error::Internal("no final fine-tuning start".into()))?;
            tests.push(self.test(&model, policy)?);
            starts.push(if start_name == "fp" { "FP" } else { "search's" });
        }
        let mut r = self.measure(
            method,
            budget,
            &tests,
            policy,
            search_secs + start.elapsed().as_secs_f64(),
            epochs * tried as f64,
        );
        if from == FinalFrom::Best {
            r.note = Some(format!(
                "fine-tuned from the {} weights (the better on validation)",
                starts.join(", ")
            ));
        }
        Ok(r)
    }

    /// A baseline's policy at budget `b`, fine-tuned from the FP model.
    fn baseline(
        &self,
        m: Method,
        b: f64,
        traces: &mut Option<(Vec<f64>, f64)>,
        report: &mut Report,
    ) -> Result<()> {
        // Every method gets the rungs the search can reach: the same ladder and floor, and a
        // budget they cannot reach is skipped with the reason CCQ gives.
        if let Err(e) = self.reachable(b) {
            report.results.push(self.skipped(m, b, format!("{e:#}")));
            return save_report(&self.cfg.out, report);
        }
        let ladder: &Ladder = &self.search.lowering.reachable_ladder();
        let act = ActBits::of(&self.search.lowering);
        let layers = &self.ck.model.layers;
        let t = Target::Compression(b);
        let start = Instant::now();
        let policy = match m {
            Method::Uniform | Method::UniformEnds8 => uniform(
                layers,
                ladder,
                act,
                &t,
                self.scheme.weight,
                m == Method::UniformEnds8,
            ),
            Method::Random => random(
                layers,
                ladder,
                act,
                &t,
                self.scheme.weight,
                &mut StdRng::seed_from_u64(self.cfg.session.seed ^ b.to_bits()),
            ),
            Method::Hawq => {
                let (tr, _) = self.traces(traces)?;
                hawq(
                    layers,
                    &self.ck.model.net.weights_host(),
                    tr,
                    ladder,
                    act,
                    &t,
                    self.scheme.weight,
                )
            }
            Method::Ccq => unreachable!("CCQ runs through Bench::ccq"),
        };
        let Some(policy) = policy else {
            report.results.push(self.skipped(
                m,
                b,
                format!(
                    "no {} policy on ladder {:?} reaches {b}x",
                    m.name(),
                    ladder.0
                ),
            ));
            return save_report(&self.cfg.out, report);
        };
        let alloc = start.elapsed().as_secs_f64()
            + if m == Method::Hawq {
                traces.as_ref().map_or(0.0, |t| t.1)
            } else {
                0.0
            };
        let r = self.finish(m.name(), b, &policy, alloc, self.cfg.ft_epochs as f64)?;
        report.results.push(r);
        save_report(&self.cfg.out, report)
    }

    /// The Hessian traces and the seconds they took: computed once, and kept in the output
    /// directory for a continuation (whose recorded settings are the traces' own: the
    /// checkpoint, data, seed and `--hessian-*`).
    fn traces<'t>(&self, traces: &'t mut Option<(Vec<f64>, f64)>) -> Result<&'t (Vec<f64>, f64)> {
        let path = self.cfg.out.join(TRACES);
        let crc = self.ck.meta.weights_crc32;
        if traces.is_none() && path.is_file() {
            match read_traces(&path, &self.ck.model.layer_names(), crc, &self.ck.dir)? {
                Ok(kept) => {
                    self.events.event(&Event::Note(format!(
                        "Hessian traces: from {} (computed in {:.0} s)",
                        path.display(),
                        kept.1
                    )));
                    *traces = Some(kept);
                }
                Err(why) => self.events.event(&Event::Note(format!(
                    "{}: {why}; computing them again",
                    path.display()
                ))),
            }
        }
        if traces.is_none() {
            self.events.event(&Event::Note(format!(
                "Hessian traces: {} images × {} Hutchinson samples per layer…",
                self.cfg.hessian_images, self.cfg.hessian_samples
            )));
            let t0 = Instant::now();
            let tr = hessian_traces(
                &self.ck.model,
                &self.p.splits.train,
                self.norm,
                self.cfg.hessian_images,
                self.cfg.hessian_samples,
                &mut StdRng::seed_from_u64(self.cfg.session.seed),
            )?;
            self.events.event(&Event::Note(format!(
                "Hessian traces: {}",
                self.ck
                    .model
                    .layer_names()
                    .iter()
                    .zip(&tr)
                    .map(|(n, t)| format!("{n} {t:.3e}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
            let negative: Vec<String> = self
                .ck
                .model
                .layer_names()
                .iter()
                .zip(&tr)
                .filter(|(_, t)| **t < 0.0)
                .map(|(n, t)| format!("{n} ({t:.3e})"))
                .collect();
            if !negative.is_empty() {
                self.events.event(&Event::Note(format!(
                    "negative Hessian traces: {}; HAWQ-style counts them as 0, so these layers look insensitive to it (more --hessian-samples or --hessian-images narrow the estimate)",
                    negative.join(", ")
                )));
            }
            let seconds = t0.elapsed().as_secs_f64();
            let kept = KeptTraces {
                weights_crc32: crc,
                layers: self.ck.model.layer_names(),
                traces: tr,
                seconds,
            };
            let json = serde_json::to_string(&kept).map_err(|e| Error::Internal(e.to_string()))?;
            write_atomic(&path, json.as_bytes())?;
            *traces = Some((kept.traces, seconds));
        }
        Ok(traces.as_ref().expect("computed above"))
    }

    /// The equal-compute results: every non-CCQ policy of the report (of the methods asked for)
    /// fine-tuned again from the
    /// FP model for as many epochs as CCQ spent: its search's epochs to reach the budget plus
    /// its final fine-tuning (twice the shared epochs with `--final-from best`).
    fn equal_compute(&self, report: &mut Report) -> Result<()> {
        let run = self.ccq_run();
        if !run.has_search() {
            return Err(Error::InvalidConfig(
                "--equal-compute needs the CCQ run (include ccq in --methods)".into(),
            ));
        }
        let state = run.load_state()?;
        let standard: Vec<MethodResult> = report
            .results
            .iter()
            .filter(|r| is_standard_baseline(r))
            // Only the methods of this invocation (a report may hold others from earlier ones).
            .filter(|r| self.cfg.methods.iter().any(|m| m.name() == r.method))
            .cloned()
            .collect();
        for r in standard {
            let label = format!("{}{EQUAL}", r.method);
            if done(report, &label, r.budget) {
                continue;
            }
            let Some(extra) = ccq_epochs(
                &state,
                self.p.splits.train.len(),
                self.start_compression,
                r.budget,
            ) else {
                continue;
            };
            let finals = if self.search.final_from == FinalFrom::Best {
                2
            } else {
                1
            };
            // CCQ's audition at this budget is part of its allocation, so it counts too.
            let auditioned = report
                .results
                .iter()
                .find(|c| c.method == Method::Ccq.name() && c.budget == r.budget)
                .and_then(|c| c.audition_epochs)
                .unwrap_or(0.0);
            // The search's fraction of an epoch counts too: a partial last epoch.
            let epochs = (finals * self.cfg.ft_epochs) as f64 + extra + auditioned;
            let policy = self.policy_of(&r);
            let result = self.finish(&label, r.budget, &policy, 0.0, epochs)?;
            report.results.push(result);
            save_report(&self.cfg.out, report)?;
        }
        Ok(())
    }

    /// The policy of result `r` (its bits, the model's layer names).
    fn policy_of(&self, r: &MethodResult) -> Policy {
        Policy {
            names: self.ck.meta.layers.clone(),
            bits: r.bits.clone(),
        }
    }

    /// Fine-tunes the FP model calibrated at `policy` for `epochs` (`--ft-repeats` times) and
    /// measures it.
    fn finish(
        &self,
        method: &str,
        budget: f64,
        policy: &Policy,
        extra_seconds: f64,
        epochs: f64,
    ) -> Result<MethodResult> {
        let (tests, seconds) = self.fine_tunings(policy, epochs, 0)?;
        Ok(self.measure(
            method,
            budget,
            &tests,
            policy,
            extra_seconds + seconds,
            epochs,
        ))
    }

    /// Test top-1 of the fine-tunings from FP of repeats `from` to `--ft-repeats` (see
    /// [`Self::tuned_from_fp`]), and the seconds they took.
    fn fine_tunings(&self, policy: &Policy, epochs: f64, from: usize) -> Result<(Vec<f64>, f64)> {
        let (mut tests, mut seconds) = (Vec::new(), 0.0);
        for repeat in from..self.cfg.ft_repeats {
            let (t, s) = self.tuned_from_fp(policy, epochs, repeat)?;
            tests.push(t);
            seconds += s;
        }
        Ok((tests, seconds))
    }

    /// Test top-1 of the FP model calibrated at `policy` and fine-tuned for `epochs` with the
    /// seed of `repeat`, and the seconds that took. Each such fine-tuning runs once per
    /// invocation: another result at the same policy (CCQ's and a baseline's often agree) gets
    /// the same one, with its seconds.
    fn tuned_from_fp(&self, policy: &Policy, epochs: f64, repeat: usize) -> Result<(f64, f64)> {
        let key = (policy.bits.clone(), epochs.to_bits(), repeat);
        if let Some(done) = self.measured.borrow().get(&key) {
            return Ok(*done);
        }
        let start = Instant::now();
        let (m, _) = self.tune(self.ck.model.clone(), policy, true, epochs, repeat)?;
        let done = (self.test(&m, policy)?, start.elapsed().as_secs_f64());
        self.measured.borrow_mut().insert(key, done);
        Ok(done)
    }

    /// Fine-tunes `model` at `policy` for `epochs` whole-training-split epochs, a fraction being
    /// a partial last epoch (calibrating first when `fresh`), shuffled by the seed of `repeat`;
    /// returns it and its last validation top-1.
    fn tune(
        &self,
        model: Model,
        policy: &Policy,
        fresh: bool,
        epochs: f64,
        repeat: usize,
    ) -> Result<(Model, f64)> {
        if fresh {
            crate::train::calibrate::calibrate(
                &model.net,
                policy,
                self.scheme,
                &self.calibration()?,
            );
        }
        let whole = epochs.floor();
        let train_len = self.p.splits.train.len();
        let plan = FitPlan {
            epochs: whole as usize,
            start_epoch: 0,
            lr: self.cfg.ft_lr,
            lr_end: 0.0,
            hyper: self.cfg.session.hyper(1e-4),
            augment: self.cfg.data.augment(&self.p.source),
            seed: repeat_seed(self.cfg.session.seed, repeat),
            stop_after: None,
            extra_samples: ((epochs - whole) * train_len as f64).round() as usize,
            teacher: self.teacher.as_ref(),
        };
        let mut val = f64::NAN;
        let model = fit(
            model,
            policy,
            self.scheme,
            &self.p.splits,
            self.norm,
            &plan,
            None,
            &mut |_, _, rec| {
                val = rec.val.top1;
                Ok(())
            },
            &crate::events::Uncancellable(self.events),
        )?;
        Ok((model, val))
    }

    /// The calibration images: training images, transformed as training does.
    fn calibration(&self) -> Result<Vec<tch::Tensor>> {
        calibration_batches(
            self.p,
            self.norm,
            self.devices.device,
            self.cfg.data.augment(&self.p.source),
        )
    }

    /// Test top-1 of `model` at `policy`.
    fn test(&self, model: &Model, policy: &Policy) -> Result<f64> {
        let test = eval_policy(
            model,
            policy,
            self.scheme,
            &self.p.splits.test,
            self.norm,
            None,
        )?;
        Ok(test.top1)
    }

    /// The result of `policy` whose fine-tunings scored `tests`: their mean, each kept when
    /// there are several.
    fn measure(
        &self,
        method: &str,
        budget: f64,
        tests: &[f64],
        policy: &Policy,
        seconds: f64,
        epochs: f64,
    ) -> MethodResult {
        let top1 = tests.iter().sum::<f64>() / tests.len().max(1) as f64;
        let cost = model_cost(&self.ck.model.layers, policy, self.scheme.weight);
        let r = MethodResult {
            method: method.into(),
            budget,
            bits: policy.bits.clone(),
            size_bytes: cost.size_bytes(),
            compression: cost.compression,
            avg_bits: cost.avg_bits,
            bops: cost.bops,
            test_top1: Some(top1),
            loss_points: Some(100.0 * (self.fp_test - top1)),
            test_top1_each: if tests.len() > 1 {
                tests.to_vec()
            } else {
                Vec::new()
            },
            seconds,
            note: None,
            epochs: Some(epochs),
            audition_epochs: None,
        };
        let spread = r.spread_text();
        self.events.event(&Event::Note(format!(
            "{:>14} at {budget}x: {:.2}x, test top-1 {:.2}%{spread} ({:+.2} points vs FP), {:.0}s",
            r.method,
            r.compression,
            100.0 * top1,
            100.0 * (top1 - self.fp_test),
            r.seconds
        )));
        r
    }

    /// A method that has no result at `budget`, with why.
    fn skipped(&self, method: Method, budget: f64, note: String) -> MethodResult {
        self.events.event(&Event::Note(format!(
            "{:>14} at {budget}x: {note}",
            method.name()
        )));
        MethodResult {
            method: method.name().into(),
            budget,
            bits: vec![],
            size_bytes: 0,
            compression: 0.0,
            avg_bits: 0.0,
            bops: 0,
            test_top1: None,
            loss_points: None,
            seconds: 0.0,
            note: Some(note),
            epochs: None,
            audition_epochs: None,
            test_top1_each: Vec::new(),
        }
    }
}

/// HAWQ-style's Hessian traces as kept in [`TRACES`]: the FP weights' checksum, the layers,
/// one trace each, and the seconds they took.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptTraces {
    weights_crc32: Option<u32>,
    layers: Vec<String>,
    traces: Vec<f64>,
    seconds: f64,
}

/// Hessian traces kept in `path` (and the seconds they took) for a model with `layers` whose
/// weights file (in `checkpoint`) has checksum `crc`; `Err` with why they cannot be used when
/// they were computed from other weights, or either side lacks the checksum that would show
/// they were not.
fn read_traces(
    path: &Path,
    layers: &[String],
    crc: Option<u32>,
    checkpoint: &Path,
) -> Result<std::result::Result<(Vec<f64>, f64), String>> {
    let corrupt = |why: String| {
        Error::bad_input(
            path.to_path_buf(),
            format!(
                "{}: corrupt Hessian traces ({why}); delete it to compute them again",
                path.display()
            ),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| corrupt(e.to_string()))?;
    let k: KeptTraces = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if k.layers != layers || k.traces.len() != layers.len() {
        return Err(corrupt(format!(
            "{} traces for layers {:?}, the model has {:?}",
            k.traces.len(),
            k.layers,
            layers
        )));
    }
    if let Some(t) = k.traces.iter().chain([&k.seconds]).find(|t| !t.is_finite()) {
        return Err(corrupt(format!("non-finite value {t}")));
    }
    let ck = checkpoint.display();
    Ok(match (k.weights_crc32, crc) {
        (Some(a), Some(b)) if a == b => Ok((k.traces, k.seconds)),
        (Some(_), Some(_)) => Err(format!("computed from other FP weights than {ck}'s")),
        (None, _) => Err(format!(
            "records no checksum of the FP weights it was computed from (an earlier ccq wrote it), so it may not fit {ck}"
        )),
        (Some(_), None) => Err(format!(
            "cannot be matched to {ck}, whose weights record no checksum"
        )),
    })
}

/// Removes the baselines' results (equal-compute ones included) whose activations do not follow
/// `act`, and names them. Earlier versions of ccq tied a baseline's activations to its weights even when
/// the comparison was untied, so its HAWQ-style, uniform and random rows ran at activation bits
/// no method was allowed; a continuation recomputes those it asks for. Returns (method, budget).
fn drop_stale_baselines(report: &mut Report, act: ActBits) -> Vec<(String, f64)> {
    let mut stale = Vec::new();
    report.results.retain(|r| {
        let baseline = !r.method.starts_with(Method::Ccq.name()) && r.method != CONTROL;
        if baseline && !r.bits.is_empty() && !act.follows(&r.bits) {
            stale.push((r.method.clone(), r.budget));
            return false;
        }
        true
    });
    stale
}

/// Whether `r` is a baseline's own result (not CCQ's, polished or not, not an equal-compute
/// one) with a policy: the results the equal-compute mode repeats.
fn is_standard_baseline(r: &MethodResult) -> bool {
    !r.method.starts_with(Method::Ccq.name())
        && !r.method.ends_with(EQUAL)
        && !r.bits.is_empty()
        && r.epochs.is_some()
}

/// Seed of fine-tuning `repeat` of a comparison seeded with `seed`: the seed itself first, so one
/// repeat is the fine-tuning of a comparison without repeats.
fn repeat_seed(seed: u64, repeat: usize) -> u64 {
    seed ^ ((repeat as u64) << 40)
}

/// Whether the search's ladder and floor can take `layers` to compression `b`.
fn reachable(layers: &[LayerInfo], search: &SearchConfig, b: f64) -> Result<(), anyhow::Error> {
    check_reachable(
        &Target::Compression(b),
        layers,
        &search.lowering,
        search.scheme.weight,
    )
}

/// How many steps CCQ's search took to first reach `b` (where its milestone was kept): 0 when
/// its start, at compression `start` (every layer at the ladder's top), already met it.
fn reached(state: &SearchState, start: f64, b: f64) -> Option<usize> {
    if start >= b {
        return Some(0);
    }
    state
        .steps
        .iter()
        .position(|s| s.compression >= b)
        .map(|k| k + 1)
}

/// Wall time of CCQ's search up to and including the step that first reached `b` (all of it
/// when none did).
fn seconds_to_reach(state: &SearchState, start: f64, b: f64) -> f64 {
    let end = reached(state, start, b).unwrap_or(state.steps.len());
    state.steps[..end].iter().map(|s| s.seconds).sum()
}

/// Training epochs (in whole-training-split equivalents) CCQ's search spent up to the step that
/// first reached each budget: the fine-tuning at the top rung plus every step's, each epoch of
/// `epoch_samples` images. `start` is the compression the search started at (every layer at the
/// ladder's top). `None` for a budget the search never reached.
pub fn ccq_epochs(state: &SearchState, train_len: usize, start: f64, budget: f64) -> Option<f64> {
    let ft = &state.config.finetune;
    let frac = ft
        .epoch_samples
        .map_or(1.0, |s| s.min(train_len) as f64 / train_len.max(1) as f64);
    let n = reached(state, start, budget)?;
    let epochs: usize = state.steps[..n].iter().map(|s| s.epochs).sum();
    Some(frac * (state.config.init_epochs + epochs) as f64)
}

/// Writes the report's data and page in `dir`.
fn save_report(dir: &Path, r: &Report) -> Result<()> {
    let json = serde_json::to_string_pretty(r).map_err(|e| Error::Internal(e.to_string()))?;
    write_atomic(&dir.join("report.json"), json.as_bytes())?;
    write_atomic(&dir.join("report.html"), html(r).as_bytes())?;
    Ok(())
}

/// The settings a comparison's results depend on, keyed by the flag that sets them.
fn settings(
    cfg: &CompareConfig,
    ck: &Checkpoint,
    search: &SearchConfig,
    p: &Prepared,
) -> Result<serde_json::Value> {
    let mut v = serde_json::json!({
        "checkpoint": ck.dir,
        "--ft-epochs": cfg.ft_epochs,
        "--ft-lr": cfg.ft_lr,
        "--hessian-images": cfg.hessian_images,
        "--hessian-samples": cfg.hessian_samples,
        "--data/--format": p.source,
        "search": serde_json::to_value(search).map_err(|e| Error::Internal(e.to_string()))?,
    });
    // Recorded only when set, so that comparisons made before the flag existed continue.
    if cfg.ft_repeats > 1 {
        v["--ft-repeats"] = cfg.ft_repeats.into();
    }
    Ok(v)
}

/// Dotted paths where `old` and `new` differ.
fn differences(prefix: &str, old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    match (old, new) {
        (serde_json::Value::Object(o), serde_json::Value::Object(n)) => {
            let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .flat_map(|k| {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    let null = serde_json::Value::Null;
                    differences(&path, o.get(k).unwrap_or(&null), n.get(k).unwrap_or(&null))
                })
                .collect()
        }
        _ if old == new => Vec::new(),
        _ => vec![prefix.to_string()],
    }
}

/// Refuses to continue a comparison in `out` made with other settings; records them otherwise.
fn check_settings(out: &Path, settings: serde_json::Value) -> Result<()> {
    let path = out.join(SETTINGS);
    let started = out.join("report.json").is_file() || RunDir::new(out.join("ccq")).has_search();
    if started {
        let text = std::fs::read_to_string(&path).map_err(|_| {
            Error::incompatible(
                out.to_path_buf(),
                format!(
                    "{}: holds a comparison without its recorded settings ({SETTINGS}); choose another --out",
                    out.display()
                ),
            )
        })?;
        let old: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::bad_input(
                path.clone(),
                format!("{}: corrupt settings: {e}", path.display()),
            )
        })?;
        // The same checkpoint named by another path (relative, through a link) is the same.
        let same_file = |v: &serde_json::Value| {
            v.get("checkpoint")
                .and_then(|c| c.as_str())
                .and_then(|c| std::fs::canonicalize(c).ok())
        };
        let mut old = old;
        // Search settings added since take their recorded defaults (a new setting's default is
        // the behaviour from before it), as a resumed search's state does.
        if let Some(recorded) = old.get("search")
            && let Ok(search) = serde_json::from_value::<SearchConfig>(recorded.clone())
        {
            old["search"] =
                serde_json::to_value(search).map_err(|e| Error::Internal(e.to_string()))?;
        }
        if let (Some(a), Some(b)) = (same_file(&old), same_file(&settings))
            && a == b
        {
            old["checkpoint"] = settings["checkpoint"].clone();
        }
        // More fine-tunings than recorded add to the results (`repeats`); fewer are refused.
        let repeats = |v: &serde_json::Value| v.get("--ft-repeats").and_then(|r| r.as_u64());
        let more = repeats(&settings).unwrap_or(1) > repeats(&old).unwrap_or(1);
        if more {
            old["--ft-repeats"] = settings["--ft-repeats"].clone();
        }
        let diff = differences("", &old, &settings);
        if !diff.is_empty() {
            return Err(Error::incompatible(
                out.to_path_buf(),
                format!(
                    "{}: this comparison was made with other settings ({}); repeat its flags to continue it, or choose another --out",
                    out.display(),
                    diff.join(", ")
                ),
            ));
        }
        if !more {
            return Ok(());
        }
    }
    let text =
        serde_json::to_string_pretty(&settings).map_err(|e| Error::Internal(e.to_string()))?;
    write_atomic(&path, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(dir: &Path, crc: Option<u32>) -> PathBuf {
        let path = dir.join(TRACES);
        let k = KeptTraces {
            weights_crc32: crc,
            layers: vec!["a".into(), "b".into()],
            traces: vec![1.5, 2.5],
            seconds: 3.0,
        };
        std::fs::write(&path, serde_json::to_string(&k).unwrap()).unwrap();
        path
    }

    #[test]
    fn kept_traces_are_used_only_for_the_weights_they_were_computed_from() {
        let dir = tempfile::tempdir().unwrap();
        let layers = vec!["a".to_string(), "b".to_string()];
        let path = kept(dir.path(), Some(7));
        assert_eq!(
            read_traces(&path, &layers, Some(7), dir.path()).unwrap(),
            Ok((vec![1.5, 2.5], 3.0))
        );
        let other = read_traces(&path, &layers, Some(8), dir.path())
            .unwrap()
            .unwrap_err();
        assert!(other.contains("other FP weights"), "{other}");
        // Without a checksum on either side nothing shows that they fit: computed again.
        let unknown = read_traces(&path, &layers, None, dir.path())
            .unwrap()
            .unwrap_err();
        assert!(unknown.contains("record no checksum"), "{unknown}");
        let path = kept(dir.path(), None);
        for crc in [Some(7), None] {
            let old = read_traces(&path, &layers, crc, dir.path())
                .unwrap()
                .unwrap_err();
            assert!(old.contains("records no checksum"), "{old}");
        }
        // Traces for other layers are refused, naming the file.
        let e = read_traces(&path, &layers[..1], Some(7), dir.path()).unwrap_err();
        assert!(e.to_string().contains(TRACES), "{e}");
    }
}
