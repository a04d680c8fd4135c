//! How a long job reports progress: the library never prints, it sends [`Event`]s to an
//! [`Events`] observer, which may also cancel the job.
//!
//! The command line draws bars and log lines from them; a library user can log, plot, or stop
//! a run early. Cancellation is honoured at the next saved boundary (the end of a training
//! epoch, or of a search step), so a cancelled job can be resumed.

use crate::quant::policy::LayerBits;
use std::path::Path;

/// Layers whose bits a policy changes from another: name, bits before, bits after.
pub type Changes<'a> = Vec<(&'a str, LayerBits, LayerBits)>;

/// `changes` as `layer W4A4 → W3A3, …`.
pub fn changes_text(changes: &[(&str, LayerBits, LayerBits)]) -> String {
    let each: Vec<String> = changes
        .iter()
        .map(|(l, b, a)| format!("{l} {b} → {a}"))
        .collect();
    each.join(", ")
}

/// An audition's finalists ([`Event::Auditioned`]) as one text: each one's changes from the
/// re-allocation's choice, price and bandit loss, the winner (`chosen`) marked.
pub fn finalists_text(finalists: &[(Changes<'_>, f64, Option<f64>)], chosen: usize) -> String {
    let each: Vec<String> = finalists
        .iter()
        .enumerate()
        .map(|(i, (changes, price, loss))| {
            let what = if changes.is_empty() {
                "re-allocation's".to_string()
            } else {
                changes_text(changes)
            };
            let mark = if i == chosen { " (chosen)" } else { "" };
            let loss = loss.map_or("diverged".into(), |l| format!("{l:.4}"));
            format!("{what}: price {price:.4}, loss {loss}{mark}")
        })
        .collect();
    each.join("; ")
}

/// Something a job did.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    /// A dataset was loaded and split.
    DataLoaded {
        /// Its directory.
        dir: &'a Path,
        /// Its format's name.
        format: &'static str,
        /// Classes.
        classes: usize,
        /// Image shape, channels × height × width.
        shape: [usize; 3],
        /// Images in the training, validation, bandit and test splits.
        splits: [usize; 4],
        /// Validation and bandit images asked for; more than `splits` holds when the training
        /// files were too few and both were shrunk to leave half of them for training.
        asked: [usize; 2],
    },
    /// A pass of `len` units began (`phase` names it: "epoch 3/10", "search", "test").
    PhaseStarted {
        /// The pass.
        phase: &'a str,
        /// Units of work (batches, or steps).
        len: u64,
    },
    /// `done` units of the pass are finished; `status` sums it up so far.
    PhaseProgress {
        /// The pass.
        phase: &'a str,
        /// Units done.
        done: u64,
        /// A running summary (e.g. loss and accuracy).
        status: Option<String>,
    },
    /// The pass ended.
    PhaseEnded {
        /// The pass.
        phase: &'a str,
    },
    /// A training epoch ended.
    EpochEnded {
        /// Epoch (1-based).
        epoch: usize,
        /// Epochs of the job.
        epochs: usize,
        /// Mean training loss.
        train_loss: f64,
        /// Training top-1 in [0, 1].
        train_acc: f64,
        /// Validation top-1 in [0, 1].
        val_top1: f64,
        /// Wall time of the training pass.
        seconds: f64,
        /// Images trained on.
        images: usize,
    },
    /// A job resumed from its saved state.
    Resumed {
        /// The run or checkpoint directory.
        path: &'a Path,
        /// What had been finished ("epoch" or "step").
        unit: &'static str,
        /// How many.
        after: usize,
    },
    /// The search's starting point: the FP model and the top rung after its brief fine-tuning.
    SearchStarted {
        /// FP validation top-1.
        fp_val: f64,
        /// The top rung's bits.
        bits: LayerBits,
        /// Validation top-1 at the top rung.
        val: f64,
        /// Epochs of its fine-tuning.
        epochs: usize,
    },
    /// One arm of a search step was scored on the bandit split.
    TrialScored {
        /// Step (1-based).
        step: usize,
        /// The arm's layer.
        layer: &'a str,
        /// Bandit top-1 of the trial.
        top1: f64,
        /// Bandit cross-entropy of the trial.
        loss: f64,
        /// The reward the exponential weights took.
        reward: Option<f64>,
        /// The arm's probability of being chosen.
        probability: f64,
    },
    /// A search step's fine-tuning diverged; it is retried at half the learning rate.
    Retrying {
        /// Step.
        step: usize,
        /// What diverged.
        why: String,
    },
    /// A search step's lowering was refused (its fine-tuning diverged at every retry).
    Refused {
        /// Step.
        step: usize,
        /// The layer.
        layer: &'a str,
        /// Why.
        why: String,
    },
    /// A search step finished and was saved.
    StepChosen {
        /// Step (1-based).
        step: usize,
        /// The layer lowered.
        layer: &'a str,
        /// Its bits before.
        before: LayerBits,
        /// Its bits after.
        after: LayerBits,
        /// Validation top-1 right after lowering.
        val_before: f64,
        /// Validation top-1 after fine-tuning.
        val_after: f64,
        /// Fine-tuning epochs.
        epochs: usize,
        /// Compression after the step.
        compression: f64,
        /// Average weight bits after the step.
        avg_bits: f64,
        /// λ of the step.
        lambda: f64,
    },
    /// The look-ahead priced the rungs below the search's policy on its weights
    /// (`--lookahead-prices`), every rung around it on the FP model (`--fp-prices`), or every
    /// rung of each layer alone at the top on the FP model (`--top-prices`).
    LookaheadPriced {
        /// Every rung from the top, on the FP model (`--fp-prices`), rather than those below.
        whole: bool,
        /// Every rung of each layer alone at the top, on the FP model (`--top-prices`).
        top: bool,
        /// Rungs priced.
        rungs: usize,
        /// Seconds the trials took.
        seconds: f64,
        /// Whether the re-allocation with these prices differs from the one without them.
        changed: bool,
    },
    /// The re-allocation replaced the search's policy by one the competition's prices rate
    /// lower.
    Reallocated {
        /// Layers whose bits changed: name, bits in the search's policy, bits now.
        changes: Changes<'a>,
        /// Summed price of the search's policy (None: a rung of it was never priced).
        searched_price: Option<f64>,
        /// Summed price of the new policy.
        price: f64,
        /// The least price, where the noise rule took a policy priced within one standard error
        /// of it that uses more of the budget (`--noise-ties`); `None` otherwise.
        least: Option<f64>,
    },
    /// The audition fine-tuned the re-allocation's policy and its rivals briefly and scored
    /// them on the bandit split.
    Auditioned {
        /// Per finalist (the re-allocation's choice first): the layers whose bits differ from
        /// the choice's (name, the choice's bits, the finalist's), its summed price, and its
        /// bandit loss after the fine-tuning, as `score` names it (None: diverged or not finite).
        finalists: Vec<(Changes<'a>, f64, Option<f64>)>,
        /// Index of the winner.
        chosen: usize,
        /// Training images each finalist fine-tuned on.
        images: usize,
        /// What the losses are ("bandit loss", "tempered bandit loss").
        score: &'static str,
        /// Seconds it took.
        seconds: f64,
    },
    /// The budget polish raised a layer one rung (and lowered another in exchange, for a swap).
    Raised {
        /// The layer.
        layer: &'a str,
        /// Bits before.
        before: LayerBits,
        /// Bits after.
        after: LayerBits,
        /// Bandit cross-entropy after the move.
        loss: f64,
        /// For a swap: the layer lowered one rung, its bits before and after.
        lowered: Option<(&'a str, LayerBits, LayerBits)>,
    },
    /// The last fine-tuning after the search ended.
    FinalTuned {
        /// Validation top-1 before.
        before: f64,
        /// Validation top-1 after.
        after: f64,
        /// Epochs.
        epochs: usize,
        /// Where the kept fine-tuning started: `search` (the search's weights) or `fp` (the
        /// full-precision model).
        from: &'a str,
    },
    /// A checkpoint was written.
    CheckpointWritten {
        /// Its directory.
        path: &'a Path,
    },
    /// A line for a person that fits none of the above (e.g. one comparison result).
    Note(String),
}

/// Receives a job's events; may cancel it.
pub trait Events {
    /// Called for each event, in order.
    fn event(&self, _event: &Event<'_>) {}

    /// Whether the job should stop at its next saved boundary (checked after each epoch and
    /// each search step).
    fn cancelled(&self) -> bool {
        false
    }
}

/// Ignores every event and never cancels.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Events for Silent {}

/// Forwards events to the observer inside, but never cancels: for a short phase that cannot
/// resume midway.
pub struct Uncancellable<'a>(pub &'a dyn Events);

impl Events for Uncancellable<'_> {
    fn event(&self, event: &Event<'_>) {
        self.0.event(event);
    }
}

/// A pass that reports its progress: where the events go, and the pass's name.
#[derive(Clone, Copy)]
pub struct Pass<'a> {
    /// The observer.
    pub events: &'a dyn Events,
    /// The pass's name.
    pub phase: &'a str,
}

impl Pass<'_> {
    /// Reports the start of the pass, of `len` units.
    pub fn started(&self, len: u64) {
        self.events.event(&Event::PhaseStarted {
            phase: self.phase,
            len,
        });
    }

    /// Reports `done` units finished.
    pub fn progress(&self, done: u64, status: Option<String>) {
        self.events.event(&Event::PhaseProgress {
            phase: self.phase,
            done,
            status,
        });
    }

    /// Reports the end of the pass.
    pub fn ended(&self) {
        self.events.event(&Event::PhaseEnded { phase: self.phase });
    }
}
