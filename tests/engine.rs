//! Integer engine vs the fake-quantized float model, layer by layer, on small models.

use ccq::data::Normalization;
use ccq::export::convert::{Probes, to_int_model};
use ccq::export::engine::Engine;
use ccq::export::format::{IntModel, Op, WIDE_FRAC};
use ccq::host::to_f32;
use ccq::model::{GraphSpec, Model, ModelKind, ModelSpec, NodeSpec, OpSpec, QuantCtx, build};
use ccq::quant::policy::{LayerBits, Policy};
use ccq::quant::quantizer::{ActQuantizer, QuantScheme, WeightQuantizer};
use ccq::train::Devices;
use ccq::train::calibrate::calibrate;
use tch::{Device, Tensor};

/// The float graph's value at every probe, for one normalised image.
fn float_probes(model: &Model, ctx: &QuantCtx, x: Tensor, probes: &Probes) -> Vec<Vec<f32>> {
    let values = model.net.values(&x, ctx);
    probes.iter().map(|p| to_f32(&values[p.value])).collect()
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
    check_spec(&ModelSpec::builtin(kind, 1, 16, 16, 5), scheme, bits);
}

/// The integer engine's registers against the fake-quantized float model's values, for a model
/// of `spec` (1×16×16 inputs) at uniform `bits`; returns the integer model.
fn check_spec(spec: &ModelSpec, scheme: QuantScheme, bits: LayerBits) -> IntModel {
    check_spec_with(spec, scheme, bits, false)
}

/// [`check_spec`]; with `warm`, BatchNorm running statistics first move off their initial
/// identity (a few training-mode passes), so that a standalone BatchNorm is not a no-op.
fn check_spec_with(spec: &ModelSpec, scheme: QuantScheme, bits: LayerBits, warm: bool) -> IntModel {
    let kind = spec.kind;
    let devices = Devices::cpu();
    devices.seed(11);
    let model = build(spec, devices.device).unwrap();
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
    // Calibration re-estimates BatchNorm on these few noise images; the register-by-register
    // check starts from BatchNorm at identity instead, and `warm` moves it off identity.
    model.net.reset_batchnorm();
    if warm {
        let ctx = QuantCtx::new(scheme, &policy.bits).training();
        for _ in 0..5 {
            let _ = tch::no_grad(|| model.net.forward(&(to_input(&imgs) * 1.7 + 0.4), &ctx));
        }
    }
    let (int, probes) = to_int_model(&model, &policy, scheme, &norm).unwrap();
    let back = IntModel::from_bytes(&int.to_bytes()).unwrap();
    assert_eq!(back, int, "the .ccq encoding round-trips");
    let engine = Engine::new(int.clone()).unwrap();
    let ctx = QuantCtx::new(scheme, &policy.bits);
    let scale = 2f64.powi(-(WIDE_FRAC as i32));
    for img in imgs.chunks(len) {
        let regs = engine.run_traced(img).unwrap();
        let float = float_probes(&model, &ctx, to_input(img), &probes);
        assert_eq!(float.len(), probes.len());
        for (p, f) in probes.iter().zip(&float) {
            let (name, ints) = (&p.name, &regs[p.reg]);
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
    int
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
        graph: None,
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

/// An exported model of `kind` on `channels`×`side`×`side` inputs at uniform `bits`, calibrated
/// on random images.
fn exported(
    kind: ModelKind,
    channels: usize,
    side: usize,
    scheme: QuantScheme,
    bits: LayerBits,
) -> IntModel {
    let devices = Devices::cpu();
    devices.seed(3);
    let spec = ModelSpec {
        kind,
        channels,
        height: side,
        width: side,
        classes: 7,
        graph: None,
    };
    let model = build(&spec, devices.device).unwrap();
    let norm = Normalization {
        mean: vec![0.4; channels],
        std: vec![0.3; channels],
    };
    let policy = Policy::uniform(&model.layer_names(), bits);
    let len = channels * side * side;
    let imgs = pixels(16, len, 9);
    let v: Vec<f32> = imgs
        .iter()
        .map(|&x| (x as f32 / 255.0 - 0.4) / 0.3)
        .collect();
    let x = ccq::host::tensor(
        &v,
        &[16, channels as i64, side as i64, side as i64],
        Device::Cpu,
    );
    calibrate(&model.net, &policy, scheme, &[x]);
    to_int_model(&model, &policy, scheme, &norm).unwrap().0
}

/// The fast engine's logits and registers are bit-identical to the reference engine's.
fn same_as_reference(int: IntModel, what: &str) {
    let reference = ccq::export::reference::ReferenceEngine::new(int.clone()).unwrap();
    let engine = Engine::new(int).unwrap();
    let i = &engine.model.input;
    let len = i.channels * i.height * i.width;
    let imgs = pixels(24, len, 17);
    let bits = |l: Vec<Vec<f32>>| -> Vec<Vec<u32>> {
        l.into_iter()
            .map(|v| v.into_iter().map(f32::to_bits).collect())
            .collect()
    };
    assert_eq!(
        bits(engine.logits(&imgs).unwrap()),
        bits(reference.logits(&imgs).unwrap()),
        "{what}: logits"
    );
    for img in imgs.chunks(len).take(3) {
        assert_eq!(
            engine.run_traced(img).unwrap(),
            reference.run_traced(img).unwrap(),
            "{what}: registers"
        );
    }
}

#[test]
fn fast_engine_is_bit_identical_to_the_reference() {
    let lsq = QuantScheme {
        weight: WeightQuantizer::LsqChannel,
        act: ActQuantizer::Lsq,
    };
    for (kind, channels, side, scheme, w, a) in [
        (ModelKind::Convnet, 1, 28, QuantScheme::default(), 3, 8),
        (ModelKind::Convnet, 3, 16, lsq, 8, 8),
        (ModelKind::Resnet20, 1, 16, QuantScheme::default(), 4, 4),
        (ModelKind::Resnet20, 3, 12, lsq, 2, 3),
    ] {
        let int = exported(kind, channels, side, scheme, LayerBits { w, a });
        same_as_reference(int.clone(), &format!("{kind:?} {channels}ch W{w}A{a}"));
        // Bounds past the 64-bit paths: huge BatchNorm multipliers (i128 affine ops).
        let mut wide = int.clone();
        for l in &mut wide.layers {
            for m in &mut l.post_mul {
                *m *= 1e6;
            }
        }
        same_as_reference(wide, &format!("{kind:?} {channels}ch, huge multipliers"));
        // First-layer weights near the i16 limit: their sums with the 16-bit input halves
        // could overflow 32 bits, so that layer takes the 64-bit products.
        let mut heavy = int;
        let l = &mut heavy.layers[0];
        // Validation bounds the whole code range, not only the codes used.
        let top = (1i64 << l.w_bits) - 1;
        let max = (l.code_off as i64)
            .abs()
            .max((top * l.code_mul as i64 + l.code_off as i64).abs())
            .max(1);
        let f = (30000 / max) as i32;
        (l.code_mul, l.code_off) = (l.code_mul * f, l.code_off * f);
        heavy.validate().unwrap();
        same_as_reference(heavy, &format!("{kind:?} {channels}ch, heavy first layer"));
    }
}

/// A graph node `name` computing `op` from value `src`.
fn node(name: &str, op: OpSpec, src: usize) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        key: name.into(),
        op,
        inputs: vec![src],
    }
}

/// An imported model of 1×16×16 inputs and 5 classes, whose graph is `nodes` ending at value
/// `output`.
fn imported(nodes: Vec<NodeSpec>, output: usize) -> ModelSpec {
    ModelSpec {
        kind: ModelKind::Imported,
        channels: 1,
        height: 16,
        width: 16,
        classes: 5,
        graph: Some(GraphSpec {
            nodes,
            output,
            io: None,
        }),
    }
}

/// A graph with a depthwise conv (stride 2) and ReLU6, a linear bottleneck (a pointwise conv
/// with no activation, read by the next conv and by a residual add) and a dilated grouped conv,
/// as an imported MobileNet-style model has them.
fn grouped_spec() -> ModelSpec {
    let conv = |cin, cout, kernel, stride, padding, dilation, groups| OpSpec::Conv {
        in_channels: cin,
        out_channels: cout,
        kernel,
        stride,
        padding,
        dilation,
        groups,
        bias: true,
        bn: true,
    };
    let nodes = vec![
        node("stem", conv(1, 8, 3, 1, 1, 1, 1), 0),
        node("stem_relu", OpSpec::Relu, 1),
        node("dw", conv(8, 8, 3, 2, 1, 1, 8), 2),
        node("dw_relu6", OpSpec::Clip { min: 0.0, max: 6.0 }, 3),
        // A linear bottleneck: the next conv reads values that can be negative.
        node("pw", conv(8, 12, 1, 1, 0, 1, 1), 4),
        node("dilated", conv(12, 12, 3, 1, 2, 2, 3), 5),
        NodeSpec {
            inputs: vec![6, 5],
            ..node("add", OpSpec::Add, 0)
        },
        node("add_relu", OpSpec::Relu, 7),
        node("gap", OpSpec::GlobalAvgPool, 8),
        node("flatten", OpSpec::Flatten, 9),
        node(
            "fc",
            OpSpec::Linear {
                in_features: 12,
                out_features: 5,
            },
            10,
        ),
    ];
    imported(nodes, 11)
}

#[test]
fn depthwise_dilated_relu6_and_signed_inputs_match_fake_quant_and_the_reference() {
    let spec = grouped_spec();
    let model = build(&spec, Device::Cpu).unwrap();
    let dw = &model.layers[1];
    assert_eq!((dw.groups, dw.params, dw.macs), (8, 8 * 9, 8 * 9 * 8 * 8));
    let mut signed = Vec::new();
    model
        .net
        .for_each_quant(&mut |_, q, _| signed.push(q.signed));
    assert_eq!(
        signed,
        [true, false, false, true, false],
        "the dilated conv reads `pw`'s output"
    );
    for (scheme, w, a) in [
        (QuantScheme::default(), 4, 4),
        (
            QuantScheme {
                weight: WeightQuantizer::LsqChannel,
                act: ActQuantizer::Lsq,
            },
            3,
            5,
        ),
    ] {
        let int = check_spec(&spec, scheme, LayerBits { w, a });
        assert_eq!(int.version(), 2, "grouped layers need format version 2");
        let back = IntModel::from_bytes(&int.to_bytes()).unwrap();
        assert_eq!(back.layers[1].groups, 8);
        assert_eq!(back.layers[3].dilation, 2);
        assert!(back.layers[3].a_min < 0, "a signed input");
        assert!(back.ops.iter().any(|op| matches!(op, Op::Clip { .. })));
        same_as_reference(int, &format!("grouped W{w}A{a}"));
    }
    let plain = exported(
        ModelKind::Convnet,
        1,
        16,
        QuantScheme::default(),
        LayerBits { w: 4, a: 4 },
    );
    assert_eq!(
        plain.version(),
        1,
        "a model without grouped layers stays readable as version 1"
    );
    assert_eq!(
        u32::from_le_bytes(plain.to_bytes()[8..12].try_into().unwrap()),
        1
    );
}

/// A dilated first layer, average pooling (padded, with and without the padding counted) and
/// a BatchNorm after a ReLU6, as imported models have them.
fn pooling_spec() -> ModelSpec {
    let conv = |cin, cout, dilation| OpSpec::Conv {
        in_channels: cin,
        out_channels: cout,
        kernel: 3,
        stride: 1,
        padding: dilation,
        dilation,
        groups: 1,
        bias: false,
        bn: true,
    };
    let avg = |kernel, stride, padding, count_include_pad| OpSpec::AvgPool {
        kernel,
        stride,
        padding,
        ceil: false,
        count_include_pad,
    };
    let nodes = vec![
        node("stem", conv(1, 6, 2), 0),
        node("stem_relu", OpSpec::Relu, 1),
        node("pool1", avg(3, 2, 1, false), 2),
        node("conv2", conv(6, 8, 1), 3),
        node("relu6", OpSpec::Clip { min: 0.0, max: 6.0 }, 4),
        node("bn", OpSpec::BatchNorm { channels: 8 }, 5),
        node("conv3", conv(8, 8, 1), 6),
        node("relu3", OpSpec::Relu, 7),
        node("pool2", avg(3, 2, 1, true), 8),
        node("gap", OpSpec::GlobalAvgPool, 9),
        node("flatten", OpSpec::Flatten, 10),
        node(
            "fc",
            OpSpec::Linear {
                in_features: 8,
                out_features: 5,
            },
            11,
        ),
    ];
    imported(nodes, 12)
}

#[test]
fn a_dilated_first_layer_average_pooling_and_a_standalone_batchnorm_match_fake_quant() {
    let spec = pooling_spec();
    for (scheme, w, a) in [
        (QuantScheme::default(), 4, 4),
        (
            QuantScheme {
                weight: WeightQuantizer::LsqChannel,
                act: ActQuantizer::Lsq,
            },
            3,
            5,
        ),
    ] {
        let int = check_spec_with(&spec, scheme, LayerBits { w, a }, true);
        assert_eq!(int.version(), 3, "average pooling needs format version 3");
        let back = IntModel::from_bytes(&int.to_bytes()).unwrap();
        assert_eq!(back, int);
        let pools: Vec<bool> = int
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::AvgPool { count_pad, .. } => Some(*count_pad),
                _ => None,
            })
            .collect();
        assert_eq!(pools, [false, true]);
        let Some(Op::Scale { mul, .. }) = int.ops.iter().find(|op| matches!(op, Op::Scale { .. }))
        else {
            panic!("no scale op for the BatchNorm");
        };
        assert!(
            mul.iter().any(|&m| (m - (1 << 24)).abs() > 1 << 16),
            "the BatchNorm is not the identity: {mul:?}"
        );
        assert!(
            int.layers[2].a_min < 0,
            "conv3 reads the BatchNorm's signed output"
        );
        assert_eq!(int.layers[0].dilation, 2);
        same_as_reference(int, &format!("pooling W{w}A{a}"));
    }
}
