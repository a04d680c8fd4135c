//! The library API: a search cancelled through its events stops after a saved step and
//! resumes to the same policy as an uninterrupted one; errors come back typed by kind.

use ccq::Error;
use ccq::data::{DataFormat, synthetic};
use ccq::events::{Event, Events, Silent};
use ccq::model::ModelKind;
use ccq::pipeline::{
    self, Bits, DataConfig, QatConfig, QuantizeConfig, Session, Start, TrainConfig,
};
use ccq::search::state::SearchState;
use ccq::search::target::Target;
use std::cell::{Cell, RefCell};
use std::path::Path;

/// Records what it sees; cancels once `stop_after` steps were chosen.
struct Recorder {
    steps: Cell<usize>,
    stop_after: Option<usize>,
    kinds: RefCell<Vec<&'static str>>,
}

impl Events for Recorder {
    fn event(&self, e: &Event<'_>) {
        let kind = match e {
            Event::DataLoaded { .. } => "data",
            Event::SearchStarted { .. } => "start",
            Event::TrialScored { .. } => "trial",
            Event::StepChosen { .. } => {
                self.steps.set(self.steps.get() + 1);
                "step"
            }
            Event::EpochEnded { .. } => "epoch",
            Event::Resumed { .. } => "resumed",
            _ => "other",
        };
        self.kinds.borrow_mut().push(kind);
    }
    fn cancelled(&self) -> bool {
        self.stop_after.is_some_and(|n| self.steps.get() >= n)
    }
}

fn session() -> Session {
    Session {
        seed: 3,
        threads: Some(1),
        batch_size: 32,
        ..Session::default()
    }
}

fn data(dir: &Path) -> DataConfig {
    DataConfig {
        val_size: 30,
        bandit_size: 30,
        ..DataConfig::at(dir, DataFormat::Idx)
    }
}

fn search(run: &Path, fp: &Path, data: &DataConfig) -> QuantizeConfig {
    let mut q = QuantizeConfig::new(
        run,
        Start::Checkpoint(fp.to_path_buf()),
        Some(Target::Compression(7.0)),
    );
    q.data = data.clone();
    q.session = session();
    q.search.ft_min_epochs = Some(1);
    q.search.ft_max_epochs = Some(1);
    q.search.final_epochs = 1;
    q
}

/// The synthetic dataset written in `dir/data` and a ConvNet trained on it for 2 epochs in
/// `dir/fp`.
fn trained_fp(dir: &Path) -> (DataConfig, std::path::PathBuf, pipeline::Trained) {
    synthetic::write_idx_dataset(&dir.join("data")).unwrap();
    let d = data(&dir.join("data"));
    let fp = dir.join("fp");
    let trained = pipeline::train(
        &TrainConfig {
            data: d.clone(),
            epochs: 2,
            session: session(),
            ..TrainConfig::new(ModelKind::Convnet, &fp)
        },
        &Silent,
    )
    .unwrap();
    (d, fp, trained)
}

#[test]
fn cancel_resume_and_typed_errors() {
    let t = tempfile::tempdir().unwrap();
    let (d, fp, trained) = trained_fp(t.path());
    assert_eq!(trained.epochs, 2);
    assert!(trained.test.unwrap().top1.is_finite());

    // Uninterrupted.
    let full = pipeline::quantize(&search(&t.path().join("full"), &fp, &d), &Silent).unwrap();
    let policy = full.report.expect("finished").layers;
    assert!(full.state.step >= 2, "{} steps", full.state.step);

    // Cancelled after the first step: nothing past it ran, and the state says so.
    let run = t.path().join("cancelled");
    let rec = Recorder {
        steps: Cell::new(0),
        stop_after: Some(1),
        kinds: RefCell::new(Vec::new()),
    };
    let part = pipeline::quantize(&search(&run, &fp, &d), &rec).unwrap();
    assert!(part.report.is_none() && part.state.finished.is_none());
    assert_eq!(part.state.step, 1);
    let kinds = rec.kinds.borrow().clone();
    for k in ["data", "start", "trial", "step"] {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| **k == "step").count(), 1);

    // Resumed with another target: refused by name (a resumed search keeps its settings),
    // and nothing ran.
    let mut other = search(&run, &fp, &d);
    other.resume = true;
    other.target = Some(Target::Compression(8.0));
    match pipeline::quantize(&other, &Silent) {
        Err(Error::IncompatibleCheckpoint { message, .. }) => assert!(
            message.contains("--target-compression 7")
                && message.contains("--target-compression 8"),
            "{message}"
        ),
        other => panic!("expected a refusal, got {:?}", other.map(|q| q.state.step)),
    }
    let state = ccq::search::run_dir::RunDir::new(&run)
        .load_state()
        .unwrap();
    assert_eq!(state.step, 1);

    // Resumed: the same policy as the uninterrupted run.
    let mut again = search(&run, &fp, &d);
    again.resume = true;
    let resumed = pipeline::quantize(&again, &Silent).unwrap();
    assert_eq!(resumed.report.expect("finished").layers, policy);

    // Errors by kind.
    let mut far = search(&t.path().join("far"), &fp, &d);
    far.target = Some(Target::Compression(1000.0));
    assert!(
        matches!(pipeline::quantize(&far, &Silent), Err(Error::UnreachableTarget(m)) if m.contains("best reachable"))
    );
    let mut bad = search(&t.path().join("bad"), &fp, &d);
    bad.session.batch_size = 1;
    assert!(matches!(
        pipeline::quantize(&bad, &Silent),
        Err(Error::InvalidConfig(_))
    ));
    let missing = search(&t.path().join("m"), &t.path().join("no-such-fp"), &d);
    match pipeline::quantize(&missing, &Silent) {
        Err(Error::BadInput { path, message }) => {
            assert!(
                path.ends_with("no-such-fp") && message.contains("no-such-fp"),
                "{message}"
            )
        }
        other => panic!("expected bad input, got {:?}", other.map(|q| q.state.step)),
    }
    let again_new = search(&run, &fp, &d);
    assert!(matches!(
        pipeline::quantize(&again_new, &Silent),
        Err(Error::IncompatibleCheckpoint { .. })
    ));
    let mut not_a_run = search(&t.path().join("data"), &fp, &d);
    not_a_run.resume = true;
    assert!(matches!(
        pipeline::quantize(&not_a_run, &Silent),
        Err(Error::BadInput { .. })
    ));
}

/// Records the start of each kept final fine-tuning.
struct FinalStarts(RefCell<Vec<String>>);

impl Events for FinalStarts {
    fn event(&self, e: &Event<'_>) {
        if let Event::FinalTuned { from, .. } = e {
            self.0.borrow_mut().push(from.to_string());
        }
    }
}

#[test]
fn the_final_fine_tuning_starts_where_asked() {
    use ccq::names::Named;
    use ccq::search::config::FinalFrom;
    let t = tempfile::tempdir().unwrap();
    let (d, fp, _) = trained_fp(t.path());
    let run = |from: FinalFrom| {
        let mut q = search(&t.path().join(from.name()), &fp, &d);
        q.search.final_from = Some(from);
        let events = FinalStarts(RefCell::new(Vec::new()));
        let r = pipeline::quantize(&q, &events).unwrap();
        (r.state, events.0.into_inner())
    };
    let (search_only, e1) = run(FinalFrom::Search);
    let (fp_only, e2) = run(FinalFrom::Fp);
    let (best, e3) = run(FinalFrom::Best);
    assert_eq!(search_only.final_start.as_deref(), Some("search"));
    assert_eq!(fp_only.final_start.as_deref(), Some("fp"));
    assert_eq!(
        (e1, e2),
        (vec!["search".to_string()], vec!["fp".to_string()])
    );
    // The same search, so the same policy; the final models differ.
    assert_eq!(search_only.policy, fp_only.policy);
    let weights = |from: FinalFrom| {
        std::fs::read(t.path().join(from.name()).join("final/model.safetensors")).unwrap()
    };
    assert_ne!(weights(FinalFrom::Search), weights(FinalFrom::Fp));
    // Best keeps the higher validation top-1 of the two (ties go to the search's weights).
    let want = if fp_only.val > search_only.val {
        "fp"
    } else {
        "search"
    };
    assert_eq!(best.final_start.as_deref(), Some(want));
    assert_eq!(e3, vec![want.to_string()]);
    assert_eq!(best.val, search_only.val.max(fp_only.val));
    let kept = if want == "fp" {
        FinalFrom::Fp
    } else {
        FinalFrom::Search
    };
    assert_eq!(weights(FinalFrom::Best), weights(kept));
}

/// The re-allocation of `searched` by the prices `run`'s search recorded, with up to `rivals`
/// rivals.
fn reallocation_of(
    run: &pipeline::Quantized,
    searched: &ccq::quant::policy::Policy,
    rivals: usize,
) -> ccq::search::reallocate::Reallocation {
    let cfg = &run.state.config;
    ccq::search::reallocate::reallocate(
        &run.layers,
        &run.state.steps,
        searched,
        &cfg.lowering,
        &cfg.target.unwrap(),
        cfg.scheme.weight,
        cfg.pricing(),
        None,
        rivals,
    )
    .unwrap()
    .expect("every step recorded its bandit loss")
}

#[test]
fn the_reallocation_is_the_knapsack_of_the_recorded_prices() {
    use ccq::model::cost::model_cost;
    let t = tempfile::tempdir().unwrap();
    let (d, fp, _) = trained_fp(t.path());
    // The same search with the re-allocation and without it or the polish.
    let mut q = search(&t.path().join("on"), &fp, &d);
    q.search.reallocate = Some(true);
    // The re-allocation alone (the audition after it has its own test).
    q.search.audition = Some(0);
    let on = pipeline::quantize(&q, &Silent).unwrap();
    let mut q = search(&t.path().join("off"), &fp, &d);
    q.search.reallocate = Some(false);
    q.search.polish = Some(false);
    let off = pipeline::quantize(&q, &Silent).unwrap();
    assert!(on.state.config.reallocate && !off.state.config.reallocate);
    let moves = |s: &ccq::search::state::SearchState| {
        s.steps
            .iter()
            .map(|x| (x.chosen.clone(), x.bits_after))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        moves(&on.state),
        moves(&off.state),
        "it acts after the search"
    );
    assert!(off.state.reallocation.is_none());
    let searched = off.state.policy.clone();
    let cfg = &on.state.config;
    let target = cfg.target.unwrap();
    let r = reallocation_of(&on, &searched, 0);
    assert!(r.price <= r.searched_price.unwrap());
    match &on.state.reallocation {
        // Changed: recorded, adopted, strictly cheaper, and no polish after it.
        Some(rec) => {
            assert_eq!(*rec, r);
            assert_eq!(on.state.policy, r.policy);
            assert!(r.price < r.searched_price.unwrap());
            assert!(on.state.polish.is_empty());
        }
        // Kept (as on this synthetic data at 4-10x): the search's policy, polished or not.
        None => assert_eq!(r.policy, searched),
    }
    let cost = model_cost(&on.layers, &on.state.policy, cfg.scheme.weight);
    assert!(target.met(&cost), "{}", target.describe(&cost));
}

#[test]
fn the_audition_weighs_the_reallocations_policy_against_its_rivals_after_a_short_fine_tuning() {
    use ccq::model::cost::model_cost;
    use ccq::search::audition;
    let t = tempfile::tempdir().unwrap();
    let (d, fp, _) = trained_fp(t.path());
    // Four finalists, each fine-tuned on 96 images (three batches).
    let mut q = search(&t.path().join("on"), &fp, &d);
    q.search.audition = Some(4);
    q.search.audition_images = Some(96);
    q.search.polish = Some(false);
    let on = pipeline::quantize(&q, &Silent).unwrap();
    let cfg = &on.state.config;
    let settings = cfg.audition.expect("asked for");
    assert_eq!(
        (settings.finalists, settings.images, settings.score),
        (4, 96, audition::AuditionScore::Tempered)
    );
    // The same search with the re-allocation alone.
    let mut q = search(&t.path().join("off"), &fp, &d);
    q.search.audition = Some(0);
    q.search.polish = Some(false);
    let off = pipeline::quantize(&q, &Silent).unwrap();
    assert_eq!(off.state.config.audition, None);
    assert!(off.state.audition.is_none());
    assert_eq!(
        on.state.steps.len(),
        off.state.steps.len(),
        "it acts after the search"
    );
    // Its finalists: the re-allocation's choice, then its rivals, cheapest first.
    let searched = on
        .state
        .reallocation
        .as_ref()
        .map_or(off.state.policy.clone(), |r| r.searched.clone());
    let target = cfg.target.unwrap();
    let r = reallocation_of(&on, &searched, settings.finalists - 1);
    assert_eq!(r.policy, off.state.policy, "the re-allocation's choice");
    let a = on.state.audition.as_ref().expect("the choice had rivals");
    assert!(!r.rivals.is_empty() && r.rivals.len() <= 3);
    let policies: Vec<_> = a.finalists.iter().map(|f| f.policy.clone()).collect();
    let mut expected = vec![r.policy.clone()];
    expected.extend(r.rivals.iter().map(|x| x.policy.clone()));
    assert_eq!(policies, expected);
    assert_eq!(a.images, 96);
    for f in &a.finalists {
        // A cross-entropy: finite and never negative (0 to the float's precision is possible
        // on this separable synthetic data, depending on the threads' summation order).
        assert!(f.loss.is_some_and(|l| l.is_finite() && l >= 0.0), "{f:?}");
        // Tempered: the least over temperatures that include 1, so never above the plain loss.
        let (plain, tempered) = (f.loss.unwrap(), f.tempered.expect("measured"));
        assert!(tempered >= 0.0 && tempered <= plain + 1e-12, "{f:?}");
        assert!(target.met(&model_cost(&on.layers, &f.policy, cfg.scheme.weight)));
    }
    // The least tempered loss won (the default score), and the search ended at it.
    assert_eq!(a.score, audition::AuditionScore::Tempered);
    let scores: Vec<_> = a.finalists.iter().map(|f| f.tempered).collect();
    assert_eq!(a.chosen, audition::winner(&scores));
    assert_eq!(&on.state.policy, a.winner());
    // Auditioned again, the same: every finalist saw the same images in the same order.
    let ck = ccq::train::checkpoint::load(&fp, ccq::train::Devices::cpu().device).unwrap();
    let prepared = pipeline::data::prepare_for(&ck, &d, &Silent).unwrap();
    let again = audition::audition(
        &ck.model,
        &r,
        cfg,
        settings,
        &prepared.splits,
        &ck.meta.normalization,
        &Silent,
    )
    .unwrap()
    .unwrap();
    let losses = |a: &audition::Auditioned| -> Vec<_> {
        a.finalists.iter().map(|f| (f.loss, f.tempered)).collect()
    };
    assert_eq!(losses(&again), losses(a));
    // Trained longer, the losses move: the fine-tuning counts.
    let longer = audition::Audition {
        images: 320,
        ..settings
    };
    let moved = audition::audition(
        &ck.model,
        &r,
        cfg,
        longer,
        &prepared.splits,
        &ck.meta.normalization,
        &Silent,
    )
    .unwrap()
    .unwrap();
    assert_ne!(moved.finalists[0].loss, a.finalists[0].loss);
}

/// Records the images of every epoch a job trained.
#[derive(Default)]
struct EpochImages(RefCell<Vec<(usize, usize)>>);

impl Events for EpochImages {
    fn event(&self, e: &Event<'_>) {
        if let Event::EpochEnded { epochs, images, .. } = e {
            self.0.borrow_mut().push((*epochs, *images));
        }
    }
}

#[test]
fn a_fractional_fit_trains_a_partial_last_epoch() {
    use ccq::train::fit::{FitPlan, fit};
    let t = tempfile::tempdir().unwrap();
    let (d, fp, _) = trained_fp(t.path());
    let ck = ccq::train::checkpoint::load(&fp, tch::Device::Cpu).unwrap();
    let p = pipeline::data::prepare_for(&ck, &d, &Silent).unwrap();
    let train_len = p.splits.train.len();
    let policy = ccq::quant::policy::Policy {
        names: ck.meta.layers.clone(),
        bits: vec![ccq::quant::policy::LayerBits { w: 4, a: 4 }; ck.meta.layers.len()],
    };
    let plan = FitPlan {
        epochs: 1,
        start_epoch: 0,
        lr: 0.01,
        lr_end: 0.0,
        hyper: session().hyper(1e-4),
        augment: None,
        seed: 1,
        stop_after: None,
        extra_samples: 64,
        teacher: None,
    };
    assert_eq!(plan.length(train_len), 1.0 + 64.0 / train_len as f64);
    let seen = EpochImages::default();
    let norm = ck.meta.normalization.clone();
    fit(
        ck.model,
        &policy,
        Default::default(),
        &p.splits,
        &norm,
        &plan,
        None,
        &mut |_, _, _| Ok(()),
        &seen,
    )
    .unwrap();
    // One whole epoch, then one of 64 images, each reported as one of two.
    assert_eq!(seen.0.into_inner(), vec![(2, train_len), (2, 64)]);
}

#[test]
fn distillation_reaches_qat_and_the_final_fine_tuning() {
    use ccq::train::distill::Distill;
    let t = tempfile::tempdir().unwrap();
    let (d, fp, _) = trained_fp(t.path());
    let kd = Distill {
        weight: 1.0,
        temperature: 2.0,
    };
    let qat = |out: &str, from: &Path, distill: Option<Distill>| {
        pipeline::qat(
            &QatConfig {
                checkpoint: from.to_path_buf(),
                bits: Bits::Uniform(ccq::quant::policy::LayerBits { w: 3, a: 3 }),
                epochs: 1,
                lr: 0.01,
                scheme: Default::default(),
                distill,
                data: d.clone(),
                out: t.path().join(out),
                session: session(),
            },
            &Silent,
        )
    };
    let weights = |dir: &str| std::fs::read(t.path().join(dir).join("model.safetensors")).unwrap();
    qat("plain", &fp, None).unwrap();
    qat("kd", &fp, Some(kd)).unwrap();
    assert_ne!(weights("plain"), weights("kd"), "--distill changed nothing");
    // A quantized checkpoint is no teacher.
    match qat("again", &t.path().join("kd"), Some(kd)) {
        Err(Error::InvalidConfig(m)) => assert!(m.contains("--distill") && m.contains("kd"), "{m}"),
        other => panic!("expected a refusal, got {:?}", other.map(|q| q.test.top1)),
    }
    let bad = Distill { weight: 0.0, ..kd };
    assert!(
        matches!(qat("bad", &fp, Some(bad)), Err(Error::InvalidConfig(m)) if m.contains("--distill"))
    );

    // The search's last fine-tuning: the same search, so the same policy, trained otherwise,
    // and the setting is recorded with the run.
    let plain = pipeline::quantize(&search(&t.path().join("s-plain"), &fp, &d), &Silent).unwrap();
    let mut q = search(&t.path().join("s-kd"), &fp, &d);
    q.search.distill = Some(kd);
    let distilled = pipeline::quantize(&q, &Silent).unwrap();
    assert_eq!(plain.state.policy, distilled.state.policy);
    assert_eq!(distilled.state.config.distill, Some(kd));
    assert_ne!(weights("s-plain/final"), weights("s-kd/final"));
}

/// A comparison of CCQ alone at `budgets`, written to `out`, without the budget polish (it
/// scores raises on the search's weights at each budget).
fn ccq_comparison(
    out: &Path,
    fp: &Path,
    d: &DataConfig,
    budgets: &[f64],
) -> pipeline::CompareConfig {
    let search = ccq::pipeline::SearchSettings {
        ft_min_epochs: Some(1),
        ft_max_epochs: Some(1),
        init_epochs: 0,
        polish: Some(false),
        ..Default::default()
    };
    pipeline::CompareConfig {
        checkpoint: fp.to_path_buf(),
        budgets: budgets.to_vec(),
        methods: vec![ccq::search::baselines::Method::Ccq],
        ft_epochs: 1,
        ft_lr: 0.005,
        ft_repeats: 1,
        hessian_images: 64,
        hessian_samples: 2,
        equal_compute: false,
        search_policy_rows: true,
        control: false,
        out: out.to_path_buf(),
        search,
        data: d.clone(),
        session: session(),
    }
}

/// Runs `cfg` until its search has taken one step; that step's compression.
fn cancelled_after_one_step(cfg: &pipeline::CompareConfig) -> f64 {
    cancelled_after(cfg, 1).steps[0].compression
}

/// Runs `cfg` until its search has taken `n` steps; its state then.
fn cancelled_after(cfg: &pipeline::CompareConfig, n: usize) -> SearchState {
    let stop = Recorder {
        steps: Cell::new(0),
        stop_after: Some(n),
        kinds: RefCell::new(Vec::new()),
    };
    assert!(matches!(
        pipeline::compare(cfg, &stop),
        Err(Error::Cancelled(_))
    ));
    let state = ccq::search::run_dir::RunDir::new(cfg.out.join("ccq"))
        .load_state()
        .unwrap();
    assert_eq!(state.step, n);
    state
}

#[test]
fn a_budget_added_after_the_search_passed_it_gives_the_same_result() {
    let t = tempfile::tempdir().unwrap();
    let (d, fp, _) = trained_fp(t.path());
    // A comparison at 7x, cancelled after its search's first step; then a budget that step had
    // reached is added as it continues. The search kept no checkpoint there (it only knew of
    // 7x), and the steps after the resume must not keep one either.
    let later = t.path().join("later");
    let reached = cancelled_after_one_step(&ccq_comparison(&later, &fp, &d, &[7.0]));
    let first = (reached * 100.0).floor() / 100.0;
    let budgets = [first, 7.0];
    let added = pipeline::compare(&ccq_comparison(&later, &fp, &d, &budgets), &Silent).unwrap();
    // The same results as a comparison that listed both budgets from the start.
    let listed = t.path().join("listed");
    let whole = pipeline::compare(&ccq_comparison(&listed, &fp, &d, &budgets), &Silent).unwrap();
    let ccq_at = |c: &pipeline::Compared, b: f64| {
        let mut r: Vec<_> = c
            .report
            .results
            .iter()
            .filter(|r| r.method.starts_with("ccq") && r.budget == b)
            .map(|r| (r.method.clone(), r.bits.clone(), r.compression, r.test_top1))
            .collect();
        r.sort_by(|x, y| x.0.cmp(&y.0));
        r
    };
    for b in budgets {
        let (a, w) = (ccq_at(&added, b), ccq_at(&whole, b));
        assert!(!a.is_empty() && a.iter().all(|r| r.2 >= b), "{b}x: {a:?}");
        assert_eq!(a, w, "{b}x");
    }
    assert_eq!(added.report.ccq_steps.len(), whole.report.ccq_steps.len());
    // A comparison recorded before a search setting existed continues: the setting reads as
    // its default, the behaviour from before it.
    let recorded = later.join("compare.json");
    let mut settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&recorded).unwrap()).unwrap();
    let search = settings["search"].as_object_mut().unwrap();
    assert_eq!(
        search.remove("polish_swaps"),
        Some(serde_json::Value::Bool(false))
    );
    std::fs::write(&recorded, serde_json::to_string(&settings).unwrap()).unwrap();
    let again = pipeline::compare(&ccq_comparison(&later, &fp, &d, &budgets), &Silent).unwrap();
    assert_eq!(again.report.results.len(), added.report.results.len());
    // A budget past where a finished search ended takes that search on to it, with the same
    // results as listing it from the start: here a comparison at `first` alone (its search
    // stops after one step, then re-allocates), given 7x afterwards.
    let extended = t.path().join("extended");
    let short = pipeline::compare(&ccq_comparison(&extended, &fp, &d, &[first]), &Silent).unwrap();
    assert_eq!(short.report.ccq_steps.len(), 1);
    // What concluded it must be undone: its finished policy is made to differ from its last
    // step's, as a re-allocation that moved a rung would leave it.
    let state_file = extended.join("ccq/state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    let bits = state["policy"]["bits"].as_array_mut().unwrap();
    assert_eq!(bits[0]["w"], 8);
    bits[0]["w"] = 6.into();
    std::fs::write(&state_file, serde_json::to_string(&state).unwrap()).unwrap();
    let more = pipeline::compare(&ccq_comparison(&extended, &fp, &d, &budgets), &Silent).unwrap();
    for b in budgets {
        assert_eq!(ccq_at(&more, b), ccq_at(&whole, b), "{b}x");
    }
    assert_eq!(more.report.ccq_steps.len(), whole.report.ccq_steps.len());
    // So does an unfinished search: one cancelled on its way to the budget its second step
    // reaches goes on to 7x, and its first step's budget is replayed.
    let second = (whole.report.ccq_steps[1].compression * 100.0).floor() / 100.0;
    assert!(second > first && second < 7.0, "{second}");
    let raised = t.path().join("raised");
    cancelled_after_one_step(&ccq_comparison(&raised, &fp, &d, &[second]));
    let on = pipeline::compare(&ccq_comparison(&raised, &fp, &d, &budgets), &Silent).unwrap();
    for b in budgets {
        assert_eq!(ccq_at(&on, b), ccq_at(&whole, b), "{b}x");
    }
    // Not a budget-aware search: its first target steered its steps.
    let aware = |out: &Path, budgets: &[f64]| {
        let mut c = ccq_comparison(out, &fp, &d, budgets);
        c.search.budget_aware = Some(true);
        c
    };
    let steered = t.path().join("steered");
    pipeline::compare(&aware(&steered, &[first]), &Silent).unwrap();
    match pipeline::compare(&aware(&steered, &budgets), &Silent) {
        Err(Error::IncompatibleCheckpoint { path, message }) => {
            assert!(path.ends_with("steered/ccq"), "{}", path.display());
            assert!(
                message.contains("budget-aware") && message.contains("new --out"),
                "{message}"
            );
        }
        other => panic!(
            "expected a refusal, got {:?}",
            other.map(|c| c.report.results.len())
        ),
    }
    // A budget the search stopped short of (here at --qsteps) is skipped with the reason.
    let mut capped = ccq_comparison(&t.path().join("capped"), &fp, &d, &budgets);
    capped.search.qsteps = 1;
    let capped = pipeline::compare(&capped, &Silent).unwrap();
    let at = |b: f64| {
        capped
            .report
            .results
            .iter()
            .find(|r| r.budget == b)
            .unwrap()
    };
    assert!(at(first).test_top1.is_some());
    let note = at(7.0).note.clone().unwrap_or_default();
    assert!(
        at(7.0).test_top1.is_none() && note.contains("--qsteps 1"),
        "{note}"
    );
    // So is an added budget whose fine-tuning would start from the search's weights there.
    let from_search = |out: &Path, budgets: &[f64]| {
        let mut c = ccq_comparison(out, &fp, &d, budgets);
        c.search.final_from = Some(ccq::search::config::FinalFrom::Search);
        c
    };
    let weights = t.path().join("weights");
    cancelled_after_one_step(&from_search(&weights, &[7.0]));
    match pipeline::compare(&from_search(&weights, &budgets), &Silent) {
        Err(Error::IncompatibleCheckpoint { message, .. }) => {
            assert!(message.contains("--final-from search"), "{message}");
        }
        other => panic!(
            "expected a refusal, got {:?}",
            other.map(|c| c.report.results.len())
        ),
    }
}

#[test]
fn final_policy_only_drops_the_search_policy_rows_and_keeps_the_results() {
    let t = tempfile::tempdir().unwrap();
    let (d, fp, _) = trained_fp(t.path());
    // The synthetic model fits its data, so every trial's rise is ~0 and the re-allocation
    // keeps the search's policy. Here the search's last rung (stage2.conv 4 -> 3 bits, to
    // 7.88x) is made to have cost far more than lowering every other layer instead would, so
    // that at 7x the re-allocation moves the policy. (8x keeps the search going after it.)
    let first = t.path().join("first");
    let cfg = |out: &Path, rows: bool| {
        let mut c = ccq_comparison(out, &fp, &d, &[7.0, 8.0]);
        c.search_policy_rows = rows;
        c
    };
    let state = cancelled_after(&cfg(&first, true), 3);
    let last = state.steps.len() - 1;
    assert_eq!(state.steps[last].chosen, "stage2.conv");
    let file = first.join("ccq/state.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let step = &mut v["steps"][last];
    // A rise of a whole nat, in the plain and the tempered cross-entropy alike.
    for (what, base) in [
        ("loss", "bandit_loss"),
        ("tempered_loss", "bandit_tempered_loss"),
    ] {
        let base = step[base].as_f64().unwrap();
        for arm in step["arms"].as_array_mut().unwrap() {
            if arm["layer"] == "stage2.conv" {
                arm[what] = (base + 1.0).into();
            }
        }
    }
    std::fs::write(&file, serde_json::to_string(&v).unwrap()).unwrap();
    let second = t.path().join("second");
    copy_dir(&first, &second);
    let shown = pipeline::compare(&cfg(&first, true), &Silent).unwrap();
    let bare = pipeline::compare(&cfg(&second, false), &Silent).unwrap();
    let rows = |c: &pipeline::Compared| {
        let mut r: Vec<_> = c
            .report
            .results
            .iter()
            .filter(|r| r.budget == 7.0)
            .map(|r| (r.method.clone(), r.bits.clone(), r.test_top1))
            .collect();
        r.sort_by(|x, y| x.0.cmp(&y.0));
        r
    };
    let (shown, bare) = (rows(&shown), rows(&bare));
    let names: Vec<&str> = shown.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["ccq", "ccq (not re-allocated)"]);
    assert_ne!(shown[0].1, shown[1].1, "the re-allocation moved the policy");
    assert_eq!(
        bare,
        shown[..1],
        "the same result, without the search's own"
    );
}

/// What a comparison at 7x and 8x made with extra prices keeps: its data, the FP model, the
/// prices kept beside the search's 7x weights (checked to be around their policy, or the top's
/// with top prices), those weights, and the search's state.
struct Priced {
    d: DataConfig,
    fp: std::path::PathBuf,
    la: ccq::search::lookahead::Lookahead,
    ck: ccq::train::checkpoint::Checkpoint,
    state: SearchState,
}

impl Priced {
    /// The rungs `reach` says priced again around `policy` on the FP model calibrated there,
    /// with the search's settings; and the data they were measured on.
    fn on_fp(
        &self,
        policy: &ccq::quant::policy::Policy,
        reach: ccq::search::lookahead::Reach,
    ) -> (ccq::search::lookahead::Lookahead, pipeline::data::Prepared) {
        use ccq::search::lookahead;
        let (sc, norm) = (&self.state.config, &self.ck.meta.normalization);
        let prepared = pipeline::data::prepare_for(&self.ck, &self.d, &Silent).unwrap();
        let device = ccq::train::Devices::cpu().device;
        let fp_model = ccq::train::checkpoint::load(&self.fp, device)
            .unwrap()
            .model;
        let at = lookahead::fp_at(&fp_model, policy, sc, &prepared.splits, norm).unwrap();
        let la = lookahead::measure(&at, policy, sc, &prepared.splits, norm, reach).unwrap();
        (la, prepared)
    }
}

/// Checks that `rungs` lower `arm` one rung after another from `from` down to the floor, each
/// with a finite trial, the one at `la`'s policy being its own score.
fn walk_rungs(
    lw: &ccq::search::target::Lowering,
    arm: ccq::search::target::Arm,
    from: ccq::quant::policy::Policy,
    rungs: &[ccq::search::lookahead::Rung],
    la: &ccq::search::lookahead::Lookahead,
) {
    let mut p = from;
    for r in rungs {
        let next = lw.lower(arm, &p).expect("a rung below");
        assert_eq!(
            (r.before, r.after),
            (p.bits[arm.layer].w, next.bits[arm.layer].w)
        );
        assert!(r.trial.is_some_and(|t| t.loss.is_finite()), "{r:?}");
        if next == la.policy {
            assert_eq!(r.trial.as_ref(), Some(&la.current));
        }
        p = next;
    }
    assert!(lw.lower(arm, &p).is_none(), "down to the floor");
}

/// Runs that comparison in `dir` with `price` applied to its search settings; its CCQ 7x row
/// must be fine-tuned.
fn priced_comparison(dir: &Path, price: impl FnOnce(&mut ccq::pipeline::SearchSettings)) -> Priced {
    let (d, fp, _) = trained_fp(dir);
    let out = dir.join("priced");
    let mut cfg = ccq_comparison(&out, &fp, &d, &[7.0, 8.0]);
    price(&mut cfg.search);
    let compared = pipeline::compare(&cfg, &Silent).unwrap();
    assert!(
        compared
            .report
            .results
            .iter()
            .any(|r| r.method == "ccq" && r.budget == 7.0 && r.test_top1.is_some())
    );
    let kept = out.join("ccq").join("at-7x");
    let text = std::fs::read_to_string(kept.join(pipeline::compare::LOOKAHEAD)).unwrap();
    let la: ccq::search::lookahead::Lookahead = serde_json::from_str(&text).unwrap();
    let ck = ccq::train::checkpoint::load(&kept, ccq::train::Devices::cpu().device).unwrap();
    let state = ccq::search::run_dir::RunDir::new(out.join("ccq"))
        .load_state()
        .unwrap();
    // Around the kept policy, or (top prices) around the top.
    let around = if state.config.top_prices {
        state.config.lowering.start(&la.policy.names)
    } else {
        ck.meta.policy.clone().unwrap()
    };
    assert_eq!(la.policy, around);
    Priced {
        d,
        fp,
        la,
        ck,
        state,
    }
}

#[test]
fn lookahead_prices_every_rung_below_the_search_policy_on_its_weights() {
    use ccq::search::lookahead::{self, Reach};
    use ccq::search::trials::{TRIAL_BATCH, TRIAL_BN_BATCHES, score_trials};
    let t = tempfile::tempdir().unwrap();
    let Priced {
        d, la, ck, state, ..
    } = priced_comparison(t.path(), |s| s.lookahead_prices = Some(true));
    let device = ccq::train::Devices::cpu().device;
    let (lw, sc) = (&state.config.lowering, &state.config);
    // The search's own end (8x) was priced the same way before its re-allocation.
    let end = state
        .lookahead
        .as_ref()
        .expect("the search's end priced ahead");
    let searched = state
        .reallocation
        .as_ref()
        .map_or(&state.policy, |r| &r.searched);
    assert_eq!(&end.policy, searched);
    assert_eq!(end.arms.len(), la.arms.len());
    let arms = lw.arms(la.policy.bits.len());
    assert_eq!(la.arms.len(), arms.len());
    // Every arm's rungs, one after another, from the policy's bits down to the floor.
    for (arm, rungs) in arms.iter().zip(&la.arms) {
        walk_rungs(lw, *arm, la.policy.clone(), rungs, &la);
    }
    assert!(la.arms.iter().any(|r| r.len() >= 2), "{la:?}");
    // Measured again on the kept weights, the same; and each first rung is the trial the
    // competition scores for that arm's one lowering.
    let prepared = pipeline::data::prepare_for(&ck, &d, &Silent).unwrap();
    let (splits, norm) = (&prepared.splits, &ck.meta.normalization);
    let again = lookahead::measure(&ck.model, &la.policy, sc, splits, norm, Reach::Below).unwrap();
    assert_eq!(again, la);
    let lowered: Vec<_> = arms
        .iter()
        .map(|a| lw.lower(*a, &la.policy).map(|p| (a.layer, p)))
        .collect();
    let contenders: Vec<_> = lowered
        .iter()
        .map(|c| c.as_ref().map(|(l, p)| (*l, p)))
        .collect();
    let bn = if sc.reward.trial_bn {
        let n = TRIAL_BN_BATCHES;
        ccq::data::calibration_batches(&splits.train, norm, device, n, sc.augment).unwrap()
    } else {
        Vec::new()
    };
    let bandit = sc.trial_split(&splits.bandit);
    let one = score_trials(
        &ck.model,
        &la.policy,
        &contenders,
        sc.scheme,
        &bandit,
        norm,
        TRIAL_BATCH,
        &bn,
    )
    .unwrap();
    assert_eq!(one.current, la.current);
    for (scored, rungs) in one.arms.iter().zip(&la.arms) {
        assert_eq!(
            scored.as_ref(),
            rungs.first().and_then(|r| r.trial.as_ref())
        );
    }
}

#[test]
fn fp_prices_every_rung_from_the_top_on_the_fp_model_calibrated_at_the_search_policy() {
    use ccq::search::lookahead::Reach;
    use ccq::search::trials::{TRIAL_BATCH, score_trials};
    let t = tempfile::tempdir().unwrap();
    let priced = priced_comparison(t.path(), |s| s.fp_prices = Some(true));
    let Priced { la, ck, state, .. } = &priced;
    let (lw, sc) = (&state.config.lowering, &state.config);
    assert!(sc.fp_prices && !sc.lookahead_prices);
    // The search's own end was priced so too, from every arm's top.
    let end = state.lookahead.as_ref().expect("the search's end priced");
    assert!(end.tops.is_some());
    // Every arm from its ladder's top, one rung after another, down to the floor; the trial
    // at the arm's bits in the policy is the policy's own score, as is the top of an arm
    // already there.
    let arms = lw.arms(la.policy.bits.len());
    let tops = la.tops.as_ref().expect("priced from the top");
    assert_eq!((la.arms.len(), tops.len()), (arms.len(), arms.len()));
    for ((arm, rungs), top) in arms.iter().zip(&la.arms).zip(tops) {
        let p = lw.topped(*arm, &la.policy);
        assert_eq!(p.bits[arm.layer].w, 8);
        assert!(top.is_some_and(|t| t.loss.is_finite()));
        if p == la.policy {
            assert_eq!(top.as_ref(), Some(&la.current));
        }
        walk_rungs(lw, *arm, p, rungs, la);
    }
    assert!(
        la.arms.iter().all(|r| r.len() == 3),
        "8 to 3 bits (the floor): {la:?}"
    );
    // Measured again on the FP model calibrated at the policy, the same; the search's kept
    // weights score the policy otherwise.
    let (again, prepared) = priced.on_fp(&la.policy, Reach::Whole);
    assert_eq!(&again, la);
    let bandit = sc.trial_split(&prepared.splits.bandit);
    let searched = score_trials(
        &ck.model,
        &la.policy,
        &[],
        sc.scheme,
        &bandit,
        &ck.meta.normalization,
        TRIAL_BATCH,
        &[],
    )
    .unwrap();
    assert_ne!(searched.current.loss, la.current.loss);
}

#[test]
fn top_prices_every_rung_of_each_layer_alone_at_the_top_on_the_fp_model_calibrated_there() {
    use ccq::search::lookahead::Reach;
    let t = tempfile::tempdir().unwrap();
    // Trial BatchNorm on, to show that the top prices keep the statistics even so.
    let priced = priced_comparison(t.path(), |s| {
        s.top_prices = Some(true);
        s.trial_bn = Some(true);
    });
    let Priced { la, ck, state, .. } = &priced;
    let (lw, sc) = (&state.config.lowering, &state.config);
    assert!(sc.top_prices && !sc.fp_prices && !sc.lookahead_prices);
    assert!(sc.reward.trial_bn, "these trials re-estimate BatchNorm");
    // Every arm alone from the top (8 bits), the others there too, down to the floor; each
    // top is the top policy's own score.
    let top = lw.start(&la.policy.names);
    assert_eq!(la.policy, top);
    let arms = lw.arms(top.bits.len());
    let tops = la.tops.as_ref().expect("priced from the top");
    assert_eq!((la.arms.len(), tops.len()), (arms.len(), arms.len()));
    for ((arm, rungs), t) in arms.iter().zip(&la.arms).zip(tops) {
        assert_eq!(t.as_ref(), Some(&la.current));
        walk_rungs(lw, *arm, top.clone(), rungs, la);
    }
    assert!(la.arms.iter().all(|r| r.len() == 3), "8 to 3 bits: {la:?}");
    // They do not depend on the search's policy: its end (8x) was priced the same.
    assert_ne!(ck.meta.policy.as_ref(), Some(&top));
    assert_eq!(state.lookahead.as_ref(), Some(la));
    // Measured again on the FP model calibrated at the top, the same; and each trial kept the
    // statistics calibrated there, where the competition's trials re-estimate them.
    assert_eq!(&priced.on_fp(&top, Reach::Top).0, la);
    let (reestimated, _) = priced.on_fp(&top, Reach::Whole);
    assert_eq!(reestimated.current, la.current);
    assert_ne!(reestimated.arms, la.arms);
}

#[test]
fn a_comparison_search_resumed_by_quantize_keeps_its_milestones() {
    let t = tempfile::tempdir().unwrap();
    let (d, fp, _) = trained_fp(t.path());
    // At 7x and 8x the search first reaches 7x at its third step (7.88x), and 8x after it.
    let listed = t.path().join("listed");
    let whole = pipeline::compare(&ccq_comparison(&listed, &fp, &d, &[7.0, 8.0]), &Silent).unwrap();
    assert!(whole.report.ccq_steps.len() > 3);
    // The same comparison, cancelled after one step; its search is finished by
    // `ccq quantize --resume`, which is not told the comparison's budgets.
    let resumed = t.path().join("resumed");
    let cfg = ccq_comparison(&resumed, &fp, &d, &[7.0, 8.0]);
    let state = cancelled_after(&cfg, 1);
    assert_eq!(state.milestones, [7.0, 8.0]);
    let mut q = search(&resumed.join("ccq"), &fp, &d);
    q.target = None;
    q.resume = true;
    let q = pipeline::quantize(&q, &Silent).unwrap();
    assert!(q.state.finished.is_some());
    let run = ccq::search::run_dir::RunDir::new(resumed.join("ccq"));
    for b in [7.0, 8.0] {
        let kept = run.milestone(b).join(ccq::train::checkpoint::WEIGHTS);
        assert!(kept.is_file(), "{} was not kept", kept.display());
    }
    // The comparison then goes on to the same results as the uninterrupted one.
    let done = pipeline::compare(&cfg, &Silent).unwrap();
    let rows = |c: &pipeline::Compared| {
        let mut r: Vec<_> = c
            .report
            .results
            .iter()
            .map(|r| (r.method.clone(), r.budget, r.bits.clone(), r.test_top1))
            .collect();
        r.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
        r
    };
    assert_eq!(rows(&done), rows(&whole));
    assert!(
        rows(&done).iter().all(|r| r.3.is_some()),
        "{:?}",
        rows(&done)
    );
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn more_fine_tunings_extend_a_comparisons_results_to_those_of_one_made_with_them() {
    use ccq::search::baselines::Method;
    use ccq::search::config::FinalFrom;
    let t = tempfile::tempdir().unwrap();
    let (d, fp, _) = trained_fp(t.path());
    let cfg = |out: &Path, repeats: usize, from: FinalFrom| {
        let mut c = ccq_comparison(out, &fp, &d, &[7.0]);
        c.methods = vec![Method::Ccq, Method::Uniform];
        c.equal_compute = true;
        c.control = true;
        c.ft_repeats = repeats;
        c.search.final_from = Some(from);
        c
    };
    let rows = |c: &pipeline::Compared| {
        let mut r: Vec<_> = c
            .report
            .results
            .iter()
            .chain(c.report.control.iter())
            .map(|r| {
                let each = match r.test_top1_each.as_slice() {
                    [] => vec![r.test_top1.unwrap()],
                    e => e.to_vec(),
                };
                (r.method.clone(), r.budget, r.bits.clone(), each)
            })
            .collect();
        r.sort_by(|x, y| x.0.cmp(&y.0));
        r
    };
    for from in [FinalFrom::Fp, FinalFrom::Best] {
        let (one, more) = (t.path().join("one"), t.path().join("two"));
        let _ = std::fs::remove_dir_all(&one);
        let _ = std::fs::remove_dir_all(&more);
        let first = rows(&pipeline::compare(&cfg(&one, 1, from), &Silent).unwrap());
        let added = pipeline::compare(&cfg(&one, 2, from), &Silent).unwrap();
        let whole = pipeline::compare(&cfg(&more, 2, from), &Silent).unwrap();
        let (added, whole) = (rows(&added), rows(&whole));
        let names: Vec<&str> = added.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            names,
            ["ccq", "control", "uniform", "uniform (equal compute)"]
        );
        assert_eq!(added, whole, "{from:?}");
        for (a, f) in added.iter().zip(&first) {
            assert_eq!(a.3.len(), 2, "{from:?} {}", a.0);
            // The first fine-tuning is the one measured before, kept.
            assert_eq!(a.3[0], f.3[0], "{from:?} {}", a.0);
        }
        // Fewer fine-tunings than recorded are refused, naming the setting.
        let e = pipeline::compare(&cfg(&one, 1, from), &Silent).unwrap_err();
        assert!(e.to_string().contains("--ft-repeats"), "{e}");
        if from == FinalFrom::Fp {
            // Only the budgets asked for get more: 5x is added with three, 7x keeps its two.
            let mut at5 = cfg(&one, 3, from);
            at5.budgets = vec![5.0];
            let c = pipeline::compare(&at5, &Silent).unwrap();
            let each = |b: f64| -> Vec<usize> {
                let mut n: Vec<usize> = c
                    .report
                    .results
                    .iter()
                    .filter(|r| r.budget == b)
                    .map(|r| r.each_test().len())
                    .collect();
                n.sort();
                n
            };
            assert_eq!(each(7.0), [2, 2, 2], "{:?}", c.report.results);
            assert!(!each(5.0).is_empty() && each(5.0).iter().all(|n| *n == 3));
        }
    }
}

#[test]
fn a_fine_tuning_two_results_share_runs_once() {
    let t = tempfile::tempdir().unwrap();
    let (d, fp, _) = trained_fp(t.path());
    // At 3x the search's start (every layer at 8 bits, about 4x) meets the budget, so CCQ's
    // policy is the start, which the control fine-tunes too: the same fine-tuning.
    let mut cfg = ccq_comparison(&t.path().join("cmp"), &fp, &d, &[3.0]);
    cfg.control = true;
    cfg.ft_repeats = 2;
    let seen = Recorder {
        steps: Cell::new(0),
        stop_after: None,
        kinds: RefCell::new(Vec::new()),
    };
    let c = pipeline::compare(&cfg, &seen).unwrap();
    let ccq = c.report.results.iter().find(|r| r.method == "ccq").unwrap();
    let control = c.report.control.as_ref().unwrap();
    assert_eq!(ccq.bits, control.bits);
    assert_eq!(ccq.test_top1_each, control.test_top1_each);
    assert_eq!(ccq.test_top1_each.len(), 2);
    // One epoch per repeat, not two: the second result reused the first's fine-tunings.
    let epochs = seen
        .kinds
        .borrow()
        .iter()
        .filter(|k| **k == "epoch")
        .count();
    assert_eq!(epochs, 2);
}
