//! Distillation trains the quantized student on the full-precision teacher's output: at weight 1
//! the labels play no part, below 1 they do, and the student moves toward the teacher.

use ccq::data::{Dataset, Normalization, Subset};
use ccq::events::{Pass, Silent};
use ccq::model::{Model, ModelKind, ModelSpec, QuantCtx, build};
use ccq::quant::policy::{LayerBits, Policy};
use ccq::quant::quantizer::QuantScheme;
use ccq::train::calibrate::calibrate;
use ccq::train::distill::{Distill, Teacher, soft_kl};
use ccq::train::{Hyper, sgd, train_epoch};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// 240 noisy 1×12×12 images of 3 classes (class k: band k brighter), labelled by `label`.
fn data(label: impl Fn(usize) -> u16) -> Subset {
    let (n, side) = (240, 12);
    let mut s = 11u64;
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
                let base = if y * 3 / side == i % 3 { 120 } else { 90 };
                pixels.push((base + (next() % 60) as i32 - 30) as u8);
            }
        }
    }
    Subset::all(Arc::new(Dataset::in_memory(
        pixels,
        (0..n).map(label).collect(),
        [1, side, side],
        vec!["a".into(), "b".into(), "c".into()],
    )))
}

fn norm() -> Normalization {
    Normalization {
        mean: vec![0.4],
        std: vec![0.15],
    }
}

/// A copy of `fp` at W3A3, calibrated, trained one epoch on `subset` with `teacher`; its flat
/// parameters.
fn student(fp: &Model, subset: &Subset, teacher: Option<&Teacher>) -> (Model, Tensor) {
    let scheme = QuantScheme::default();
    let m = fp.clone();
    let policy = Policy::uniform(&m.layer_names(), LayerBits { w: 3, a: 3 });
    calibrate(
        &m.net,
        &policy,
        scheme,
        &[Tensor::randn([32, 1, 12, 12], (Kind::Float, Device::Cpu))],
    );
    let h = Hyper {
        batch_size: 40,
        momentum: 0.9,
        weight_decay: 1e-4,
    };
    train_epoch(
        &m.net,
        &mut sgd(&h),
        &QuantCtx::new(scheme, &policy.bits),
        subset,
        &norm(),
        &h,
        None,
        &mut StdRng::seed_from_u64(5),
        None,
        &|_| 0.05,
        teacher,
        Pass {
            events: &Silent,
            phase: "t",
        },
    )
    .unwrap();
    let flat = m.net.flat.copy();
    (m, flat)
}

/// Mean divergence of `m` at W3A3 from `teacher` on a fixed batch of the images.
fn divergence(m: &Model, teacher: &Teacher, images: &Tensor) -> f64 {
    let policy = Policy::uniform(&m.layer_names(), LayerBits { w: 3, a: 3 });
    let s = tch::no_grad(|| {
        m.net
            .forward(images, &QuantCtx::new(QuantScheme::default(), &policy.bits))
    });
    soft_kl(&s, &teacher.logits(images), 1.0).double_value(&[])
}

#[test]
fn the_student_learns_the_teacher_and_the_labels_only_as_weighted() {
    tch::set_num_threads(1);
    tch::manual_seed(3);
    let spec = ModelSpec {
        kind: ModelKind::Convnet,
        channels: 1,
        height: 12,
        width: 12,
        classes: 3,
        graph: None,
    };
    let fp = build(&spec, Device::Cpu).unwrap();
    // A teacher that knows something: two epochs of full-precision training on the true labels.
    let truth = data(|i| (i % 3) as u16);
    let float = Policy::float(&fp.layer_names());
    let h = Hyper {
        batch_size: 40,
        momentum: 0.9,
        weight_decay: 1e-4,
    };
    let mut opt = sgd(&h);
    for e in 0..2 {
        train_epoch(
            &fp.net,
            &mut opt,
            &QuantCtx::new(QuantScheme::default(), &float.bits),
            &truth,
            &norm(),
            &h,
            None,
            &mut StdRng::seed_from_u64(e),
            None,
            &|_| 0.05,
            None,
            Pass {
                events: &Silent,
                phase: "fp",
            },
        )
        .unwrap();
    }
    let shuffled = data(|i| ((i * 7 + 1) % 3) as u16);
    let teacher_of = |weight| {
        Teacher::new(
            fp.clone(),
            QuantScheme::default(),
            Distill {
                weight,
                temperature: 2.0,
            },
        )
    };
    let pure = teacher_of(1.0);
    let mixed = teacher_of(0.5);

    tch::manual_seed(9);
    let (kd_truth, a) = student(&fp, &truth, Some(&pure));
    tch::manual_seed(9);
    let (_, b) = student(&fp, &shuffled, Some(&pure));
    assert!(
        a.equal(&b),
        "at weight 1 the labels must not change the training"
    );
    tch::manual_seed(9);
    let (_, c) = student(&fp, &truth, Some(&mixed));
    tch::manual_seed(9);
    let (_, d) = student(&fp, &shuffled, Some(&mixed));
    assert!(!c.equal(&d), "at weight 0.5 the labels count");
    assert!(!a.equal(&c), "the weight changes the loss");

    // Pure distillation brings the student closer to the teacher than training on labels that
    // disagree with it does.
    tch::manual_seed(9);
    let (ce_shuffled, _) = student(&fp, &shuffled, None);
    let images = Tensor::randn([64, 1, 12, 12], (Kind::Float, Device::Cpu));
    let (near, far) = (
        divergence(&kd_truth, &pure, &images),
        divergence(&ce_shuffled, &pure, &images),
    );
    assert!(near.is_finite() && near < far, "KD {near} vs labels {far}");
}
