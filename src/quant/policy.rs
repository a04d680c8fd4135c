//! Bit-width policies: which weight and activation bits every quantizable layer uses.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Bits meaning "not quantized" (float).
pub const FLOAT_BITS: u32 = 32;

/// The bits of one layer: its weights, and the input activations it multiplies them with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerBits {
    /// Weight bits (2..=8, or 32 for float).
    pub w: u32,
    /// Input activation bits (2..=8, or 32 for float).
    pub a: u32,
}

impl LayerBits {
    /// Full precision weights and activations.
    pub const FLOAT: LayerBits = LayerBits {
        w: FLOAT_BITS,
        a: FLOAT_BITS,
    };

    /// Parses `W/A`, e.g. `4/4`, or a single number used for both.
    pub fn parse(s: &str) -> Result<Self> {
        let (w, a) = match s.split_once('/') {
            Some((w, a)) => (w, a),
            None => (s, s),
        };
        let w: u32 = w
            .trim()
            .parse()
            .with_context(|| format!("bits `{s}`: expected W/A such as 4/4"))?;
        let a: u32 = a
            .trim()
            .parse()
            .with_context(|| format!("bits `{s}`: expected W/A such as 4/4"))?;
        let b = LayerBits { w, a };
        b.validate().with_context(|| format!("bits `{s}`"))?;
        Ok(b)
    }

    /// Checks both widths are 2..=8 or 32.
    pub fn validate(&self) -> Result<()> {
        for (what, v) in [("weight", self.w), ("activation", self.a)] {
            if !(v == FLOAT_BITS || (2..=8).contains(&v)) {
                bail!("{what} bits {v} out of range: use 2..8, or 32 for float");
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for LayerBits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |b: u32| {
            if b == FLOAT_BITS {
                "fp".to_string()
            } else {
                b.to_string()
            }
        };
        write!(f, "W{}A{}", show(self.w), show(self.a))
    }
}

/// A per-layer policy, in the order of the model's quantizable layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Layer names (dotted), in model order.
    pub names: Vec<String>,
    /// Bits per layer, parallel to `names`.
    pub bits: Vec<LayerBits>,
}

/// JSON form of a policy file: `{"layers": {"stem.conv": {"w": 4, "a": 8}, ...}}`.
#[derive(Serialize, Deserialize)]
struct PolicyFile {
    layers: BTreeMap<String, LayerBits>,
}

impl Policy {
    /// Every layer at the same bits. The first layer's input is the 8-bit image, so its
    /// activation bits are 8 whatever `bits.a` says.
    pub fn uniform(names: &[String], bits: LayerBits) -> Self {
        let mut p = Policy {
            names: names.to_vec(),
            bits: vec![bits; names.len()],
        };
        p.fix_input_layer();
        p
    }

    /// Full precision everywhere.
    pub fn float(names: &[String]) -> Self {
        Policy {
            names: names.to_vec(),
            bits: vec![LayerBits::FLOAT; names.len()],
        }
    }

    /// The layers whose bits `other` changes from this policy: name, bits here, bits there.
    pub fn changes_to(&self, other: &Policy) -> Vec<(&str, LayerBits, LayerBits)> {
        self.bits
            .iter()
            .zip(&other.bits)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(l, (a, b))| (self.names[l].as_str(), *a, *b))
            .collect()
    }

    /// The network input is an 8-bit image: the first layer's activation bits are 8 when the
    /// model is quantized, float when it is not.
    pub fn fix_input_layer(&mut self) {
        if let Some(b) = self.bits.first_mut() {
            b.a = if b.w == FLOAT_BITS { FLOAT_BITS } else { 8 };
        }
    }

    /// Whether any layer is quantized.
    pub fn is_quantized(&self) -> bool {
        self.bits
            .iter()
            .any(|b| b.w != FLOAT_BITS || b.a != FLOAT_BITS)
    }

    /// Reads a policy JSON file for a model whose layers are `names`. Every layer must be listed.
    pub fn load(path: &Path, names: &[String]) -> Result<Self> {
        let read = || -> Result<Self> {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read policy file {}", path.display()))?;
            Self::from_json(&text, names).with_context(|| format!("policy file {}", path.display()))
        };
        read().map_err(|e| crate::error::Error::bad_input(path, format!("{e:#}")).into())
    }

    /// Parses a policy from JSON (`{"layers": {name: {"w":..,"a":..}}}`).
    pub fn from_json(text: &str, names: &[String]) -> Result<Self> {
        let file: PolicyFile = serde_json::from_str(text).context("not a valid policy JSON")?;
        for name in file.layers.keys() {
            if !names.contains(name) {
                bail!(
                    "unknown layer `{name}`; the model's layers are: {}",
                    names.join(", ")
                );
            }
        }
        let mut bits = Vec::with_capacity(names.len());
        for name in names {
            let b = file
                .layers
                .get(name)
                .with_context(|| format!("layer `{name}` is missing"))?;
            b.validate().with_context(|| format!("layer `{name}`"))?;
            bits.push(*b);
        }
        if let Some(first) = bits.first()
            && first.w != FLOAT_BITS
            && first.a != 8
        {
            bail!(
                "layer `{}` reads the 8-bit network input: its activation bits must be 8 (got {})",
                names[0],
                first.a
            );
        }
        Ok(Policy {
            names: names.to_vec(),
            bits,
        })
    }

    /// JSON text of this policy (the format `from_json` reads).
    pub fn to_json(&self) -> String {
        let layers = self
            .names
            .iter()
            .cloned()
            .zip(self.bits.iter().copied())
            .collect();
        serde_json::to_string_pretty(&PolicyFile { layers }).expect("policy serializes")
    }
}

/// The ordered list of allowed bit-widths, highest first (default `[8, 6, 4, 3, 2]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ladder(pub Vec<u32>);

impl Default for Ladder {
    fn default() -> Self {
        Ladder(vec![8, 6, 4, 3, 2])
    }
}

impl Ladder {
    /// Parses `8,6,4,3,2`; rungs must be strictly decreasing within 2..=8.
    pub fn parse(s: &str) -> Result<Self> {
        let rungs: Vec<u32> = s
            .split(',')
            .map(|r| {
                r.trim()
                    .parse::<u32>()
                    .with_context(|| format!("ladder `{s}`: `{r}` is not a number"))
            })
            .collect::<Result<_>>()?;
        let l = Ladder(rungs);
        l.validate()?;
        Ok(l)
    }

    /// Checks the ladder is non-empty, strictly decreasing, within 2..=8.
    pub fn validate(&self) -> Result<()> {
        if self.0.is_empty() {
            bail!("the bit ladder is empty");
        }
        if self.0.iter().any(|b| !(2..=8).contains(b)) {
            bail!("ladder {:?}: every rung must be within 2..8", self.0);
        }
        if self.0.windows(2).any(|w| w[0] <= w[1]) {
            bail!("ladder {:?}: rungs must be strictly decreasing", self.0);
        }
        Ok(())
    }

    /// The top rung.
    pub fn top(&self) -> u32 {
        self.0[0]
    }

    /// The rung below `bits`, if any. Bits not on the ladder step to the next lower rung.
    pub fn next_below(&self, bits: u32) -> Option<u32> {
        self.0.iter().copied().find(|&r| r < bits)
    }

    /// The lowest rung at or above `floor` (where lowering stops).
    pub fn lowest_at_or_above(&self, floor: u32) -> u32 {
        self.0
            .iter()
            .copied()
            .filter(|&r| r >= floor)
            .min()
            .unwrap_or(self.top())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["stem.conv".into(), "block0.conv1".into(), "fc".into()]
    }

    #[test]
    fn parses_bits() {
        assert_eq!(LayerBits::parse("4/3").unwrap(), LayerBits { w: 4, a: 3 });
        assert_eq!(LayerBits::parse("6").unwrap(), LayerBits { w: 6, a: 6 });
        assert_eq!(LayerBits::parse("32/8").unwrap(), LayerBits { w: 32, a: 8 });
        assert!(LayerBits::parse("1/4").is_err());
        assert!(LayerBits::parse("9/4").is_err());
        assert!(LayerBits::parse("x/4").is_err());
    }

    #[test]
    fn policy_json_round_trip_and_errors() {
        let mut p = Policy::uniform(&names(), LayerBits { w: 4, a: 4 });
        assert_eq!(
            p.bits[0],
            LayerBits { w: 4, a: 8 },
            "input layer reads 8-bit pixels"
        );
        p.bits[2] = LayerBits { w: 2, a: 3 };
        let back = Policy::from_json(&p.to_json(), &names()).unwrap();
        assert_eq!(back, p);

        let missing = r#"{"layers": {"stem.conv": {"w": 4, "a": 8}}}"#;
        let e = format!("{:#}", Policy::from_json(missing, &names()).unwrap_err());
        assert!(e.contains("block0.conv1") && e.contains("missing"), "{e}");

        let unknown = r#"{"layers": {"nope": {"w": 4, "a": 4}}}"#;
        let e = format!("{:#}", Policy::from_json(unknown, &names()).unwrap_err());
        assert!(e.contains("unknown layer `nope`"), "{e}");

        let bad = r#"{"layers": {"stem.conv": {"w": 4, "a": 8}, "block0.conv1": {"w": 12, "a": 4}, "fc": {"w": 4, "a": 4}}}"#;
        let e = format!("{:#}", Policy::from_json(bad, &names()).unwrap_err());
        assert!(e.contains("block0.conv1") && e.contains("12"), "{e}");

        let first = r#"{"layers": {"stem.conv": {"w": 4, "a": 4}, "block0.conv1": {"w": 4, "a": 4}, "fc": {"w": 4, "a": 4}}}"#;
        assert!(Policy::from_json(first, &names()).is_err());
        assert!(Policy::from_json("{", &names()).is_err());
    }

    #[test]
    fn ladder_steps() {
        let l = Ladder::default();
        assert_eq!(l.next_below(8), Some(6));
        assert_eq!(l.next_below(6), Some(4));
        assert_eq!(l.next_below(5), Some(4));
        assert_eq!(l.next_below(2), None);
        assert_eq!(l.lowest_at_or_above(3), 3);
        assert!(Ladder::parse("8,8,4").is_err());
        assert!(Ladder::parse("4,6").is_err());
        assert!(Ladder::parse("8,1").is_err());
        assert_eq!(Ladder::parse("8, 4,2").unwrap().0, vec![8, 4, 2]);
    }
}
