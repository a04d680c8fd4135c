//! Deterministic train / validation / bandit splits carved from the training files.

use super::dataset::{Subset, TrainTest};
use anyhow::{Result, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// How many training images go to validation and to the bandit slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSpec {
    /// Validation images (accuracy-driven stopping).
    pub val: usize,
    /// Bandit images (scoring the competition only).
    pub bandit: usize,
    /// Seed of the permutation that carves them.
    pub seed: u64,
}

impl Default for SplitSpec {
    fn default() -> Self {
        SplitSpec {
            val: 5000,
            bandit: 5000,
            seed: 0,
        }
    }
}

/// The four splits of a run.
#[derive(Clone, Debug)]
pub struct Splits {
    /// Fine-tuning / training images.
    pub train: Subset,
    /// Validation images.
    pub val: Subset,
    /// Bandit images.
    pub bandit: Subset,
    /// Test images (never used for a decision).
    pub test: Subset,
}

impl SplitSpec {
    /// Carves the splits; validation and bandit shrink proportionally on small datasets so that
    /// at least half of the training files stay for training.
    pub fn carve(&self, data: &TrainTest) -> Result<Splits> {
        let n = data.train.len();
        if n < 4 {
            bail!(
                "the training set has only {n} images; need at least 4 to carve train/validation/bandit splits"
            );
        }
        let (mut val, mut bandit) = (self.val, self.bandit);
        if val + bandit > n / 2 {
            let scale = (n / 2) as f64 / (val + bandit).max(1) as f64;
            val = ((val as f64 * scale) as usize).max(1);
            bandit = ((bandit as f64 * scale) as usize).max(1);
        }
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(self.seed));
        let sub = |r: std::ops::Range<usize>| Subset {
            data: data.train.clone(),
            idx: idx[r].to_vec(),
        };
        Ok(Splits {
            val: sub(0..val),
            bandit: sub(val..val + bandit),
            train: sub(val + bandit..n),
            test: Subset::all(data.test.clone()),
        })
    }
}
