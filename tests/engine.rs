//! Integer engine vs the fake-quantized float model, layer by layer, on small models.

use ccq::data::Normalization;
use ccq::export::convert::to_int_model;
use ccq::export::engine::Engine;
use ccq::export::format::{IntModel, WIDE_FRAC};
use ccq::host::to_f32;
use ccq::model::network::pool;
use ccq::model::{Model, ModelKind, ModelSpec, QuantCtx, build};
use ccq::quant::policy::{LayerBits, Policy};
use ccq::quant::quantizer::{ActQuantizer, QuantScheme, WeightQuantizer};
use ccq::train::Devices;
use ccq::train::calibrate::calibrate;
use tch::{Device, Tensor};

/// Float activations at the stem, after each block and the logits, for one normalised image.
fn float_probes(model: &Model, ctx: &QuantCtx, x: Tensor) -> Vec<Vec<f32>> {
    let net = &model.net;
    let mut out = Vec::new();
    let mut h = pool(&net.stem.forward(&x, ctx).relu(), net.stem_pool);
    out.push(to_f32(&h));
    for b in &net.blocks {
        h = b.forward(&h, ctx);
        out.push(to_f32(&h));
    }
    if net.global_pool {
        h = h.adaptive_avg_pool2d([1, 1]);
    }
    out.push(to_f32(&net.fc.forward(&h.flatten(1, -1), ctx)));
    out
}

fn pixels(n: usize, len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n * len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

fn check(kind: ModelKind, scheme: QuantScheme, bits: LayerBits) {
    let devices = Devices::cpu();
    devices.seed(11);
    let spec = ModelSpec {
        kind,
        channels: 1,
        height: 16,
        width: 16,
        classes: 5,
    };
    let model = build(&spec, devices.device).unwrap();
    let norm = Normalization {
        mean: vec![0.3],
        std: vec![0.25],
    };
    let policy = Policy::uniform(&model.layer_names(), bits);
    let len = 16 * 16;
    let imgs = pixels(8, len, 5);
    let to_input = |p: &[u8]| {
        let v: Vec<f32> = p.iter().map(|&x| (x as f32 / 255.0 - 0.3) / 0.25).collect();
        ccq::host::tensor(&v, &[(p.len() / len) as i64, 1, 16, 16], Device::Cpu)
    };
    calibrate(&model.net, &policy, scheme, &[to_input(&imgs)]);
    let (int, probes) = to_int_model(&model, &policy, scheme, &norm).unwrap();
    let back = IntModel::from_bytes(&int.to_bytes()).unwrap();
    assert_eq!(back, int, "the .ccq encoding round-trips");
    let engine = Engine::new(int).unwrap();
    let ctx = QuantCtx::new(scheme, &policy.bits);
    let scale = 2f64.powi(-(WIDE_FRAC as i32));
    for img in imgs.chunks(len) {
        let regs = engine.run_traced(img).unwrap();
        let float = float_probes(&model, &ctx, to_input(img));
        assert_eq!(float.len(), probes.len());
        for ((name, reg), f) in probes.iter().zip(&float) {
            let ints = &regs[*reg];
            assert_eq!(ints.len(), f.len(), "{name}");
            let max = f.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
            let bad = ints
                .iter()
                .zip(f)
                .filter(|(i, f)| ((**i as f64 * scale) as f32 - **f).abs() > 1e-3 * max)
                .count();
            // A value sitting on a rounding boundary may land one level apart; nearly all agree.
            assert!(
                bad * 100 <= ints.len(),
                "{kind:?} {name}: {bad} of {} values differ from the fake-quant model",
                ints.len()
            );
        }
    }
}

#[test]
fn convnet_dorefa_pact_matches_fake_quant() {
    check(
        ModelKind::Convnet,
        QuantScheme::default(),
        LayerBits { w: 4, a: 4 },
    );
    check(
        ModelKind::Convnet,
        QuantScheme::default(),
        LayerBits { w: 8, a: 8 },
    );
}

#[test]
fn resnet_lsq_matches_fake_quant() {
    check(
        ModelKind::Resnet20,
        QuantScheme {
            weight: WeightQuantizer::LsqChannel,
            act: ActQuantizer::Lsq,
        },
        LayerBits { w: 3, a: 3 },
    );
    check(
        ModelKind::Resnet20,
        QuantScheme {
            weight: WeightQuantizer::Dorefa,
            act: ActQuantizer::Pact,
        },
        LayerBits { w: 2, a: 2 },
    );
}

#[test]
fn format_errors() {
    let devices = Devices::cpu();
    let spec = ModelSpec {
        kind: ModelKind::Convnet,
        channels: 1,
        height: 12,
        width: 12,
        classes: 3,
    };
    let model = build(&spec, devices.device).unwrap();
    let policy = Policy::uniform(&model.layer_names(), LayerBits { w: 3, a: 3 });
    let norm = Normalization {
        mean: vec![0.5],
        std: vec![0.5],
    };
    let (int, _) = to_int_model(&model, &policy, QuantScheme::default(), &norm).unwrap();
    let bytes = int.to_bytes();
    let err = |b: &[u8]| format!("{:#}", IntModel::from_bytes(b).unwrap_err());
    assert!(err(&bytes[..bytes.len() - 3]).contains("truncated"));
    let mut corrupt = bytes.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x40;
    assert!(err(&corrupt).contains("checksum"));
    let mut version = bytes.clone();
    version[8] = 9;
    assert!(err(&version).contains("version 9"));
    assert!(err(b"PNG\x00....").contains("too short") || err(b"PNG\x00....").contains("magic"));
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert!(err(&magic).contains("magic"));
    let float = Policy::float(&model.layer_names());
    assert!(
        to_int_model(&model, &float, QuantScheme::default(), &norm).is_err(),
        "float layers cannot be exported"
    );
}
