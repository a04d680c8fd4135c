//! Data-driven initialisation of quantizer parameters, and their rescaling when bits change.

use super::policy::{FLOAT_BITS, LayerBits, Policy};
use super::quantizer::{QuantScheme, WeightQuantizer, levels, lsq_init_step, signed_range};
use crate::model::Network;
use crate::model::layers::{Observer, QuantCtx};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;

/// Replaces the values of a 1-D parameter, keeping its id, device and gradient tracking.
pub fn set_values(p: &mut Param<Tensor<1>>, values: Vec<f32>) {
    let old = p.clone();
    *p = old.map(|t| {
        let device = t.device();
        let n = values.len();
        let fresh = Tensor::<1>::from_data(TensorData::new(values, [n]), &device);
        if device.is_autodiff() {
            fresh.require_grad()
        } else {
            fresh
        }
    });
}

/// Reads a 1-D parameter to the host.
pub fn values(p: &Param<Tensor<1>>) -> Vec<f32> {
    crate::host::to_f32(p.val())
}

fn percentile(mut v: Vec<f32>, q: f64) -> f32 {
    if v.is_empty() {
        return 1.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

/// Sets PACT clips and LSQ steps from data: the clip (and `step·(2^a-1)`) is the 99.9th
/// percentile of each layer's input activations over `batches`; LSQ weight steps follow the
/// LSQ paper (`2·mean|w|/√Qp`, per channel or per tensor).
pub fn calibrate(net: &mut Network, policy: &Policy, scheme: QuantScheme, batches: &[Tensor<4>]) {
    let observer = Observer::default();
    let float = vec![LayerBits::FLOAT; policy.bits.len()];
    let ctx = QuantCtx {
        scheme,
        bits: &float,
        observer: Some(&observer),
    };
    let valid = net.valid();
    for b in batches {
        let _ = valid.forward(b.clone(), &ctx);
    }
    let samples = observer.samples.into_inner();
    net.for_each_quant(&mut |index, q, w| {
        let bits = policy.bits.get(index).copied().unwrap_or(LayerBits::FLOAT);
        let clip = samples
            .get(&index)
            .map(|s| percentile(s.clone(), 0.999))
            .unwrap_or(1.0)
            .max(1e-3);
        set_values(&mut q.act_alpha, vec![clip]);
        let a = if bits.a == FLOAT_BITS { 8 } else { bits.a };
        set_values(&mut q.act_step, vec![clip / levels(a)]);
        let wb = if bits.w == FLOAT_BITS { 8 } else { bits.w };
        let [o, _] = w.dims();
        let steps = match scheme.weight {
            WeightQuantizer::LsqChannel => {
                let m = crate::host::to_f32(w.abs().mean_dim(1));
                m.into_iter().map(|v| lsq_init_step(v, wb, true)).collect()
            }
            _ => {
                let m = w.abs().mean().into_scalar::<f32>();
                vec![lsq_init_step(m, wb, true); o]
            }
        };
        set_values(&mut q.w_step, steps);
    });
}

/// Keeps LSQ's clipping range when layer `index` moves from `old` to `new` bits: the steps are
/// scaled by the ratio of the integer ranges. PACT clips are ranges already and stay.
pub fn rescale_steps(net: &mut Network, index: usize, old: LayerBits, new: LayerBits) {
    let ratio_a = |o: u32, n: u32| {
        if o >= FLOAT_BITS || n >= FLOAT_BITS {
            1.0
        } else {
            levels(o) / levels(n)
        }
    };
    let ratio_w = |o: u32, n: u32| {
        if o >= FLOAT_BITS || n >= FLOAT_BITS {
            1.0
        } else {
            signed_range(o).1 / signed_range(n).1
        }
    };
    net.for_each_quant(&mut |i, q, _| {
        if i != index {
            return;
        }
        let ra = ratio_a(old.a, new.a);
        let rw = ratio_w(old.w, new.w);
        let a: Vec<f32> = values(&q.act_step).into_iter().map(|v| v * ra).collect();
        set_values(&mut q.act_step, a);
        let w: Vec<f32> = values(&q.w_step).into_iter().map(|v| v * rw).collect();
        set_values(&mut q.w_step, w);
    });
}
