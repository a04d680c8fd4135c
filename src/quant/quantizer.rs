//! Fake-quantization functions used in quantization-aware training.
//!
//! Every function returns a tensor whose *value* lies exactly on the k-bit grid of the quantizer
//! and whose *gradient* follows the straight-through estimator (STE): rounding is treated as the
//! identity in the backward pass, `x + (round(x) - x).detach()`.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Which quantizer is applied to the weights of every quantizable layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WeightQuantizer {
    /// DoReFa: `tanh(w) / (2·max|tanh w|) + 0.5` quantized on [0, 1], mapped back to [-1, 1].
    Dorefa,
    /// Learned step size, one step for the whole tensor.
    LsqTensor,
    /// Learned step size, one step per output channel.
    LsqChannel,
}

/// Which quantizer is applied to the input activations of every quantizable layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ActQuantizer {
    /// PACT: `clamp(x, 0, α)` with a learned clip α, k-bit unsigned.
    Pact,
    /// Learned step size, unsigned.
    Lsq,
}

/// The pair of quantizers a model is trained with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantScheme {
    /// Weight quantizer.
    pub weight: WeightQuantizer,
    /// Activation quantizer.
    pub act: ActQuantizer,
}

impl Default for QuantScheme {
    fn default() -> Self {
        Self {
            weight: WeightQuantizer::Dorefa,
            act: ActQuantizer::Pact,
        }
    }
}

/// Number of steps between the lowest and highest level of a k-bit grid (`2^k - 1`).
pub fn levels(bits: u32) -> f32 {
    ((1u64 << bits) - 1) as f32
}

/// Signed LSQ integer range `[-2^(k-1), 2^(k-1) - 1]`.
pub fn signed_range(bits: u32) -> (f32, f32) {
    let half = (1u64 << (bits - 1)) as f32;
    (-half, half - 1.0)
}

/// Rounds to the nearest integer with a straight-through gradient.
pub fn ste_round<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() + (x.clone().round() - x).detach()
}

/// Reshapes a per-tensor (`[1]`) or per-channel (`[C]`, channel = dim 0) vector so that it
/// broadcasts against a tensor of rank `D` along dimension `dim`.
fn broadcast_on<const D: usize>(v: Tensor<1>, dim: usize) -> Tensor<D> {
    let n = v.dims()[0];
    let mut shape = [1usize; D];
    shape[dim] = n;
    v.reshape(shape)
}

/// DoReFa weight quantization to `bits` bits; values in [-1, 1] on a grid of `2^k` levels.
pub fn dorefa_weight<const D: usize>(w: Tensor<D>, bits: u32) -> Tensor<D> {
    let t = w.tanh();
    let max = t.clone().abs().max().reshape([1usize; D]);
    let unit = t / (max * 2.0) + 0.5;
    let n = levels(bits);
    let q = ste_round(unit * n) / n;
    q * 2.0 - 1.0
}

/// Gradient scaling trick of LSQ: the value of `s`, with its gradient multiplied by `g`.
fn grad_scale<const D: usize>(s: Tensor<D>, g: f32) -> Tensor<D> {
    let scaled = s.clone() * g;
    (s - scaled.clone()).detach() + scaled
}

/// LSQ quantization of `x` with step `step` (`[1]` or `[C]` along `dim`) to the integer range
/// `[qn, qp]`. The step receives the LSQ gradient, scaled by `1/sqrt(n·qp)`.
pub fn lsq<const D: usize>(
    x: Tensor<D>,
    step: Tensor<1>,
    dim: usize,
    qn: f32,
    qp: f32,
) -> Tensor<D> {
    let per_step = x.shape().num_elements() / step.dims()[0].max(1);
    let g = 1.0 / ((per_step as f32) * qp).sqrt();
    let s: Tensor<D> = broadcast_on(grad_scale(step, g), dim);
    let v = (x / s.clone()).clamp(qn, qp);
    ste_round(v) * s
}

/// PACT activation quantization: `clamp(x, 0, α)` on a k-bit unsigned grid of step `α/(2^k-1)`.
/// The gradient reaches α only where `x > α`, as in the PACT paper.
pub fn pact<const D: usize>(x: Tensor<D>, alpha: Tensor<1>, bits: u32) -> Tensor<D> {
    let shape = x.shape();
    let a: Tensor<D> = broadcast_on::<D>(alpha, 0).expand(shape);
    let y = x.clamp_min(0.0).min_pair(a.clone());
    let step = a.detach() / levels(bits);
    let q = (y.clone() / step.clone()).round() * step;
    y.clone() + (q - y).detach()
}

/// Weight quantization of a layer: `per_channel_dim` is the output-channel dimension (0).
pub fn quantize_weight<const D: usize>(
    w: Tensor<D>,
    step: Tensor<1>,
    scheme: WeightQuantizer,
    bits: u32,
) -> Tensor<D> {
    if bits >= 32 {
        return w;
    }
    match scheme {
        WeightQuantizer::Dorefa => dorefa_weight(w, bits),
        WeightQuantizer::LsqTensor | WeightQuantizer::LsqChannel => {
            let (qn, qp) = signed_range(bits);
            lsq(w, step, 0, qn, qp)
        }
    }
}

/// Activation quantization of a layer input (non-negative after ReLU).
pub fn quantize_act<const D: usize>(
    x: Tensor<D>,
    alpha: Tensor<1>,
    step: Tensor<1>,
    scheme: ActQuantizer,
    bits: u32,
) -> Tensor<D> {
    if bits >= 32 {
        return x;
    }
    match scheme {
        ActQuantizer::Pact => pact(x, alpha, bits),
        ActQuantizer::Lsq => lsq(x, step, 0, 0.0, levels(bits)),
    }
}

/// LSQ's initial step for a tensor with mean absolute value `mean_abs` at `bits` (paper: `2·E|x|/√Qp`).
pub fn lsq_init_step(mean_abs: f32, bits: u32, signed: bool) -> f32 {
    let qp = if signed {
        signed_range(bits).1
    } else {
        levels(bits)
    };
    (2.0 * mean_abs / qp.sqrt()).max(1e-8)
}
