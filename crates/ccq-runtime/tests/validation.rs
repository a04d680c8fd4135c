//! Crafted `.ccq` graphs: each unchecked path named in the reliability issue is refused at load
//! time with a message naming the problem, and a valid graph still loads and runs.

use ccq_runtime::format::{InputSpec, IntKind, IntLayer, IntModel, Op, Term};
use ccq_runtime::{Engine, validate};

fn layer(name: &str, kind: IntKind, in_ch: usize, out_ch: usize, kernel: usize) -> IntLayer {
    let n = out_ch * in_ch * kernel * kernel;
    IntLayer {
        name: name.into(),
        kind,
        in_ch,
        out_ch,
        kernel,
        stride: 1,
        padding: kernel / 2,
        groups: 1,
        dilation: 1,
        w_bits: 4,
        code_mul: 2,
        code_off: -15,
        w_scale: vec![0.05],
        codes: (0..n as u32).map(|i| i * 7 % 16).collect(),
        a_bits: 4,
        a_min: 0,
        act_step: 0.1,
        post_mul: if kind == IntKind::Conv {
            vec![1.0; out_ch]
        } else {
            vec![]
        },
        post_bias: vec![0.01; out_ch],
    }
}

/// conv(1→2, 3×3) → ReLU → max-pool 2 → conv(2→2) + residual → global pool → linear(2→3).
fn valid() -> IntModel {
    IntModel {
        name: "tiny".into(),
        input: InputSpec {
            channels: 1,
            height: 4,
            width: 4,
            mean: vec![0.5],
            std: vec![0.25],
            frac_bits: 20,
            classes: 3,
        },
        layers: vec![
            layer("stem", IntKind::Conv, 1, 2, 3),
            layer("conv", IntKind::Conv, 2, 2, 3),
            layer("fc", IntKind::Linear, 2, 3, 1),
        ],
        ops: vec![
            Op::Conv { layer: 0, src: 0 },
            Op::Affine {
                terms: vec![Term::Acc { reg: 1, layer: 0 }],
                relu: true,
            },
            Op::MaxPool {
                src: 2,
                kernel: 2,
                stride: 2,
                padding: 0,
            },
            Op::Conv { layer: 1, src: 3 },
            Op::Affine {
                terms: vec![Term::Acc { reg: 4, layer: 1 }, Term::Wide { reg: 3 }],
                relu: true,
            },
            Op::GlobalAvgPool { src: 5 },
            Op::Linear { layer: 2, src: 6 },
            Op::Affine {
                terms: vec![Term::Acc { reg: 7, layer: 2 }],
                relu: false,
            },
        ],
    }
}

/// The load error of `m` (through the file encoding) and of `Engine::new`, which must agree.
fn refused(m: &IntModel) -> String {
    let direct = format!("{:#}", validate::validate(m).unwrap_err());
    let engine = format!(
        "{:#}",
        Engine::new(m.clone()).err().expect("engine refuses")
    );
    assert_eq!(direct, engine);
    if (1..=16).contains(&m.layers.iter().map(|l| l.w_bits).min().unwrap_or(1)) {
        let loaded = format!("{:#}", IntModel::from_bytes(&m.to_bytes()).unwrap_err());
        assert_eq!(direct, loaded, "from_bytes validates");
    }
    direct
}

fn expect(m: IntModel, needle: &str) {
    let e = refused(&m);
    assert!(e.contains(needle), "`{e}` should mention `{needle}`");
}

#[test]
fn valid_graph_loads_and_runs() {
    let m = valid();
    let back = IntModel::from_bytes(&m.to_bytes()).unwrap();
    assert_eq!(back, m);
    let engine = Engine::new(back).unwrap();
    let pixels: Vec<u8> = (0..32).map(|i| (i * 37 % 256) as u8).collect();
    let logits = engine.logits(&pixels).unwrap();
    assert_eq!(logits.len(), 2);
    assert!(logits.iter().flatten().all(|v| v.is_finite()));
    assert!(engine.logits(&pixels[..20]).is_err(), "a partial image");
    assert!(
        engine.run_traced(&pixels).is_err(),
        "two images to run_traced"
    );
}

#[test]
fn affine_with_no_terms() {
    let mut m = valid();
    m.ops[1] = Op::Affine {
        terms: vec![],
        relu: true,
    };
    expect(m, "sums 1..16 terms, not 0");
}

#[test]
fn max_pool_window_wider_than_input() {
    let mut m = valid();
    m.ops[2] = Op::MaxPool {
        src: 2,
        kernel: 5,
        stride: 1,
        padding: 0,
    };
    expect(m, "pooling window 5 does not fit");
    let mut m = valid();
    m.input.height = 8; // tall enough, but the width (4) is not
    m.ops[2] = Op::MaxPool {
        src: 2,
        kernel: 6,
        stride: 1,
        padding: 0,
    };
    expect(m, "does not fit 2×8×4");
    let mut m = valid();
    m.ops[2] = Op::MaxPool {
        src: 2,
        kernel: 2,
        stride: 2,
        padding: 2,
    };
    expect(m, "bad pooling window");
}

#[test]
fn acc_term_of_another_layer_or_a_wide_register() {
    let mut m = valid();
    m.ops[4] = Op::Affine {
        terms: vec![Term::Acc { reg: 4, layer: 0 }],
        relu: true,
    };
    expect(m, "as layer 0's accumulators");
    let mut m = valid();
    m.ops[4] = Op::Affine {
        terms: vec![Term::Acc { reg: 3, layer: 1 }],
        relu: true,
    };
    expect(m, "register 3 (Wide)");
    let mut m = valid();
    m.ops[4] = Op::Affine {
        terms: vec![Term::Wide { reg: 4 }],
        relu: true,
    };
    expect(m, "not wide activations");
}

#[test]
fn conv_with_an_empty_layer_table() {
    let mut m = valid();
    m.layers.clear();
    expect(m, "layer 0 does not exist (the model has 0 layers)");
}

#[test]
fn zero_size_input() {
    let mut m = valid();
    m.input.width = 0;
    expect(m, "zero-size input 1×4×0");
    let mut m = valid();
    m.input.classes = 0;
    expect(m, "0 classes");
}

#[test]
fn layer_fields() {
    let mut m = valid();
    m.layers[1].in_ch = 3;
    m.layers[1].codes = vec![0; 2 * 3 * 9];
    expect(m, "takes 3 channels, its input has 2");
    let mut m = valid();
    m.layers[2].kind = IntKind::Conv;
    expect(m, "is Conv, not Linear");
    let mut m = valid();
    m.layers[1].act_step = f32::NAN;
    expect(m, "activation step NaN");
    let mut m = valid();
    m.layers[1].w_scale = vec![f32::INFINITY];
    expect(m, "non-finite weight scale");
    let mut m = valid();
    m.layers[1].code_mul = 1 << 14;
    expect(m, "beyond the engine's 16-bit range");
    let mut m = valid();
    m.layers[1].a_bits = 16;
    m.layers[1].code_mul = 1000;
    expect(m, "can overflow");
    let mut m = valid();
    m.layers[2].kernel = 3;
    m.layers[2].codes = vec![0; 3 * 2 * 9];
    expect(m, "a linear layer has kernel 1");
    let mut m = valid();
    m.layers[0].w_bits = 0;
    expect(m, "0 weight bits");
    let mut m = valid();
    m.layers[1].groups = 3;
    expect(m, "3 groups of 2 → 2 channels");
    let mut m = valid();
    m.layers[0].groups = 2;
    m.layers[0].in_ch = 2;
    m.input.channels = 2;
    m.input.mean = vec![0.5; 2];
    m.input.std = vec![0.25; 2];
    // A grouped first layer is valid, and the engine runs it as the reference does.
    validate::validate(&m).unwrap();
    let (engine, reference) = (
        ccq_runtime::engine::Engine::new(m.clone()).unwrap(),
        ccq_runtime::reference::ReferenceEngine::new(m.clone()).unwrap(),
    );
    let img: Vec<u8> = (0..2 * 4 * 4).map(|i| (i * 37 % 256) as u8).collect();
    assert_eq!(
        engine.run_traced(&img).unwrap(),
        reference.run_traced(&img).unwrap()
    );
    m.layers[0].codes.pop();
    let e = format!("{:#}", validate::validate(&m).unwrap_err());
    assert!(e.contains("weight codes, not"), "{e}");
    let mut m = valid();
    m.layers[1].groups = 2;
    let e = format!("{:#}", validate::validate(&m).unwrap_err());
    assert!(e.contains("36 weight codes, not 18"), "{e}");
    let mut m = valid();
    m.layers[1].groups = 2;
    m.layers[1].dilation = 2;
    m.layers[1].padding = 2;
    m.layers[1].codes.truncate(18);
    assert_eq!(m.version(), 2);
    let back = IntModel::from_bytes(&m.to_bytes()).unwrap();
    assert_eq!((back.layers[1].groups, back.layers[1].dilation), (2, 2));
    Engine::new(back).expect("a grouped, dilated layer loads");
}

#[test]
fn input_normalisation() {
    let mut m = valid();
    m.input.std = vec![0.0];
    expect(m, "std 0");
    let mut m = valid();
    m.input.mean = vec![f32::NAN];
    expect(m, "mean NaN");
    let mut m = valid();
    m.input.frac_bits = 30;
    m.input.std = vec![0.01];
    expect(m, "do not fit 31 bits");
}

#[test]
fn register_typing() {
    let mut m = valid();
    m.ops[3] = Op::Conv { layer: 1, src: 0 };
    expect(m, "reads register 0 (Input); it must read Wide");
    let mut m = valid();
    m.ops[0] = Op::Conv { layer: 0, src: 0 };
    m.ops[2] = Op::MaxPool {
        src: 0,
        kernel: 2,
        stride: 2,
        padding: 0,
    };
    expect(m, "register 0 holds Input");
    let mut m = valid();
    m.ops.truncate(7);
    expect(m, "ends in Acc(2)");
    let mut m = valid();
    m.ops.clear();
    expect(m, "no operations");
}

#[test]
fn oversized_registers() {
    let mut m = valid();
    m.input.height = 1 << 16;
    m.input.width = 1 << 16;
    expect(m, "larger than");
}

/// The fuzzer's small `.ccq` seed is this file's valid graph (`CCQ_WRITE_SEEDS=1` rewrites it).
#[test]
fn tiny_fuzz_seed_is_current() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/ccq_file/tiny.ccq");
    let bytes = valid().to_bytes();
    if std::env::var_os("CCQ_WRITE_SEEDS").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "{}", path.display());
}
