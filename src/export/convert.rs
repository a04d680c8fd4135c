//! From a quantization-aware model to an integer model: weight codes, folded BatchNorm,
//! activation steps and the graph.

use super::format::{InputSpec, IntKind, IntLayer, IntModel, Op, Term, WIDE_FRAC};
use crate::data::Normalization;
use crate::host::to_f32;
use crate::model::layers::{BatchNorm, ConvBn, QuantParams};
use crate::model::{Model, QuantCtx};
use crate::quant::policy::{FLOAT_BITS, Policy};
use crate::quant::quantizer::{ActQuantizer, QuantScheme, WeightQuantizer, levels, signed_range};
use anyhow::{Result, bail};

/// Registers worth comparing against the float model, by name (`stem`, `block3`, `logits`).
pub type Probes = Vec<(String, usize)>;

fn act_step(q: &QuantParams, scheme: QuantScheme, bits: u32) -> f32 {
    match scheme.act {
        ActQuantizer::Pact => to_f32(&q.act_alpha)[0] / levels(bits),
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
        let (post_mul, post_bias) = fold_bn(&c.bn);
        let first = c.conv.index == 0;
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
            in_ch: i,
            out_ch: o,
            kernel: k,
            stride: c.conv.stride,
            padding: c.conv.padding,
            w_bits: bits.w,
            code_mul,
            code_off,
            w_scale,
            codes,
            a_bits: bits.a,
            act_step: act,
            post_mul,
            post_bias,
        });
        Ok(self.push(Op::Conv { layer: index, src }))
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
    // Largest fraction (≤ 2^-24) such that every normalised pixel fits 31 bits.
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
    let c = b.conv(&net.stem, &names[0], 0)?;
    let mut x = b.push(Op::Affine {
        terms: vec![Term::Acc { reg: c, layer: 0 }],
        relu: true,
    });
    if net.stem_pool != 0 {
        x = b.push(pool_op(x, net.stem_pool));
    }
    probes.push(("stem".to_string(), x));
    for (bi, blk) in net.blocks.iter().enumerate() {
        let c1 = b.conv(&blk.conv1, &names[blk.conv1.conv.index], x)?;
        let a1 = b.push(Op::Affine {
            terms: vec![Term::Acc {
                reg: c1,
                layer: blk.conv1.conv.index,
            }],
            relu: true,
        });
        x = match &blk.conv2 {
            None => a1,
            Some(conv2) => {
                let c2 = b.conv(conv2, &names[conv2.conv.index], a1)?;
                let sc = match &blk.shortcut {
                    Some(s) => {
                        let r = b.conv(s, &names[s.conv.index], x)?;
                        Term::Acc {
                            reg: r,
                            layer: s.conv.index,
                        }
                    }
                    None => Term::Wide { reg: x },
                };
                b.push(Op::Affine {
                    terms: vec![
                        Term::Acc {
                            reg: c2,
                            layer: conv2.conv.index,
                        },
                        sc,
                    ],
                    relu: true,
                })
            }
        };
        if blk.pool != 0 {
            x = b.push(pool_op(x, blk.pool));
        }
        probes.push((format!("block{bi}"), x));
    }
    if net.global_pool {
        x = b.push(Op::GlobalAvgPool { src: x });
    }
    let fc = &net.fc;
    let bits = b.ctx.bits(fc.index);
    let w = tch::no_grad(|| fc.quantized_weight(&b.ctx));
    let (o, i) = (w.size()[0] as usize, w.size()[1] as usize);
    let (codes, code_mul, code_off, w_scale) =
        weight_codes(&to_f32(&w), o, scheme, bits.w, &to_f32(&fc.quant.w_step));
    b.layers.push(IntLayer {
        name: names[fc.index].clone(),
        kind: IntKind::Linear,
        in_ch: i,
        out_ch: o,
        kernel: 1,
        stride: 1,
        padding: 0,
        w_bits: bits.w,
        code_mul,
        code_off,
        w_scale,
        codes,
        a_bits: bits.a,
        act_step: act_step(&fc.quant, scheme, bits.a),
        post_mul: Vec::new(),
        post_bias: to_f32(&fc.bias),
    });
    let l = b.push(Op::Linear {
        layer: fc.index,
        src: x,
    });
    let logits = b.push(Op::Affine {
        terms: vec![Term::Acc {
            reg: l,
            layer: fc.index,
        }],
        relu: false,
    });
    probes.push(("logits".to_string(), logits));
    let input = InputSpec {
        channels: spec.channels,
        height: spec.height,
        width: spec.width,
        mean: norm.mean.clone(),
        std: norm.std.clone(),
        frac_bits: frac_in,
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

fn pool_op(src: usize, window: usize) -> Op {
    match window {
        2 => Op::MaxPool {
            src,
            kernel: 2,
            stride: 2,
            padding: 0,
        },
        _ => Op::MaxPool {
            src,
            kernel: 3,
            stride: 2,
            padding: 1,
        },
    }
}
