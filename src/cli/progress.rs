//! The command line's observer: progress bars (indicatif) and log lines from the library's
//! events, with a quiet mode for logs.

use ccq::events::{Event, Events, changes_text, finalists_text};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::sync::Mutex;

/// Draws bars for passes and prints a line for everything else.
pub struct Console {
    multi: MultiProgress,
    quiet: bool,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Console {
    /// A console; `quiet` hides every bar (log-friendly output).
    pub fn new(quiet: bool) -> Self {
        let multi = MultiProgress::new();
        if quiet {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Console {
            multi,
            quiet,
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// Prints a line above the bars (or plainly in quiet mode, or without a terminal).
    pub fn line(&self, line: impl AsRef<str>) {
        if self.quiet || self.multi.is_hidden() {
            println!("{}", line.as_ref());
        } else {
            let _ = self.multi.println(line.as_ref());
        }
    }

    fn bar(&self, phase: &str, len: u64) {
        if self.quiet {
            return;
        }
        let pb = self.multi.add(ProgressBar::new(len));
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({per_sec}, ETA {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_prefix(phase.to_string());
        if let Some(old) = self.bars.lock().expect("bars").insert(phase.into(), pb) {
            old.finish_and_clear();
        }
    }
}

/// `x` in [0, 1] as a percentage.
fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

impl Events for Console {
    fn event(&self, e: &Event<'_>) {
        match e {
            Event::PhaseStarted { phase, len } => self.bar(phase, *len),
            Event::PhaseProgress {
                phase,
                done,
                status,
            } => {
                if let Some(b) = self.bars.lock().expect("bars").get(*phase) {
                    b.set_position(*done);
                    if let Some(s) = status {
                        b.set_message(s.clone());
                    }
                }
            }
            Event::PhaseEnded { phase } => {
                if let Some(b) = self.bars.lock().expect("bars").remove(*phase) {
                    b.finish_and_clear();
                    self.multi.remove(&b);
                }
            }
            Event::DataLoaded {
                dir,
                format,
                classes,
                shape: [c, h, w],
                splits: [train, val, bandit, test],
                asked,
            } => {
                let shrunk = if *asked == [*val, *bandit] {
                    String::new()
                } else {
                    format!(
                        " (--val-size {} / --bandit-size {} shrunk so that half of the {} training files stay for training)",
                        asked[0],
                        asked[1],
                        train + val + bandit
                    )
                };
                self.line(format!(
                    "data: {} ({format}), {classes} classes, {c}×{h}×{w}; train {train} / val {val} / bandit {bandit} / test {test}{shrunk}",
                    dir.display()
                ))
            }
            Event::EpochEnded {
                epoch,
                epochs,
                train_loss,
                train_acc,
                val_top1,
                seconds,
                images,
            } => self.line(format!(
                "epoch {epoch:>3}/{epochs}: train loss {train_loss:.4} acc {} | val top-1 {} | {seconds:.1}s, {:.0} img/s",
                pct(*train_acc),
                pct(*val_top1),
                *images as f64 / seconds.max(1e-9)
            )),
            Event::Resumed { path, unit, after } => {
                self.line(format!("resuming {} after {unit} {after}", path.display()))
            }
            Event::SearchStarted {
                fp_val,
                bits,
                val,
                epochs,
            } => self.line(format!(
                "start: FP val top-1 {}, {bits} val top-1 {} after {epochs} epoch(s)",
                pct(*fp_val),
                pct(*val)
            )),
            Event::TrialScored { .. } | Event::CheckpointWritten { .. } => {}
            Event::Retrying { step, why } => self.line(format!(
                "step {step}: fine-tuning diverged ({why}); retrying from the step's start at half the learning rate"
            )),
            Event::Refused { step, layer, why } => {
                self.line(format!("step {step}: lowering {layer} refused: {why}"))
            }
            Event::StepChosen {
                step,
                layer,
                before,
                after,
                val_before,
                val_after,
                epochs,
                compression,
                avg_bits,
                lambda,
            } => self.line(format!(
                "step {step:>3}: {layer} {before} → {after} | val {} → {} after {epochs} epoch(s) | {compression:.2}x, avg {avg_bits:.2} bits{}",
                pct(*val_before),
                pct(*val_after),
                // λ only where the memory prior took part in the draw.
                if *lambda > 0.0 {
                    format!(" | λ {lambda:.2}")
                } else {
                    String::new()
                }
            )),
            Event::LookaheadPriced {
                whole,
                top,
                rungs,
                seconds,
                changed,
            } => {
                let (what, around) = match (whole, top) {
                    (_, true) => ("top", "of every layer alone on the FP model at the top"),
                    (true, _) => ("FP", "of every layer on the FP model at the search's policy"),
                    _ => ("look-ahead", "below the search's policy"),
                };
                let same = if *changed { "differs from" } else { "is the same as" };
                self.line(format!(
                    "{what} prices: priced {rungs} rungs {around} in {seconds:.0}s; the re-allocation {same} the one without them"
                ))
            }
            Event::Reallocated {
                changes,
                searched_price,
                price,
                least,
            } => self.line(format!(
                "re-allocated: {} (measured price {} → {price:.4}{})",
                changes_text(changes),
                searched_price.map_or("unmeasured".into(), |p| format!("{p:.4}")),
                least.map_or(String::new(), |l| format!(
                    "; the least, {l:.4}, is within one standard error and uses less of the budget"
                ))
            )),
            Event::Auditioned {
                finalists,
                chosen,
                images,
                score,
                seconds,
            } => self.line(format!(
                "audition ({images} images each, {score}, {seconds:.0}s): {}",
                finalists_text(finalists, *chosen)
            )),
            Event::Raised {
                layer,
                before,
                after,
                loss,
                lowered,
            } => self.line(match lowered {
                None => format!("polish: {layer} {before} → {after} (bandit loss {loss:.4})"),
                Some((low, b, a)) => format!(
                    "polish: {layer} {before} → {after}, {low} {b} → {a} (bandit loss {loss:.4})"
                ),
            }),
            Event::FinalTuned {
                before,
                after,
                epochs,
                from,
            } => self.line(format!(
                "final fine-tuning from the {} weights: val top-1 {} → {} in {epochs} epoch(s)",
                if *from == "fp" { "full-precision" } else { "search's" },
                pct(*before),
                pct(*after)
            )),
            Event::Note(s) => self.line(s),
        }
    }
}
