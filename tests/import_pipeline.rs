//! Bring your own model end to end on synthetic data: an ONNX file with a depthwise conv, ReLU6
//! and a linear bottleneck is imported, searched by CCQ, and exported back as `.ccq` and as a
//! QDQ graph that keeps the file's input and output names.

use ccq::data::{DataFormat, synthetic};
use ccq::events::{Event, Events};
use ccq::export::engine::Engine;
use ccq::export::format::IntModel;
use ccq::onnx_proto::attribute_proto::AttributeType;
use ccq::onnx_proto::tensor_proto::DataType;
use ccq::onnx_proto::tensor_shape_proto::{Dimension, dimension};
use ccq::onnx_proto::type_proto::{self, Tensor as TensorType};
use ccq::onnx_proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use ccq::pipeline::{self, DataConfig, ExportConfig, QuantizeConfig, Start};
use ccq::quant::quantizer::{QuantScheme, WeightQuantizer};
use ccq::search::target::Target;
use prost::Message;

struct Quiet;
impl Events for Quiet {
    fn event(&self, _: &Event) {}
}

fn dims(v: &[Option<i64>]) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::TensorType(TensorType {
            elem_type: Some(DataType::Float as i32),
            shape: Some(TensorShapeProto {
                dim: v
                    .iter()
                    .map(|d| Dimension {
                        value: d.map(dimension::Value::DimValue),
                        ..Default::default()
                    })
                    .collect(),
            }),
        })),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        ints: v.to_vec(),
        r#type: Some(AttributeType::Ints as i32),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        i: Some(v),
        r#type: Some(AttributeType::Int as i32),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: Some(format!("/{output}/{op}")),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

/// Deterministic small weights.
fn init(name: &str, d: &[i64], scale: f32, seed: u32) -> TensorProto {
    let n: i64 = d.iter().product();
    let mut s = seed;
    let data = (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            ((s >> 16) % 1000) as f32 / 1000.0 * 2.0 * scale - scale
        })
        .collect();
    TensorProto {
        name: Some(name.into()),
        dims: d.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: data,
        ..Default::default()
    }
}

/// 1×12×12 → conv 3×3 (8) + ReLU + max-pool → depthwise 3×3 + ReLU6 → 1×1 conv (12, no
/// activation) → global pool → Gemm (3 classes).
fn model() -> ModelProto {
    let constant = |name: &str, v: f32| NodeProto {
        op_type: Some("Constant".into()),
        output: vec![name.into()],
        attribute: vec![AttributeProto {
            name: Some("value".into()),
            t: Some(TensorProto {
                data_type: Some(DataType::Float as i32),
                float_data: vec![v],
                ..Default::default()
            }),
            r#type: Some(AttributeType::Tensor as i32),
            ..Default::default()
        }],
        ..Default::default()
    };
    let pads = |p| ints("pads", &[p, p, p, p]);
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        metadata_props: vec![
            StringStringEntryProto {
                key: Some("mean".into()),
                value: Some("0.3".into()),
            },
            StringStringEntryProto {
                key: Some("std".into()),
                value: Some("0.3".into()),
            },
        ],
        graph: Some(GraphProto {
            node: vec![
                node(
                    "Conv",
                    &["input.1", "stem.weight", "stem.bias"],
                    "c1",
                    vec![pads(1)],
                ),
                node("Relu", &["c1"], "r1", vec![]),
                node(
                    "MaxPool",
                    &["r1"],
                    "p1",
                    vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
                ),
                node(
                    "Conv",
                    &["p1", "dw.weight", "dw.bias"],
                    "c2",
                    vec![pads(1), int("group", 8)],
                ),
                constant("lo", 0.0),
                constant("hi", 6.0),
                node("Clip", &["c2", "lo", "hi"], "r2", vec![]),
                node("Conv", &["r2", "pw.weight", "pw.bias"], "c3", vec![]),
                node("GlobalAveragePool", &["c3"], "g", vec![]),
                node("Flatten", &["g"], "f", vec![]),
                node(
                    "Gemm",
                    &["f", "fc.weight", "fc.bias"],
                    "scores",
                    vec![int("transB", 1)],
                ),
            ],
            initializer: vec![
                init("stem.weight", &[8, 1, 3, 3], 0.5, 1),
                init("stem.bias", &[8], 0.1, 2),
                init("dw.weight", &[8, 1, 3, 3], 0.5, 3),
                init("dw.bias", &[8], 0.1, 4),
                init("pw.weight", &[12, 8, 1, 1], 0.5, 5),
                init("pw.bias", &[12], 0.1, 6),
                init("fc.weight", &[3, 12], 0.5, 7),
                init("fc.bias", &[3], 0.1, 8),
            ],
            input: vec![ValueInfoProto {
                name: Some("input.1".into()),
                r#type: Some(dims(&[None, Some(1), Some(12), Some(12)])),
                ..Default::default()
            }],
            output: vec![ValueInfoProto {
                name: Some("scores".into()),
                r#type: Some(dims(&[None, Some(3)])),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn onnx_in_ccq_search_qdq_out_with_the_same_interface() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    synthetic::write_idx_dataset(&dir.join("data")).unwrap();
    let onnx = dir.join("user.onnx");
    std::fs::write(&onnx, model().encode_to_vec()).unwrap();

    let info = pipeline::inspect(&onnx).unwrap();
    assert_eq!(
        info.layers
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["stem", "dw", "pw", "fc"]
    );
    assert_eq!(info.meta.normalization.mean, [0.3], "from the metadata");

    let data = DataConfig {
        val_size: 30,
        bandit_size: 30,
        ..DataConfig::at(dir.join("data"), DataFormat::Idx)
    };
    let mut search = QuantizeConfig::new(
        dir.join("run"),
        Start::Checkpoint(onnx.clone()),
        Some(Target::Compression(4.0)),
    );
    search.data = data;
    search.search.ft_max_epochs = Some(3);
    search.search.final_epochs = 1;
    search.search.scheme = QuantScheme {
        weight: WeightQuantizer::LsqChannel,
        ..QuantScheme::default()
    };
    let q = pipeline::quantize(&search, &Quiet).unwrap();
    let report = q.report.expect("the search finishes");
    assert!(report.cost.compression >= 4.0);
    assert!(report.test.is_finite());
    // The imported model is the run's FP checkpoint, graph and all.
    // Jobs on the imported checkpoint default to its quantizer, as on the ONNX file.
    {
        use ccq::pipeline::import::default_weight_quantizer as default;
        use ccq::quant::quantizer::WeightQuantizer::{Dorefa, LsqChannel};
        assert_eq!(default(Some(&dir.join("run/fp"))), LsqChannel);
        assert_eq!(default(Some(&dir.join("run/final"))), LsqChannel);
        assert_eq!(default(Some(&dir.join("user.onnx"))), LsqChannel);
        assert_eq!(default(None), Dorefa);
    }
    let fp = pipeline::inspect(&dir.join("run/fp")).unwrap();
    assert_eq!(fp.meta.spec.kind.name(), "imported");
    assert!(fp.meta.test.is_some(), "its accuracy is measured on import");
    let graph = fp.meta.spec.graph.as_ref().unwrap();
    assert!(
        graph
            .nodes
            .iter()
            .all(|n| !matches!(n.op, ccq::model::OpSpec::Conv { bn: false, .. })),
        "every conv has its BatchNorm back"
    );

    let qdq = dir.join("back.onnx");
    let e = pipeline::export(&ExportConfig {
        onnx: Some(qdq.clone()),
        check_images: 40,
        ..ExportConfig::new(q.run, dir.join("model.ccq"))
    })
    .unwrap();
    // The integer check ran on the checkpoint's data and wrote its report.
    let ccq::pipeline::IntCheck::Checked(path, r) = &e.check else {
        panic!("not checked: {:?}", e.check);
    };
    assert_eq!(*path, dir.join("model.int.json"));
    let saved: ccq::export::int_check::IntReport =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(&saved, r);
    assert_eq!(r.images, 40);
    assert!(r.agree >= 36, "{} of 40 predictions agree", r.agree);
    assert_eq!(r.nodes.last().unwrap().name, "logits");
    assert!(
        r.nodes
            .iter()
            .all(|n| n.values > 0 && n.differ * 20 <= n.values)
    );
    let int = IntModel::from_bytes(&std::fs::read(&e.out).unwrap()).unwrap();
    assert_eq!(
        int.version(),
        2,
        "a depthwise layer and ReLU6 need version 2"
    );
    assert_eq!(int.layers[1].groups, 8);
    assert!(
        int.layers[3].a_min < 0,
        "fc reads the linear bottleneck's signed output"
    );
    Engine::new(int).unwrap();
    let back = ModelProto::decode(std::fs::read(&qdq).unwrap().as_slice()).unwrap();
    let g = back.graph.unwrap();
    assert_eq!(g.input[0].name.as_deref(), Some("input.1"));
    assert_eq!(g.output[0].name.as_deref(), Some("scores"));
    assert!(
        g.node.iter().all(|n| n.op_type.as_deref() != Some("Div")),
        "it takes normalised images, as the original did"
    );
    for t in &g.initializer {
        let n: i64 = t.dims.iter().product();
        let size = match DataType::try_from(t.data_type.unwrap()).unwrap() {
            DataType::Float => 4,
            DataType::Int16 => 2,
            _ => 1,
        };
        let raw = t.raw_data.as_ref().map_or(0, Vec::len);
        assert_eq!(
            raw as i64,
            n * size,
            "initializer `{:?}` {:?}",
            t.name,
            t.dims
        );
    }
}
