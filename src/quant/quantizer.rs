//! Fake-quantization functions used in quantization-aware training.
//!
//! Every function returns a tensor whose *value* lies exactly on the k-bit grid of the quantizer
//! and whose *gradient* follows the straight-through estimator (STE): rounding is treated as the
//! identity in the backward pass, `x + (round(x) - x).detach()`.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which quantizer is applied to the weights of every quantizable layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActQuantizer {
    /// PACT: `clamp(x, 0, α)` with a learned clip α, k-bit unsigned.
    Pact,
    /// Learned step size, unsigned.
    Lsq,
}

impl crate::names::Named for WeightQuantizer {
    const ALL: &'static [Self] = &[
        WeightQuantizer::Dorefa,
        WeightQuantizer::LsqTensor,
        WeightQuantizer::LsqChannel,
    ];
    const WHAT: &'static str = "weight quantizer";
    fn name(&self) -> &'static str {
        match self {
            WeightQuantizer::Dorefa => "dorefa",
            WeightQuantizer::LsqTensor => "lsq-tensor",
            WeightQuantizer::LsqChannel => "lsq-channel",
        }
    }
}
crate::from_str_by_name!(WeightQuantizer);

impl crate::names::Named for ActQuantizer {
    const ALL: &'static [Self] = &[ActQuantizer::Pact, ActQuantizer::Lsq];
    const WHAT: &'static str = "activation quantizer";
    fn name(&self) -> &'static str {
        match self {
            ActQuantizer::Pact => "pact",
            ActQuantizer::Lsq => "lsq",
        }
    }
}
crate::from_str_by_name!(ActQuantizer);

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
pub fn ste_round(x: &Tensor) -> Tensor {
    x + (x.round() - x).detach()
}

/// DoReFa weight quantization to `bits` bits; values in [-1, 1] on a grid of `2^k` levels.
///
/// The rounding is libtorch's fused `fake_quantize_per_tensor_affine` on the [0, 1] grid of step
/// `1/(2^k-1)`: one autograd node whose gradient is the straight-through identity (every value
/// lies inside the grid, so its clipping mask is all ones).
pub fn dorefa_weight(w: &Tensor, bits: u32) -> Tensor {
    let t = w.tanh();
    let max = t.abs().max();
    let unit = t / (max * 2.0) + 0.5;
    let n = levels(bits) as i64;
    let q = unit.fake_quantize_per_tensor_affine(1.0 / n as f64, 0, 0, n);
    q * 2.0 - 1.0
}

/// LSQ quantization of `x` with step `step` (`[1]`, or `[C]` along `dim`) to the integer range
/// `[qn, qp]`; the step gets the LSQ gradient scaled by `1/sqrt(n·qp)`, `n` the values per step.
///
/// libtorch's fused learnable fake-quant op computes exactly this with its own backward. A
/// per-tensor step is expanded along `dim` (the expand's backward sums the per-channel step
/// gradients back into one), which keeps the step on the device: the per-tensor variant of the
/// op reads its scale to the host on every call.
pub fn lsq(x: &Tensor, step: &Tensor, dim: usize, qn: f32, qp: f32) -> Tensor {
    if x.dim() == 1 {
        // libtorch's per-channel backward mis-shapes the step gradient of a 1-D input.
        return lsq(&x.unsqueeze(0), step, 1, qn, qp).squeeze_dim(0);
    }
    let channels = x.size()[dim];
    let steps = step.size()[0].max(1);
    let per_step = x.numel() as i64 / steps;
    let g = 1.0 / ((per_step as f64) * qp as f64).sqrt();
    let s = if steps == 1 && channels != 1 {
        step.expand([channels], false)
    } else {
        step.shallow_clone()
    };
    let zero = Tensor::zeros([channels], (Kind::Float, x.device()));
    x.internal_fake_quantize_learnable_per_channel_affine(
        &s, &zero, dim as i64, qn as i64, qp as i64, g,
    )
}

/// PACT activation quantization: `clamp(x, 0, α)` on a k-bit unsigned grid of step `α/(2^k-1)`.
/// The gradient reaches α only where `x > α`, as in the PACT paper; the rounding is the fused
/// fake-quant op with the (detached) step as a device tensor.
pub fn pact(x: &Tensor, alpha: &Tensor, bits: u32) -> Tensor {
    let zero = Tensor::zeros([1], (Kind::Float, x.device()));
    // One clamp node: its backward sends the gradient to α where x > α.
    let y = x.clamp_tensor(Some(&zero), Some(alpha));
    let n = levels(bits) as i64;
    let step = alpha.detach() / n as f64;
    y.fake_quantize_per_tensor_affine_tensor_qparams(&step, &zero.to_kind(Kind::Int), 0, n)
}

/// Weight quantization of a layer; per-channel steps are along dimension 0 (output channels).
pub fn quantize_weight(w: &Tensor, step: &Tensor, scheme: WeightQuantizer, bits: u32) -> Tensor {
    if bits >= 32 {
        return w.shallow_clone();
    }
    match scheme {
        WeightQuantizer::Dorefa => dorefa_weight(w, bits),
        WeightQuantizer::LsqTensor | WeightQuantizer::LsqChannel => {
            let (qn, qp) = signed_range(bits);
            lsq(w, step, 0, qn, qp)
        }
    }
}

/// Activation quantization of a layer input: non-negative (after a ReLU) into `[0, α]` with
/// `2^bits − 1` levels, or, when `signed`, into `[−α, α]` with `2^(bits−1) − 1` levels a side.
/// `step` is LSQ's per-tensor step; channels are along dimension 1.
pub fn quantize_act(
    x: &Tensor,
    alpha: &Tensor,
    step: &Tensor,
    scheme: ActQuantizer,
    bits: u32,
    signed: bool,
) -> Tensor {
    if bits >= 32 {
        return x.shallow_clone();
    }
    match (scheme, signed) {
        (ActQuantizer::Pact, false) => pact(x, alpha, bits),
        (ActQuantizer::Pact, true) => pact_signed(x, alpha, bits),
        (ActQuantizer::Lsq, false) => lsq(x, step, 1, 0.0, levels(bits)),
        (ActQuantizer::Lsq, true) => {
            let (qn, qp) = signed_range(bits);
            lsq(x, step, 1, qn, qp)
        }
    }
}

/// Symmetric PACT for inputs that can be negative: clip to `[−α, α]`, then `2^(bits−1) − 1`
/// levels a side (α learns from both clipped tails).
pub fn pact_signed(x: &Tensor, alpha: &Tensor, bits: u32) -> Tensor {
    let y = x.clamp_tensor(Some(&alpha.neg()), Some(alpha));
    let n = signed_range(bits).1 as i64;
    let step = alpha.detach() / n as f64;
    let zero = Tensor::zeros([1], (Kind::Int, x.device()));
    y.fake_quantize_per_tensor_affine_tensor_qparams(&step, &zero, -n, n)
}

/// The number of positive activation levels at `bits`: `2^bits − 1`, or `2^(bits−1) − 1` when
/// `signed`.
pub fn act_levels(bits: u32, signed: bool) -> f32 {
    if signed {
        signed_range(bits).1
    } else {
        levels(bits)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_pact_is_symmetric_and_learns_from_both_tails() {
        let alpha = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let x = Tensor::from_slice(&[-2.0f32, -0.5, 0.2, 0.5, 3.0]);
        let y = pact_signed(&x, &alpha, 3);
        // 3 bits signed: 3 levels a side, step 1/3.
        let v = crate::host::to_f32(&y);
        let want = [-1.0, -2.0 / 3.0, 1.0 / 3.0, 2.0 / 3.0, 1.0];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
        y.sum(Kind::Float).backward();
        // d/dα: +1 from the clipped top, −1 from the clipped bottom.
        assert!(crate::host::to_f32(&alpha.grad())[0].abs() < 1e-6);
        let step = Tensor::from_slice(&[0.25f32]);
        let unsigned = quantize_act(&x, &alpha, &step, ActQuantizer::Pact, 3, false);
        assert_eq!(
            crate::host::to_f32(&unsigned)[0],
            0.0,
            "unsigned PACT drops negatives"
        );
        let lsq = quantize_act(&x, &alpha, &step, ActQuantizer::Lsq, 3, true);
        assert_eq!(
            crate::host::to_f32(&lsq)[0],
            -1.0,
            "signed 3-bit LSQ reaches 4 steps below 0"
        );
    }
}
