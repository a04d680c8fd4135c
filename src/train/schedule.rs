//! Learning-rate schedules: cosine annealing (with warm restarts) and constant phases.

use serde::{Deserialize, Serialize};

/// Cosine from `hi` to `lo` at position `t ∈ [0, 1]`.
pub fn cosine(hi: f64, lo: f64, t: f64) -> f64 {
    lo + 0.5 * (hi - lo) * (1.0 + (std::f64::consts::PI * t.clamp(0.0, 1.0)).cos())
}

/// The CCQ fine-tuning schedule of one step (a warm restart every step, as in SGDR):
/// `const_epochs` at `lr_min`, then a cosine from `lr_max` to `lr_min` over `cosine_epochs`,
/// then `lr_min`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarmRestart {
    /// Low learning rate (reference: the `--lr` argument).
    pub lr_min: f64,
    /// Peak of the cosine phase (reference: 1e-3 on ImageNet).
    pub lr_max: f64,
    /// Epochs at `lr_min` before the cosine (reference: 5).
    pub const_epochs: usize,
    /// Length of the cosine phase in epochs (reference: 10).
    pub cosine_epochs: usize,
}

impl WarmRestart {
    /// Learning rate at fractional epoch `e` (0-based; `e = 5.5` is halfway through epoch 5).
    pub fn lr(&self, e: f64) -> f64 {
        let c0 = self.const_epochs as f64;
        let c1 = c0 + self.cosine_epochs as f64;
        if e < c0 || self.cosine_epochs == 0 {
            self.lr_min
        } else if e < c1 {
            cosine(
                self.lr_max,
                self.lr_min,
                (e - c0) / self.cosine_epochs as f64,
            )
        } else {
            self.lr_min
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_restart_phases() {
        let s = WarmRestart {
            lr_min: 1e-4,
            lr_max: 1e-3,
            const_epochs: 5,
            cosine_epochs: 10,
        };
        assert_eq!(s.lr(0.0), 1e-4);
        assert_eq!(s.lr(4.9), 1e-4);
        assert!((s.lr(5.0) - 1e-3).abs() < 1e-12);
        assert!((s.lr(10.0) - 5.5e-4).abs() < 1e-12);
        assert!(s.lr(14.9) < 1.1e-4);
        assert_eq!(s.lr(20.0), 1e-4);
        assert!((cosine(1.0, 0.0, 0.5) - 0.5).abs() < 1e-12);
    }
}
