//! Taking a search that stopped at its compression target on to a larger one (a comparison
//! given a larger budget after its search had ended).

use super::run_dir::RunDir;
use super::state::SearchState;
use super::target::Target;
use crate::model::Model;
use crate::train::checkpoint;
use anyhow::{Result, bail};

/// Reopens the finished search in `run` (its `state`) to go on to compression `to`, when it
/// stopped because it met a smaller compression target; `None` when it stopped otherwise (no
/// arm awake, `--qsteps`), where a larger target would stop at the same step.
///
/// Its weights and policy go back to those after its last step (the milestone kept for its old
/// target), and what concluded it (re-allocation, polish, final fine-tuning) is undone. The
/// reopened state is saved, so the steps that follow are those of a search aimed at `to` from
/// the start. A budget-aware search is refused: its old target steered the steps it took.
pub fn reopen(
    run: &RunDir,
    state: &mut SearchState,
    to: f64,
    device: tch::Device,
) -> Result<Option<Model>> {
    let Some(Target::Compression(old)) = state.config.target else {
        bail!("its target is not a compression");
    };
    let Some(last) = state.steps.last() else {
        return Ok(None);
    };
    if state.finished.is_none() || last.compression < old || to <= old {
        return Ok(None);
    }
    if state.config.budget_aware {
        bail!("it was budget-aware, so its steps were aimed at {old}x");
    }
    let dir = run.milestone(old);
    if !dir.join(checkpoint::META).is_file() {
        bail!(
            "the weights of its last step were not kept ({} is missing)",
            dir.display()
        );
    }
    let kept = checkpoint::load(&dir, device)?;
    let searched = state.policy_after(&kept.meta.layers, state.steps.len());
    if kept.meta.policy.as_ref() != Some(&searched) {
        bail!(
            "{} does not hold the policy its steps lead to",
            dir.display()
        );
    }
    state.policy = searched;
    state.val = kept.meta.val.map_or(state.val, |v| v.top1);
    state.finished = None;
    state.final_done = false;
    state.final_start = None;
    state.reallocation = None;
    state.polish.clear();
    state.config.target = Some(Target::Compression(to));
    run.save(&kept.model, &kept.meta, state)?;
    Ok(Some(kept.model))
}
