//! ONNX import: the fixture models (made by `scripts/make-onnx-fixtures.py` with PyTorch's
//! exporter) give onnxruntime's logits, and bad files give errors that name the problem.

use ccq::model::onnx_import::import;
use ccq::model::{NodeOp, QuantCtx};
use ccq::onnx_proto::attribute_proto::AttributeType;
use ccq::onnx_proto::tensor_proto::DataType;
use ccq::onnx_proto::tensor_shape_proto::{Dimension, dimension};
use ccq::onnx_proto::type_proto::{self, Tensor as TensorType};
use ccq::onnx_proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use ccq::pipeline::import::normalization;
use ccq::quant::policy::Policy;
use prost::Message;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

/// Imports a fixture, runs its 32 stored images and compares with onnxruntime's logits.
fn agrees_with_onnxruntime(name: &str) -> (f32, usize) {
    let path = fixture(&format!("{name}.onnx"));
    let imported = import(&path, Device::Cpu).unwrap();
    let model = &imported.model;
    let s = &model.spec;
    let norm = normalization(&path, None, &imported.metadata, s.channels).unwrap();
    assert!(
        norm.mean[0] > 0.4 && norm.std[0] > 0.2,
        "{name}: the metadata's preprocessing is read ({norm:?})"
    );
    let pixels = std::fs::read(fixture(&format!("{name}.inputs.u8"))).unwrap();
    let logits: Vec<f32> = std::fs::read(fixture(&format!("{name}.logits.f32")))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let plane = s.height * s.width;
    let n = pixels.len() / (s.channels * plane);
    let x: Vec<f32> = pixels
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let c = (i / plane) % s.channels;
            (p as f32 / 255.0 - norm.mean[c]) / norm.std[c]
        })
        .collect();
    let x =
        Tensor::from_slice(&x).view([n as i64, s.channels as i64, s.height as i64, s.width as i64]);
    let float = Policy::float(&model.layer_names());
    let ctx = QuantCtx::new(Default::default(), &float.bits);
    let y = tch::no_grad(|| model.net.forward(&x, &ctx));
    let got = ccq::host::to_f32(&y);
    assert_eq!(got.len(), logits.len(), "{name}: logits shape");
    let max_diff = got
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    let k = s.classes;
    let agree = got
        .chunks(k)
        .zip(logits.chunks(k))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    assert_eq!(agree, n, "{name}: every prediction agrees with onnxruntime");
    assert!(max_diff < 1e-3, "{name}: max |Δ logit| {max_diff}");
    (max_diff, model.layers.len())
}

#[test]
fn resnet18_with_folded_batchnorm_matches_onnxruntime() {
    let (_, layers) = agrees_with_onnxruntime("resnet18_w8");
    // stem + 8 blocks × 2 convs + 3 projection shortcuts + fc
    assert_eq!(layers, 1 + 16 + 3 + 1);
}

#[test]
fn mobilenetv2_with_batchnorm_nodes_matches_onnxruntime() {
    let (_, layers) = agrees_with_onnxruntime("mobilenetv2_035");
    let model = import(&fixture("mobilenetv2_035.onnx"), Device::Cpu)
        .unwrap()
        .model;
    assert_eq!(layers, model.layers.len());
    let depthwise = model
        .layers
        .iter()
        .filter(|l| l.groups > 1 && l.groups == l.in_channels)
        .count();
    assert_eq!(
        depthwise, 17,
        "one depthwise conv per inverted-residual block"
    );
    // Every BatchNormalization follows a conv: all of them join their conv.
    assert!(
        model
            .net
            .nodes
            .iter()
            .all(|n| !matches!(n.op, NodeOp::BatchNorm(_)))
    );
    let dw = model.layers.iter().find(|l| l.groups > 1).unwrap();
    assert_eq!(
        dw.params,
        dw.out_channels * 9,
        "a depthwise 3×3 conv has 9 weights per channel"
    );
}

#[test]
fn other_ops_match_onnxruntime() {
    agrees_with_onnxruntime("ops_mix");
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(TensorType {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(name: &str, op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// A conv (2 → 2 channels, 1×1) followed by `op`, then a 2-class linear layer.
fn small_model(op: &str, opset: i64) -> ModelProto {
    let init = |name: &str, dims: &[i64], n: usize| TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: vec![0.5; n],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            node: vec![
                node("/conv/Conv", "Conv", &["x", "w"], "c"),
                node("/act/Weird", op, &["c"], "a"),
                node("/flat/Flatten", "Flatten", &["a"], "f"),
                NodeProto {
                    attribute: vec![AttributeProto {
                        name: Some("transB".into()),
                        i: Some(1),
                        r#type: Some(AttributeType::Int as i32),
                        ..Default::default()
                    }],
                    ..node("/fc/Gemm", "Gemm", &["f", "fc.weight", "fc.bias"], "y")
                },
            ],
            initializer: vec![
                init("w", &[2, 2, 1, 1], 4),
                init("fc.weight", &[2, 8], 16),
                init("fc.bias", &[2], 2),
            ],
            input: vec![value_info("x", &[1, 2, 2, 2])],
            output: vec![value_info("y", &[1, 2])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Writes `model` as `dir/name`.
fn write(dir: &tempfile::TempDir, model: &ModelProto, name: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

#[test]
fn a_small_graph_imports_with_named_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(&tmp, &small_model("Relu", 13), "ok.onnx");
    let m = import(&path, Device::Cpu).unwrap();
    assert_eq!(m.model.layer_names(), ["conv", "fc"]);
    assert_eq!((m.input_name.as_str(), m.output_name.as_str()), ("x", "y"));
    assert_eq!(m.model.spec.classes, 2);
}

#[test]
fn an_unsupported_op_is_named_with_the_supported_list() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(&tmp, &small_model("Sigmoid", 13), "sigmoid.onnx");
    let e = format!("{:#}", import(&path, Device::Cpu).err().unwrap());
    assert!(e.contains("sigmoid.onnx"), "{e}");
    assert!(e.contains("node `/act/Weird` (Sigmoid)"), "{e}");
    assert!(e.contains("unsupported op"), "{e}");
    assert!(e.contains("Conv, BatchNormalization, Relu, Clip"), "{e}");
}

#[test]
fn bad_files_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(&tmp, &small_model("Relu", 9), "old.onnx");
    let e = format!("{:#}", import(&path, Device::Cpu).err().unwrap());
    assert!(e.contains("opset 9 is outside the supported 11–21"), "{e}");

    let garbage = tmp.path().join("garbage.onnx");
    std::fs::write(&garbage, [0xff, 0xff, 0xff, 0x01, 0x02]).unwrap();
    let e = format!("{:#}", import(&garbage, Device::Cpu).err().unwrap());
    assert!(e.contains("garbage.onnx: not an ONNX model"), "{e}");

    let mut nan = small_model("Relu", 13);
    nan.graph.as_mut().unwrap().initializer[0].float_data[1] = f32::NAN;
    let path = write(&tmp, &nan, "nan.onnx");
    let e = format!("{:#}", import(&path, Device::Cpu).err().unwrap());
    assert!(e.contains("tensor `w` holds NaN or infinite values"), "{e}");

    let mut shape = small_model("Relu", 13);
    shape.graph.as_mut().unwrap().initializer[1].dims = vec![2, 7];
    shape.graph.as_mut().unwrap().initializer[1].float_data = vec![0.5; 14];
    let path = write(&tmp, &shape, "shape.onnx");
    let e = format!("{:#}", import(&path, Device::Cpu).err().unwrap());
    assert!(e.contains("node `/fc/Gemm` (Gemm)"), "{e}");
    assert!(e.contains("cannot read [8]"), "{e}");
}
