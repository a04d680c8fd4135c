//! Taking a search that stopped at its compression target on to a larger one (a comparison
//! given a larger budget after its search had ended).

use super::run_dir::RunDir;
use super::state::SearchState;
use super::target::Target;
use crate::model::Model;
use crate::train::checkpoint;
use anyhow::{Result, bail};

/// Takes the search in `run` (its `state`) on to compression `to`, a larger target than its
/// own; returns the weights to go on from where they are not those of the state's checkpoint.
///
/// An unfinished search just takes the new target. A finished one that met its target is
/// reopened: its weights and policy go back to those after its last step (the milestone kept
/// for its old target), what concluded it (re-allocation, polish, final fine-tuning) is undone,
/// and the reopened state is saved. Either way the steps that follow are those of a search
/// aimed at `to` from the start. A search that stopped otherwise (no arm awake, `--qsteps`) is
/// left as it is: a larger target would stop at the same step. A budget-aware search is
/// refused: its old target steered the steps it took.
pub fn retarget(
    run: &RunDir,
    state: &mut SearchState,
    to: f64,
    device: tch::Device,
) -> Result<Option<Model>> {
    let Some(Target::Compression(old)) = state.config.target else {
        bail!("its target is not a compression");
    };
    if to <= old {
        return Ok(None);
    }
    if state.config.budget_aware {
        bail!("it is budget-aware, so its steps were aimed at {old}x");
    }
    if state.finished.is_none() {
        state.config.target = Some(Target::Compression(to));
        return Ok(None);
    }
    if state.steps.last().is_none_or(|s| s.compression < old) {
        return Ok(None);
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
