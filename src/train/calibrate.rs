//! Data-driven initialisation of quantizer parameters, and their rescaling when bits change.

use crate::model::layers::{Observer, QuantCtx};
use crate::model::{Model, Network};
use crate::quant::policy::{FLOAT_BITS, LayerBits, Policy};
use crate::quant::quantizer::{
    QuantScheme, WeightQuantizer, act_levels, lsq_init_step, signed_range,
};
use tch::Tensor;

/// Replaces the values of a parameter in place (same storage, so it stays a view into the
/// network's flat buffer and keeps its gradient tracking).
pub fn set_values(p: &Tensor, values: &[f32]) {
    let src = Tensor::from_slice(values)
        .view(p.size().as_slice())
        .to_device(p.device());
    tch::no_grad(|| {
        let mut p = p.shallow_clone();
        p.copy_(&src);
    });
}

/// Reads a parameter to the host.
pub fn values(p: &Tensor) -> Vec<f32> {
    crate::host::to_f32(p)
}

/// Candidate clips [`mse_clip`] tries, evenly spaced up to the largest value seen.
pub const CLIP_CANDIDATES: usize = 200;

/// The clip that quantizes `values` (a layer's inputs, or their magnitudes for a signed layer)
/// on `[0, clip]` in `levels` steps (`2^a − 1`, or `2^(a−1) − 1` a side) with the least squared
/// error, among [`CLIP_CANDIDATES`] clips evenly spaced up to the largest value; the tighter of
/// equals. A clip trades rounding error (a wide one: coarse steps) against clipping error (a tight
/// one): at 8 bits it lies near the largest value, at 2 bits well inside it. 1 when no value is
/// positive.
pub fn mse_clip(values: &[f32], levels: f32) -> f32 {
    let max = values.iter().fold(0.0f32, |m, &v| m.max(v));
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let mut best = (f64::INFINITY, max);
    for i in 1..=CLIP_CANDIDATES {
        let clip = max * i as f32 / CLIP_CANDIDATES as f32;
        let step = clip / levels;
        let err: f64 = values
            .iter()
            .map(|&v| {
                let q = (v.clamp(0.0, clip) / step).round() * step;
                ((v - q) as f64).powi(2)
            })
            .sum();
        if err < best.0 {
            best = (err, clip);
        }
    }
    best.1
}

/// Sets PACT clips and LSQ steps from data: the clip (and `step·(2^a-1)`) is the one of least
/// squared quantization error ([`mse_clip`]) of each layer's input activations over `batches`
/// at the layer's activation bits (8 for a float layer); LSQ weight steps follow the
/// LSQ paper (`2·mean|w|/√Qp`, per channel or per tensor). Then BatchNorm's running statistics
/// are re-estimated for the quantized network ([`reestimate_batchnorm`]).
pub fn calibrate(net: &Network, policy: &Policy, scheme: QuantScheme, batches: &[Tensor]) {
    let observer = Observer::default();
    let float = vec![LayerBits::FLOAT; policy.bits.len()];
    let ctx = QuantCtx {
        observer: Some(&observer),
        ..QuantCtx::new(scheme, &float)
    };
    tch::no_grad(|| {
        for b in batches {
            let _ = net.forward(b, &ctx);
        }
    });
    let samples = observer.samples.into_inner();
    net.for_each_quant(&mut |index, q, w| {
        let bits = policy.bits[index];
        // A float layer's step is set as for 8 bits.
        let levels = act_levels(if bits.a == FLOAT_BITS { 8 } else { bits.a }, q.signed);
        let clip = samples
            .get(&index)
            .map(|s| {
                let v = if q.signed {
                    s.iter().map(|x| x.abs()).collect()
                } else {
                    s.clone()
                };
                mse_clip(&v, levels)
            })
            .unwrap_or(1.0)
            .max(1e-3);
        set_values(&q.act_alpha, &[clip]);
        set_values(&q.act_step, &[clip / levels]);
        let wb = if bits.w == FLOAT_BITS { 8 } else { bits.w };
        let o = w.size()[0] as usize;
        let steps: Vec<f32> = match scheme.weight {
            WeightQuantizer::LsqChannel => {
                let m = crate::host::to_f32(&w.abs().mean_dim(1, false, None));
                m.into_iter().map(|v| lsq_init_step(v, wb, true)).collect()
            }
            _ => {
                let m = crate::host::to_f32(&w.abs().mean(None))[0];
                vec![lsq_init_step(m, wb, true); o]
            }
        };
        set_values(&q.w_step, &steps);
    });
    reestimate_batchnorm(net, policy, scheme, batches);
}

/// The context that forwards re-estimation batch `k` (from 0) at `policy`: training mode, with
/// the momentum 1/(k+1) that makes the running statistics the average over the batches so far.
pub fn reestimation_ctx(scheme: QuantScheme, policy: &Policy, k: usize) -> QuantCtx<'_> {
    QuantCtx {
        bn_momentum: 1.0 / (k + 1) as f64,
        ..QuantCtx::new(scheme, &policy.bits).training()
    }
}

/// Re-estimates every BatchNorm's running statistics on `batches`, forwarded through the network
/// quantized at `policy`: a cumulative average over the batches (PyTorch's `momentum=None`),
/// starting from scratch. Quantized weights need it: DoReFa maps every layer's weights into
/// [-1, 1], so the statistics the full-precision model learned no longer describe the
/// convolutions' outputs (ResNet-20 fell to chance at W8A8 without it). A network without
/// BatchNorm is left as it is.
pub fn reestimate_batchnorm(
    net: &Network,
    policy: &Policy,
    scheme: QuantScheme,
    batches: &[Tensor],
) {
    if batches.is_empty() || !net.reset_batchnorm() {
        return;
    }
    tch::no_grad(|| {
        for (k, b) in batches.iter().enumerate() {
            let _ = net.forward(b, &reestimation_ctx(scheme, policy, k));
        }
    });
}

/// Keeps LSQ's clipping range when layer `index` moves from `old` to `new` bits: the steps are
/// scaled by the ratio of the integer ranges. PACT clips are ranges already and stay.
pub fn rescale_steps(net: &Network, index: usize, old: LayerBits, new: LayerBits) {
    let ratio_a = |o: u32, n: u32, signed: bool| {
        if o >= FLOAT_BITS || n >= FLOAT_BITS {
            1.0
        } else {
            act_levels(o, signed) / act_levels(n, signed)
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
        let ra = ratio_a(old.a, new.a, q.signed);
        let rw = ratio_w(old.w, new.w);
        tch::no_grad(|| {
            let _ = q.act_step.shallow_clone().g_mul_scalar_(ra as f64);
            let _ = q.w_step.shallow_clone().g_mul_scalar_(rw as f64);
        });
    });
}

/// The learned steps of layer `index` (LSQ activation and weight steps), copied.
pub fn saved_steps(model: &Model, index: usize) -> (tch::Tensor, tch::Tensor) {
    let mut out = None;
    model.net.for_each_quant(&mut |i, q, _| {
        if i == index {
            out = Some((q.act_step.copy(), q.w_step.copy()));
        }
    });
    out.expect("layer index within the model")
}

/// Puts back the steps [`saved_steps`] copied.
pub fn restore_steps(model: &Model, index: usize, saved: &(tch::Tensor, tch::Tensor)) {
    model.net.for_each_quant(&mut |i, q, _| {
        if i == index {
            tch::no_grad(|| {
                q.act_step.shallow_clone().copy_(&saved.0);
                q.w_step.shallow_clone().copy_(&saved.1);
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelKind, ModelSpec, build};
    use tch::{Device, Kind};

    /// Largest |a − b| over the largest |b|.
    fn rel_gap(a: &Tensor, b: &Tensor) -> f64 {
        let d = (a - b).abs().max().double_value(&[]);
        d / b.abs().max().double_value(&[])
    }

    /// Squared error of quantizing `v` on `[0, clip]` in `levels` steps.
    fn sq_err(v: &[f32], clip: f32, levels: f32) -> f64 {
        let step = clip / levels;
        v.iter()
            .map(|&x| ((x - (x.clamp(0.0, clip) / step).round() * step) as f64).powi(2))
            .sum()
    }

    #[test]
    fn the_clip_balances_rounding_against_clipping_at_each_bit_width() {
        // A ReLU-like heavy tail: exponential magnitudes, a quarter exactly zero.
        let mut s = 5u64;
        let v: Vec<f32> = (0..20_000)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                let u = ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                if i % 4 == 0 { 0.0 } else { -(u.ln()) as f32 }
            })
            .collect();
        let max = v.iter().fold(0.0f32, |m, &x| m.max(x));
        let mut sorted = v.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let p999 = sorted[(0.999 * (v.len() - 1) as f64).round() as usize];
        let (c8, c2) = (mse_clip(&v, 255.0), mse_clip(&v, 3.0));
        // Eight bits keep most of the range; two bits clip far inside it.
        assert!(c8 > 0.6 * max && c8 <= max, "{c8} of {max}");
        assert!(c2 < 0.6 * p999, "{c2} vs p99.9 {p999}");
        for (c, levels) in [(c8, 255.0), (c2, 3.0)] {
            for other in [max, p999, 0.5 * c, 1.5 * c] {
                assert!(sq_err(&v, c, levels) <= sq_err(&v, other, levels) + 1e-9);
            }
        }
        assert_eq!(
            mse_clip(&[0.0, -1.0], 3.0),
            1.0,
            "no positive value: the default"
        );
    }

    #[test]
    fn batchnorm_statistics_follow_the_quantized_network() {
        tch::manual_seed(3);
        let spec = ModelSpec {
            kind: ModelKind::Resnet20,
            channels: 3,
            height: 16,
            width: 16,
            classes: 10,
            graph: None,
        };
        let m = build(&spec, Device::Cpu).unwrap();
        let policy = Policy::uniform(&m.layer_names(), LayerBits { w: 8, a: 8 });
        let scheme = QuantScheme::default();
        assert_eq!(scheme.weight, WeightQuantizer::Dorefa);
        let x = Tensor::randn([64, 3, 16, 16], (Kind::Float, Device::Cpu));
        let ctx = QuantCtx::new(scheme, &policy.bits);
        let run = |c: &QuantCtx| tch::no_grad(|| m.net.forward(&x, c));
        // The statistics a trained full-precision model holds: this batch's, through FP layers.
        let float = Policy::float(&m.layer_names());
        let _ = run(&QuantCtx {
            bn_momentum: 1.0,
            ..QuantCtx::new(scheme, &float.bits).training()
        });
        // DoReFa rescales every layer's weights into [-1, 1]: those statistics no longer
        // describe its convolutions, so inference and batch statistics disagree.
        let stale = run(&ctx);
        calibrate(&m.net, &policy, scheme, &[x.shallow_clone()]);
        let eval = run(&ctx);
        // Calibrated on this one batch, the running statistics are its statistics (up to the
        // unbiased variance), so inference matches a training-mode pass over the same batch.
        let train = run(&ctx.training());
        assert!(rel_gap(&stale, &train) > 0.2, "{}", rel_gap(&stale, &train));
        assert!(rel_gap(&eval, &train) < 0.03, "{}", rel_gap(&eval, &train));
    }
}
