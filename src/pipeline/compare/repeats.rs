//! More fine-tunings for a comparison that already has results: continued with a larger
//! `--ft-repeats`, each result the comparison asks for gets only the fine-tunings it lacks (the
//! next repeat seeds), so its earlier ones are kept rather than run again.
//!
//! A result can be extended when it was fine-tuned from the FP model calibrated at its policy
//! (every baseline, every equal-compute result, the control, and CCQ's with `--final-from fp`):
//! its policy and epochs are in the report, and repeat `k` is the same fine-tuning whenever it
//! runs. CCQ's results from the search's weights (`--final-from search|best`) need those weights,
//! so they are dropped and measured again whole, as a budget the report lacks is.

use super::{Bench, EQUAL, Method, MethodResult, NO_POLISH, NOT_REALLOCATED, save_report};
use crate::error::Result;
use crate::events::Event;
use crate::report::Report;
use crate::search::config::FinalFrom;

/// What a comparison continued with `repeats` fine-tunings does with a result it asks for.
#[derive(Debug, PartialEq)]
pub(super) enum Plan {
    /// Nothing: not measured (a skipped budget), or fine-tuned that many times already.
    Keep,
    /// Run the fine-tunings from this repeat on, from the FP model.
    Extend(usize),
    /// Measure it again whole (fine-tuned from weights the report does not keep).
    Redo,
}

/// What to do with `r` when each result should have `repeats` fine-tunings and CCQ's last
/// fine-tuning starts where `final_from` says.
pub(super) fn plan(r: &MethodResult, repeats: usize, final_from: FinalFrom) -> Plan {
    let have = r.each_test().len();
    if r.test_top1.is_none() || r.bits.is_empty() || have >= repeats {
        return Plan::Keep;
    }
    let ccq = r.method.starts_with(Method::Ccq.name());
    if r.epochs.is_none() || (ccq && final_from != FinalFrom::Fp) {
        return Plan::Redo;
    }
    Plan::Extend(have)
}

impl Bench<'_> {
    /// Whether this invocation would measure `r`: its budget and its method are asked for
    /// (equal-compute results with `--equal-compute`; CCQ's search-policy rows unless
    /// `--final-policy-only`).
    fn asks_for(&self, r: &MethodResult) -> bool {
        if !self.cfg.budgets.contains(&r.budget) {
            return false;
        }
        let method = r.method.as_str();
        let base = method.strip_suffix(EQUAL);
        if base.is_some() && !self.cfg.equal_compute {
            return false;
        }
        let base = base.unwrap_or(method);
        if base.starts_with(Method::Ccq.name()) {
            let search_row = base.ends_with(NOT_REALLOCATED) || base.ends_with(NO_POLISH);
            return self.cfg.methods.contains(&Method::Ccq)
                && (self.cfg.search_policy_rows || !search_row);
        }
        self.cfg.methods.iter().any(|m| m.name() == base)
    }

    /// Gives every result this invocation asks for (and the control, with `--control`) the
    /// fine-tunings it lacks up to `--ft-repeats`, saving the report after each; CCQ's results
    /// that cannot be extended are dropped at their budget, to be measured again.
    pub(super) fn add_repeats(&self, report: &mut Report) -> Result<()> {
        let repeats = self.cfg.ft_repeats;
        let from = self.search.final_from;
        // CCQ's rows at a budget come together (its result and its controls), so where one
        // must be measured again, all that this invocation would measure there are.
        let asked_redo =
            |r: &MethodResult| self.asks_for(r) && plan(r, repeats, from) == Plan::Redo;
        let is_ccq = |r: &MethodResult| r.method.starts_with(Method::Ccq.name());
        let ccq_redo: Vec<f64> = report
            .results
            .iter()
            .filter(|r| is_ccq(r) && asked_redo(r))
            .map(|r| r.budget)
            .collect();
        let before = report.results.len();
        report.results.retain(|r| {
            let again = if is_ccq(r) {
                self.asks_for(r) && ccq_redo.contains(&r.budget)
            } else {
                asked_redo(r)
            };
            !again
        });
        let dropped = before - report.results.len();
        if dropped > 0 {
            self.events.event(&Event::Note(format!(
                "measuring {dropped} results again with {repeats} fine-tunings each: they were fine-tuned from weights the report does not keep"
            )));
            save_report(&self.cfg.out, report)?;
        }
        for i in 0..report.results.len() {
            let r = &report.results[i];
            if !self.asks_for(r) {
                continue;
            }
            if let Plan::Extend(have) = plan(r, repeats, from) {
                report.results[i] = self.extended(r, have)?;
                save_report(&self.cfg.out, report)?;
            }
        }
        if self.cfg.control
            && let Some(c) = &report.control
            && let Plan::Extend(have) = plan(c, repeats, from)
        {
            report.control = Some(self.extended(c, have)?);
            save_report(&self.cfg.out, report)?;
        }
        Ok(())
    }

    /// `r` with its fine-tunings from repeat `have` to `--ft-repeats` added (from the FP model
    /// calibrated at its policy, for its epochs).
    fn extended(&self, r: &MethodResult, have: usize) -> Result<MethodResult> {
        let policy = self.policy_of(r);
        let epochs = r.epochs.unwrap_or(self.cfg.ft_epochs as f64);
        let (added, seconds) = self.fine_tunings(&policy, epochs, have)?;
        let tests = [r.each_test(), added].concat();
        let mut more = self.measure(
            &r.method,
            r.budget,
            &tests,
            &policy,
            r.seconds + seconds,
            epochs,
        );
        more.note = r.note.clone();
        more.audition_epochs = r.audition_epochs;
        Ok(more)
    }
}
