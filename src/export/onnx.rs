//! ONNX export: a float graph with QuantizeLinear/DequantizeLinear around every quantized conv
//! and linear layer, written with a minimal protobuf encoder (no dependency).
//!
//! Activations are clipped to their k-bit range and quantized into `uint8`; weights are stored as
//! integers in `int8` (`int16`, opset 21, for 8-bit DoReFa weights, whose odd levels ±255 need 9
//! bits) with a per-channel scale that also carries the folded BatchNorm. The graph takes raw
//! pixels (0..255, float, NCHW) and normalises them itself.

use super::format::{IntKind, IntLayer, IntModel, Op, Term};
use anyhow::Result;

#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, v: u64) {
        super::format::put_varint(&mut self.0, v);
    }
    fn key(&mut self, field: u32, wire: u32) {
        self.varint(((field << 3) | wire) as u64);
    }
    fn int(&mut self, field: u32, v: i64) {
        self.key(field, 0);
        self.varint(v as u64);
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }
    fn msg(&mut self, field: u32, m: Pb) {
        self.bytes(field, &m.0);
    }
    fn float(&mut self, field: u32, v: f32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

const FLOAT: i64 = 1;
const UINT8: i64 = 2;
const INT8: i64 = 3;
const INT16: i64 = 5;

fn tensor(name: &str, dims: &[usize], dtype: i64, raw: Vec<u8>) -> Pb {
    let mut t = Pb::default();
    for d in dims {
        t.int(1, *d as i64);
    }
    t.int(2, dtype);
    t.str(8, name);
    t.bytes(9, &raw);
    t
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
    nodes: Vec<Pb>,
    inits: Vec<Pb>,
    count: usize,
}

impl Graph {
    fn name(&mut self, base: &str) -> String {
        self.count += 1;
        format!("{base}_{}", self.count)
    }

    fn init(&mut self, base: &str, dims: &[usize], dtype: i64, raw: Vec<u8>) -> String {
        let n = self.name(base);
        self.inits.push(tensor(&n, dims, dtype, raw));
        n
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.name(&op.to_lowercase());
        let mut n = Pb::default();
        for i in inputs {
            n.str(1, i);
        }
        n.str(2, &out);
        n.str(3, &format!("{out}_node"));
        n.str(4, op);
        for (name, a) in attrs {
            let mut p = Pb::default();
            p.str(1, name);
            match a {
                Attr::Int(v) => {
                    p.int(3, v);
                    p.int(20, 2);
                }
                Attr::Ints(v) => {
                    for x in v {
                        p.int(8, x);
                    }
                    p.int(20, 7);
                }
                Attr::Float(v) => {
                    p.float(2, v);
                    p.int(20, 1);
                }
            }
            n.msg(5, p);
        }
        self.nodes.push(n);
        out
    }

    /// Clip to the k-bit range, quantize to uint8, dequantize.
    fn qdq_act(&mut self, x: &str, l: &IntLayer) -> String {
        let step = l.act_step;
        let max = ((1u32 << l.a_bits) - 1) as f32 * step;
        let lo = self.init("clip_lo", &[], FLOAT, f32s(&[0.0]));
        let hi = self.init("clip_hi", &[], FLOAT, f32s(&[max]));
        let c = self.node("Clip", &[x, &lo, &hi], vec![]);
        let s = self.init("act_scale", &[], FLOAT, f32s(&[step]));
        let z = self.init("act_zero", &[], UINT8, vec![0]);
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
pub fn to_onnx(m: &IntModel) -> Result<Vec<u8>> {
    let mut g = Graph {
        nodes: Vec::new(),
        inits: Vec::new(),
        count: 0,
    };
    let i = &m.input;
    let c = i.channels;
    let k255 = g.init("k255", &[], FLOAT, f32s(&[255.0]));
    let mean = g.init("mean", &[1, c, 1, 1], FLOAT, f32s(&i.mean));
    let std = g.init("std", &[1, c, 1, 1], FLOAT, f32s(&i.std));
    let x = g.node("Div", &["pixels", &k255], vec![]);
    let x = g.node("Sub", &[&x, &mean], vec![]);
    let x = g.node("Div", &[&x, &std], vec![]);
    let mut regs: Vec<String> = vec![x];
    for op in &m.ops {
        let out = match op {
            Op::Conv { layer, src } => {
                let l = &m.layers[*layer];
                let xin = if *layer == 0 {
                    regs[*src].clone()
                } else {
                    g.qdq_act(&regs[*src].clone(), l)
                };
                let w = g.weight(l, &[l.out_ch, l.in_ch, l.kernel, l.kernel]);
                let b = g.init("bias", &[l.out_ch], FLOAT, f32s(&l.post_bias));
                let p = l.padding as i64;
                g.node(
                    "Conv",
                    &[&xin, &w, &b],
                    vec![
                        ("kernel_shape", Attr::Ints(vec![l.kernel as i64; 2])),
                        ("strides", Attr::Ints(vec![l.stride as i64; 2])),
                        ("pads", Attr::Ints(vec![p, p, p, p])),
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
        };
        regs.push(out);
    }
    let last = regs.last().expect("graph has ops").clone();
    let logits = {
        let mut n = Pb::default();
        n.str(1, &last);
        n.str(2, "logits");
        n.str(3, "logits_node");
        n.str(4, "Flatten");
        g.nodes.push(n);
        "logits"
    };
    let value_info = |name: &str, dims: Vec<Option<usize>>| {
        let mut shape = Pb::default();
        for d in dims {
            let mut dim = Pb::default();
            match d {
                Some(v) => dim.int(1, v as i64),
                None => dim.str(2, "N"),
            }
            shape.msg(1, dim);
        }
        let mut tt = Pb::default();
        tt.int(1, FLOAT);
        tt.msg(2, shape);
        let mut ty = Pb::default();
        ty.msg(1, tt);
        let mut vi = Pb::default();
        vi.str(1, name);
        vi.msg(2, ty);
        vi
    };
    let mut graph = Pb::default();
    for n in g.nodes {
        graph.msg(1, n);
    }
    graph.str(2, &format!("ccq_{}", m.name));
    for t in g.inits {
        graph.msg(5, t);
    }
    graph.msg(
        11,
        value_info("pixels", vec![None, Some(c), Some(i.height), Some(i.width)]),
    );
    graph.msg(12, value_info(logits, vec![None, Some(i.classes)]));
    let mut model = Pb::default();
    model.int(1, 8);
    model.str(2, "ccq");
    model.str(3, env!("CARGO_PKG_VERSION"));
    let mut opset = Pb::default();
    opset.str(1, "");
    opset.int(2, if needs_int16(m) { 21 } else { 13 });
    model.msg(8, opset);
    model.msg(7, graph);
    Ok(model.0)
}
