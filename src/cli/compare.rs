//! `ccq compare` (CCQ vs Hessian-aware vs uniform vs random at the same budgets) and
//! `ccq report RUN_DIR` (the page for a single CCQ run).

use super::args::{CommonArgs, DataArgs, named};
use super::jobs::{Prepared, calibration_batches, prepare_for};
use super::quantize::SearchFlags;
use anyhow::{Context, Result, bail};
use ccq::data::Normalization;
use ccq::model::Model;
use ccq::model::cost::model_cost;
use ccq::progress;
use ccq::quant::policy::{Ladder, Policy};
use ccq::quant::quantizer::QuantScheme;
use ccq::report::{MethodResult, Report, html};
use ccq::search::baselines::{Method, hawq, hessian_traces, random, uniform};
use ccq::search::ccq::{self as search, SearchEnv, milestone_dir};
use ccq::search::polish::polish;
use ccq::search::target::{Target, check_reachable};
use ccq::train::calibrate::calibrate;
use ccq::train::checkpoint::{self, write_atomic};
use ccq::train::fit::{FitPlan, fit};
use ccq::train::{Devices, Eval, eval_policy};
use clap::Args;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `ccq compare` arguments.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Full-precision checkpoint.
    pub checkpoint: PathBuf,
    /// Compression budgets, e.g. 8,10,12.
    #[arg(long, value_delimiter = ',', required = true)]
    pub target_compression: Vec<f64>,
    /// Methods to run.
    #[arg(
        long,
        value_parser = named::<Method>(),
        value_delimiter = ',',
        default_value = "ccq,hawq,uniform,uniform-ends8,random"
    )]
    pub methods: Vec<Method>,
    /// Fine-tuning epochs every method gets after allocation.
    #[arg(long, default_value_t = 2)]
    pub ft_epochs: usize,
    /// Peak learning rate of that fine-tuning (cosine to 0).
    #[arg(long, default_value_t = 0.005)]
    pub ft_lr: f64,
    /// Images for the Hessian traces.
    #[arg(long, default_value_t = 512)]
    pub hessian_images: usize,
    /// Hutchinson samples.
    #[arg(long, default_value_t = 16)]
    pub hessian_samples: usize,
    /// Also give every other method as many training epochs as CCQ spent reaching each budget
    /// (its search's fine-tuning, in whole-training-split epochs, plus --ft-epochs); reported
    /// beside the equal-fine-tuning results as `<method> (equal compute)`.
    #[arg(long)]
    pub equal_compute: bool,
    /// Output directory (report.html, report.json, the CCQ run in ccq/).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub search: SearchFlags,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `ccq report` arguments.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A `ccq quantize` run directory.
    pub run: PathBuf,
}

struct Ctx<'a> {
    p: &'a Prepared,
    norm: &'a Normalization,
    devices: &'a Devices,
    scheme: QuantScheme,
    a: &'a CompareArgs,
    fp_test: f64,
}

impl Ctx<'_> {
    /// Fine-tunes `model` at `policy` for the shared budget and measures it.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        method: &str,
        budget: f64,
        model: Model,
        policy: &Policy,
        fresh: bool,
        extra_seconds: f64,
        epochs: usize,
    ) -> Result<MethodResult> {
        let start = Instant::now();
        if fresh {
            calibrate(
                &model.net,
                policy,
                self.scheme,
                &calibration_batches(self.p, self.norm, self.devices, 4),
            );
        }
        let plan = FitPlan {
            epochs,
            start_epoch: 0,
            lr: self.a.ft_lr,
            lr_end: 0.0,
            hyper: self.a.common.hyper(1e-4),
            augment: self.a.data.augment(&self.p.source)?,
            seed: self.a.common.seed,
            stop_after: None,
        };
        let model = fit(
            model,
            policy,
            self.scheme,
            &self.p.splits,
            self.norm,
            &plan,
            None,
            &mut |_, _, _| Ok(()),
        )?;
        let test: Eval = eval_policy(
            &model,
            policy,
            self.scheme,
            &self.p.splits.test,
            self.norm,
            None,
        );
        let cost = model_cost(&model.layers, policy, self.scheme.weight);
        let r = MethodResult {
            method: method.into(),
            budget,
            bits: policy.bits.clone(),
            size_bytes: cost.size_bytes(),
            compression: cost.compression,
            avg_bits: cost.avg_bits,
            bops: cost.bops,
            test_top1: Some(test.top1),
            loss_points: Some(100.0 * (self.fp_test - test.top1)),
            seconds: extra_seconds + start.elapsed().as_secs_f64(),
            note: None,
            epochs: Some(epochs),
        };
        progress::println(format!(
            "{:>14} at {budget}x: {:.2}x, test top-1 {:.2}% ({:+.2} points vs FP), {:.0}s",
            r.method,
            r.compression,
            100.0 * test.top1,
            100.0 * (test.top1 - self.fp_test),
            r.seconds
        ));
        Ok(r)
    }
}

fn skipped(method: Method, budget: f64, note: String) -> MethodResult {
    progress::println(format!("{:>14} at {budget}x: {note}", method.name()));
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
    }
}

fn save_report(dir: &Path, r: &Report) -> Result<()> {
    write_atomic(
        &dir.join("report.json"),
        serde_json::to_string_pretty(r)?.as_bytes(),
    )?;
    write_atomic(&dir.join("report.html"), html(r).as_bytes())
}

/// Settings file of a comparison: what its results depend on (budgets and methods may grow).
const SETTINGS: &str = "compare.json";

/// The settings a comparison's results depend on, keyed by the flag that sets them.
fn compare_settings(
    a: &CompareArgs,
    ck: &checkpoint::Checkpoint,
    cfg: &ccq::search::ccq::SearchConfig,
    p: &Prepared,
) -> Result<serde_json::Value> {
    Ok(serde_json::json!({
        "checkpoint": ck.dir,
        "--ft-epochs": a.ft_epochs,
        "--ft-lr": a.ft_lr,
        "--hessian-images": a.hessian_images,
        "--hessian-samples": a.hessian_samples,
        "--data/--format": p.source,
        "search": serde_json::to_value(cfg)?,
    }))
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
    let started =
        out.join("report.json").is_file() || out.join("ccq").join(search::STATE).is_file();
    if started {
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: holds a comparison without its recorded settings ({SETTINGS}); choose another --out",
                out.display()
            )
        })?;
        let old: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: corrupt settings", path.display()))?;
        let diff = differences("", &old, &settings);
        if !diff.is_empty() {
            bail!(
                "{}: this comparison was made with other settings ({}); repeat its flags to continue it, or choose another --out",
                out.display(),
                diff.join(", ")
            );
        }
        return Ok(());
    }
    write_atomic(&path, serde_json::to_string_pretty(&settings)?.as_bytes())
}

/// Runs `ccq compare`.
pub fn compare(a: CompareArgs) -> Result<()> {
    a.common.apply()?;
    let devices = a.common.devices()?;
    let ck = checkpoint::load(&a.checkpoint, devices.device)?;
    if ck.meta.policy.is_some() {
        bail!(
            "{}: compare starts from a full-precision checkpoint",
            ck.dir.display()
        );
    }
    if a.target_compression.iter().any(|r| *r <= 1.0) {
        bail!("--target-compression values must be above 1");
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let p = prepare_for(&ck, &a.data)?;
    let norm = ck.meta.normalization.clone();
    let names = ck.model.layer_names();
    let layers = ck.model.layers.clone();
    let cfg0 = a
        .search
        .config(None, &a.common, a.data.augment(&p.source)?)?;
    let scheme = cfg0.scheme;
    let fp_test = eval_policy(
        &ck.model,
        &Policy::float(&names),
        scheme,
        &p.splits.test,
        &norm,
        Some("fp test"),
    )
    .top1;
    check_settings(&a.out, compare_settings(&a, &ck, &cfg0, &p)?)?;
    let report_path = a.out.join("report.json");
    let mut report: Report = match std::fs::read_to_string(&report_path) {
        Ok(t) => serde_json::from_str(&t).with_context(|| {
            format!(
                "{}: corrupt report; delete it to start over",
                report_path.display()
            )
        })?,
        Err(_) => Report {
            title: format!(
                "ccq compare: {} on {}",
                ck.meta.spec.kind.name(),
                p.source.dir.display()
            ),
            model: ck.meta.spec.kind.name().into(),
            layers: names.clone(),
            fp_test: Some(fp_test),
            ft_epochs: a.ft_epochs,
            results: vec![],
            ccq_steps: vec![],
            notes: vec![format!(
                "quantizers {:?}/{:?}; ladder {:?}; floor {} bits for every method; HAWQ traces from {} images × {} Hutchinson samples (exact Hessian-vector products); budgets are weight compression vs FP32 with scales counted",
                scheme.weight,
                scheme.act,
                cfg0.lowering.ladder.0,
                cfg0.lowering.floor,
                a.hessian_images,
                a.hessian_samples
            )],
        },
    };
    let mut budgets = a.target_compression.clone();
    budgets.sort_by(|x, y| x.total_cmp(y));
    let ctx = Ctx {
        p: &p,
        norm: &norm,
        devices: &devices,
        scheme,
        a: &a,
        fp_test,
    };
    let done = |r: &Report, m: Method, b: f64| {
        r.results
            .iter()
            .any(|x| x.method == m.name() && x.budget == b)
    };
    // Every method gets the rungs the search can reach: the same ladder and floor.
    let reachable = cfg0.lowering.reachable_ladder();
    let ladder: &Ladder = &reachable;
    let mut traces: Option<(Vec<f64>, f64)> = None;
    for &m in &a.methods {
        if m == Method::Ccq {
            let reachable: Vec<f64> = budgets
                .iter()
                .copied()
                .filter(|b| {
                    check_reachable(
                        &Target::Compression(*b),
                        &layers,
                        &cfg0.lowering,
                        scheme.weight,
                    )
                    .is_ok()
                })
                .collect();
            if budgets.iter().any(|b| !done(&report, m, *b)) && !reachable.is_empty() {
                let run = a.out.join("ccq");
                let max = reachable.iter().copied().fold(0.0, f64::max);
                let meta = ck.meta.derived_from(&ck.dir);
                let env = SearchEnv {
                    splits: &p.splits,
                    norm: &norm,
                    meta,
                    stop_after: None,
                    keep: reachable.clone(),
                };
                let (model, state) = if run.join(search::STATE).is_file() {
                    let state = search::load_state(&run)?;
                    (
                        checkpoint::load(&run.join(&state.checkpoint), devices.device)?.model,
                        state,
                    )
                } else {
                    // Every method gets the same fine-tuning after allocation, so no final phase here.
                    let mut cfg = a.search.config(
                        Some(Target::Compression(max)),
                        &a.common,
                        a.data.augment(&p.source)?,
                    )?;
                    cfg.final_epochs = 0;
                    let fp = ck.model.clone();
                    search::init(
                        &run,
                        fp,
                        cfg,
                        ck.dir.clone(),
                        &env,
                        &calibration_batches(&p, &norm, &devices, 4),
                    )?
                };
                let (_, state) = search::run(&run, model, state, &env)?;
                report.ccq_steps = state.steps.clone();
                for &b in &reachable {
                    if done(&report, m, b) {
                        continue;
                    }
                    let dir = milestone_dir(&run, b);
                    let kept = checkpoint::load(&dir, devices.device)
                        .with_context(|| format!("CCQ never reached {b}x"))?;
                    let policy = kept
                        .meta
                        .policy
                        .clone()
                        .context("milestone without policy")?;
                    let search_secs: f64 = state
                        .steps
                        .iter()
                        .take_while(|s| s.compression < b)
                        .map(|s| s.seconds)
                        .sum::<f64>()
                        + state
                            .steps
                            .iter()
                            .find(|s| s.compression >= b)
                            .map(|s| s.seconds)
                            .unwrap_or(0.0);
                    let model = kept.model;
                    let mut policy = policy;
                    if cfg0.polish {
                        // The polished policy is CCQ's; the unpolished one is shown beside it.
                        let raw = model.clone();
                        let (polished, raises) = polish(
                            &model,
                            &policy,
                            &cfg0.lowering,
                            &Target::Compression(b),
                            scheme,
                            &p.splits.bandit,
                            &norm,
                        );
                        if !raises.is_empty() {
                            let r = ctx.finish(
                                &format!("{}{NO_POLISH}", m.name()),
                                b,
                                raw,
                                &policy,
                                false,
                                search_secs,
                                a.ft_epochs,
                            )?;
                            report.results.push(r);
                            policy = polished;
                        }
                    }
                    let r =
                        ctx.finish(m.name(), b, model, &policy, false, search_secs, a.ft_epochs)?;
                    report.results.push(r);
                    save_report(&a.out, &report)?;
                }
            }
            for &b in budgets.iter().filter(|b| !reachable.contains(b)) {
                if !done(&report, m, b) {
                    let e = check_reachable(
                        &Target::Compression(b),
                        &layers,
                        &cfg0.lowering,
                        scheme.weight,
                    )
                    .unwrap_err();
                    report.results.push(skipped(m, b, format!("CCQ: {e}")));
                }
            }
            save_report(&a.out, &report)?;
            continue;
        }
        for &b in &budgets {
            if done(&report, m, b) {
                continue;
            }
            let t = Target::Compression(b);
            let start = Instant::now();
            let policy = match m {
                Method::Uniform | Method::UniformEnds8 => uniform(
                    &layers,
                    ladder,
                    &t,
                    scheme.weight,
                    m == Method::UniformEnds8,
                ),
                Method::Random => random(
                    &layers,
                    ladder,
                    &t,
                    scheme.weight,
                    &mut StdRng::seed_from_u64(a.common.seed ^ b.to_bits()),
                ),
                Method::Hawq => {
                    if traces.is_none() {
                        let t0 = Instant::now();
                        let tr = hessian_traces(
                            &ck.model,
                            &p.splits.train,
                            &norm,
                            a.hessian_images,
                            a.hessian_samples,
                            &mut StdRng::seed_from_u64(a.common.seed),
                        )?;
                        progress::println(format!(
                            "Hessian traces: {}",
                            names
                                .iter()
                                .zip(&tr)
                                .map(|(n, t)| format!("{n} {t:.3e}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                        traces = Some((tr, t0.elapsed().as_secs_f64()));
                    }
                    let (tr, _) = traces.as_ref().expect("computed above");
                    Some(hawq(
                        &layers,
                        &ck.model.net.weights_host(),
                        tr,
                        ladder,
                        &t,
                        scheme.weight,
                    )?)
                }
                Method::Ccq => unreachable!("handled above"),
            };
            let Some(policy) = policy else {
                report.results.push(skipped(
                    m,
                    b,
                    format!(
                        "no {} policy on ladder {:?} reaches {b}x",
                        m.name(),
                        ladder.0
                    ),
                ));
                save_report(&a.out, &report)?;
                continue;
            };
            let alloc = start.elapsed().as_secs_f64()
                + if m == Method::Hawq {
                    traces.as_ref().map(|t| t.1).unwrap_or(0.0)
                } else {
                    0.0
                };
            let fp = ck.model.clone();
            let r = ctx.finish(m.name(), b, fp, &policy, true, alloc, a.ft_epochs)?;
            report.results.push(r);
            save_report(&a.out, &report)?;
        }
    }
    if a.equal_compute {
        equal_compute(&a, &ctx, &ck, &mut report, &p)?;
    }
    save_report(&a.out, &report)?;
    println!(
        "{:<14} {:>7} {:>9} {:>11} {:>9} {:>10} {:>9}",
        "method", "budget", "size(B)", "compression", "test", "vs FP", "time(s)"
    );
    for r in &report.results {
        if r.bits.is_empty() {
            println!(
                "{:<14} {:>6}x {}",
                r.method,
                r.budget,
                r.note.as_deref().unwrap_or("")
            );
        } else {
            println!(
                "{:<14} {:>6}x {:>9} {:>10.2}x {:>9} {:>10} {:>9.0}",
                r.method,
                r.budget,
                r.size_bytes,
                r.compression,
                ccq::report::pct(r.test_top1),
                r.loss_points
                    .map_or("missing".into(), |l| format!("{:+.2}", -l)),
                r.seconds
            );
        }
    }
    println!(
        "FP32 test top-1 {:.2}%; report {}",
        100.0 * fp_test,
        a.out.join("report.html").display()
    );
    Ok(())
}

/// Training epochs (in whole-training-split equivalents) CCQ's search spent up to the step that
/// first reached each budget: the fine-tuning at the top rung plus every step's, each epoch of
/// `epoch_samples` images. `None` for a budget the search never reached.
pub fn ccq_epochs(state: &search::SearchState, train_len: usize, budget: f64) -> Option<f64> {
    let ft = &state.config.finetune;
    let frac = ft
        .epoch_samples
        .map_or(1.0, |s| s.min(train_len) as f64 / train_len.max(1) as f64);
    let reached = state.steps.iter().position(|s| s.compression >= budget)?;
    let epochs: usize = state.steps[..=reached].iter().map(|s| s.epochs).sum();
    Some(frac * (state.config.init_epochs + epochs) as f64)
}

/// The equal-compute results: every non-CCQ policy of the report fine-tuned again from the FP
/// model for --ft-epochs plus the epochs CCQ spent reaching its budget.
fn equal_compute(
    a: &CompareArgs,
    ctx: &Ctx,
    ck: &checkpoint::Checkpoint,
    report: &mut Report,
    p: &Prepared,
) -> Result<()> {
    let run = a.out.join("ccq");
    if !run.join(search::STATE).is_file() {
        bail!("--equal-compute needs the CCQ run (include ccq in --methods)");
    }
    let state = search::load_state(&run)?;
    let standard: Vec<MethodResult> = report
        .results
        .iter()
        // The other methods' own results: not CCQ's (polished or not), not equal-compute ones,
        // and only those with a policy.
        .filter(|r| {
            !r.method.starts_with(Method::Ccq.name())
                && !r.method.ends_with(EQUAL)
                && !r.bits.is_empty()
                && r.epochs.is_some()
        })
        .cloned()
        .collect();
    for r in standard {
        let label = format!("{}{EQUAL}", r.method);
        if report
            .results
            .iter()
            .any(|x| x.method == label && x.budget == r.budget)
        {
            continue;
        }
        let Some(extra) = ccq_epochs(&state, p.splits.train.len(), r.budget) else {
            continue;
        };
        let epochs = a.ft_epochs + extra.round() as usize;
        let policy = Policy {
            names: ck.meta.layers.clone(),
            bits: r.bits.clone(),
        };
        let result = ctx.finish(
            &label,
            r.budget,
            ck.model.clone(),
            &policy,
            true,
            0.0,
            epochs,
        )?;
        report.results.push(result);
        save_report(&a.out, report)?;
    }
    Ok(())
}

/// Suffix of CCQ's result without the budget polish.
const NO_POLISH: &str = " (no polish)";

/// Suffix of an equal-compute result's method.
const EQUAL: &str = " (equal compute)";

/// Runs `ccq report RUN_DIR`.
pub fn report(a: ReportArgs) -> Result<()> {
    let state = search::load_state(&a.run)?;
    let policy: Option<search::PolicyReport> = std::fs::read_to_string(a.run.join(search::POLICY))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let (_, meta) = checkpoint::load_meta(&a.run.join(&state.checkpoint))?;
    let model = ccq::model::build(&meta.spec, tch::Device::Cpu)?;
    let cost = model_cost(&model.layers, &state.policy, state.config.scheme.weight);
    let test = policy.as_ref().map(|p| p.test);
    let fp_test = checkpoint::load_meta(&state.source)
        .ok()
        .and_then(|(_, m)| m.test)
        .map(|t| t.top1);
    let budget = match state.config.target {
        Some(Target::Compression(r)) => r,
        _ => cost.compression,
    };
    let r = Report {
        title: format!("ccq run {}", a.run.display()),
        model: meta.spec.kind.name().into(),
        layers: model.layer_names(),
        fp_test,
        ft_epochs: 0,
        results: vec![MethodResult {
            method: "ccq".into(),
            budget,
            bits: state.policy.bits.clone(),
            size_bytes: cost.size_bytes(),
            compression: cost.compression,
            avg_bits: cost.avg_bits,
            bops: cost.bops,
            test_top1: test,
            loss_points: test.zip(fp_test).map(|(t, f)| 100.0 * (f - t)),
            seconds: state.seconds,
            note: None,
            epochs: None,
        }],
        ccq_steps: state.steps.clone(),
        notes: vec![match &state.finished {
            Some(f) if test.is_some() => {
                format!("finished: {f}; accuracy is test top-1 of the final model")
            }
            Some(f) => format!(
                "finished: {f}, but {} is missing or unreadable: no test top-1 (validation top-1 {:.2}%)",
                search::POLICY,
                100.0 * state.val
            ),
            None => format!(
                "in progress after step {}: no test top-1 yet (current validation top-1 {:.2}%)",
                state.step,
                100.0 * state.val
            ),
        }],
    };
    save_report(&a.run, &r)?;
    println!("{}", a.run.join("report.html").display());
    Ok(())
}
