//! The search step's phases one at a time, on a tiny model: compete draws an awake arm, select
//! lowers exactly that arm one rung, collaborate fine-tunes, persist records and saves the step
//! so that the run directory reads back the same state.

use ccq::data::{DataFormat, calibration_batches as calibration_batches_of, synthetic};
use ccq::events::Silent;
use ccq::model::Model;
use ccq::model::ModelKind;
use ccq::pipeline::data::{calibration_batches, prepare_for};
use ccq::pipeline::{self, DataConfig, SearchSettings, Session, TrainConfig};
use ccq::quant::policy::Policy;
use ccq::quant::quantizer::QuantScheme;
use ccq::search::bandit::Competition;
use ccq::search::ccq::{self as search, SearchEnv, collaborate_step, compete, persist, select};
use ccq::search::run_dir::RunDir;
use ccq::search::step::{Plan, plan};
use ccq::search::target::Target;
use ccq::search::trials::TRIAL_BN_BATCHES;
use ccq::train::Devices;
use ccq::train::calibrate::reestimate_batchnorm;
use ccq::train::checkpoint;
use std::time::Instant;
use tch::Tensor;

#[test]
fn one_step_phase_by_phase() {
    let t = tempfile::tempdir().unwrap();
    synthetic::write_idx_dataset(&t.path().join("data")).unwrap();
    let data = DataConfig {
        val_size: 30,
        bandit_size: 30,
        ..DataConfig::at(t.path().join("data"), DataFormat::Idx)
    };
    let session = Session {
        seed: 2,
        threads: Some(1),
        batch_size: 32,
        ..Session::default()
    };
    let fp = t.path().join("fp");
    pipeline::train(
        &TrainConfig {
            data: data.clone(),
            epochs: 1,
            session: session.clone(),
            ..TrainConfig::new(ModelKind::Convnet, &fp)
        },
        &Silent,
    )
    .unwrap();
    let devices = Devices::cpu();
    let ck = checkpoint::load(&fp, devices.device).unwrap();
    let p = prepare_for(&ck, &data, &Silent).unwrap();
    let norm = ck.meta.normalization.clone();
    let env = SearchEnv {
        splits: &p.splits,
        norm: &norm,
        meta: ck.meta.derived_from(&ck.dir),
        stop_after: None,
        keep: vec![],
        events: &Silent,
    };
    // The first step without --step-bn (the improved variant's default is on), the second with.
    let settings = SearchSettings {
        ft_min_epochs: Some(1),
        ft_max_epochs: Some(1),
        step_bn: Some(false),
        ..SearchSettings::default()
    };
    let cfg = settings
        .config(Some(Target::Compression(20.0)), &session, None)
        .unwrap();
    let run = RunDir::new(t.path().join("run"));
    let calib = calibration_batches(&p, &norm, devices.device, None).unwrap();
    let (model, mut state) = search::init(&run, ck.model, cfg.clone(), fp, &env, &calib).unwrap();
    assert_eq!(run.load_state().unwrap().step, 0);

    let arms = cfg.lowering.arms(model.layers.len());
    let Plan::Compete(contest) = plan(&cfg, &model.layers, &arms, &state.policy, &[], 0, &[])
    else {
        panic!("the search should go on");
    };
    let started = Instant::now();
    let mut competition = Competition::new(&vec![true; arms.len()]);
    let d = compete(
        &model,
        &mut state,
        &arms,
        &contest,
        &mut competition,
        &env,
        1,
    )
    .unwrap();
    assert!(contest.awake[d.chosen], "the drawn arm is awake");
    assert!((d.mixed.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert_eq!(state.log_weights.len(), arms.len(), "carried weights kept");

    let before = state.policy.clone();
    let sel = select(&model, &state, arms[d.chosen], &env).unwrap();
    let layer = arms[d.chosen].layer;
    assert_eq!(sel.before, before.bits[layer]);
    for (i, (a, b)) in sel.lowered.bits.iter().zip(&before.bits).enumerate() {
        if i == layer {
            assert!(
                a.w < b.w,
                "the chosen layer is one rung lower: {a} from {b}"
            );
        } else {
            assert_eq!(a, b, "no other layer moves");
        }
    }

    let (model, c) = collaborate_step(model, &mut state, d.chosen, &sel, &env, 1).unwrap();
    assert!(c.refused.is_none() && c.epochs == 1, "{:?}", c.refused);
    assert_eq!(c.policy, sel.lowered);
    let stats = calibration_batches_of(
        &p.splits.train,
        &norm,
        devices.device,
        TRIAL_BN_BATCHES,
        cfg.augment,
    )
    .unwrap();
    assert!(
        statistics_gap(&model, &sel.lowered, cfg.scheme, &stats) > 1e-4,
        "without --step-bn the running statistics lag the fine-tuned weights"
    );

    let secs = (started.elapsed().as_secs_f64(), 0.0);
    persist(
        &run,
        &model,
        &mut state,
        &arms,
        &competition,
        &d,
        &sel,
        c,
        secs,
        &env,
        1,
    )
    .unwrap();
    let back = run.load_state().unwrap();
    assert_eq!((back.step, back.checkpoint.as_str()), (1, "step-001"));
    assert_eq!(back.policy, sel.lowered);
    assert_eq!(back.steps.len(), 1);
    assert_eq!(back.steps[0].chosen, model.layer_names()[layer]);
    assert!(
        !run.checkpoint("step-000").exists(),
        "the previous step's weights are removed"
    );
    let kept = checkpoint::load(&run.checkpoint("step-001"), devices.device).unwrap();
    assert_eq!(kept.meta.policy.as_ref(), Some(&sel.lowered));

    // A second step with --step-bn: the fine-tuning leaves the statistics of its own weights.
    state.config.finetune.step_bn = true;
    let d = compete(
        &model,
        &mut state,
        &arms,
        &contest,
        &mut competition,
        &env,
        2,
    )
    .unwrap();
    let sel = select(&model, &state, arms[d.chosen], &env).unwrap();
    let (model, c) = collaborate_step(model, &mut state, d.chosen, &sel, &env, 2).unwrap();
    assert!(c.refused.is_none(), "{:?}", c.refused);
    assert_eq!(
        statistics_gap(&model, &sel.lowered, cfg.scheme, &stats),
        0.0,
        "with --step-bn the running statistics are re-estimated at the step's policy"
    );
}

/// The largest difference between `model`'s BatchNorm running statistics and those a copy of
/// it re-estimates on `batches` at `policy`.
fn statistics_gap(model: &Model, policy: &Policy, scheme: QuantScheme, batches: &[Tensor]) -> f64 {
    let copy = model.clone();
    reestimate_batchnorm(&copy.net, policy, scheme, batches);
    let own = model.net.batchnorm_buffers(0);
    let fresh = copy.net.batchnorm_buffers(0);
    assert!(!own.is_empty(), "the ConvNet has BatchNorm");
    own.iter()
        .zip(&fresh)
        .map(|(a, b)| (a - b).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}
