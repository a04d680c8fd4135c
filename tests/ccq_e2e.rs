//! A tiny end-to-end run of the CLI on synthetic data: train, QAT, CCQ search, and
//! resume-equals-uninterrupted.

mod common;

use common::{ccq, ccq_fails};

use std::path::Path;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// On data too small for the asked validation and bandit sizes, `ccq train` says that it shrank
/// them, and to what.
#[test]
fn small_data_says_its_splits_were_shrunk() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::write_idx_dataset(&data);
    let fp = t.path().join("fp");
    let text = ccq(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "idx",
        "--epochs",
        "1",
        "--threads",
        "1",
        "-q",
        "--out",
        fp.to_str().unwrap(),
    ]);
    assert!(
        text.contains(
            "train 120 / val 60 / bandit 60 / test 90 (--val-size 5000 / --bandit-size 5000 shrunk so that half of the 240 training files stay for training)"
        ),
        "{text}"
    );
}

#[test]
fn train_qat_quantize_and_resume() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::write_idx_dataset(&data);
    let d = data.to_str().unwrap();
    let fp = t.path().join("fp");
    let small = [
        "--val-size",
        "30",
        "--bandit-size",
        "30",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "-q",
    ];
    let mut args = vec![
        "train",
        "--model",
        "convnet",
        "--data",
        d,
        "--format",
        "idx",
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--out",
        fp.to_str().unwrap(),
    ];
    args.extend(small);
    let text = ccq(&args);
    assert!(
        text.contains("train 180 / val 30 / bandit 30 / test 90") && !text.contains("shrunk"),
        "{text}"
    );
    let meta = json(&fp.join("checkpoint.json"));
    assert!(
        meta["test"]["top1"].as_f64().unwrap() > 0.6,
        "the synthetic task is learnable: {}",
        meta["test"]
    );
    assert!(ccq(&["info", fp.to_str().unwrap()]).contains("stem.conv"));

    let q = t.path().join("w4a4");
    ccq(&[
        "qat",
        fp.to_str().unwrap(),
        "--bits",
        "4/4",
        "--epochs",
        "1",
        "--out",
        q.to_str().unwrap(),
        "--batch-size",
        "32",
        "--threads",
        "1",
        "-q",
    ]);
    let qm = json(&q.join("checkpoint.json"));
    assert_eq!(qm["policy"]["bits"][1]["w"], 4);
    assert!(ccq(&["eval", q.to_str().unwrap(), "--threads", "1", "-q"]).contains("test top-1"));

    let search = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "quantize",
            fp.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--qsteps",
            "4",
            "--ft-min-epochs",
            "1",
            "--ft-max-epochs",
            "1",
            "--init-epochs",
            "1",
            "--seed",
            "5",
        ];
        a.extend(extra);
        a.extend(["--batch-size", "32", "--threads", "1", "-q"]);
        ccq(&a)
    };
    let full = t.path().join("run-full");
    let text = search(&full, &[]);
    assert!(text.contains("CCQ finished"), "{text}");
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(full.join("steps.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.len(), 4);
    let ladder = [8, 6, 4, 3, 2];
    let mut last = 0.0;
    for s in &steps {
        let arms = s["arms"].as_array().unwrap();
        let total: f64 = arms.iter().map(|a| a["P"].as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-9, "P sums to 1");
        let chosen = arms.iter().find(|a| a["layer"] == s["chosen"]).unwrap();
        assert!(
            chosen["P"].as_f64().unwrap() > 0.0,
            "the chosen arm was awake"
        );
        // One rung down the ladder (tied: weights and, past the first layer, activations).
        let (before, after) = (&s["bits_before"], &s["bits_after"]);
        let rung = ladder.iter().position(|&b| b == before["w"]).unwrap();
        assert_eq!(after["w"], ladder[rung + 1], "{s}");
        // Every lowering saves bits: compression strictly increases.
        let c = s["compression"].as_f64().unwrap();
        assert!(c > last, "step {}: {c} after {last}", s["step"]);
        last = c;
    }
    let policy = json(&full.join("policy.json"));
    assert_eq!(policy["cost"]["compression"].as_f64().unwrap(), last);
    assert!(full.join("final/model.safetensors").is_file());

    // A second `quantize --out` into a finished run is refused and leaves it as it was.
    let before = std::fs::read(full.join("state.json")).unwrap();
    let e = ccq_fails(&[
        "quantize",
        fp.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
        "--threads",
        "1",
        "-q",
    ]);
    assert!(
        e.contains("already holds a search") && e.contains("--resume"),
        "{e}"
    );
    assert_eq!(std::fs::read(full.join("state.json")).unwrap(), before);

    // Same run, killed after two steps, then resumed.
    let part = t.path().join("run-resumed");
    let text = search(&part, &["--stop-after", "2"]);
    assert!(text.contains("--resume"), "{text}");
    assert_eq!(json(&part.join("state.json"))["step"], 2);
    // A report of the unfinished run shows the test accuracy as missing, not the validation one.
    ccq(&["report", part.to_str().unwrap()]);
    let r = json(&part.join("report.json"));
    assert!(
        r["results"][0]["test_top1"].is_null(),
        "{}",
        r["results"][0]
    );
    let page = std::fs::read_to_string(part.join("report.html")).unwrap();
    assert!(page.contains("no test top-1 yet") && page.contains("missing"));
    // A resumed search keeps its saved settings: a search flag given with --resume is refused
    // by name (it used to be ignored), and nothing runs.
    let state = std::fs::read(part.join("state.json")).unwrap();
    let e = ccq_fails(&[
        "quantize",
        "--resume",
        part.to_str().unwrap(),
        "--qsteps",
        "9",
    ]);
    assert!(
        e.contains("--qsteps") && e.contains("saved settings"),
        "{e}"
    );
    assert_eq!(std::fs::read(part.join("state.json")).unwrap(), state);
    ccq(&[
        "quantize",
        "--resume",
        part.to_str().unwrap(),
        "--threads",
        "1",
        "-q",
    ]);
    let resumed = json(&part.join("policy.json"));
    assert_eq!(
        resumed["layers"], policy["layers"],
        "resumed run ends with the same policy"
    );
    assert_eq!(resumed["val"], policy["val"], "and the same accuracy");

    // The two variants: what each records, and which fine-tuning epoch each keeps.
    for (variant, signal) in [("improved", "loss"), ("reference", "top1")] {
        let run = t.path().join(format!("run-{variant}"));
        let mut a = vec![
            "quantize",
            fp.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--variant",
            variant,
            "--qsteps",
            "2",
            "--ft-min-epochs",
            "3",
            "--ft-max-epochs",
            "3",
            "--init-epochs",
            "0",
            "--final-epochs",
            "0",
            "--lr",
            "0.05",
        ];
        a.extend(["--batch-size", "32", "--threads", "1", "-q"]);
        let text = ccq(&a);
        // A step's line names λ only where the memory prior took part: the reference's even
        // steps (λ = 0.6·(T − t)/T + 0.4, so 0.40 at step 2 of 2).
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("step ")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(!lines[0].contains('λ'), "{variant}: {}", lines[0]);
        assert_eq!(
            lines[1].ends_with(" | λ 0.40"),
            variant == "reference",
            "{variant}: {}",
            lines[1]
        );
        let state = json(&run.join("state.json"));
        let cfg = &state["config"];
        assert_eq!(cfg["reward"]["signal"], signal, "{variant}");
        let improved = variant == "improved";
        assert_eq!(cfg["eta"], if improved { 2.0 } else { 1.0 });
        assert_eq!(cfg["finetune"]["keep_best"], improved);
        let carried = state["log_weights"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_f64().unwrap() != 0.0);
        assert_eq!(
            carried, improved,
            "log-weights carry over only when improved"
        );
        for s in state["steps"].as_array().unwrap() {
            let vals: Vec<f64> = s["ft_val"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(vals.len(), 3);
            let kept = s["val_after"].as_f64().unwrap();
            let want = if improved {
                vals.iter().copied().fold(0.0, f64::max)
            } else {
                vals[2]
            };
            assert_eq!(kept, want, "{variant}: {vals:?}");
            assert!(s["bandit_loss"].as_f64().unwrap().is_finite());
            for a in s["arms"].as_array().unwrap() {
                if a["a"].is_null() {
                    continue;
                }
                assert!(a["loss"].as_f64().unwrap() >= 0.0, "{a}");
                assert!(a["saved"].as_f64().unwrap() > 0.0, "{a}");
                assert!(a["reward"].is_number(), "{a}");
                if !improved {
                    assert_eq!(a["reward"], a["a"], "the reference rewards top-1");
                }
            }
        }
    }

    // Side-by-side comparison at two budgets, every method, then the single-run report.
    let cmp = t.path().join("compare");
    // A short search and cheap HAWQ traces, one thread.
    const SMALL: [&str; 14] = [
        "--ft-min-epochs",
        "1",
        "--ft-max-epochs",
        "1",
        "--init-epochs",
        "0",
        "--hessian-images",
        "64",
        "--hessian-samples",
        "2",
        "--batch-size",
        "32",
        "--threads",
        "1",
    ];
    let compare_args = |ft_epochs: &'static str| {
        let mut args = vec![
            "compare",
            fp.to_str().unwrap(),
            "--target-compression",
            "5,7",
            "--ft-epochs",
            ft_epochs,
            "--reallocate",
            "true",
            // The re-allocation's policy auditioned against up to two rivals.
            "--audition",
            "3",
            // 100 of the 180 training images per search epoch: the search spends fractions.
            "--ft-samples",
            "100",
            "--out",
            cmp.to_str().unwrap(),
            "-q",
        ];
        args.extend(SMALL);
        args
    };
    let text = ccq(&compare_args("1"));
    assert!(text.contains("FP32 test top-1"), "{text}");
    // CCQ set against each method at each budget; one fine-tuning each gives no interval.
    assert!(
        text.contains("ccq vs uniform at 5x: ")
            && text.contains("over 1 paired fine-tunings: ")
            && !text.contains("ccq vs ccq"),
        "{text}"
    );
    // Continuing it with other settings is refused, naming them.
    let e = ccq_fails(&compare_args("2"));
    assert!(
        e.contains("--ft-epochs") && !e.contains("--hessian-images"),
        "{e}"
    );
    let report = json(&cmp.join("report.json"));
    let results = report["results"].as_array().unwrap();
    for m in ["ccq", "hawq", "uniform", "uniform-ends8", "random"] {
        for b in [5.0, 7.0] {
            let r = results
                .iter()
                .find(|r| r["method"] == m && r["budget"].as_f64() == Some(b))
                .unwrap_or_else(|| panic!("{m} at {b}x missing"));
            if r["bits"].as_array().unwrap().is_empty() {
                assert!(
                    m == "uniform-ends8" || m == "uniform",
                    "{m} at {b}x: {}",
                    r["note"]
                );
            } else {
                assert!(r["compression"].as_f64().unwrap() >= b, "{m} meets {b}x");
            }
        }
    }
    // CCQ (improved, with --reallocate true) re-allocates or else polishes each budget's
    // policy; the polish only gives back bits, and both stay within the budget.
    for b in [5.0, 7.0] {
        let find = |m: &str| {
            results
                .iter()
                .find(|r| r["method"] == m && r["budget"].as_f64() == Some(b))
        };
        let c = find("ccq").unwrap()["compression"].as_f64().unwrap();
        assert!(c >= b, "{c}");
        if let Some(raw) = find("ccq (no polish)") {
            assert!(raw["compression"].as_f64().unwrap() > c, "{raw}");
        }
        // A re-allocated policy is another one that meets the budget.
        if let Some(raw) = find("ccq (not re-allocated)") {
            assert!(raw["compression"].as_f64().unwrap() >= b, "{raw}");
            assert_ne!(raw["bits"], find("ccq").unwrap()["bits"]);
        }
    }
    // The default CCQ fine-tunes its policy from the FP model (the search only chooses it):
    // --ft-epochs once, like every other method.
    let mut auditioned = 0;
    for b in [5.0, 7.0] {
        let r = results
            .iter()
            .find(|r| r["method"] == "ccq" && r["budget"].as_f64() == Some(b))
            .unwrap();
        assert_eq!(r["epochs"].as_f64(), Some(1.0), "{r}");
        // The audition (`--audition 3`, after the re-allocation) is noted where it had rivals
        // to weigh: each finalist fine-tuned on min(6400, the 180 training images), one epoch
        // each here.
        match r["audition_epochs"].as_f64() {
            Some(a) => {
                auditioned += 1;
                let finalists = (a.round() as usize).clamp(2, 3);
                assert_eq!(a, finalists as f64, "{r}");
                let note = r["note"].as_str().unwrap();
                assert!(note.starts_with("audition (6400 images each"), "{r}");
                assert_eq!(note.matches("; ").count(), finalists - 1, "{r}");
            }
            None => assert!(r["note"].is_null(), "{r}"),
        }
    }
    assert!(auditioned > 0, "no budget had rivals to audition");
    // Equal compute: continuing with --equal-compute adds every other method's policies
    // fine-tuned for as many epochs as CCQ spent reaching each budget (each of its search
    // epochs 100/180 of one, the fraction trained as a partial last epoch), plus its audition
    // there and its final fine-tuning (--ft-epochs).
    let mut eq = compare_args("1");
    eq.push("--equal-compute");
    ccq(&eq);
    let report = json(&cmp.join("report.json"));
    let results = report["results"].as_array().unwrap();
    let state = json(&cmp.join("ccq/state.json"));
    let steps = state["steps"].as_array().unwrap();
    for b in [5.0, 7.0] {
        let Some(hawq) = results
            .iter()
            .find(|r| r["method"] == "hawq (equal compute)" && r["budget"].as_f64() == Some(b))
        else {
            panic!("no equal-compute HAWQ result at {b}x");
        };
        let reached = steps
            .iter()
            .position(|s| s["compression"].as_f64().unwrap() >= b)
            .unwrap();
        let spent: u64 = steps[..=reached]
            .iter()
            .map(|s| s["epochs"].as_u64().unwrap())
            .sum();
        let epochs = hawq["epochs"].as_f64().unwrap();
        let auditioned = results
            .iter()
            .find(|r| r["method"] == "ccq" && r["budget"].as_f64() == Some(b))
            .and_then(|r| r["audition_epochs"].as_f64())
            .unwrap_or(0.0);
        let expected = 1.0 + spent as f64 * 100.0 / 180.0 + auditioned;
        assert!(
            (epochs - expected).abs() < 1e-9,
            "{b}x: {epochs} ≠ {expected}"
        );
        let same = results
            .iter()
            .find(|r| r["method"] == "hawq" && r["budget"].as_f64() == Some(b))
            .unwrap();
        assert_eq!(
            hawq["bits"], same["bits"],
            "the same policy, trained longer"
        );
        assert_eq!(same["epochs"].as_f64(), Some(1.0));
    }
    let page = std::fs::read_to_string(cmp.join("report.html")).unwrap();
    assert!(
        page.contains("<svg id=\"pareto\"")
            && page.contains("<table id=\"results\"")
            && page.contains("<svg id=\"trace-acc\"")
    );
    // Repeated fine-tunings: each policy trained twice with its own seed; the result is the
    // mean, each one is kept, and the setting is part of what a comparison depends on.
    let rep = t.path().join("compare-repeats");
    let repeats = |n: &'static str| {
        vec![
            "compare",
            fp.to_str().unwrap(),
            "--target-compression",
            "5",
            "--methods",
            "uniform",
            "--ft-epochs",
            "1",
            "--ft-repeats",
            n,
            "--out",
            rep.to_str().unwrap(),
            "--batch-size",
            "32",
            "--threads",
            "1",
            "-q",
        ]
    };
    let text = ccq(&repeats("2"));
    assert!(text.contains(" ± "), "{text}");
    let r = &json(&rep.join("report.json"))["results"][0];
    let each: Vec<f64> = r["test_top1_each"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(each.len(), 2, "{r}");
    assert!((r["test_top1"].as_f64().unwrap() - (each[0] + each[1]) / 2.0).abs() < 1e-12);
    // Fewer fine-tunings than recorded are refused (more add to the results).
    assert!(ccq_fails(&repeats("1")).contains("--ft-repeats"));
    // The control: continuing with --control fine-tunes the search's start (W8A8) the same way,
    // twice, and gives each result against it; a further continuation keeps it.
    let mut with_control = repeats("2");
    with_control.push("--control");
    let text = ccq(&with_control);
    assert!(
        text.contains("vs control") && text.contains("control: the start policy (W8A8, 4.0"),
        "{text}"
    );
    let report = json(&rep.join("report.json"));
    let control = &report["control"];
    assert_eq!(control["method"], "control", "{control}");
    assert!(
        control["bits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["w"] == 8 && b["a"] == 8),
        "{control}"
    );
    let each = control["test_top1_each"].as_array().unwrap();
    assert_eq!(each.len(), 2, "{control}");
    let c = control["test_top1"].as_f64().unwrap();
    let u = report["results"][0]["test_top1"].as_f64().unwrap();
    let page = std::fs::read_to_string(rep.join("report.html")).unwrap();
    assert!(
        page.contains("<th>vs control (points)</th>")
            && page.contains("id=\"control\"")
            && page.contains(&format!("<td>{:+.2}</td>", 100.0 * (u - c))),
        "{page}"
    );
    ccq(&with_control);
    let again = json(&rep.join("report.json"));
    assert_eq!(again["control"]["seconds"], control["seconds"], "kept");
    // A budget the shared ladder and floor cannot reach is skipped by every method, with the
    // reason CCQ gives, and the comparison goes on (HAWQ-style's allocation used to stop it).
    let far = t.path().join("compare-far");
    let far_args = |budgets: &'static str| {
        let mut args = vec![
            "compare",
            fp.to_str().unwrap(),
            "--target-compression",
            budgets,
            "--methods",
            "ccq,hawq,uniform,random",
            "--ft-epochs",
            "1",
            "--out",
            far.to_str().unwrap(),
            "-q",
        ];
        args.extend(SMALL);
        args
    };
    // Not one budget in reach: refused before anything is written.
    let e = ccq_fails(&far_args("40,50"));
    assert!(e.contains("best reachable") && e.contains("40,50"), "{e}");
    assert!(!far.exists(), "nothing written for a refused comparison");
    // 3x: the search's start (every layer at 8 bits, 4x) already meets it, so CCQ's policy there
    // is the start, fine-tuned like the others (it used to be skipped as "stopped at 0.00x").
    let text = ccq(&far_args("3,40"));
    assert!(text.contains("FP32 test top-1"), "{text}");
    let report = json(&far.join("report.json"));
    let results = report["results"].as_array().unwrap();
    let ccq3 = results
        .iter()
        .find(|r| r["method"] == "ccq" && r["budget"].as_f64() == Some(3.0))
        .unwrap();
    assert!(
        ccq3["bits"].as_array().unwrap().iter().all(|b| b["w"] == 8),
        "{ccq3}"
    );
    assert!(ccq3["test_top1"].as_f64().unwrap() > 0.0, "{ccq3}");
    assert!(far.join("ccq/at-3x/model.safetensors").is_file());
    for m in ["ccq", "hawq", "uniform", "random"] {
        let at = |b: f64| {
            results
                .iter()
                .find(|r| r["method"] == m && r["budget"].as_f64() == Some(b))
                .unwrap_or_else(|| panic!("{m} at {b}x missing"))
        };
        assert!(
            at(3.0)["compression"].as_f64().unwrap() >= 3.0,
            "{}",
            at(3.0)
        );
        assert!(
            at(40.0)["bits"].as_array().unwrap().is_empty(),
            "{}",
            at(40.0)
        );
        let note = at(40.0)["note"].as_str().unwrap();
        assert!(
            note.contains("best reachable") && note.contains("floor 3"),
            "{m}: {note}"
        );
    }
    // Untied, with activations at 8 bits only: every baseline allocates weights and keeps its
    // activations at 8 bits, as CCQ does (they used to follow the weights, off that ladder). A
    // report from before, whose baselines ran tied, is recomputed when continued.
    let act8 = t.path().join("compare-act8");
    let act8_args = {
        let mut args = vec![
            "compare",
            fp.to_str().unwrap(),
            "--target-compression",
            "7",
            "--methods",
            "hawq,uniform,random",
            "--untied",
            "--act-ladder",
            "8",
            "--floor-bits",
            "2",
            "--ft-epochs",
            "1",
            "--out",
            act8.to_str().unwrap(),
            "-q",
        ];
        args.extend(SMALL);
        args
    };
    ccq(&act8_args);
    let all_a8 = |r: &serde_json::Value| {
        let bits = r["bits"].as_array().unwrap();
        !bits.is_empty() && bits.iter().all(|b| b["a"] == 8) && bits.iter().any(|b| b["w"] != 8)
    };
    let report = json(&act8.join("report.json"));
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{results:?}");
    for r in results {
        assert!(all_a8(r), "{r}");
        assert!(r["compression"].as_f64().unwrap() >= 7.0, "{r}");
    }
    let mut old = report.clone();
    for b in old["results"][0]["bits"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .skip(1)
    {
        b["a"] = b["w"].clone();
    }
    old["results"][0]["test_top1"] = serde_json::json!(0.01);
    // A stale row at a budget this run does not ask for is dropped, and the note says so
    // rather than claiming to recompute it.
    let mut with_other_budget = old.clone();
    let mut at9 = old["results"][0].clone();
    at9["budget"] = serde_json::json!(9.0);
    with_other_budget["results"]
        .as_array_mut()
        .unwrap()
        .push(at9);
    std::fs::write(act8.join("report.json"), with_other_budget.to_string()).unwrap();
    let text = ccq(&act8_args);
    assert!(
        text.contains("recomputing hawq at 7x:") && text.contains("outside the activation ladder"),
        "{text}"
    );
    assert!(
        text.contains("dropped hawq at 9x from the report, not recomputed"),
        "{text}"
    );
    assert!(!text.contains("recomputing hawq at 9x"), "{text}");
    // The Hessian traces were kept from the first run, not computed again.
    assert!(text.contains("Hessian traces: from"), "{text}");
    let again = json(&act8.join("report.json"));
    let hawq = again["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["method"] == "hawq")
        .unwrap();
    assert!(all_a8(hawq), "{hawq}");
    assert_eq!(
        hawq["bits"], report["results"][0]["bits"],
        "the same allocation"
    );
    assert_ne!(hawq["test_top1"].as_f64(), Some(0.01), "measured again");
    assert!(
        again["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["budget"] != 9.0),
        "the stale 9x row is gone"
    );
    // Kept traces from other FP weights are computed again; ones that do not fit the model
    // are refused, naming the file.
    let traces = act8.join("hessian-traces.json");
    let mut kept = json(&traces);
    let crc = kept["weights_crc32"].as_u64().unwrap();
    let mut other = kept.clone();
    other["weights_crc32"] = (crc ^ 1).into();
    std::fs::write(&traces, other.to_string()).unwrap();
    std::fs::write(act8.join("report.json"), old.to_string()).unwrap();
    let text = ccq(&act8_args);
    assert!(
        text.contains("computed from other FP weights") && !text.contains("Hessian traces: from"),
        "{text}"
    );
    assert_eq!(json(&traces)["weights_crc32"].as_u64(), Some(crc));
    kept["traces"].as_array_mut().unwrap().pop();
    std::fs::write(&traces, kept.to_string()).unwrap();
    std::fs::write(act8.join("report.json"), old.to_string()).unwrap();
    let e = ccq_fails(&act8_args);
    assert!(
        e.contains("hessian-traces.json") && e.contains("corrupt Hessian traces"),
        "{e}"
    );
    // Distillation is part of what a comparison depends on, and is recorded.
    let mut kd = repeats("2");
    kd.extend(["--distill", "1"]);
    let e = ccq_fails(&kd);
    assert!(e.contains("distill"), "{e}");
    let kd_dir = t.path().join("compare-kd");
    let out_at = kd.iter().position(|a| *a == "--out").unwrap() + 1;
    kd[out_at] = kd_dir.to_str().unwrap();
    ccq(&kd);
    let recorded = &json(&kd_dir.join("compare.json"))["search"]["distill"];
    assert_eq!(recorded["weight"].as_f64(), Some(1.0), "{recorded}");
    assert!(
        ccq_fails(&[
            "qat",
            fp.to_str().unwrap(),
            "--bits",
            "4/4",
            "--distill",
            "1.5",
            "--out",
            "x"
        ])
        .contains("--distill 1.5")
    );
    assert!(ccq_fails(&repeats("0")).contains("--ft-repeats must be at least 1"));

    ccq(&["report", full.to_str().unwrap()]);
    let page = std::fs::read_to_string(full.join("report.html")).unwrap();
    assert!(page.contains("<table id=\"steps\""));
    // Why each layer was chosen: its probability, loss change (plain and tempered), share saved
    // and reward.
    assert!(
        page.contains("why this layer")
            && page.contains("bandit loss")
            && page.contains("tempered")
            && page.contains("reward"),
        "the steps table explains each choice"
    );

    // A fine-tuning that diverges at every retry is rolled back: the lowering is refused, the
    // policy and weights stay as they were, and the search goes on with the other arms.
    let nan = t.path().join("run-diverged");
    let text = search(&nan, &["--debug-lr-scale", "2:1e30", "--ft-retries", "1"]);
    assert!(text.contains("CCQ finished"), "{text}");
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(nan.join("steps.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.len(), 4);
    assert!(steps[0].get("refused").is_none());
    let why = steps[1]["refused"].as_str().expect("step 2 refused");
    assert!(why.contains("diverged 2 time(s)"), "{why}");
    assert_eq!(steps[1]["bits_after"], steps[1]["bits_before"]);
    assert_eq!(
        steps[1]["val_after"], steps[0]["val_after"],
        "weights rolled back"
    );
    assert_eq!(steps[1]["compression"], steps[0]["compression"]);
    let state = json(&nan.join("state.json"));
    let refused = state["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1);
    let arm = refused[0].as_u64().unwrap() as usize;
    for s in &steps[2..] {
        assert!(s["arms"][arm]["a"].is_null(), "the refused arm sits out");
        assert!(s["val_after"].as_f64().unwrap().is_finite());
    }
    // Without retries the same divergence stops the run with the step named.
    let e = ccq_fails(&[
        "quantize",
        fp.to_str().unwrap(),
        "--out",
        t.path().join("run-nan").to_str().unwrap(),
        "--qsteps",
        "2",
        "--ft-min-epochs",
        "1",
        "--ft-max-epochs",
        "1",
        "--init-epochs",
        "1",
        "--debug-lr-scale",
        "1:1e30",
        "--ft-retries",
        "0",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "-q",
    ]);
    assert!(e.contains("step 1") && e.contains("non-finite"), "{e}");

    // FP training that diverges exits non-zero, names the epoch and step, suggests a lower
    // --lr, and keeps no checkpoint of the diverged epoch.
    let div = t.path().join("fp-diverged");
    let mut a = vec![
        "train",
        "--model",
        "convnet",
        "--data",
        d,
        "--format",
        "idx",
        "--epochs",
        "1",
        "--lr",
        "1e30",
        "--out",
        div.to_str().unwrap(),
    ];
    a.extend(small);
    let e = ccq_fails(&a);
    assert!(
        e.contains("epoch 1/1") && e.contains("non-finite") && e.contains("--lr"),
        "{e}"
    );
    assert!(!div.join("checkpoint.json").exists());

    // Other split flags with --data would carve validation images the model trained on.
    let e = ccq_fails(&[
        "qat",
        fp.to_str().unwrap(),
        "--bits",
        "4/4",
        "--data",
        d,
        "--format",
        "idx",
        "--val-size",
        "40",
        "--bandit-size",
        "30",
        "--out",
        t.path().join("leak").to_str().unwrap(),
        "-q",
    ]);
    assert!(
        e.contains("--val-size 30") && e.contains("--val-size 40"),
        "{e}"
    );

    // A target the floor cannot reach is refused up front.
    let e = ccq_fails(&[
        "quantize",
        fp.to_str().unwrap(),
        "--out",
        t.path().join("x").to_str().unwrap(),
        "--target-compression",
        "20",
        "-q",
    ]);
    assert!(e.contains("best reachable"), "{e}");
    let e = ccq_fails(&[
        "qat",
        fp.to_str().unwrap(),
        "--bits",
        "9/4",
        "--out",
        t.path().join("y").to_str().unwrap(),
    ]);
    assert!(e.contains("9"), "{e}");
}
