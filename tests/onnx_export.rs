//! The ONNX QDQ export, decoded back with the same prost messages: a well-formed graph (every
//! node input defined before use), the `pixels` → `logits` interface with the model's shapes,
//! opset 13, or 21 when 8-bit DoReFa weights need 16-bit containers.

use ccq::data::Normalization;
use ccq::export::convert::to_int_model;
use ccq::export::onnx::to_onnx;
use ccq::model::{ModelKind, ModelSpec, build};
use ccq::onnx_proto::tensor_proto::DataType;
use ccq::onnx_proto::tensor_shape_proto::dimension::Value;
use ccq::onnx_proto::type_proto;
use ccq::onnx_proto::{ModelProto, ValueInfoProto};
use ccq::quant::policy::{LayerBits, Policy};
use ccq::quant::quantizer::QuantScheme;
use ccq::train::Devices;
use prost::Message;
use std::collections::HashSet;

fn dims(v: &ValueInfoProto) -> Vec<String> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.clone())
    else {
        panic!("{:?} is not a tensor", v.name);
    };
    t.shape
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            Value::DimValue(v) => v.to_string(),
            Value::DimParam(p) => p.clone(),
        })
        .collect()
}

fn export(kind: ModelKind, bits: u32) -> ModelProto {
    let devices = Devices::cpu();
    devices.seed(1);
    let spec = ModelSpec {
        kind,
        channels: 3,
        height: 16,
        width: 16,
        classes: 6,
        graph: None,
    };
    let model = build(&spec, devices.device).unwrap();
    let policy = Policy::uniform(&model.layer_names(), LayerBits { w: bits, a: bits });
    let norm = Normalization {
        mean: vec![0.5; 3],
        std: vec![0.25; 3],
    };
    let (int, _) = to_int_model(&model, &policy, QuantScheme::default(), &norm).unwrap();
    ModelProto::decode(to_onnx(&int, None).unwrap().as_slice()).expect("decodes")
}

#[test]
fn qdq_graph_is_well_formed() {
    for (kind, bits, opset, wide) in [
        (ModelKind::Convnet, 4, 13, false),
        (ModelKind::Resnet20, 3, 13, false),
        (ModelKind::Convnet, 8, 21, true),
    ] {
        let m = export(kind, bits);
        assert_eq!(m.opset_import[0].version, Some(opset), "{kind:?} W{bits}");
        let g = m.graph.unwrap();
        assert_eq!(g.input.len(), 1);
        assert_eq!(g.input[0].name.as_deref(), Some("pixels"));
        assert_eq!(dims(&g.input[0]), ["N", "3", "16", "16"]);
        assert_eq!(g.output[0].name.as_deref(), Some("logits"));
        assert_eq!(dims(&g.output[0]), ["N", "6"]);
        let mut defined: HashSet<String> = g
            .initializer
            .iter()
            .filter_map(|t| t.name.clone())
            .collect();
        defined.insert("pixels".into());
        for n in &g.node {
            for i in &n.input {
                assert!(
                    defined.contains(i),
                    "{kind:?}: {:?} reads undefined {i}",
                    n.name
                );
            }
            defined.extend(n.output.iter().cloned());
        }
        assert!(defined.contains("logits"));
        let ops: HashSet<&str> = g.node.iter().filter_map(|n| n.op_type.as_deref()).collect();
        for op in ["QuantizeLinear", "DequantizeLinear", "Conv", "Gemm", "Clip"] {
            assert!(ops.contains(op), "{kind:?}: no {op}");
        }
        let int16 = g
            .initializer
            .iter()
            .any(|t| t.data_type == Some(DataType::Int16 as i32));
        assert_eq!(int16, wide, "{kind:?} W{bits}: 16-bit weight containers");
        // Every initializer's raw bytes match its shape and type.
        for t in &g.initializer {
            let n: i64 = t.dims.iter().product();
            let size = match DataType::try_from(t.data_type.unwrap()).unwrap() {
                DataType::Float => 4,
                DataType::Int16 => 2,
                _ => 1,
            };
            assert_eq!(
                t.raw_data.as_ref().unwrap().len() as i64,
                n * size,
                "{:?}",
                t.name
            );
        }
    }
}
