//! The layout of a search's run directory. Every read and write of it goes through [`RunDir`];
//! every file is written atomically (temporary file, then rename).
//!
//! ```text
//! RUN/state.json      resumable state (settings, policy, step records, weights' checkpoint)
//! RUN/steps.jsonl     one step record per line
//! RUN/step-NNN/       the checkpoint after step NNN (only the latest is kept)
//! RUN/at-<R>x/        the first checkpoint that reached compression R (comparisons)
//! RUN/final/          the finished search's checkpoint
//! RUN/policy.json     the finished search's policy, cost and accuracy
//! RUN/report.html     the report (with report.json)
//! RUN/fp/             the full-precision model, when the run trained it
//! ```

use super::state::{PolicyReport, SearchState};
use crate::model::Model;
use crate::train::checkpoint::{self, CheckpointMeta, write_atomic};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Resumable state file.
pub const STATE: &str = "state.json";
/// Step log.
pub const STEPS: &str = "steps.jsonl";
/// Final policy.
pub const POLICY: &str = "policy.json";
/// Final checkpoint directory.
pub const FINAL: &str = "final";
/// Directory of a full-precision model trained for the run.
pub const FP: &str = "fp";

/// A search's run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory at `root` (nothing is read or created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Whether it holds a search (a state file).
    pub fn has_search(&self) -> bool {
        self.root.join(STATE).is_file()
    }

    /// The checkpoint directory named `name` (a name from the state, e.g. `step-004`).
    pub fn checkpoint(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The final checkpoint's directory.
    pub fn final_checkpoint(&self) -> PathBuf {
        self.root.join(FINAL)
    }

    /// The full-precision model trained for the run.
    pub fn fp_checkpoint(&self) -> PathBuf {
        self.root.join(FP)
    }

    /// The checkpoint kept for compression milestone `r`.
    pub fn milestone(&self, r: f64) -> PathBuf {
        self.root.join(format!("at-{r}x"))
    }

    /// The policy file of a finished search.
    pub fn policy_path(&self) -> PathBuf {
        self.root.join(POLICY)
    }

    /// The HTML report.
    pub fn report_html(&self) -> PathBuf {
        self.root.join("report.html")
    }

    /// The report's data.
    pub fn report_json(&self) -> PathBuf {
        self.root.join("report.json")
    }

    /// Loads and validates the search state; an error is typed as bad input naming the run.
    pub fn load_state(&self) -> Result<SearchState> {
        self.read_state()
            .map_err(|e| crate::error::Error::bad_input(&self.root, format!("{e:#}")).into())
    }

    fn read_state(&self) -> Result<SearchState> {
        let p = self.root.join(STATE);
        if !p.is_file() && self.fp_checkpoint().is_dir() {
            bail!(
                "{}: the search had not started yet (it was still training the FP model in {}/fp); rerun the original `ccq quantize --out {0}` command, which continues that training",
                self.root.display(),
                self.root.display()
            );
        }
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "{}: not a ccq quantize run (cannot read {STATE})",
                self.root.display()
            )
        })?;
        super::state::parse_state(&text).with_context(|| format!("{}", p.display()))
    }

    /// Saves `model` as checkpoint `state.checkpoint` with `meta`, then the step log, then the
    /// state that names that checkpoint: a state file never names weights that are not there.
    pub fn save(&self, model: &Model, meta: &CheckpointMeta, state: &SearchState) -> Result<()> {
        checkpoint::save(&self.checkpoint(&state.checkpoint), model, meta)?;
        let mut lines = String::new();
        for s in &state.steps {
            lines.push_str(&serde_json::to_string(s)?);
            lines.push('\n');
        }
        write_atomic(&self.root.join(STEPS), lines.as_bytes())?;
        write_atomic(
            &self.root.join(STATE),
            serde_json::to_string_pretty(state)?.as_bytes(),
        )
    }

    /// Keeps `model` as the checkpoint of milestone `r`, unless one is kept already.
    pub fn keep_milestone(&self, r: f64, model: &Model, meta: &CheckpointMeta) -> Result<()> {
        let dir = self.milestone(r);
        if dir.join(checkpoint::META).is_file() {
            return Ok(());
        }
        checkpoint::save(&dir, model, meta)
    }

    /// Removes checkpoint `name` (a step's checkpoint once a later one is saved); best effort.
    pub fn remove_checkpoint(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.checkpoint(name));
    }

    /// Saves the finished search's checkpoint and policy file.
    pub fn save_final(&self, model: &Model, meta: &CheckpointMeta, p: &PolicyReport) -> Result<()> {
        checkpoint::save(&self.final_checkpoint(), model, meta)?;
        write_atomic(
            &self.policy_path(),
            serde_json::to_string_pretty(p)?.as_bytes(),
        )
    }

    /// The finished search's policy file, if it is there and readable.
    pub fn read_policy(&self) -> Option<PolicyReport> {
        let text = std::fs::read_to_string(self.policy_path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the report: its data and its page.
    pub fn write_report(&self, json: &str, html: &str) -> Result<()> {
        write_atomic(&self.report_json(), json.as_bytes())?;
        write_atomic(&self.report_html(), html.as_bytes())
    }
}
