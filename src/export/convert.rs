//! From a quantization-aware model to an integer model: weight codes, folded BatchNorm,
//! activation steps and the graph.

use super::format::{InputSpec, IntKind, IntLayer, IntModel, Op, SCALE_FRAC, Term, WIDE_FRAC};
use crate::data::Normalization;
use crate::host::to_f32;
use crate::model::layers::{BatchNorm, ConvBn, QLinear, QuantParams};
use crate::model::{Model, NodeOp, QuantCtx};
use crate::quant::policy::{FLOAT_BITS, Policy};
use crate::quant::quantizer::{
    ActQuantizer, QuantScheme, WeightQuantizer, act_levels, levels, signed_range,
};
use anyhow::{Result, bail};

/// A register worth comparing against the float model: it holds a value of the float graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The node whose output it is.
    pub name: String,
    /// The float graph's value (see [`crate::model::Network::values`]).
    pub value: usize,
    /// The integer model's register.
    pub reg: usize,
}

/// Every probe of a converted model, in op order.
pub type Probes = Vec<Probe>;

/// The lowest activation level of a layer's input: 0 after a ReLU, else PACT's symmetric or
/// LSQ's two's-complement range.
fn a_min(q: &QuantParams, scheme: QuantScheme, bits: u32) -> i32 {
    match (q.signed, scheme.act) {
        (false, _) => 0,
        (true, ActQuantizer::Pact) => 1 - (1 << (bits - 1)),
        (true, ActQuantizer::Lsq) => -(1 << (bits - 1)),
    }
}

fn act_step(q: &QuantParams, scheme: QuantScheme, bits: u32) -> f32 {
    match scheme.act {
        ActQuantizer::Pact => to_f32(&q.act_alpha)[0] / act_levels(bits, q.signed),
        ActQuantizer::Lsq => to_f32(&q.act_step)[0],
    }
}

/// Integer codes of a quantized weight tensor `[out, rest]`.
fn weight_codes(
    wq: &[f32],
    out: usize,
    scheme: QuantScheme,
    bits: u32,
    steps: &[f32],
) -> (Vec<u32>, i32, i32, Vec<f32>) {
    let per = wq.len() / out;
    match scheme.weight {
        WeightQuantizer::Dorefa => {
            let n = levels(bits);
            let codes = wq
                .iter()
                .map(|&v| (((v + 1.0) / 2.0 * n).round().clamp(0.0, n)) as u32)
                .collect();
            (codes, 2, -(n as i32), vec![1.0 / n])
        }
        WeightQuantizer::LsqTensor | WeightQuantizer::LsqChannel => {
            let (qn, qp) = signed_range(bits);
            let scales: Vec<f32> = if scheme.weight == WeightQuantizer::LsqTensor {
                vec![steps[0]]
            } else {
                steps[..out].to_vec()
            };
            let codes = wq
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let s = if scales.len() == 1 {
                        scales[0]
                    } else {
                        scales[i / per]
                    };
                    ((v / s).round().clamp(qn, qp) - qn) as u32
                })
                .collect();
            (codes, 1, qn as i32, scales)
        }
    }
}

/// Fractional bits of the fixed-point input: at most `limit` (every pixel fits 31 bits), and
/// no more than balance the two roundings of the first layer. Its accumulator (integer weights
/// times inputs with `f` fractional bits) is requantized with the multiplier
/// `m·2^-f` in units of 2^-(WIDE_FRAC + 24), where `m` is the channel's weight scale times its
/// folded BatchNorm: that integer holds `48 − f + log2 m` bits, the input `f`. With all 24 on
/// the input a weight scale of 0.01 left the multiplier 17 bits (relative error 3·10^-6), and
/// the first layer's outputs then differed from the exact ones by up to 1.6·10^-5 (ResNet-18
/// fixture: the engine disagreed with the exported graph, evaluated in float64, on 13 of 5,000
/// images, far more than float32 rounding does). `f = (48 + log2 min m) / 2` makes both relative
/// errors about 2^-(f+1).
fn first_layer_frac(w_scale: &[f32], post_mul: &[f32], limit: u32) -> u32 {
    let m = (0..w_scale.len().max(post_mul.len()))
        .map(|c| {
            let s = w_scale[if w_scale.len() == 1 { 0 } else { c }] as f64;
            (s * post_mul.get(c).copied().unwrap_or(1.0) as f64).abs()
        })
        .filter(|m| *m > 0.0 && m.is_finite())
        .fold(f64::INFINITY, f64::min);
    if !m.is_finite() {
        return limit;
    }
    let balanced = ((48.0 + m.log2()) / 2.0).floor().clamp(8.0, 24.0) as u32;
    balanced.min(limit)
}

/// The per-channel affine after a conv: its BatchNorm folded with its bias, if any.
fn post_affine(c: &ConvBn, out: usize) -> (Vec<f32>, Vec<f32>) {
    let bias = c.conv.bias.as_ref().map(to_f32);
    match &c.bn {
        Some(bn) => {
            let (mul, mut add) = fold_bn(bn);
            if let Some(b) = bias {
                add.iter_mut()
                    .zip(b.iter().zip(&mul))
                    .for_each(|(a, (b, k))| *a += b * k);
            }
            (mul, add)
        }
        None => (vec![1.0; out], bias.unwrap_or_else(|| vec![0.0; out])),
    }
}

fn fold_bn(bn: &BatchNorm) -> (Vec<f32>, Vec<f32>) {
    let g = to_f32(&bn.gamma);
    let b = to_f32(&bn.beta);
    let m = to_f32(&bn.running_mean);
    let v = to_f32(&bn.running_var);
    let mul: Vec<f32> = g
        .iter()
        .zip(&v)
        .map(|(g, v)| g / (v + bn.epsilon as f32).sqrt())
        .collect();
    let bias = b
        .iter()
        .zip(&m)
        .zip(&mul)
        .map(|((b, m), k)| b - m * k)
        .collect();
    (mul, bias)
}

struct Builder<'a> {
    ctx: QuantCtx<'a>,
    layers: Vec<IntLayer>,
    ops: Vec<Op>,
    frac_in: u32,
}

impl Builder<'_> {
    fn push(&mut self, op: Op) -> usize {
        self.ops.push(op);
        self.ops.len()
    }

    fn conv(&mut self, c: &ConvBn, name: &str, src: usize) -> Result<usize> {
        let bits = self.ctx.bits(c.conv.index);
        let w = tch::no_grad(|| c.conv.quantized_weight(&self.ctx));
        let size = w.size();
        let (o, i, k) = (size[0] as usize, size[1] as usize, size[2] as usize);
        let steps = to_f32(&c.conv.quant.w_step);
        let (codes, code_mul, code_off, w_scale) =
            weight_codes(&to_f32(&w), o, self.ctx.scheme, bits.w, &steps);
        let (post_mul, post_bias) = post_affine(c, o);
        let first = c.conv.index == 0;
        if first {
            self.frac_in = first_layer_frac(&w_scale, &post_mul, self.frac_in);
        }
        let act = if first {
            2f32.powi(-(self.frac_in as i32))
        } else {
            act_step(&c.conv.quant, self.ctx.scheme, bits.a)
        };
        let index = self.layers.len();
        if index != c.conv.index {
            bail!("layer order mismatch at `{name}`");
        }
        self.layers.push(IntLayer {
            name: name.to_string(),
            kind: IntKind::Conv,
            in_ch: i * c.conv.groups,
            out_ch: o,
            kernel: k,
            stride: c.conv.stride,
            padding: c.conv.padding,
            groups: c.conv.groups,
            dilation: c.conv.dilation,
            w_bits: bits.w,
            code_mul,
            code_off,
            w_scale,
            codes,
            a_bits: bits.a,
            a_min: if first {
                0
            } else {
                a_min(&c.conv.quant, self.ctx.scheme, bits.a)
            },
            act_step: act,
            post_mul,
            post_bias,
        });
        Ok(self.push(Op::Conv { layer: index, src }))
    }

    fn linear(&mut self, fc: &QLinear, name: &str, src: usize) -> Result<usize> {
        let bits = self.ctx.bits(fc.index);
        let w = tch::no_grad(|| fc.quantized_weight(&self.ctx));
        let (o, i) = (w.size()[0] as usize, w.size()[1] as usize);
        let steps = to_f32(&fc.quant.w_step);
        let (codes, code_mul, code_off, w_scale) =
            weight_codes(&to_f32(&w), o, self.ctx.scheme, bits.w, &steps);
        if self.layers.len() != fc.index {
            bail!("layer order mismatch at `{name}`");
        }
        self.layers.push(IntLayer {
            name: name.to_string(),
            kind: IntKind::Linear,
            in_ch: i,
            out_ch: o,
            kernel: 1,
            stride: 1,
            padding: 0,
            groups: 1,
            dilation: 1,
            w_bits: bits.w,
            code_mul,
            code_off,
            w_scale,
            codes,
            a_bits: bits.a,
            a_min: a_min(&fc.quant, self.ctx.scheme, bits.a),
            act_step: act_step(&fc.quant, self.ctx.scheme, bits.a),
            post_mul: Vec::new(),
            post_bias: to_f32(&fc.bias),
        });
        Ok(self.push(Op::Linear {
            layer: fc.index,
            src,
        }))
    }

    /// The register holding `v`, summing its terms into one first if needed.
    fn materialize(&mut self, v: &mut Val) -> usize {
        if let Val::Terms(terms) = v {
            let reg = self.push(Op::Affine {
                terms: std::mem::take(terms),
                relu: false,
            });
            *v = Val::Reg(reg);
        }
        match v {
            Val::Reg(r) => *r,
            Val::Terms(_) => unreachable!("materialized above"),
        }
    }
}

/// Converts `model` (fake-quantized under `policy`) to an integer model. Also returns the
/// registers that correspond to the float model's stem, blocks and logits.
pub fn to_int_model(
    model: &Model,
    policy: &Policy,
    scheme: QuantScheme,
    norm: &Normalization,
) -> Result<(IntModel, Probes)> {
    for (n, b) in policy.names.iter().zip(&policy.bits) {
        if b.w == FLOAT_BITS || b.a == FLOAT_BITS {
            bail!(
                "layer `{n}` is not quantized ({b}); the integer engine needs every layer quantized"
            );
        }
    }
    let net = &model.net;
    let names = model.layer_names();
    let spec = &model.spec;
    // Largest fraction (≤ 2^-24) such that every normalised pixel fits 31 bits; the first
    // layer may lower it (`first_layer_frac`).
    let max_abs = norm
        .mean
        .iter()
        .zip(&norm.std)
        .map(|(m, s)| (m.max(1.0 - m)) / s)
        .fold(0.0f32, f32::max);
    let mut frac_in = WIDE_FRAC;
    while frac_in > 0 && max_abs as f64 * 2f64.powi(frac_in as i32) >= 2f64.powi(30) {
        frac_in -= 1;
    }
    let mut b = Builder {
        ctx: QuantCtx::new(scheme, &policy.bits),
        layers: Vec::new(),
        ops: Vec::new(),
        frac_in,
    };
    let mut probes = Vec::new();
    // What each float value is in the integer model: a register, or terms not yet summed.
    let mut vals: Vec<Option<Val>> = vec![Some(Val::Reg(0))];
    for (pos, node) in net.nodes.iter().enumerate() {
        let name = &model.graph.nodes[pos].name;
        let unsupported = |what: &str| {
            anyhow::anyhow!(
                "node `{name}`: the integer engine does not run {what} yet (supported: conv (grouped, dilated) and linear layers, BatchNorm, ReLU, Clip, Add, max-, average and global average pooling, without ceil mode)"
            )
        };
        let mut arg = |k: usize, b: &mut Builder| -> usize {
            let v = node.inputs[k];
            b.materialize(vals[v].as_mut().expect("values are computed in order"))
        };
        let val = match &node.op {
            NodeOp::Conv(c) => {
                let src = arg(0, &mut b);
                if (c.conv.index == 0) != (src == 0) {
                    bail!("node `{name}`: only the first layer may read the image, and it must");
                }
                let reg = b.conv(c, &names[c.conv.index], src)?;
                Val::Terms(vec![Term::Acc {
                    reg,
                    layer: c.conv.index,
                }])
            }
            NodeOp::Linear(l) => {
                let src = arg(0, &mut b);
                let reg = b.linear(l, &names[l.index], src)?;
                Val::Terms(vec![Term::Acc {
                    reg,
                    layer: l.index,
                }])
            }
            NodeOp::Relu => {
                let v = vals[node.inputs[0]].as_ref().expect("computed");
                Val::Reg(b.push(Op::Affine {
                    terms: v.terms(),
                    relu: true,
                }))
            }
            NodeOp::Add => {
                let mut terms = vals[node.inputs[0]].as_ref().expect("computed").terms();
                terms.extend(vals[node.inputs[1]].as_ref().expect("computed").terms());
                Val::Terms(terms)
            }
            &NodeOp::MaxPool(kernel, stride, padding, ceil) => {
                if ceil {
                    return Err(unsupported("max-pooling in ceil mode"));
                }
                let src = arg(0, &mut b);
                Val::Reg(b.push(Op::MaxPool {
                    src,
                    kernel,
                    stride,
                    padding,
                }))
            }
            NodeOp::GlobalAvgPool => {
                let src = arg(0, &mut b);
                Val::Reg(b.push(Op::GlobalAvgPool { src }))
            }
            NodeOp::Flatten => Val::Reg(arg(0, &mut b)),
            &NodeOp::Clip(lo, hi) => {
                let src = arg(0, &mut b);
                let wide =
                    |v: f64| (v * 2f64.powi(WIDE_FRAC as i32)).round().clamp(-1e18, 1e18) as i64;
                Val::Reg(b.push(Op::Clip {
                    src,
                    lo: wide(lo),
                    hi: wide(hi),
                }))
            }
            &NodeOp::AvgPool(kernel, stride, padding, ceil, count_pad) => {
                if ceil {
                    return Err(unsupported("average pooling in ceil mode"));
                }
                let src = arg(0, &mut b);
                Val::Reg(b.push(Op::AvgPool {
                    src,
                    kernel,
                    stride,
                    padding,
                    count_pad,
                }))
            }
            NodeOp::BatchNorm(bn) => {
                let src = arg(0, &mut b);
                let (mul, bias) = fold_bn(bn);
                let fixed = |v: f32, frac: u32| (v as f64 * 2f64.powi(frac as i32)).round() as i64;
                Val::Reg(b.push(Op::Scale {
                    src,
                    mul: mul.iter().map(|&m| fixed(m, SCALE_FRAC)).collect(),
                    bias: bias.iter().map(|&v| fixed(v, WIDE_FRAC)).collect(),
                }))
            }
        };
        if let Val::Reg(reg) = val
            && !matches!(node.op, NodeOp::Flatten)
        {
            probes.push(Probe {
                name: name.clone(),
                value: pos + 1,
                reg,
            });
        }
        vals.push(Some(val));
    }
    let out = b.materialize(vals[net.output].as_mut().expect("computed"));
    if probes.last().is_none_or(|p| p.reg != out) {
        probes.push(Probe {
            name: "logits".into(),
            value: net.output,
            reg: out,
        });
    }
    let input = InputSpec {
        channels: spec.channels,
        height: spec.height,
        width: spec.width,
        mean: norm.mean.clone(),
        std: norm.std.clone(),
        frac_bits: b.frac_in,
        classes: spec.classes,
    };
    Ok((
        IntModel {
            name: spec.kind.name().to_string(),
            input,
            layers: b.layers,
            ops: b.ops,
        },
        probes,
    ))
}

/// A float value in the integer model under construction.
enum Val {
    /// A wide fixed-point register.
    Reg(usize),
    /// Accumulators (and registers) whose sum it is, not yet requantized.
    Terms(Vec<Term>),
}

impl Val {
    fn terms(&self) -> Vec<Term> {
        match self {
            Val::Reg(reg) => vec![Term::Wide { reg: *reg }],
            Val::Terms(t) => t.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_layer_frac;

    /// The first layer's two roundings: the input's (2^-(f+1) absolute, on values of order 1) and
    /// its multiplier's (0.5 / (m · 2^(48 − f)) relative).
    fn errors(m: f64, f: u32) -> (f64, f64) {
        (
            2f64.powi(-(f as i32 + 1)),
            0.5 / (m * 2f64.powi(48 - f as i32)),
        )
    }

    #[test]
    fn the_first_layer_balances_input_and_multiplier_precision() {
        // Weight scale 0.01: all 24 bits on the input left the multiplier a 3e-6 error.
        let f = first_layer_frac(&[0.01, 0.5], &[1.0, 1.0], 24);
        assert_eq!(f, 20);
        let (input, mult) = errors(0.01, f);
        assert!(input < 1e-6 && mult < 1e-6, "{input:e} {mult:e}");
        let (_, old) = errors(0.01, 24);
        assert!(old > 2.5e-6, "{old:e}");
        // The folded BatchNorm multiplies the scale; per-tensor scales apply to every channel.
        assert_eq!(first_layer_frac(&[0.01], &[4.0, 100.0], 24), 21);
        // Never above what the pixels' range allows, and no scale to balance: that limit.
        assert_eq!(first_layer_frac(&[0.01], &[1.0], 18), 18);
        assert_eq!(first_layer_frac(&[0.0], &[1.0], 24), 24);
    }
}
