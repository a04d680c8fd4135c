//! The competition's prefix reuse scores every arm exactly as running each trial alone does.

use ccq::data::{Dataset, Normalization, Subset};
use ccq::events::{Pass, Silent};
use ccq::model::{ModelKind, ModelSpec, QuantCtx, build};
use ccq::quant::policy::{LayerBits, Policy};
use ccq::quant::quantizer::{ActQuantizer, QuantScheme, WeightQuantizer};
use ccq::search::reward::TrialScore;
use ccq::search::trials::{score_trials, score_trials_naive};
use ccq::train::calibrate::calibrate;
use ccq::train::{Hyper, sgd, train_epoch};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::sync::Arc;
use tch::{Kind, Tensor};

/// A 3-class problem (class k: band k slightly brighter), hard enough that lowering one layer
/// to 2 bits costs accuracy.
fn data(n: usize, side: usize) -> Subset {
    let mut s = 7u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    let mut pixels = Vec::with_capacity(n * side * side);
    for i in 0..n {
        for y in 0..side {
            for _ in 0..side {
                let base = if y * 3 / side == i % 3 { 110 } else { 90 };
                pixels.push((base + (next() % 80) as i32 - 40) as u8);
            }
        }
    }
    let labels = (0..n).map(|i| (i % 3) as u16).collect();
    Subset::all(Arc::new(Dataset::in_memory(
        pixels,
        labels,
        [1, side, side],
        vec!["a".into(), "b".into(), "c".into()],
    )))
}

/// A few epochs of QAT at lr 0.05 under `policy` (seeded shuffling).
fn train(
    model: &ccq::model::Model,
    policy: &Policy,
    scheme: QuantScheme,
    subset: &Subset,
    norm: &Normalization,
    epochs: usize,
    seed: u64,
) {
    let h = Hyper {
        batch_size: 50,
        momentum: 0.9,
        weight_decay: 1e-4,
    };
    let (mut opt, mut rng) = (sgd(&h), StdRng::seed_from_u64(seed));
    let ctx = QuantCtx::new(scheme, &policy.bits);
    for e in 0..epochs {
        train_epoch(
            &model.net,
            &mut opt,
            &ctx,
            subset,
            norm,
            &h,
            None,
            &mut rng,
            None,
            &|_| 0.05,
            None,
            Pass {
                events: &Silent,
                phase: &format!("{e}"),
            },
        )
        .unwrap();
    }
}

/// libtorch's generator is global: the tests that seed it run one at a time, so that each
/// draws the same weights whichever test runs beside it.
static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check(scheme: QuantScheme) {
    let _serial = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(3);
    let spec = ModelSpec {
        kind: ModelKind::Resnet20,
        channels: 1,
        height: 10,
        width: 10,
        classes: 3,
        graph: None,
    };
    let model = build(&spec, tch::Device::Cpu).unwrap();
    let names = model.layer_names();
    let current = Policy::uniform(&names, LayerBits { w: 4, a: 4 });
    let calib = Tensor::randn([16, 1, 10, 10], (Kind::Float, tch::Device::Cpu));
    calibrate(&model.net, &current, scheme, &[calib]);
    let trials: Vec<Policy> = (0..names.len())
        .map(|l| {
            let mut p = current.clone();
            p.bits[l] = LayerBits { w: 2, a: 2 };
            p
        })
        .collect();
    // The polish's swaps change two layers: this one names the last, and must still run from the
    // second layer's stage.
    let last = names.len() - 1;
    let mut pair = trials[last].clone();
    pair.bits[1] = LayerBits { w: 8, a: 8 };
    // Every second arm asleep.
    let mut contenders: Vec<Option<(usize, &Policy)>> = trials
        .iter()
        .enumerate()
        .map(|(l, p)| (l % 2 == 0 || l == last).then_some((l, p)))
        .collect();
    contenders.push(Some((last, &pair)));
    let norm = Normalization {
        mean: vec![0.5],
        std: vec![0.3],
    };
    // A briefly trained model, so that the lowered arms lose different amounts of accuracy.
    let subset = data(700, 10);
    train(&model, &current, scheme, &subset, &norm, 3, 1);
    let before = model.net.flat.copy();
    let full = score_trials(
        &model,
        &current,
        &[Some((0, &current))],
        scheme,
        &subset,
        &norm,
        500,
        &[],
    )
    .unwrap();
    assert!(
        full.arms[0].unwrap().top1 > 0.5,
        "the 4-bit model learned: {full:?}"
    );
    assert_eq!(
        full.arms[0],
        Some(full.current),
        "a trial of the current policy scores as the current policy"
    );
    // Plain trials, then trials that re-estimate BatchNorm from their stage on.
    let bn = ccq::data::calibration_batches(&subset, &norm, tch::Device::Cpu, 2, None).unwrap();
    let bn_before: Vec<Tensor> = model
        .net
        .batchnorm_buffers(0)
        .iter()
        .map(|b| b.copy())
        .collect();
    let mut plain = Vec::new();
    for batches in [&[][..], &bn[..]] {
        let fast = score_trials(
            &model,
            &current,
            &contenders,
            scheme,
            &subset,
            &norm,
            500,
            batches,
        )
        .unwrap();
        let naive = score_trials_naive(
            &model,
            &current,
            &contenders,
            scheme,
            &subset,
            &norm,
            batches,
        )
        .unwrap();
        assert_eq!(fast.current.top1, naive.current.top1);
        assert!((fast.current.loss - naive.current.loss).abs() < 1e-9);
        let tempered = |t: &TrialScore| t.tempered_loss;
        assert!((tempered(&fast.current) - tempered(&naive.current)).abs() < 1e-9);
        for (f, n) in fast.arms.iter().zip(&naive.arms) {
            assert_eq!(f.map(|s| s.top1), n.map(|s| s.top1), "{scheme:?}");
            assert_eq!(f.is_some(), n.is_some());
            if let (Some(f), Some(n)) = (f, n) {
                assert!((f.loss - n.loss).abs() < 1e-9, "{scheme:?}: {f:?} vs {n:?}");
                assert!(
                    (f.loss_se - n.loss_se).abs() < 1e-9,
                    "{scheme:?}: {f:?} vs {n:?}"
                );
                assert!((tempered(f) - tempered(n)).abs() < 1e-9, "{f:?} vs {n:?}");
                // Temperature 1 is among those tried (the plain loss sums in single precision).
                assert!(tempered(f) <= f.loss * (1.0 + 1e-5), "{f:?}");
            }
        }
        assert!(
            fast.arms.iter().flatten().any(|a| a.loss_se > 0.0),
            "lowering a layer changes some image's loss: {fast:?}"
        );
        let scores: Vec<Option<f64>> = fast.arms.iter().map(|a| a.map(|s| s.loss)).collect();
        if batches.is_empty() {
            let top1: Vec<Option<f64>> = fast.arms.iter().map(|a| a.map(|s| s.top1)).collect();
            assert_eq!(
                top1.iter().filter(|a| a.is_some()).count(),
                names.len() / 2 + 2
            );
            let distinct: std::collections::BTreeSet<u64> =
                top1.iter().flatten().map(|a| a.to_bits()).collect();
            assert!(distinct.len() > 1, "the arms score differently: {top1:?}");
            plain = scores;
        } else {
            // The current policy is scored as it is; the trials with their own statistics.
            assert_ne!(
                plain, scores,
                "re-estimating BatchNorm changes the trials' losses"
            );
        }
    }
    for (b, a) in model.net.batchnorm_buffers(0).iter().zip(&bn_before) {
        assert!(
            b.equal(a),
            "scoring leaves BatchNorm's statistics as they were"
        );
    }
    let moved = (&model.net.flat - &before).abs().max().double_value(&[]);
    assert_eq!(moved, 0.0, "scoring leaves the model as it was");
}

#[test]
fn prefix_reuse_gives_identical_scores() {
    check(QuantScheme::default());
    check(QuantScheme {
        weight: WeightQuantizer::LsqChannel,
        act: ActQuantizer::Lsq,
    });
}

/// The polish tests' model (a seeded 12×12 ConvNet, 3 classes), ladders, normalisation and data;
/// the caller holds [`SEEDED`].
fn polish_setup() -> (
    ccq::model::Model,
    ccq::search::target::Lowering,
    Normalization,
    Subset,
) {
    tch::manual_seed(5);
    let spec = ModelSpec {
        kind: ModelKind::Convnet,
        channels: 1,
        height: 12,
        width: 12,
        classes: 3,
        graph: None,
    };
    let lowering = ccq::search::target::Lowering {
        ladder: ccq::quant::policy::Ladder::default(),
        act_ladder: ccq::quant::policy::Ladder::default(),
        tied: true,
        floor: 2,
    };
    let norm = Normalization {
        mean: vec![0.4],
        std: vec![0.2],
    };
    (
        build(&spec, tch::Device::Cpu).unwrap(),
        lowering,
        norm,
        data(600, 12),
    )
}

/// Calibrates `model` for `policy` on the first images, then trains it 2 epochs at it.
fn calibrate_and_train(
    model: &ccq::model::Model,
    policy: &Policy,
    norm: &Normalization,
    subset: &Subset,
) {
    let scheme = QuantScheme::default();
    let calib = ccq::data::calibration_batches(subset, norm, tch::Device::Cpu, 1, None).unwrap();
    calibrate(&model.net, policy, scheme, &calib);
    train(model, policy, scheme, subset, norm, 2, 2);
}

/// The budget polish gives back bits only while the target holds, one rung at a time, and
/// only for raises that lower the bandit loss (each kept raise lowers it further).
#[test]
fn polish_raises_within_the_target() {
    use ccq::model::cost::model_cost;
    use ccq::quant::policy::Ladder;
    use ccq::search::polish::polish;
    use ccq::search::target::Target;
    let _serial = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let (model, lowering, norm, subset) = polish_setup();
    let names = model.layer_names();
    let scheme = QuantScheme::default();
    let mut start = Policy::uniform(&names, LayerBits { w: 2, a: 2 });
    start.fix_input_layer();
    calibrate_and_train(&model, &start, &norm, &subset);
    let target = Target::Compression(6.0);
    let (polished, raises) = polish(
        &model, &start, &lowering, &target, false, scheme, &subset, &norm,
    )
    .unwrap();
    let cost = model_cost(&model.layers, &polished, scheme.weight);
    assert!(target.met(&cost), "{}", cost.compression);
    assert!(
        !raises.is_empty(),
        "2-bit layers with 16x slack get bits back"
    );
    let mut bits = start.bits.clone();
    let mut last = f64::INFINITY;
    for r in &raises {
        let i = names.iter().position(|n| *n == r.layer).unwrap();
        assert_eq!(bits[i], r.before);
        let rung = Ladder::default()
            .0
            .iter()
            .position(|&b| b == r.before.w)
            .unwrap();
        assert_eq!(r.after.w, Ladder::default().0[rung - 1], "one rung up");
        bits[i] = r.after;
        assert!(r.loss < last, "each raise lowers the bandit loss");
        last = r.loss;
    }
    assert_eq!(bits, polished.bits);
}

/// With no slack left no single raise fits, but a swap can: the small last layer goes back up a
/// rung while the large middle one goes down one, the target still holds and the bandit loss
/// falls. Without swaps the polish leaves such a policy as it is.
#[test]
fn polish_swaps_trade_a_rung_where_no_raise_fits() {
    use ccq::model::cost::model_cost;
    use ccq::search::polish::polish;
    use ccq::search::target::Target;
    let _serial = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let (model, lowering, norm, subset) = polish_setup();
    let names = model.layer_names();
    let scheme = QuantScheme::default();
    let weights = |i: usize| model.layers[i].params;
    let (big, small) = (
        (0..names.len()).max_by_key(|&i| weights(i)).unwrap(),
        names.len() - 1,
    );
    assert!(weights(big) > 4 * weights(small), "{:?}", model.layers);
    // Trained at 8 bits, then the last layer at 2: a layer the search left too low.
    let mut eight = Policy::uniform(&names, LayerBits { w: 8, a: 8 });
    eight.fix_input_layer();
    let mut start = eight.clone();
    start.bits[small] = LayerBits { w: 2, a: 2 };
    calibrate_and_train(&model, &eight, &norm, &subset);
    // The target is the start's own compression: no slack.
    let size = |p: &Policy| model_cost(&model.layers, p, scheme.weight);
    let target = Target::Compression(size(&start).compression);
    let (same, none) = polish(
        &model, &start, &lowering, &target, false, scheme, &subset, &norm,
    )
    .unwrap();
    assert!(none.is_empty() && same == start, "no raise fits: {none:?}");
    let (polished, moves) = polish(
        &model, &start, &lowering, &target, true, scheme, &subset, &norm,
    )
    .unwrap();
    assert!(
        target.met(&size(&polished)),
        "{}",
        size(&polished).compression
    );
    let first = moves.first().expect("a swap fits");
    let lowered = first.lowered.as_ref().expect("the first move is a swap");
    assert_eq!(first.layer, names[small]);
    assert_eq!((first.before.w, first.after.w), (2, 3), "one rung up");
    assert_eq!(lowered.before.w, 8);
    assert_eq!(lowered.after.w, 6, "one rung down");
    // Replaying the moves gives the polished policy, each lowering the bandit loss.
    let mut bits = start.bits.clone();
    let mut last = f64::INFINITY;
    for m in &moves {
        let i = names.iter().position(|n| *n == m.layer).unwrap();
        assert_eq!(bits[i], m.before);
        bits[i] = m.after;
        if let Some(l) = &m.lowered {
            let j = names.iter().position(|n| *n == l.layer).unwrap();
            assert_ne!(i, j);
            assert_eq!(bits[j], l.before);
            bits[j] = l.after;
        }
        assert!(m.loss < last, "each move lowers the bandit loss");
        last = m.loss;
    }
    assert_eq!(bits, polished.bits);
}
