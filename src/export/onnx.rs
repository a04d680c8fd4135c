//! ONNX export: a float graph with QuantizeLinear/DequantizeLinear around every quantized conv
//! and linear layer, encoded with prost from the official `onnx.proto` messages
//! ([`crate::onnx_proto`]).
//!
//! Activations are clipped to their k-bit range and quantized into `uint8`; weights are stored as
//! integers in `int8` (`int16`, opset 21, for 8-bit DoReFa weights, whose odd levels ±255 need 9
//! bits) with a per-channel scale that also carries the folded BatchNorm. The graph of a ccq model
//! takes raw pixels (0..255, float, NCHW, input `pixels`) and normalises them itself; that of an
//! imported model keeps the user's interface (normalised images in, the same input and output
//! names), so it drops in where the original file was.

use super::format::{IntKind, IntLayer, IntModel, Op, SCALE_FRAC, Term, WIDE_FRAC};
use crate::model::GraphIo;
use crate::onnx_proto::attribute_proto::AttributeType;
use crate::onnx_proto::tensor_proto::DataType;
use crate::onnx_proto::tensor_shape_proto::{Dimension, dimension};
use crate::onnx_proto::type_proto::{self, Tensor as TensorType};
use crate::onnx_proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use anyhow::Result;
use prost::Message;

const FLOAT: DataType = DataType::Float;
const UINT8: DataType = DataType::Uint8;
const INT8: DataType = DataType::Int8;
const INT16: DataType = DataType::Int16;

fn tensor(name: &str, dims: &[usize], dtype: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(dtype as i32),
        name: Some(name.into()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

struct Graph {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    count: usize,
}

impl Graph {
    fn name(&mut self, base: &str) -> String {
        self.count += 1;
        format!("{base}_{}", self.count)
    }

    fn init(&mut self, base: &str, dims: &[usize], dtype: DataType, raw: Vec<u8>) -> String {
        let n = self.name(base);
        self.inits.push(tensor(&n, dims, dtype, raw));
        n
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.name(&op.to_lowercase());
        let attribute = attrs
            .into_iter()
            .map(|(name, a)| {
                let mut p = AttributeProto {
                    name: Some(name.into()),
                    ..Default::default()
                };
                let ty = match a {
                    Attr::Int(v) => {
                        p.i = Some(v);
                        AttributeType::Int
                    }
                    Attr::Ints(v) => {
                        p.ints = v;
                        AttributeType::Ints
                    }
                    Attr::Float(v) => {
                        p.f = Some(v);
                        AttributeType::Float
                    }
                };
                p.r#type = Some(ty as i32);
                p
            })
            .collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|&i| i.into()).collect(),
            output: vec![out.clone()],
            name: Some(format!("{out}_node")),
            op_type: Some(op.into()),
            attribute,
            ..Default::default()
        });
        out
    }

    /// Clip to the k-bit range, quantize to uint8, dequantize.
    fn qdq_act(&mut self, x: &str, l: &IntLayer) -> String {
        let step = l.act_step;
        let max = l.a_max() as f32 * step;
        let lo = self.init("clip_lo", &[], FLOAT, f32s(&[l.a_min as f32 * step]));
        let hi = self.init("clip_hi", &[], FLOAT, f32s(&[max]));
        let c = self.node("Clip", &[x, &lo, &hi], vec![]);
        let s = self.init("act_scale", &[], FLOAT, f32s(&[step]));
        // Levels of a signed input are int8, of an input after a ReLU uint8; zero point 0.
        let dtype = if l.a_min < 0 { INT8 } else { UINT8 };
        let z = self.init("act_zero", &[], dtype, vec![0]);
        let q = self.node("QuantizeLinear", &[&c, &s, &z], vec![]);
        self.node("DequantizeLinear", &[&q, &s, &z], vec![])
    }

    /// Integer weights dequantized with per-channel scale × folded BN multiplier.
    fn weight(&mut self, l: &IntLayer, dims: &[usize]) -> String {
        let w = l.weights();
        let wide = w.iter().any(|&v| !(-128..=127).contains(&v));
        let (dtype, raw, zero) = if wide {
            (
                INT16,
                w.iter()
                    .flat_map(|&v| (v as i16).to_le_bytes())
                    .collect::<Vec<u8>>(),
                vec![0u8; 2 * l.out_ch],
            )
        } else {
            (
                INT8,
                w.iter().map(|&v| v as i8 as u8).collect(),
                vec![0u8; l.out_ch],
            )
        };
        let wn = self.init("w", dims, dtype, raw);
        let scales: Vec<f32> = (0..l.out_ch)
            .map(|c| l.scale(c) * l.post_mul.get(c).copied().unwrap_or(1.0))
            .collect();
        let s = self.init("w_scale", &[l.out_ch], FLOAT, f32s(&scales));
        let z = self.init("w_zero", &[l.out_ch], dtype, zero);
        self.node(
            "DequantizeLinear",
            &[&wn, &s, &z],
            vec![("axis", Attr::Int(0))],
        )
    }
}

/// Whether any layer needs 16-bit weight containers (hence opset 21).
fn needs_int16(m: &IntModel) -> bool {
    m.layers
        .iter()
        .any(|l| l.weights().iter().any(|&v| !(-128..=127).contains(&v)))
}

/// Serialises `m` as an ONNX model.
pub fn to_onnx(m: &IntModel, io: Option<&GraphIo>) -> Result<Vec<u8>> {
    let mut g = Graph {
        nodes: Vec::new(),
        inits: Vec::new(),
        count: 0,
    };
    let i = &m.input;
    let c = i.channels;
    let (input, output) = match io {
        Some(io) => (io.input.as_str(), io.output.as_str()),
        None => ("pixels", "logits"),
    };
    let x = if io.is_some() {
        // An imported model's interface: normalised images in, as the user's file had it.
        input.to_string()
    } else {
        let k255 = g.init("k255", &[], FLOAT, f32s(&[255.0]));
        let mean = g.init("mean", &[1, c, 1, 1], FLOAT, f32s(&i.mean));
        let std = g.init("std", &[1, c, 1, 1], FLOAT, f32s(&i.std));
        let x = g.node("Div", &[input, &k255], vec![]);
        let x = g.node("Sub", &[&x, &mean], vec![]);
        g.node("Div", &[&x, &std], vec![])
    };
    let mut regs: Vec<String> = vec![x];
    // The rank of each register's tensor: 4 (images, feature maps) or 2 (a linear layer's
    // output and what is computed from it).
    let mut ranks: Vec<usize> = vec![4];
    for op in &m.ops {
        let rank = match op {
            Op::Linear { .. } => 2,
            Op::Conv { .. } => 4,
            Op::Affine { terms, .. } => match terms[0] {
                Term::Acc { reg, .. } | Term::Wide { reg } => ranks[reg],
            },
            Op::MaxPool { src, .. }
            | Op::GlobalAvgPool { src }
            | Op::Clip { src, .. }
            | Op::AvgPool { src, .. }
            | Op::Scale { src, .. } => ranks[*src],
        };
        let out = match op {
            Op::Conv { layer, src } => {
                let l = &m.layers[*layer];
                let xin = if *layer == 0 {
                    regs[*src].clone()
                } else {
                    g.qdq_act(&regs[*src].clone(), l)
                };
                let w = g.weight(l, &[l.out_ch, l.in_ch / l.groups, l.kernel, l.kernel]);
                let b = g.init("bias", &[l.out_ch], FLOAT, f32s(&l.post_bias));
                let p = l.padding as i64;
                g.node(
                    "Conv",
                    &[&xin, &w, &b],
                    vec![
                        ("kernel_shape", Attr::Ints(vec![l.kernel as i64; 2])),
                        ("strides", Attr::Ints(vec![l.stride as i64; 2])),
                        ("pads", Attr::Ints(vec![p, p, p, p])),
                        ("dilations", Attr::Ints(vec![l.dilation as i64; 2])),
                        ("group", Attr::Int(l.groups as i64)),
                    ],
                )
            }
            Op::Linear { layer, src } => {
                let l = &m.layers[*layer];
                debug_assert_eq!(l.kind, IntKind::Linear);
                let f = g.node(
                    "Flatten",
                    &[&regs[*src].clone()],
                    vec![("axis", Attr::Int(1))],
                );
                let xin = g.qdq_act(&f, l);
                let w = g.weight(l, &[l.out_ch, l.in_ch]);
                let b = g.init("bias", &[l.out_ch], FLOAT, f32s(&l.post_bias));
                g.node(
                    "Gemm",
                    &[&xin, &w, &b],
                    vec![("transB", Attr::Int(1)), ("alpha", Attr::Float(1.0))],
                )
            }
            Op::Affine { terms, relu } => {
                let names: Vec<String> = terms
                    .iter()
                    .map(|t| match t {
                        Term::Acc { reg, .. } | Term::Wide { reg } => regs[*reg].clone(),
                    })
                    .collect();
                let mut acc = names[0].clone();
                for n in &names[1..] {
                    acc = g.node("Add", &[&acc, n], vec![]);
                }
                if *relu {
                    g.node("Relu", &[&acc], vec![])
                } else {
                    g.node("Identity", &[&acc], vec![])
                }
            }
            Op::MaxPool {
                src,
                kernel,
                stride,
                padding,
            } => {
                let p = *padding as i64;
                g.node(
                    "MaxPool",
                    &[&regs[*src].clone()],
                    vec![
                        ("kernel_shape", Attr::Ints(vec![*kernel as i64; 2])),
                        ("strides", Attr::Ints(vec![*stride as i64; 2])),
                        ("pads", Attr::Ints(vec![p, p, p, p])),
                    ],
                )
            }
            Op::GlobalAvgPool { src } => {
                g.node("GlobalAveragePool", &[&regs[*src].clone()], vec![])
            }
            Op::Clip { src, lo, hi } => {
                let wide = |v: i64| (v as f64 / (1u64 << WIDE_FRAC) as f64) as f32;
                let lo = g.init("clip_lo", &[], FLOAT, f32s(&[wide(*lo)]));
                let hi = g.init("clip_hi", &[], FLOAT, f32s(&[wide(*hi)]));
                g.node("Clip", &[&regs[*src].clone(), &lo, &hi], vec![])
            }
            Op::AvgPool {
                src,
                kernel,
                stride,
                padding,
                count_pad,
            } => {
                let p = *padding as i64;
                g.node(
                    "AveragePool",
                    &[&regs[*src].clone()],
                    vec![
                        ("kernel_shape", Attr::Ints(vec![*kernel as i64; 2])),
                        ("strides", Attr::Ints(vec![*stride as i64; 2])),
                        ("pads", Attr::Ints(vec![p, p, p, p])),
                        ("count_include_pad", Attr::Int(*count_pad as i64)),
                    ],
                )
            }
            Op::Scale { src, mul, bias } => {
                let c = mul.len();
                let dims: Vec<usize> = if rank == 4 { vec![c, 1, 1] } else { vec![c] };
                let f = |v: &[i64], frac: u32| -> Vec<f32> {
                    v.iter()
                        .map(|&x| (x as f64 / (1u64 << frac) as f64) as f32)
                        .collect()
                };
                let k = g.init("bn_mul", &dims, FLOAT, f32s(&f(mul, SCALE_FRAC)));
                let b = g.init("bn_add", &dims, FLOAT, f32s(&f(bias, WIDE_FRAC)));
                let y = g.node("Mul", &[&regs[*src].clone(), &k], vec![]);
                g.node("Add", &[&y, &b], vec![])
            }
        };
        regs.push(out);
        ranks.push(rank);
    }
    let last = regs.last().expect("graph has ops").clone();
    g.nodes.push(NodeProto {
        input: vec![last],
        output: vec![output.into()],
        name: Some("logits_node".into()),
        op_type: Some("Flatten".into()),
        ..Default::default()
    });
    let graph = GraphProto {
        node: g.nodes,
        name: Some(format!("ccq_{}", m.name)),
        initializer: g.inits,
        input: vec![value_info(
            input,
            &[None, Some(c), Some(i.height), Some(i.width)],
        )],
        output: vec![value_info(output, &[None, Some(i.classes)])],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(8),
        producer_name: Some("ccq".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(if needs_int16(m) { 21 } else { 13 }),
        }],
        graph: Some(graph),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

/// A float tensor's name and shape (`None`: the batch dimension, named `N`).
fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v as i64),
                None => dimension::Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(TensorType {
                elem_type: Some(FLOAT as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
