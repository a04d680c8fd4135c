//! The HTML report of a single CCQ run (`ccq report`).

use crate::error::Result;
use crate::model::build;
use crate::model::cost::model_cost;
use crate::report::{MethodResult, Report, html};
use crate::search::run_dir::{POLICY, RunDir};
use crate::search::target::Target;
use crate::train::checkpoint;
use std::path::{Path, PathBuf};

/// Writes `report.html` (and `report.json`) into a run directory, finished or not; returns the
/// page's path.
pub fn report_run(dir: &Path) -> Result<PathBuf> {
    let run = RunDir::new(dir);
    let state = run.load_state()?;
    let policy = run.read_policy();
    let (_, meta) = checkpoint::load_meta(&run.checkpoint(&state.checkpoint))?;
    let model = build(&meta.spec, tch::Device::Cpu)?;
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
        title: format!("ccq run {}", dir.display()),
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
            audition_epochs: None,
            test_top1_each: Vec::new(),
        }],
        ccq_steps: state.steps.clone(),
        control: None,
        notes: vec![match &state.finished {
            Some(f) if test.is_some() => {
                format!("finished: {f}; accuracy is test top-1 of the final model")
            }
            Some(f) => format!(
                "finished: {f}, but {POLICY} is missing or unreadable: no test top-1 (validation top-1 {:.2}%)",
                100.0 * state.val
            ),
            None => format!(
                "in progress after step {}: no test top-1 yet (current validation top-1 {:.2}%)",
                state.step,
                100.0 * state.val
            ),
        }],
    };
    let json = serde_json::to_string_pretty(&r)
        .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    run.write_report(&json, &html(&r))?;
    Ok(run.report_html())
}
