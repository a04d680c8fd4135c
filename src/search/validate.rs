//! Checks of a search's settings and of a saved search state, run for new and resumed runs alike:
//! a `state.json` is as untrusted as any other file read from disk.

use super::config::{SearchConfig, StopRule};
use super::state::SearchState;
use super::target::Target;
use anyhow::{Context, Result, bail};
use std::path::{Component, Path};

/// Version of `state.json` this build writes and reads.
pub const STATE_VERSION: u32 = 1;

fn finite_in(v: f64, lo: f64, hi: f64, what: &str) -> Result<()> {
    if !(v.is_finite() && v >= lo && v <= hi) {
        bail!("{what} = {v} is outside [{lo}, {hi}]");
    }
    Ok(())
}

impl SearchConfig {
    /// Checks every setting: ladders, floor, η and λ, epochs, learning rates, batch, target.
    pub fn validate(&self) -> Result<()> {
        let l = &self.lowering;
        l.ladder.validate().context("weight ladder")?;
        l.act_ladder.validate().context("activation ladder")?;
        if !(2..=8).contains(&l.floor) {
            bail!("floor bits {} must be within 2..8", l.floor);
        }
        finite_in(self.eta, 0.0, 1e6, "η")?;
        finite_in(self.reward.carry, 0.0, 0.999, "weight carry")?;
        if let Some(why) = self.reward.conflict() {
            bail!("{why}");
        }
        let lam = &self.lambda;
        finite_in(lam.odd, 0.0, 1.0, "λ on odd steps")?;
        finite_in(lam.a, -1e6, 1e6, "λ slope")?;
        finite_in(lam.b, -1e6, 1e6, "λ constant")?;
        let ft = &self.finetune;
        if ft.max_epochs == 0 || ft.min_epochs > ft.max_epochs {
            bail!(
                "fine-tuning epochs: need 1 ≤ max ({}) and min ({}) ≤ max",
                ft.max_epochs,
                ft.min_epochs
            );
        }
        let s = &ft.schedule;
        finite_in(s.lr_min, 0.0, 1e3, "fine-tuning lr")?;
        finite_in(s.lr_max, 0.0, 1e3, "fine-tuning peak lr")?;
        match ft.stop {
            StopRule::BestRatio(r) => finite_in(r, 0.0, 1.0, "stop ratio")?,
            StopRule::WithinPoints(p) => finite_in(p, 0.0, 100.0, "stop points")?,
        }
        if ft.epoch_samples == Some(0) {
            bail!("images per fine-tuning epoch must be at least 1");
        }
        if self.trial_images == Some(0) {
            bail!(
                "--trial-images must be at least 1 (it is the number of bandit images each trial is scored on)"
            );
        }
        if ft.retries > 20 {
            bail!("{} fine-tuning retries (at most 20)", ft.retries);
        }
        let h = &self.hyper;
        if h.batch_size == 0 {
            bail!("batch size must be at least 1");
        }
        finite_in(h.momentum, 0.0, 1.0, "momentum")?;
        finite_in(h.weight_decay, 0.0, 1.0, "weight decay")?;
        match self.target {
            Some(Target::Compression(r)) if !(r.is_finite() && r > 1.0) => {
                bail!("target compression {r} must be a finite number above 1")
            }
            Some(Target::AvgBits(b)) if !(b > 0.0 && b <= 32.0) => {
                bail!("target average bits {b} must be in (0, 32]")
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether `name` is one plain file or directory name (no `/`, `..`, or root).
fn plain_name(name: &str) -> bool {
    let mut c = Path::new(name).components();
    matches!((c.next(), c.next()), (Some(Component::Normal(_)), None))
}

impl SearchState {
    /// Checks what a resume relies on: the version, the settings, a policy whose bits are in
    /// range, a checkpoint directory confined to the run directory, finite accuracies, step
    /// records consistent with the step count, and ascending milestones of at least 1x.
    pub fn validate(&self) -> Result<()> {
        if self.version != STATE_VERSION {
            bail!(
                "search state version {} is not supported (this ccq reads version {STATE_VERSION})",
                self.version
            );
        }
        self.config.validate().context("settings")?;
        let p = &self.policy;
        if p.names.is_empty() || p.names.len() != p.bits.len() {
            bail!(
                "policy: {} layer names for {} bit entries",
                p.names.len(),
                p.bits.len()
            );
        }
        for (n, b) in p.names.iter().zip(&p.bits) {
            b.validate()
                .with_context(|| format!("policy layer `{n}`"))?;
        }
        if !plain_name(&self.checkpoint) {
            bail!(
                "checkpoint `{}` must be a directory name inside the run directory",
                self.checkpoint
            );
        }
        for (v, what) in [
            (self.fp_val, "fp_val"),
            (self.start_val, "start_val"),
            (self.val, "val"),
        ] {
            finite_in(v, 0.0, 1.0, what)?;
        }
        finite_in(self.seconds, 0.0, f64::MAX, "seconds")?;
        if self.steps.len() != self.step {
            bail!("step = {} but {} step records", self.step, self.steps.len());
        }
        for (i, s) in self.steps.iter().enumerate() {
            if s.step != i + 1 {
                bail!("step record {} is numbered {}", i + 1, s.step);
            }
            if !p.names.contains(&s.chosen) {
                bail!("step {}: unknown layer `{}`", s.step, s.chosen);
            }
            for v in [s.val_before, s.val_after, s.lambda] {
                finite_in(v, 0.0, 1.0, &format!("step {} accuracy or λ", s.step))?;
            }
            if !(s.compression.is_finite() && s.avg_bits.is_finite()) {
                bail!("step {}: non-finite compression or bits", s.step);
            }
        }
        let arms = self.config.lowering.arms(p.names.len()).len();
        if !(self.log_weights.is_empty() || self.log_weights.len() == arms)
            || self.log_weights.iter().any(|w| !w.is_finite())
        {
            bail!(
                "log_weights: {} values for {arms} arms, or not finite",
                self.log_weights.len()
            );
        }
        for &r in &self.milestones {
            finite_in(r, 1.0, f64::MAX, "milestone")?;
        }
        if self.milestones.windows(2).any(|w| w[0] >= w[1]) {
            bail!(
                "milestones {:?} are not strictly ascending",
                self.milestones
            );
        }
        if let Some(a) = self.refused.iter().find(|&&a| a >= arms) {
            bail!("refused arm {a} does not exist ({arms} arms)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::plain_name;
    use crate::search::state::parse_state;

    /// A real `state.json` (the fuzzer's seed), edited one field at a time.
    fn edited(f: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value =
            serde_json::from_str(include_str!("../../fuzz/seeds/state/state.json")).unwrap();
        f(&mut v);
        match parse_state(&v.to_string()) {
            Ok(_) => "accepted".into(),
            Err(e) => format!("{e:#}"),
        }
    }

    /// A resumed run must read back exactly the numbers it saved: serde_json's default float
    /// parser can be one ULP off (these values came back changed from a killed compare).
    #[test]
    fn floats_round_trip_exactly() {
        for v in [
            0.40636367797851564f64,
            0.0018233387358184765,
            0.09885724032818931,
            3.8507462686567164,
            -1.3361749678261505,
        ] {
            let back: f64 = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v}");
        }
    }

    #[test]
    fn state_json_is_validated() {
        assert_eq!(edited(|_| {}), "accepted");
        assert_eq!(
            edited(|v| {
                v.as_object_mut().unwrap().remove("version");
            }),
            "accepted",
            "files from before the version field read as version 1"
        );
        type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
        assert_eq!(
            edited(|v| v["milestones"] = serde_json::json!([6.0, 8.0])),
            "accepted"
        );
        let cases: [(&str, Edit); 10] = [
            (
                "milestone = 0.5",
                Box::new(|v| v["milestones"] = serde_json::json!([0.5, 8.0])),
            ),
            (
                "not strictly ascending",
                Box::new(|v| v["milestones"] = serde_json::json!([8.0, 6.0])),
            ),
            (
                "log_weights",
                Box::new(|v| v["log_weights"] = serde_json::json!([1.0])),
            ),
            ("version 2", Box::new(|v| v["version"] = 2.into())),
            (
                "inside the run directory",
                Box::new(|v| v["checkpoint"] = "../../etc".into()),
            ),
            (
                "inside the run directory",
                Box::new(|v| v["checkpoint"] = "/tmp/x".into()),
            ),
            (
                "weight bits 9",
                Box::new(|v| v["policy"]["bits"][1]["w"] = 9.into()),
            ),
            ("step records", Box::new(|v| v["step"] = 7.into())),
            ("val = 3", Box::new(|v| v["val"] = 3.0.into())),
            (
                "batch size",
                Box::new(|v| v["config"]["hyper"]["batch_size"] = 0.into()),
            ),
        ];
        for (needle, f) in cases {
            let e = edited(f);
            assert!(e.contains(needle), "`{e}` should mention `{needle}`");
        }
    }

    #[test]
    fn checkpoint_names_stay_inside_the_run() {
        assert!(plain_name("step-003"));
        assert!(plain_name("final"));
        for bad in ["", "..", "../x", "/etc", "a/b", "."] {
            assert!(!plain_name(bad), "{bad}");
        }
    }
}
