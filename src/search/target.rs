//! Search targets and the arms that compete: which bits a lowering touches, and what it saves.

use crate::model::LayerInfo;
use crate::model::cost::{ModelCost, model_cost};
use crate::quant::policy::{FLOAT_BITS, Ladder, LayerBits, Policy};
use crate::quant::quantizer::WeightQuantizer;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// When the search may stop.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// FP32 weight bits / quantized weight bits ≥ R.
    Compression(f64),
    /// Quantized weight size ≤ bytes (scales included).
    SizeBytes(u64),
    /// Average weight bits ≤ B.
    AvgBits(f64),
    /// BOPs per image ≤ N.
    Bops(u64),
}

impl Target {
    /// Checks the value: a compression above 1, average bits in (0, 32], a positive size or
    /// BOPs count.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Target::Compression(r) if !(r.is_finite() && r > 1.0) => {
                bail!("--target-compression must be above 1 (got {r})")
            }
            Target::AvgBits(b) if !(b > 0.0 && b <= 32.0) => {
                bail!("--target-avg-bits must be in (0, 32] (got {b})")
            }
            Target::SizeBytes(0) => bail!("--target-size must be at least 1 byte"),
            Target::Bops(0) => bail!("--target-bops must be at least 1"),
            _ => Ok(()),
        }
    }

    /// Whether `cost` meets the target.
    pub fn met(&self, cost: &ModelCost) -> bool {
        match *self {
            Target::Compression(r) => cost.compression >= r,
            Target::SizeBytes(b) => cost.size_bytes() <= b,
            Target::AvgBits(b) => cost.avg_bits <= b,
            Target::Bops(n) => cost.bops <= n,
        }
    }

    /// The flag that sets it, as a user types it.
    pub fn flag(&self) -> String {
        match self {
            Target::Compression(r) => format!("--target-compression {r}"),
            Target::SizeBytes(b) => format!("--target-size {b}"),
            Target::AvgBits(b) => format!("--target-avg-bits {b}"),
            Target::Bops(n) => format!("--target-bops {n}"),
        }
    }

    /// The value of the target's metric in `cost`, as text.
    pub fn describe(&self, cost: &ModelCost) -> String {
        match self {
            Target::Compression(r) => {
                format!("compression {:.2}x (target ≥ {r}x)", cost.compression)
            }
            Target::SizeBytes(b) => format!("size {} B (target ≤ {b} B)", cost.size_bytes()),
            Target::AvgBits(b) => {
                format!("average weight bits {:.3} (target ≤ {b})", cost.avg_bits)
            }
            Target::Bops(n) => format!("BOPs {} (target ≤ {n})", cost.bops),
        }
    }

    /// How much of the target's metric (weight bits, or BOPs for a BOPs target) `cost` must
    /// still shed to meet it; 0 once met.
    pub fn shortfall(&self, cost: &ModelCost) -> f64 {
        let over = match *self {
            Target::Compression(r) => cost.size_bits as f64 - cost.fp32_bits as f64 / r,
            Target::SizeBytes(b) => cost.size_bits as f64 - 8.0 * b as f64,
            Target::AvgBits(b) => (cost.avg_bits - b) * (cost.fp32_bits / 32) as f64,
            Target::Bops(n) => cost.bops as f64 - n as f64,
        };
        if self.met(cost) { 0.0 } else { over.max(0.0) }
    }

    /// Whether the metric is BOPs (then activation lowerings save something too).
    pub fn is_bops(&self) -> bool {
        matches!(self, Target::Bops(_))
    }
}

/// What one arm of the competition lowers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArmKind {
    /// Weights and input activations together (the reference).
    Tied,
    /// Weights only.
    Weight,
    /// Input activations only.
    Act,
}

/// One competitor: a layer, and which of its bit-widths moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    /// Layer index.
    pub layer: usize,
    /// What moves.
    pub kind: ArmKind,
}

/// The ladders and floor the search lowers on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lowering {
    /// Weight ladder (also the activation ladder when tied).
    pub ladder: Ladder,
    /// Activation ladder when untied.
    pub act_ladder: Ladder,
    /// Tied weights and activations.
    pub tied: bool,
    /// Floor: an arm lowered to bits ≤ floor goes to sleep.
    pub floor: u32,
}

impl Lowering {
    /// The arms of a model with `n` layers. The first layer reads the 8-bit input, so it has no
    /// activation arm.
    pub fn arms(&self, n: usize) -> Vec<Arm> {
        if self.tied {
            (0..n)
                .map(|layer| Arm {
                    layer,
                    kind: ArmKind::Tied,
                })
                .collect()
        } else {
            let mut v: Vec<Arm> = (0..n)
                .map(|layer| Arm {
                    layer,
                    kind: ArmKind::Weight,
                })
                .collect();
            v.extend((1..n).map(|layer| Arm {
                layer,
                kind: ArmKind::Act,
            }));
            v
        }
    }

    /// Starting policy: every layer at the top rung(s).
    pub fn start(&self, names: &[String]) -> Policy {
        let a = if self.tied {
            self.ladder.top()
        } else {
            self.act_ladder.top()
        };
        Policy::uniform(
            names,
            LayerBits {
                w: self.ladder.top(),
                a,
            },
        )
    }

    /// The bits moved by `arm` in `bits`.
    fn moved(&self, arm: Arm, bits: LayerBits) -> (u32, &Ladder) {
        match arm.kind {
            ArmKind::Tied | ArmKind::Weight => (bits.w, &self.ladder),
            ArmKind::Act => (bits.a, &self.act_ladder),
        }
    }

    /// Whether `arm` can still be lowered: above the floor and a rung below exists.
    pub fn awake(&self, arm: Arm, policy: &Policy) -> bool {
        let (b, ladder) = self.moved(arm, policy.bits[arm.layer]);
        b > self.floor && b != FLOAT_BITS && ladder.next_below(b).is_some()
    }

    /// `policy` with `arm` one rung lower (None if it cannot be lowered).
    pub fn lower(&self, arm: Arm, policy: &Policy) -> Option<Policy> {
        if !self.awake(arm, policy) {
            return None;
        }
        let mut p = policy.clone();
        let b = &mut p.bits[arm.layer];
        match arm.kind {
            ArmKind::Tied => {
                let next = self.ladder.next_below(b.w)?;
                b.w = next;
                b.a = next;
            }
            ArmKind::Weight => b.w = self.ladder.next_below(b.w)?,
            ArmKind::Act => b.a = self.act_ladder.next_below(b.a)?,
        }
        p.fix_input_layer();
        Some(p)
    }

    /// `policy` with `arm` at its ladder's top, where the search starts it (unchanged for a
    /// float layer).
    pub fn topped(&self, arm: Arm, policy: &Policy) -> Policy {
        let mut p = policy.clone();
        let top = self
            .start(std::slice::from_ref(&policy.names[arm.layer]))
            .bits[0];
        let b = &mut p.bits[arm.layer];
        if b.w == FLOAT_BITS {
            return p;
        }
        match arm.kind {
            ArmKind::Tied => *b = top,
            ArmKind::Weight => b.w = top.w,
            ArmKind::Act => b.a = top.a,
        }
        p.fix_input_layer();
        p
    }

    /// `policy` with `arm` one rung higher (None at the top, for float layers, and for activation
    /// arms, which never change a layer's size).
    pub fn raise(&self, arm: Arm, policy: &Policy) -> Option<Policy> {
        let mut p = policy.clone();
        let b = &mut p.bits[arm.layer];
        if b.w == FLOAT_BITS {
            return None;
        }
        let up = |ladder: &Ladder, v: u32| ladder.0.iter().rev().copied().find(|&r| r > v);
        match arm.kind {
            ArmKind::Tied => {
                let next = up(&self.ladder, b.w)?;
                b.w = next;
                b.a = next.max(b.a);
            }
            ArmKind::Weight => b.w = up(&self.ladder, b.w)?,
            ArmKind::Act => return None,
        }
        p.fix_input_layer();
        Some(p)
    }

    /// The weight ladder's rungs a layer can reach under the floor: what every method of a
    /// comparison may use, so that none gets bits the search cannot.
    pub fn reachable_ladder(&self) -> Ladder {
        // A layer above the floor may take one more step down: the highest rung at or below it.
        let rungs = &self.ladder.0;
        let low = rungs
            .iter()
            .copied()
            .find(|&r| r <= self.floor)
            .unwrap_or(rungs[rungs.len() - 1]);
        Ladder(rungs.iter().copied().filter(|&b| b >= low).collect())
    }

    /// The policy with every layer lowered as far as the floor allows.
    pub fn lowest(&self, names: &[String]) -> Policy {
        let mut p = self.start(names);
        let arms = self.arms(names.len());
        loop {
            let mut changed = false;
            for &arm in &arms {
                if let Some(q) = self.lower(arm, &p) {
                    p = q;
                    changed = true;
                }
            }
            if !changed {
                return p;
            }
        }
    }
}

/// What lowering `arm` saves in the target's metric (weight bits, or BOPs for a BOPs target).
pub fn saving(
    layers: &[LayerInfo],
    policy: &Policy,
    lowered: &Policy,
    scheme: WeightQuantizer,
    target: Option<&Target>,
) -> f64 {
    let a = model_cost(layers, policy, scheme);
    let b = model_cost(layers, lowered, scheme);
    if target.is_some_and(Target::is_bops) {
        a.bops.saturating_sub(b.bops) as f64
    } else {
        a.size_bits.saturating_sub(b.size_bits) as f64
    }
}

/// Refuses a target the ladder and floor cannot reach, naming the best reachable value.
pub fn check_reachable(
    target: &Target,
    layers: &[LayerInfo],
    lowering: &Lowering,
    scheme: WeightQuantizer,
) -> Result<()> {
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let best = model_cost(layers, &lowering.lowest(&names), scheme);
    if !target.met(&best) {
        let best_value = match target {
            Target::Compression(_) => format!("{:.3}x compression", best.compression),
            Target::SizeBytes(_) => format!("{} bytes", best.size_bytes()),
            Target::AvgBits(_) => format!("{:.3} average weight bits", best.avg_bits),
            Target::Bops(_) => format!("{} BOPs", best.bops),
        };
        bail!(
            "target cannot be met with ladder {:?} and floor {}: the best reachable is {best_value} (lower --floor-bits or extend the ladder)",
            lowering.ladder.0,
            lowering.floor
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn the_floor_bounds_every_method_ladder() {
        let l = |floor| Lowering {
            ladder: Ladder::default(),
            act_ladder: Ladder::default(),
            tied: true,
            floor,
        };
        assert_eq!(l(3).reachable_ladder(), Ladder(vec![8, 6, 4, 3]));
        assert_eq!(l(2).reachable_ladder(), Ladder(vec![8, 6, 4, 3, 2]));
        assert_eq!(l(5).reachable_ladder(), Ladder(vec![8, 6, 4]));
        // The same as the search's own lowest policy.
        let names: Vec<String> = (0..3).map(|i| format!("l{i}")).collect();
        for floor in 2..=8 {
            let low = l(floor).lowest(&names).bits[1].w;
            assert_eq!(
                *l(floor).reachable_ladder().0.last().unwrap(),
                low,
                "floor {floor}"
            );
        }
    }

    #[test]
    fn raise_is_one_rung_up() {
        let l = Lowering {
            ladder: Ladder::default(),
            act_ladder: Ladder::default(),
            tied: true,
            floor: 2,
        };
        let names: Vec<String> = ["stem", "mid", "fc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut p = Policy::uniform(&names, LayerBits { w: 3, a: 3 });
        p.fix_input_layer();
        let tied = |layer| Arm {
            layer,
            kind: ArmKind::Tied,
        };
        let up = l.raise(tied(1), &p).unwrap();
        assert_eq!(up.bits[1], LayerBits { w: 4, a: 4 });
        assert_eq!(up.bits[0], p.bits[0]);
        let stem = l.raise(tied(0), &p).unwrap();
        assert_eq!(
            stem.bits[0],
            LayerBits { w: 4, a: 8 },
            "the input stays 8-bit"
        );
        let top = Policy::uniform(&names, LayerBits { w: 8, a: 8 });
        assert!(l.raise(tied(1), &top).is_none());
        let act = Arm {
            layer: 1,
            kind: ArmKind::Act,
        };
        assert!(
            l.raise(act, &p).is_none(),
            "activations never change the size"
        );
    }

    fn layers() -> Vec<LayerInfo> {
        let l = crate::model::network::test_layer;
        vec![l("a", 100, 1000), l("b", 1000, 5000), l("c", 10, 10)]
    }

    fn tied() -> Lowering {
        Lowering {
            ladder: Ladder::default(),
            act_ladder: Ladder::default(),
            tied: true,
            floor: 3,
        }
    }

    #[test]
    fn lowering_walks_the_ladder_and_sleeps_at_the_floor() {
        let lw = tied();
        let names: Vec<String> = layers().iter().map(|l| l.name.clone()).collect();
        let mut p = lw.start(&names);
        assert_eq!(p.bits[1], LayerBits { w: 8, a: 8 });
        let arm = Arm {
            layer: 1,
            kind: ArmKind::Tied,
        };
        let mut seen = vec![];
        while let Some(q) = lw.lower(arm, &p) {
            p = q;
            seen.push(p.bits[1].w);
        }
        assert_eq!(seen, vec![6, 4, 3], "8→6→4→3, then asleep at the floor");
        assert!(!lw.awake(arm, &p));
        assert_eq!(p.bits[1].a, 3, "tied activations move with the weights");
        // the first layer keeps its 8-bit input
        let p0 = lw
            .lower(
                Arm {
                    layer: 0,
                    kind: ArmKind::Tied,
                },
                &lw.start(&names),
            )
            .unwrap();
        assert_eq!(p0.bits[0], LayerBits { w: 6, a: 8 });
        let floor2 = Lowering { floor: 2, ..tied() };
        assert_eq!(floor2.lowest(&names).bits[2].w, 2);
    }

    #[test]
    fn untied_arms() {
        let lw = Lowering {
            tied: false,
            act_ladder: Ladder(vec![8, 4]),
            ..tied()
        };
        let arms = lw.arms(3);
        assert_eq!(
            arms.len(),
            5,
            "3 weight arms, 2 activation arms (none for the input layer)"
        );
        let names: Vec<String> = layers().iter().map(|l| l.name.clone()).collect();
        let p = lw
            .lower(
                Arm {
                    layer: 2,
                    kind: ArmKind::Act,
                },
                &lw.start(&names),
            )
            .unwrap();
        assert_eq!(p.bits[2], LayerBits { w: 8, a: 4 });
    }

    #[test]
    fn target_accounting() {
        let ls = layers();
        let lw = tied();
        let names: Vec<String> = ls.iter().map(|l| l.name.clone()).collect();
        let start = lw.start(&names);
        let c = model_cost(&ls, &start, WeightQuantizer::Dorefa);
        assert_eq!(c.size_bits, 1110 * 8 + 3 * 32);
        assert!(Target::Compression(3.9).met(&c));
        assert!(!Target::Compression(4.0).met(&c));
        assert!(Target::SizeBytes(c.size_bytes()).met(&c));
        assert!(!Target::SizeBytes(c.size_bytes() - 1).met(&c));
        assert!(Target::AvgBits(8.0).met(&c));
        assert!(!Target::Bops(c.bops - 1).met(&c));
        let lowered = lw
            .lower(
                Arm {
                    layer: 1,
                    kind: ArmKind::Tied,
                },
                &start,
            )
            .unwrap();
        assert_eq!(
            saving(&ls, &start, &lowered, WeightQuantizer::Dorefa, None),
            2000.0
        );
        let bops_saved = saving(
            &ls,
            &start,
            &lowered,
            WeightQuantizer::Dorefa,
            Some(&Target::Bops(1)),
        );
        assert_eq!(bops_saved, 5000.0 * (64.0 - 36.0));
        // floor 3: at best every layer at 3 bits → 32·1110 / (3·1110 + 96) ≈ 10.36x
        assert!(
            check_reachable(
                &Target::Compression(10.0),
                &ls,
                &lw,
                WeightQuantizer::Dorefa
            )
            .is_ok()
        );
        let e = check_reachable(
            &Target::Compression(12.0),
            &ls,
            &lw,
            WeightQuantizer::Dorefa,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("10.3"), "{e}");
    }
}
