//! Cost model: weight size (scales included), compression vs FP32, average bits and BOPs.

use super::LayerInfo;
use crate::quant::policy::{FLOAT_BITS, LayerBits, Policy};
use crate::quant::quantizer::WeightQuantizer;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// Bits of one stored scale (an f32).
pub const SCALE_BITS: u64 = 32;

/// Cost of one layer under a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    /// Layer name.
    pub name: String,
    /// Number of weights.
    pub params: usize,
    /// Bits used.
    pub bits: LayerBits,
    /// Weight storage in bits, scales included.
    pub size_bits: u64,
    /// Bit operations per image: MACs × weight bits × activation bits.
    pub bops: u64,
}

/// Whole-model cost under a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCost {
    /// Per layer.
    pub layers: Vec<LayerCost>,
    /// Total quantized weight size in bits (scales included).
    pub size_bits: u64,
    /// FP32 size of the same weights in bits.
    pub fp32_bits: u64,
    /// `fp32_bits / size_bits`.
    pub compression: f64,
    /// Parameter-weighted mean weight bits.
    pub avg_bits: f64,
    /// Total BOPs per image.
    pub bops: u64,
    /// Float parameters kept beside the weights (biases, BatchNorm), folded at export.
    pub float_params: usize,
}

impl ModelCost {
    /// Weight size in bytes (rounded up).
    pub fn size_bytes(&self) -> u64 {
        self.size_bits.div_ceil(8)
    }
}

/// Number of weight scales a layer stores under `scheme` (float layers store none).
pub fn scale_count(layer: &LayerInfo, scheme: WeightQuantizer, w_bits: u32) -> u64 {
    if w_bits >= FLOAT_BITS {
        return 0;
    }
    match scheme {
        WeightQuantizer::LsqChannel => layer.out_channels as u64,
        WeightQuantizer::Dorefa | WeightQuantizer::LsqTensor => 1,
    }
}

/// Size in bits of one layer's weights at `w_bits` (scales included).
pub fn layer_size_bits(layer: &LayerInfo, scheme: WeightQuantizer, w_bits: u32) -> u64 {
    layer.params as u64 * w_bits as u64 + scale_count(layer, scheme, w_bits) * SCALE_BITS
}

/// Computes the cost of `policy` on `layers`.
pub fn model_cost(layers: &[LayerInfo], policy: &Policy, scheme: WeightQuantizer) -> ModelCost {
    let mut out = Vec::with_capacity(layers.len());
    for (l, b) in layers.iter().zip(&policy.bits) {
        out.push(LayerCost {
            name: l.name.clone(),
            params: l.params,
            bits: *b,
            size_bits: layer_size_bits(l, scheme, b.w),
            bops: l.macs * b.w as u64 * b.a as u64,
        });
    }
    let size_bits: u64 = out.iter().map(|c| c.size_bits).sum();
    let params: u64 = layers.iter().map(|l| l.params as u64).sum();
    let fp32_bits = params * FLOAT_BITS as u64;
    let weighted: f64 = out.iter().map(|c| c.params as f64 * c.bits.w as f64).sum();
    ModelCost {
        size_bits,
        fp32_bits,
        compression: fp32_bits as f64 / size_bits.max(1) as f64,
        avg_bits: weighted / params.max(1) as f64,
        bops: out.iter().map(|c| c.bops).sum(),
        float_params: layers.iter().map(|l| l.float_params).sum(),
        layers: out,
    }
}

/// Formats a count with a unit prefix (k, M, G, T).
pub fn human(n: f64) -> String {
    let units = [("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)];
    for (u, v) in units {
        if n >= v {
            return format!("{:.2}{u}", n / v);
        }
    }
    format!("{n:.0}")
}

/// A per-layer table: name, params, MACs, W/A bits, size, share of size, BOPs; then totals.
pub fn cost_table(layers: &[LayerInfo], cost: &ModelCost) -> String {
    let width = layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(4)
        .max(5);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<width$} {:>9} {:>9} {:>5} {:>5} {:>10} {:>6} {:>9}",
        "layer", "params", "MACs", "W", "A", "size(B)", "share", "BOPs"
    );
    for (l, c) in layers.iter().zip(&cost.layers) {
        let bits = |b: u32| {
            if b == FLOAT_BITS {
                "fp".to_string()
            } else {
                b.to_string()
            }
        };
        let _ = writeln!(
            s,
            "{:<width$} {:>9} {:>9} {:>5} {:>5} {:>10.1} {:>5.1}% {:>9}",
            l.name,
            l.params,
            human(l.macs as f64),
            bits(c.bits.w),
            bits(c.bits.a),
            c.size_bits as f64 / 8.0,
            100.0 * c.size_bits as f64 / cost.size_bits.max(1) as f64,
            human(c.bops as f64)
        );
    }
    let _ = writeln!(
        s,
        "total: {} weights, {:.1} kB quantized ({:.1} kB FP32), compression {:.2}x, avg weight bits {:.2}, {} BOPs/image; {} float params (bias/BN, folded at export)",
        layers.iter().map(|l| l.params).sum::<usize>(),
        cost.size_bits as f64 / 8000.0,
        cost.fp32_bits as f64 / 8000.0,
        cost.compression,
        cost.avg_bits,
        human(cost.bops as f64),
        cost.float_params
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LayerKind;

    fn conv() -> LayerInfo {
        // 16→32 3×3 conv on a 14×14 output.
        LayerInfo {
            name: "c".into(),
            kind: LayerKind::Conv,
            in_channels: 16,
            out_channels: 32,
            kernel: 3,
            groups: 1,
            params: 32 * 16 * 9,
            macs: 14 * 14 * 32 * 16 * 9,
            float_params: 64,
        }
    }

    #[test]
    fn hand_computed_layer() {
        let layers = vec![conv()];
        let policy = Policy {
            names: vec!["c".into()],
            bits: vec![LayerBits { w: 3, a: 4 }],
        };
        let c = model_cost(&layers, &policy, WeightQuantizer::Dorefa);
        // 4608 weights × 3 bits + one 32-bit scale
        assert_eq!(c.size_bits, 4608 * 3 + 32);
        assert_eq!(c.fp32_bits, 4608 * 32);
        assert!((c.compression - 147456.0 / 13856.0).abs() < 1e-12);
        assert_eq!(c.avg_bits, 3.0);
        assert_eq!(c.bops, 903_168 * 12);
        let per_ch = model_cost(&layers, &policy, WeightQuantizer::LsqChannel);
        assert_eq!(per_ch.size_bits, 4608 * 3 + 32 * 32);
        let float = model_cost(
            &layers,
            &Policy::float(&["c".to_string()]),
            WeightQuantizer::Dorefa,
        );
        assert_eq!(float.compression, 1.0);
        assert!(cost_table(&layers, &c).contains("compression 10.64x"));
    }
}
