//! Reports: the side-by-side comparison and single CCQ runs as JSON and a self-contained HTML
//! page with SVG plots.

pub mod svg;
pub mod versus;

use crate::quant::policy::{FLOAT_BITS, LayerBits};
use crate::search::state::StepRecord;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use svg::{Series, bar_chart, color, esc, line_plot};

/// Suffix of an equal-compute result's method (`ccq compare --equal-compute`).
pub const EQUAL: &str = " (equal compute)";

/// One method at one budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodResult {
    /// Method name.
    pub method: String,
    /// Requested compression.
    pub budget: f64,
    /// Per-layer bits (empty when the budget could not be met).
    pub bits: Vec<LayerBits>,
    /// Weight bytes (scales included).
    pub size_bytes: u64,
    /// Achieved compression.
    pub compression: f64,
    /// Average weight bits.
    pub avg_bits: f64,
    /// BOPs per image.
    pub bops: u64,
    /// Test top-1 after the shared fine-tuning budget (None: not measured, e.g. a run that has
    /// not finished).
    pub test_top1: Option<f64>,
    /// Points lost against the FP model (None when either test top-1 is missing).
    pub loss_points: Option<f64>,
    /// Wall time (allocation + fine-tuning).
    pub seconds: f64,
    /// Each fine-tuning's test top-1 when the policy was fine-tuned more than once
    /// (`--ft-repeats`); `test_top1` is their mean.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_top1_each: Vec<f64>,
    /// Anything to know (e.g. budget not reachable).
    pub note: Option<String>,
    /// Training epochs after allocation, in whole-training-split equivalents (a fraction is a
    /// partial last epoch; None: not run).
    #[serde(default)]
    pub epochs: Option<f64>,
    /// CCQ: training epochs its audition of finalists spent at this budget (whole-training-split
    /// equivalents), part of the allocation, which the equal-compute mode gives the other
    /// methods too; None: no audition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audition_epochs: Option<f64>,
}

impl MethodResult {
    /// Each fine-tuning's test top-1: the ones kept, or the result itself when it had one.
    pub fn each_test(&self) -> Vec<f64> {
        match (&self.test_top1_each[..], self.test_top1) {
            ([], Some(t)) => vec![t],
            (each, _) => each.to_vec(),
        }
    }

    /// Sample standard deviation of the repeated fine-tunings' test top-1 (None for fewer than
    /// two).
    pub fn top1_sd(&self) -> Option<f64> {
        let t = &self.test_top1_each;
        if t.len() < 2 {
            return None;
        }
        let n = t.len() as f64;
        let mean = t.iter().sum::<f64>() / n;
        Some((t.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
    }
    /// The repeats' spread as printed after a test top-1, ` ± 0.12` (points), or nothing.
    pub fn spread_text(&self) -> String {
        self.top1_sd()
            .map_or(String::new(), |sd| format!(" ± {:.2}", 100.0 * sd))
    }

    /// Points against the FP model, signed (`-0.42`), or `missing`.
    pub fn vs_fp_text(&self) -> String {
        self.loss_points
            .map_or("missing".into(), |l| format!("{:+.2}", -l))
    }
}

/// The chosen arm's numbers in a step: its probability, and (where recorded) its trial's loss
/// change, the share of the model it saves and its reward.
pub fn why_chosen(step: &crate::search::state::StepRecord) -> String {
    let Some(arm) = step
        .arms
        .iter()
        .find(|a| a.layer == step.chosen && a.kind == step.chosen_kind)
    else {
        return String::new();
    };
    let mut parts = vec![format!(
        "P {:.2} (p {:.2}, r {:.2})",
        arm.mixed, arm.p, arm.r
    )];
    if let (Some(l), Some(base)) = (arm.loss, step.bandit_loss) {
        parts.push(format!("bandit loss {:+.4}", l - base));
    }
    if let (Some(l), Some(base)) = (arm.tempered_loss, step.bandit_tempered_loss) {
        parts.push(format!("tempered {:+.4}", l - base));
    }
    if let Some(sv) = arm.saved {
        parts.push(format!("saves {:.1}% of the size", 100.0 * sv));
    }
    if let Some(rw) = arm.reward {
        parts.push(format!("reward {rw:+.2}"));
    }
    parts.join("; ")
}

/// A whole report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Title.
    pub title: String,
    /// Model name.
    pub model: String,
    /// Layer names.
    pub layers: Vec<String>,
    /// Full-precision test top-1 (None: not recorded).
    pub fp_test: Option<f64>,
    /// Fine-tuning epochs each method got after allocation.
    pub ft_epochs: usize,
    /// Results.
    pub results: Vec<MethodResult>,
    /// The CCQ search trace.
    pub ccq_steps: Vec<StepRecord>,
    /// Free-form notes shown under the title.
    pub notes: Vec<String>,
    /// The control (`ccq compare --control`): the search's start policy, every layer at the
    /// ladder's top, fine-tuned from the FP model as every method is. A result's difference to
    /// it is the quantization's cost with the fine-tuning's own gain taken out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<MethodResult>,
}

impl Report {
    /// The results grouped by method (in their first order of appearance), each method's in
    /// budget order: a continued comparison's added budgets sit among the others.
    pub fn ordered(&self) -> Vec<&MethodResult> {
        let methods = method_order(self);
        let rank = |m: &str| methods.iter().position(|x| x == m);
        let mut v: Vec<&MethodResult> = self.results.iter().collect();
        v.sort_by(|a, b| {
            rank(&a.method)
                .cmp(&rank(&b.method))
                .then(a.budget.total_cmp(&b.budget))
        });
        v
    }

    /// Points `r` scores above the control (None without a control, for a result without a
    /// test score, and for an equal-compute result, which trained longer than the control).
    pub fn vs_control(&self, r: &MethodResult) -> Option<f64> {
        if r.method.ends_with(EQUAL) {
            return None;
        }
        Some(100.0 * (r.test_top1? - self.control.as_ref()?.test_top1?))
    }
}

/// A fraction as a percentage, or "missing".
pub fn pct(v: Option<f64>) -> String {
    v.map_or("missing".into(), |v| format!("{:.2}%", 100.0 * v))
}

fn bits_str(b: u32) -> String {
    if b == FLOAT_BITS {
        "fp".into()
    } else {
        b.to_string()
    }
}

/// Renders the report as one self-contained HTML page.
pub fn html(r: &Report) -> String {
    let methods = method_order(r);
    let mut s = header(r);
    accuracy_chart(&mut s, r, &methods);
    bits_charts(&mut s, r, &methods);
    if !r.ccq_steps.is_empty() {
        search_trace(&mut s, r);
    }
    results_table(&mut s, r);
    versus_table(&mut s, r);
    let _ = writeln!(
        s,
        "<p class=\"note\">layers: {}</p></body></html>",
        esc(&r.layers.join(", "))
    );
    s
}

/// Method names in their first order of appearance.
fn method_order(r: &Report) -> Vec<String> {
    let mut methods: Vec<String> = Vec::new();
    for m in &r.results {
        if !methods.contains(&m.method) {
            methods.push(m.method.clone());
        }
    }
    methods
}

/// The page's head, title, summary line and notes.
fn header(r: &Report) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>
body{{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}} table{{border-collapse:collapse;margin:12px 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} th{{background:#f4f4f4}} td:first-child,th:first-child{{text-align:left}}
.chart{{display:block;margin:16px 0}} .note{{color:#555}}</style></head><body><h1>{t}</h1>
<p>model <b>{m}</b>, full-precision test top-1 <b>{fp}</b>{e}.</p>"#,
        t = esc(&r.title),
        m = esc(&r.model),
        fp = pct(r.fp_test),
        e = if r.ft_epochs > 0 {
            format!(
                "; each method fine-tuned {} epoch(s) after allocation",
                r.ft_epochs
            )
        } else {
            String::new()
        }
    );
    if let Some(c) = &r.control {
        let _ = write!(
            s,
            "<p id=\"control\">control: the start policy ({}, {:.2}x) fine-tuned the same way from the FP model, test top-1 <b>{}</b>{} ({} points vs FP); the results table gives each method against it.</p>",
            esc(&uniform_bits(c)),
            c.compression,
            pct(c.test_top1),
            c.spread_text(),
            c.vs_fp_text(),
        );
    }
    for n in &r.notes {
        let _ = write!(s, r#"<p class="note">{}</p>"#, esc(n));
    }
    s
}

/// A policy's bits in short: `W8A8` when every layer has the same, else each layer's.
pub fn uniform_bits(r: &MethodResult) -> String {
    match r.bits.first() {
        Some(f) if r.bits.iter().all(|b| b.w == f.w && b.a == f.a) => {
            format!("W{}A{}", bits_str(f.w), bits_str(f.a))
        }
        _ => per_layer_bits(&r.bits),
    }
}

/// Each layer's `W/A` bits, space-separated.
fn per_layer_bits(bits: &[LayerBits]) -> String {
    bits.iter()
        .map(|b| format!("{}/{}", bits_str(b.w), bits_str(b.a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Test top-1 against compression, one series per method.
fn accuracy_chart(s: &mut String, r: &Report, methods: &[String]) {
    let series: Vec<Series> = methods
        .iter()
        .enumerate()
        .map(|(i, m)| Series {
            label: m.clone(),
            color: color(i),
            points: r
                .results
                .iter()
                .filter(|x| &x.method == m && !x.bits.is_empty())
                .filter_map(|x| Some((x.compression, 100.0 * x.test_top1?)))
                .collect(),
        })
        .chain(r.control.iter().filter_map(|c| {
            Some(Series {
                label: "control (start policy)".into(),
                color: color(methods.len()),
                points: vec![(c.compression, 100.0 * c.test_top1?)],
            })
        }))
        .filter(|s| !s.points.is_empty())
        .collect();
    s.push_str("<h2>Accuracy vs compression</h2>");
    s.push_str(&line_plot(
        "pareto",
        "test top-1 vs weight compression",
        "compression (FP32 bits / quantized bits)",
        "test top-1 (%)",
        &series,
        r.fp_test.map(|f| (100.0 * f, "FP32")),
    ));
}

/// Per-layer weight bits at each budget, one bar per method.
fn bits_charts(s: &mut String, r: &Report, methods: &[String]) {
    let mut budgets: Vec<f64> = r.results.iter().map(|x| x.budget).collect();
    budgets.sort_by(|a, b| a.total_cmp(b));
    budgets.dedup();
    s.push_str("<h2>Per-layer weight bits</h2>");
    for (bi, b) in budgets.iter().enumerate() {
        let bars: Vec<(String, String, Vec<f64>)> = methods
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                r.results
                    .iter()
                    .find(|x| &x.method == m && x.budget == *b && !x.bits.is_empty())
                    .map(|x| {
                        (
                            m.clone(),
                            color(i),
                            x.bits.iter().map(|b| b.w as f64).collect(),
                        )
                    })
            })
            .collect();
        if !bars.is_empty() {
            s.push_str(&bar_chart(
                &format!("bits{bi}"),
                &format!("weight bits per layer at {b}x"),
                &r.layers,
                &bars,
                "weight bits",
            ));
        }
    }
}

/// CCQ's search: accuracy and compression per step, and the step table.
fn search_trace(s: &mut String, r: &Report) {
    s.push_str("<h2>CCQ search trace</h2>");
    let acc = Series {
        label: "val top-1 after fine-tuning".into(),
        color: color(0),
        points: r
            .ccq_steps
            .iter()
            .map(|x| (x.step as f64, 100.0 * x.val_after))
            .collect(),
    };
    let before = Series {
        label: "val top-1 after lowering".into(),
        color: color(1),
        points: r
            .ccq_steps
            .iter()
            .map(|x| (x.step as f64, 100.0 * x.val_before))
            .collect(),
    };
    s.push_str(&line_plot(
        "trace-acc",
        "accuracy per step",
        "step",
        "validation top-1 (%)",
        &[acc, before],
        None,
    ));
    let comp = Series {
        label: "compression".into(),
        color: color(2),
        points: r
            .ccq_steps
            .iter()
            .map(|x| (x.step as f64, x.compression))
            .collect(),
    };
    s.push_str(&line_plot(
        "trace-size",
        "compression per step",
        "step",
        "compression (x)",
        &[comp],
        None,
    ));
    s.push_str("<table id=\"steps\"><tr><th>step</th><th>layer</th><th>bits</th><th>λ</th><th>val before</th><th>val after</th><th>epochs</th><th>compression</th><th>seconds</th><th>why this layer</th></tr>");
    for x in &r.ccq_steps {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{} → {}</td><td>{:.2}</td><td>{:.2}%</td><td>{:.2}%</td><td>{}</td><td>{:.2}x</td><td>{:.0}</td><td>{}</td></tr>",
            x.step,
            esc(&x.chosen),
            x.bits_before,
            x.bits_after,
            x.lambda,
            100.0 * x.val_before,
            100.0 * x.val_after,
            x.epochs,
            x.compression,
            x.seconds,
            esc(&why_chosen(x))
        );
    }
    s.push_str("</table>");
}

/// Every result, with its policy.
fn results_table(s: &mut String, r: &Report) {
    let control = r.control.is_some();
    let _ = write!(
        s,
        "<h2>Results</h2><table id=\"results\"><tr><th>method</th><th>budget</th><th>size (B)</th><th>compression</th><th>avg bits</th><th>BOPs</th><th>test top-1</th><th>loss vs FP (points)</th>{}<th>wall time (s)</th><th>policy (W/A per layer)</th></tr>",
        if control {
            "<th>vs control (points)</th>"
        } else {
            ""
        }
    );
    for x in r.ordered() {
        if x.bits.is_empty() {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}x</td><td colspan=\"{}\">{}</td></tr>",
                esc(&x.method),
                x.budget,
                8 + usize::from(control),
                esc(x.note.as_deref().unwrap_or("not run"))
            );
        } else {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}x</td><td>{}</td><td>{:.2}x</td><td>{:.2}</td><td>{:.3e}</td><td>{}</td><td>{}</td>{}<td>{:.0}</td><td>{}</td></tr>",
                esc(&x.method),
                x.budget,
                x.size_bytes,
                x.compression,
                x.avg_bits,
                x.bops as f64,
                pct(x.test_top1) + &x.spread_text(),
                x.vs_fp_text(),
                if control {
                    // An equal-compute result trained longer than the control: no difference.
                    format!(
                        "<td>{}</td>",
                        r.vs_control(x).map_or("—".into(), |d| format!("{d:+.2}"))
                    )
                } else {
                    String::new()
                },
                x.seconds,
                per_layer_bits(&x.bits)
            );
        }
    }
    s.push_str("</table>");
}

/// CCQ against each other method at each budget, paired by fine-tuning (nothing without a CCQ
/// result beside another).
fn versus_table(s: &mut String, r: &Report) {
    let rows = r.ccq_versus();
    if rows.is_empty() {
        return;
    }
    s.push_str(
        "<h2>CCQ against each method</h2><p class=\"note\">The mean difference of test top-1, CCQ minus the method, over pairs of fine-tunings with the same seed, and its 95% confidence interval (Student's t over the pairs): CCQ is ahead or behind only where the interval excludes 0.</p><table id=\"versus\"><tr><th>budget</th><th>method</th><th>CCQ − it (points)</th><th>pairs</th><th>verdict</th></tr>",
    );
    for v in rows {
        let _ = write!(
            s,
            "<tr><td>{}x</td><td>{}</td><td>{:+.2}{}</td><td>{}</td><td>{}</td></tr>",
            v.budget,
            esc(&v.method),
            v.points,
            v.half_width.map_or(String::new(), |h| format!(" ± {h:.2}")),
            v.pairs,
            v.verdict_text()
        );
    }
    s.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_plots_and_table() {
        let r = Report {
            title: "t".into(),
            model: "convnet".into(),
            layers: vec!["a".into(), "b".into()],
            fp_test: Some(0.9),
            ft_epochs: 1,
            results: vec![MethodResult {
                method: "ccq".into(),
                budget: 8.0,
                bits: vec![LayerBits { w: 4, a: 8 }, LayerBits { w: 3, a: 3 }],
                size_bytes: 10,
                compression: 8.1,
                avg_bits: 3.5,
                bops: 100,
                test_top1: Some(0.89),
                loss_points: Some(1.0),
                seconds: 3.0,
                note: None,
                epochs: Some(2.0),
                audition_epochs: None,
                // Two fine-tunings: their mean is the result, their spread is shown.
                test_top1_each: vec![0.88, 0.90],
            }],
            ccq_steps: vec![],
            notes: vec!["<x>".into()],
            control: None,
        };
        // Results added later (a budget added to a continued comparison, then another method)
        // are listed by method, then budget.
        let mut later = r.clone();
        let at = |method: &str, budget: f64| MethodResult {
            method: method.into(),
            budget,
            ..r.results[0].clone()
        };
        later.results = vec![
            at("ccq", 10.0),
            at("hawq", 10.0),
            at("ccq", 8.0),
            at("hawq", 8.0),
        ];
        let order: Vec<(&str, f64)> = later
            .ordered()
            .iter()
            .map(|x| (x.method.as_str(), x.budget))
            .collect();
        assert_eq!(
            order,
            [("ccq", 8.0), ("ccq", 10.0), ("hawq", 8.0), ("hawq", 10.0)]
        );
        let page = html(&later);
        // CCQ against HAWQ-style at each budget: here the same policy and fine-tunings.
        assert!(
            page.contains("<tr><td>8x</td><td>hawq</td><td>+0.00 ± 0.00</td><td>2</td><td>the same policy and fine-tunings</td></tr>"),
            "{page}"
        );
        let row = |m: &str, b: &str| page.find(&format!("<tr><td>{m}</td><td>{b}</td>")).unwrap();
        assert!(row("ccq", "8x") < row("ccq", "10x") && row("ccq", "10x") < row("hawq", "8x"));
        let h = html(&r);
        assert!(
            h.contains("<svg id=\"pareto\"")
                && h.contains("<svg id=\"bits0\"")
                && h.contains("<table id=\"results\"")
        );
        assert!(h.contains("&lt;x&gt;") && !h.contains("<x>"));
        assert!(h.contains("4/8 3/3"));
        // The repeats' sample standard deviation, in points.
        assert!(h.contains("89.00% ± 1.41"), "{h}");
        assert_eq!(
            r.results[0].top1_sd().map(|s| (s * 1e4).round()),
            Some(141.0)
        );
        // Without a control there is no such column; with one, each result is given against
        // it, except an equal-compute one (it trained longer than the control).
        assert!(!h.contains("vs control") && !h.contains("id=\"control\""));
        // CCQ alone: nothing to set it against.
        assert!(!h.contains("id=\"versus\""));
        let mut with = r.clone();
        with.results.push(MethodResult {
            method: format!("hawq{EQUAL}"),
            ..r.results[0].clone()
        });
        with.control = Some(MethodResult {
            method: "control".into(),
            bits: vec![LayerBits { w: 8, a: 8 }; 2],
            compression: 4.0,
            test_top1: Some(0.8925),
            loss_points: Some(0.75),
            test_top1_each: vec![],
            ..r.results[0].clone()
        });
        assert_eq!(
            with.vs_control(&with.results[0])
                .map(|d| (100.0 * d).round()),
            Some(-25.0)
        );
        assert_eq!(with.vs_control(&with.results[1]), None);
        let h = html(&with);
        assert!(h.contains("<th>vs control (points)</th>"), "{h}");
        assert!(h.contains("control: the start policy (W8A8, 4.00x)"), "{h}");
        assert!(h.contains("<b>89.25%</b> (-0.75 points vs FP)"), "{h}");
        assert!(
            h.contains("<td>-0.25</td>") && h.contains("<td>—</td>"),
            "{h}"
        );
        assert!(
            h.contains("control (start policy)"),
            "the pareto plot's point"
        );
    }
}
