//! What the integer engine could not keep exact: its registers against the fake-quantized
//! float model's values, node by node, and its predictions against the float model's, on real
//! images.
//!
//! The engine computes in fixed point: requantization multipliers are rounded to integers, the
//! normalised input to `frac_bits` fractional bits, and a value the float model puts exactly on
//! a rounding boundary may land one activation level apart. Such differences are rare and small;
//! this report says where they occur and whether they change any prediction.

use super::convert::Probes;
use super::engine::Engine;
use super::format::WIDE_FRAC;
use crate::host::to_f32;
use crate::model::{Model, QuantCtx};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Relative tolerance: a value differs when `|engine − float| > TOLERANCE × max |float|` over
/// the node's values for that image.
pub const TOLERANCE: f64 = 1e-3;

/// One node of the graph: how often the engine's value differs from the float model's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeCheck {
    /// The node (as in the graph; `logits` for the output).
    pub name: String,
    /// Values compared (over all images).
    pub values: u64,
    /// Values that differ beyond the tolerance.
    pub differ: u64,
    /// Largest `|engine − float|`.
    pub max_abs_diff: f64,
    /// Largest `|float|` (the scale of the differences).
    pub max_abs_value: f64,
}

/// The integer engine against the fake-quantized model on `images` images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntReport {
    /// Images compared.
    pub images: usize,
    /// Relative tolerance of a differing value ([`TOLERANCE`]).
    pub tolerance: f64,
    /// Images whose predicted class (first maximum logit) is the same.
    pub agree: usize,
    /// Largest `|engine logit − float logit|`.
    pub max_abs_logit_diff: f64,
    /// Every probed node, in graph order.
    pub nodes: Vec<NodeCheck>,
}

impl IntReport {
    /// Whether every compared value is within the tolerance and every prediction agrees.
    pub fn exact(&self) -> bool {
        self.agree == self.images && self.nodes.iter().all(|n| n.differ == 0)
    }

    /// The nodes with differing values, worst (largest fraction) first.
    pub fn inexact(&self) -> Vec<&NodeCheck> {
        let mut v: Vec<&NodeCheck> = self.nodes.iter().filter(|n| n.differ > 0).collect();
        let frac = |n: &NodeCheck| n.differ as f64 / n.values.max(1) as f64;
        v.sort_by(|a, b| frac(b).total_cmp(&frac(a)));
        v
    }
}

/// Compares `engine` (built from `model` by [`super::convert::to_int_model`], which returned
/// `probes`) with `model` fake-quantized under `ctx`, on `pixels` (raw `u8` images, CHW) whose
/// normalised form is `inputs` (`[n, c, h, w]`).
pub fn check(
    engine: &Engine,
    probes: &Probes,
    model: &Model,
    ctx: &QuantCtx,
    pixels: &[u8],
    inputs: &tch::Tensor,
) -> Result<IntReport> {
    let n = inputs.size()[0] as usize;
    if n == 0 || !pixels.len().is_multiple_of(n) {
        bail!("{} pixel values for {n} images", pixels.len());
    }
    let per = pixels.len() / n;
    let values = tch::no_grad(|| model.net.values(inputs, ctx));
    let floats: Vec<Vec<f32>> = probes.iter().map(|p| to_f32(&values[p.value])).collect();
    let scale = 2f64.powi(-(WIDE_FRAC as i32));
    let mut nodes: Vec<NodeCheck> = probes
        .iter()
        .map(|p| NodeCheck {
            name: p.name.clone(),
            values: 0,
            differ: 0,
            max_abs_diff: 0.0,
            max_abs_value: 0.0,
        })
        .collect();
    let (mut agree, mut max_logit) = (0, 0f64);
    let argmax = |v: &[f64]| {
        v.iter()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |b, (i, &x)| if x > b.1 { (i, x) } else { b },
            )
            .0
    };
    for (i, img) in pixels.chunks(per).enumerate() {
        let regs = engine.run_traced(img)?;
        for ((p, f), node) in probes.iter().zip(&floats).zip(&mut nodes) {
            let ints = &regs[p.reg];
            let len = f.len() / n;
            if ints.len() != len {
                bail!(
                    "node `{}`: the engine holds {} values, the float model {len}",
                    p.name,
                    ints.len()
                );
            }
            let f = &f[i * len..(i + 1) * len];
            let max = f.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
            let mut engine_vals = Vec::with_capacity(len);
            for (&q, &v) in ints.iter().zip(f) {
                let e = q as f64 * scale;
                let d = (e - v as f64).abs();
                if !d.is_finite() {
                    bail!("node `{}`: a non-finite value", p.name);
                }
                node.max_abs_diff = node.max_abs_diff.max(d);
                if d > TOLERANCE * max.max(1e-6) {
                    node.differ += 1;
                }
                engine_vals.push(e);
            }
            node.values += len as u64;
            node.max_abs_value = node.max_abs_value.max(max);
            if p.reg == probes.last().expect("at least the logits").reg {
                let float_vals: Vec<f64> = f.iter().map(|&v| v as f64).collect();
                agree += usize::from(argmax(&engine_vals) == argmax(&float_vals));
                for (e, v) in engine_vals.iter().zip(&float_vals) {
                    max_logit = max_logit.max((e - v).abs());
                }
            }
        }
    }
    Ok(IntReport {
        images: n,
        tolerance: TOLERANCE,
        agree,
        max_abs_logit_diff: max_logit,
        nodes,
    })
}
