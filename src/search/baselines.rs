//! Baseline policies at a budget: uniform (all layers, or first/last kept at 8 bits),
//! Hessian-aware (HAWQ-style traces + exact allocation) and random.

use super::allocate::{Options, allocate};
use super::hessian::{Hvp, hutchinson};
use super::target::{Lowering, Target};
use crate::data::{Normalization, Subset, make_batch};
use crate::model::cost::{layer_size_bits, model_cost};
use crate::model::{LayerInfo, Model, QuantCtx};
use crate::quant::policy::{Ladder, LayerBits, Policy};
use crate::quant::quantizer::{QuantScheme, WeightQuantizer};
use crate::train::trainer::cross_entropy;
use anyhow::{Result, bail};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};

/// Comparison methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// CCQ search.
    Ccq,
    /// Hessian-aware allocation.
    Hawq,
    /// Every layer at the same bits.
    Uniform,
    /// Uniform, first and last layers at 8 bits.
    UniformEnds8,
    /// Random policy meeting the budget.
    Random,
}

impl Method {
    /// Display name.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Ccq => "ccq",
            Method::Hawq => "hawq",
            Method::Uniform => "uniform",
            Method::UniformEnds8 => "uniform-ends8",
            Method::Random => "random",
        }
    }
}

impl crate::names::Named for Method {
    const ALL: &'static [Self] = &[
        Method::Ccq,
        Method::Hawq,
        Method::Uniform,
        Method::UniformEnds8,
        Method::Random,
    ];
    const WHAT: &'static str = "method";
    fn name(&self) -> &'static str {
        Method::name(self)
    }
}
crate::from_str_by_name!(Method);

/// How a baseline sets each layer's activation bits. The baselines allocate weight bits only;
/// their activations follow the comparison's ladders, as CCQ's do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActBits {
    /// Tied to the layer's weight bits (the first layer reads the 8-bit input, so it keeps 8).
    Tied,
    /// Every layer's activations at these bits: the activation ladder's top when weights and
    /// activations are untied, where CCQ starts them (a size budget does not count them).
    Fixed(u32),
}

impl ActBits {
    /// The rule that keeps a baseline on `lowering`'s ladders.
    pub fn of(lowering: &Lowering) -> Self {
        if lowering.tied {
            ActBits::Tied
        } else {
            ActBits::Fixed(lowering.act_ladder.top())
        }
    }

    /// Layer `l`'s bits at weight bits `w`.
    pub fn layer(self, l: usize, w: u32) -> LayerBits {
        let a = match self {
            ActBits::Tied if l == 0 => 8,
            ActBits::Tied => w,
            ActBits::Fixed(a) => a,
        };
        LayerBits { w, a }
    }

    /// Whether `bits` (a policy, layer by layer) follows this rule.
    pub fn follows(self, bits: &[LayerBits]) -> bool {
        bits.iter()
            .enumerate()
            .all(|(l, b)| self.layer(l, b.w) == *b)
    }
}

/// The highest uniform rung meeting `target` (with first/last at 8 bits if `ends8`).
pub fn uniform(
    layers: &[LayerInfo],
    ladder: &Ladder,
    act: ActBits,
    target: &Target,
    scheme: WeightQuantizer,
    ends8: bool,
) -> Option<Policy> {
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let n = layers.len();
    ladder.0.iter().find_map(|&b| {
        let bits = (0..n)
            .map(|l| {
                if ends8 && (l == 0 || l == n - 1) {
                    act.layer(l, 8)
                } else {
                    act.layer(l, b)
                }
            })
            .collect();
        let p = Policy {
            names: names.clone(),
            bits,
        };
        target.met(&model_cost(layers, &p, scheme)).then_some(p)
    })
}

/// Lowers random layers one rung at a time until `target` is met.
pub fn random(
    layers: &[LayerInfo],
    ladder: &Ladder,
    act: ActBits,
    target: &Target,
    scheme: WeightQuantizer,
    rng: &mut impl Rng,
) -> Option<Policy> {
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let mut p = Policy {
        names,
        bits: (0..layers.len())
            .map(|l| act.layer(l, ladder.top()))
            .collect(),
    };
    loop {
        if target.met(&model_cost(layers, &p, scheme)) {
            return Some(p);
        }
        let lowerable: Vec<usize> = (0..layers.len())
            .filter(|&l| ladder.next_below(p.bits[l].w).is_some())
            .collect();
        let &l = lowerable.choose(rng)?;
        let b = ladder.next_below(p.bits[l].w)?;
        p.bits[l] = act.layer(l, b);
    }
}

/// `‖Q_b(W) − W‖²` for symmetric uniform max-abs quantization (scale-preserving, as HAWQ).
pub fn quant_error(w: &[f32], bits: u32) -> f64 {
    let max = w.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    let levels = ((1u32 << (bits - 1)) - 1).max(1) as f32;
    let s = max / levels;
    w.iter()
        .map(|x| ((x / s).round() * s - x) as f64)
        .map(|e| e * e)
        .sum()
}

/// Per-layer Hessian traces of the training loss of the full-precision `model` (BatchNorm on
/// running statistics) on the first `images` images of `data`, by Hutchinson's method with exact
/// Hessian-vector products (double backward).
pub fn hessian_traces(
    model: &Model,
    data: &Subset,
    norm: &Normalization,
    images: usize,
    samples: usize,
    rng: &mut impl Rng,
) -> Result<Vec<f64>> {
    let order: Vec<usize> = (0..images.min(data.len())).collect();
    let batch = make_batch(data, &order, norm, None, model.net.device())?;
    let float = Policy::float(&model.layer_names());
    let ctx = QuantCtx::new(QuantScheme::default(), &float.bits);
    let loss = cross_entropy(&model.net.forward(&batch.images, &ctx), &batch.labels);
    let weights = model.net.weights();
    let hvp = Hvp::new(&loss, &weights);
    let traces = hutchinson(&hvp, samples, rng);
    if let Some(l) = traces.iter().position(|t| !t.is_finite()) {
        bail!(
            "the Hessian trace of layer `{}` is not finite ({}): the FP model or its data hold non-finite values",
            model.layers[l].name,
            traces[l]
        );
    }
    Ok(traces)
}

/// HAWQ-style allocation: sensitivity `Ω_l(b) = (tr_l / n_l)·‖Q_b(W_l) − W_l‖²`, minimised
/// exactly (dynamic programming) under the budget in the target's metric; `None` when no
/// allocation on `ladder` meets it.
pub fn hawq(
    layers: &[LayerInfo],
    weights: &[Vec<f32>],
    traces: &[f64],
    ladder: &Ladder,
    act: ActBits,
    target: &Target,
    scheme: WeightQuantizer,
) -> Option<Policy> {
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let fp32: u64 = layers.iter().map(|l| l.params as u64 * 32).sum();
    let (budget, cost_of): (u64, Box<dyn Fn(usize, u32) -> u64>) = match *target {
        Target::Compression(r) => (
            (fp32 as f64 / r).floor() as u64,
            Box::new(|l, b| layer_size_bits(&layers[l], scheme, b)),
        ),
        Target::SizeBytes(bytes) => (
            bytes * 8,
            Box::new(|l, b| layer_size_bits(&layers[l], scheme, b)),
        ),
        Target::AvgBits(avg) => {
            let n: u64 = layers.iter().map(|l| l.params as u64).sum();
            (
                (avg * n as f64).floor() as u64,
                Box::new(|l, b| layers[l].params as u64 * b as u64),
            )
        }
        Target::Bops(n) => (
            n,
            Box::new(|l, b| {
                let t = act.layer(l, b);
                layers[l].macs * t.w as u64 * t.a as u64
            }),
        ),
    };
    let options: Vec<Options> = layers
        .iter()
        .enumerate()
        .map(|(l, info)| {
            ladder
                .0
                .iter()
                .map(|&b| {
                    (
                        b,
                        cost_of(l, b),
                        traces[l].max(0.0) / info.params as f64 * quant_error(&weights[l], b),
                    )
                })
                .collect()
        })
        .collect();
    // Exact in integer costs; coarser units only keep the table under ~20M cells.
    let unit = (budget / 20_000_000).max(1);
    let bits = allocate(&options, budget, unit)?;
    Some(Policy {
        names,
        bits: bits
            .iter()
            .enumerate()
            .map(|(l, &b)| act.layer(l, b))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LayerKind;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn layers() -> Vec<LayerInfo> {
        let l = |name: &str, params: usize| LayerInfo {
            name: name.into(),
            kind: LayerKind::Conv,
            in_channels: 1,
            out_channels: 4,
            kernel: 1,
            groups: 1,
            params,
            macs: params as u64 * 10,
            float_params: 8,
        };
        vec![l("stem", 100), l("a", 2000), l("b", 6000), l("fc", 500)]
    }

    #[test]
    fn every_method_meets_its_budget() {
        let ls = layers();
        let ladder = Ladder::default();
        let w: Vec<Vec<f32>> = ls
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (0..l.params)
                    .map(|j| ((j * 31 + i) % 17) as f32 / 17.0 - 0.5)
                    .collect()
            })
            .collect();
        let traces = vec![5.0, 1.0, 0.1, 3.0];
        let s = WeightQuantizer::Dorefa;
        for t in [
            Target::Compression(6.0),
            Target::Compression(10.0),
            Target::AvgBits(4.5),
            Target::Bops(2_000_000),
            Target::SizeBytes(5000),
        ] {
            let h = hawq(&ls, &w, &traces, &ladder, ActBits::Tied, &t, s).unwrap();
            assert!(t.met(&model_cost(&ls, &h, s)), "hawq {t:?}");
            let r = random(
                &ls,
                &ladder,
                ActBits::Tied,
                &t,
                s,
                &mut StdRng::seed_from_u64(3),
            )
            .unwrap();
            assert!(t.met(&model_cost(&ls, &r, s)), "random {t:?}");
            if let Some(u) = uniform(&ls, &ladder, ActBits::Tied, &t, s, false) {
                assert!(t.met(&model_cost(&ls, &u, s)), "uniform {t:?}");
            }
        }
        let tied_uniform = |r: f64, ends8: bool| {
            uniform(
                &ls,
                &ladder,
                ActBits::Tied,
                &Target::Compression(r),
                s,
                ends8,
            )
        };
        let u = tied_uniform(10.0, false).unwrap();
        assert!(
            u.bits.iter().all(|b| b.w == 3),
            "W3 is the highest uniform rung at 10x"
        );
        let e = tied_uniform(7.0, true).unwrap();
        assert_eq!((e.bits[0].w, e.bits[3].w), (8, 8));
        assert!(tied_uniform(17.0, false).is_none());
        let tied_hawq = |r: f64| {
            hawq(
                &ls,
                &w,
                &traces,
                &ladder,
                ActBits::Tied,
                &Target::Compression(r),
                s,
            )
        };
        assert!(tied_hawq(17.0).is_none());
        // The most sensitive layer per weight keeps more bits than the least sensitive one.
        let h = tied_hawq(8.0).unwrap();
        assert!(h.bits[0].w >= h.bits[2].w, "{:?}", h.bits);
    }

    #[test]
    fn untied_baselines_keep_activations_at_the_act_ladder_top() {
        let ls = layers();
        let ladder = Ladder::default();
        let w: Vec<Vec<f32>> = ls
            .iter()
            .map(|l| (0..l.params).map(|j| (j as f32 * 0.37).sin()).collect())
            .collect();
        let traces = vec![5.0, 1.0, 0.1, 3.0];
        let s = WeightQuantizer::Dorefa;
        let untied = Lowering {
            ladder: ladder.clone(),
            act_ladder: Ladder(vec![8]),
            tied: false,
            floor: 2,
        };
        let act = ActBits::of(&untied);
        assert_eq!(act, ActBits::Fixed(8));
        let t = Target::Compression(10.0);
        let policies = [
            hawq(&ls, &w, &traces, &ladder, act, &t, s).unwrap(),
            random(&ls, &ladder, act, &t, s, &mut StdRng::seed_from_u64(3)).unwrap(),
            uniform(&ls, &ladder, act, &t, s, false).unwrap(),
        ];
        for p in &policies {
            assert!(t.met(&model_cost(&ls, p, s)), "{:?}", p.bits);
            assert!(p.bits.iter().all(|b| b.a == 8), "{:?}", p.bits);
            assert!(p.bits.iter().any(|b| b.w < 8), "{:?}", p.bits);
            assert!(act.follows(&p.bits) && !ActBits::Tied.follows(&p.bits));
        }
        // Tied, the activations follow the weights except on the first layer.
        let tied = uniform(&ls, &ladder, ActBits::Tied, &t, s, false).unwrap();
        let a: Vec<u32> = tied.bits.iter().map(|b| b.a).collect();
        assert_eq!(a, [8, 3, 3, 3]);
        assert!(ActBits::Tied.follows(&tied.bits) && !act.follows(&tied.bits));
        // Under a BOPs budget the fixed activations are priced: W·8 per MAC, not W·W.
        let bops = Target::Bops(ls.iter().map(|l| l.macs * 4 * 8).sum());
        let h = hawq(&ls, &w, &traces, &ladder, act, &bops, s).unwrap();
        assert!(bops.met(&model_cost(&ls, &h, s)), "{:?}", h.bits);
        assert!(act.follows(&h.bits), "{:?}", h.bits);
    }

    #[test]
    fn quant_error_shrinks_with_bits() {
        let w: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let e: Vec<f64> = [2, 3, 4, 6, 8]
            .iter()
            .map(|&b| quant_error(&w, b))
            .collect();
        assert!(e.windows(2).all(|p| p[0] > p[1]), "{e:?}");
    }
}
