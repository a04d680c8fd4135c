//! Progress bars (indicatif) shared by every long job, with a quiet mode for logs.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);
static MULTI: LazyLock<MultiProgress> = LazyLock::new(MultiProgress::new);

/// Turns every progress bar off (log-friendly output).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    if quiet {
        MULTI.set_draw_target(ProgressDrawTarget::hidden());
    }
}

/// Whether bars are hidden.
pub fn is_quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A new bar of `len` steps labelled `label`, nested under any bar already shown.
pub fn bar(len: u64, label: &str) -> ProgressBar {
    if is_quiet() {
        return ProgressBar::hidden();
    }
    let pb = MULTI.add(ProgressBar::new(len));
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({per_sec}, ETA {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb
}

/// Prints a line above the bars (or plainly in quiet mode).
pub fn println(line: impl AsRef<str>) {
    // Without a terminal the bars are hidden, and so would be lines printed through them.
    if is_quiet() || MULTI.is_hidden() {
        println!("{}", line.as_ref());
    } else {
        let _ = MULTI.println(line.as_ref());
    }
}
