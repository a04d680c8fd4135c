//! The settings of a resumable training job, recorded in its checkpoint: a resumed job must
//! repeat them to continue exactly where the interrupted one stopped.

use super::optim::Hyper;
use crate::data::{Augment, DataSource, SplitSpec};
use serde::{Deserialize, Serialize};

/// What a training job's result depends on besides its starting weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// Epochs the job asks for (the learning-rate schedule spans them).
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Seed of shuffling and augmentation.
    pub seed: u64,
    /// Optimiser settings.
    pub hyper: Hyper,
    /// Training augmentation.
    pub augment: Option<Augment>,
}

impl RunSettings {
    /// The settings that differ from `then` (the recorded ones), as `flag (then, now)`.
    pub fn differences(&self, then: &RunSettings) -> Vec<String> {
        let mut d = Vec::new();
        let mut check = |flag: &str, a: String, b: String| {
            if a != b {
                d.push(format!("{flag} ({a} then, {b} now)"));
            }
        };
        check("--epochs", then.epochs.to_string(), self.epochs.to_string());
        check("--lr", then.lr.to_string(), self.lr.to_string());
        check("--seed", then.seed.to_string(), self.seed.to_string());
        let (h, g) = (&then.hyper, &self.hyper);
        check(
            "--batch-size",
            h.batch_size.to_string(),
            g.batch_size.to_string(),
        );
        check("--momentum", h.momentum.to_string(), g.momentum.to_string());
        check(
            "--weight-decay",
            h.weight_decay.to_string(),
            g.weight_decay.to_string(),
        );
        check(
            "the augmentation",
            format!("{:?}", then.augment),
            format!("{:?}", self.augment),
        );
        d
    }
}

/// Where two descriptions of a dataset differ in what a training job sees: format, channels,
/// image size and resize, and how the validation and bandit images are carved (the directory
/// may move, and how it is read does not change the images).
pub fn data_differences(
    then: (&DataSource, &SplitSpec),
    now: (&DataSource, &SplitSpec),
) -> Vec<String> {
    let mut d = Vec::new();
    let ((a, s), (b, t)) = (then, now);
    if a.format != b.format {
        d.push(format!(
            "--format ({:?} then, {:?} now)",
            a.format, b.format
        ));
    }
    if a.channels != b.channels || a.size != b.size || a.resize != b.resize {
        d.push(format!(
            "the image shape ({}×{:?} resize {:?} then, {}×{:?} resize {:?} now)",
            a.channels, a.size, a.resize, b.channels, b.size, b.resize
        ));
    }
    if s != t {
        d.push(format!("the split ({s:?} then, {t:?} now)"));
    }
    d
}
