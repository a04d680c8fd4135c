//! CCQ against each other method at each budget, paired by fine-tuning: repeat `k` of every
//! result in a comparison is shuffled by the same seed, so the differences of the pairs are what
//! the policies (and, for an equal-compute result, the longer training) changed, and their
//! spread says whether a difference is more than the fine-tuning's noise.

use super::{MethodResult, Report};
use crate::search::baselines::Method;
use serde::Serialize;

/// CCQ's result at one budget against another method's there.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Versus {
    /// The budget.
    pub budget: f64,
    /// The other method.
    pub method: String,
    /// Mean test top-1 of CCQ's fine-tunings minus the other's, paired by repeat (points).
    pub points: f64,
    /// Pairs.
    pub pairs: usize,
    /// Half-width of the 95% confidence interval of `points` (Student's t on the pairs'
    /// differences); `None` for fewer than two pairs.
    pub half_width: Option<f64>,
    /// Both were the same fine-tunings of the same policy: the difference is exactly 0.
    pub same: bool,
}

/// What a difference says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The same fine-tunings of the same policy.
    Same,
    /// Ahead: the whole confidence interval is above 0.
    Ahead,
    /// Behind: the whole confidence interval is below 0.
    Behind,
    /// The interval holds 0: level within the fine-tuning's noise.
    Level,
    /// One fine-tuning each: no spread to judge by (`--ft-repeats`).
    Unknown,
}

impl Versus {
    /// Whether CCQ is ahead, behind or level.
    pub fn verdict(&self) -> Verdict {
        if self.same {
            return Verdict::Same;
        }
        match self.half_width {
            None => Verdict::Unknown,
            Some(h) if self.points - h > 0.0 => Verdict::Ahead,
            Some(h) if self.points + h < 0.0 => Verdict::Behind,
            Some(_) => Verdict::Level,
        }
    }

    /// The verdict in words.
    pub fn verdict_text(&self) -> &'static str {
        match self.verdict() {
            Verdict::Same => "the same policy and fine-tunings",
            Verdict::Ahead => "CCQ ahead",
            Verdict::Behind => "CCQ behind",
            Verdict::Level => "within the noise (the interval holds 0)",
            Verdict::Unknown => "one fine-tuning each: no spread",
        }
    }
}

/// Two-sided 95% quantile of Student's t with `df` degrees of freedom (`df` ≥ 1).
fn t95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    T.get(df.max(1) - 1).copied().unwrap_or(1.96)
}

/// `ccq`'s result against `other`'s, paired by repeat (as many pairs as the shorter has).
pub fn versus(ccq: &MethodResult, other: &MethodResult) -> Option<Versus> {
    let (a, b) = (ccq.each_test(), other.each_test());
    let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| 100.0 * (x - y)).collect();
    if d.is_empty() || d.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n as f64;
    let half_width = (n > 1).then(|| {
        let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        t95(n - 1) * (var / n as f64).sqrt()
    });
    Some(Versus {
        budget: ccq.budget,
        method: other.method.clone(),
        points: mean,
        pairs: n,
        half_width,
        same: ccq.bits == other.bits && ccq.epochs == other.epochs && a == b,
    })
}

impl Report {
    /// CCQ (the result named `ccq`) against every other method's result at each budget where
    /// both were measured, by budget then method as listed.
    pub fn ccq_versus(&self) -> Vec<Versus> {
        let name = Method::Ccq.name();
        let rows: Vec<&MethodResult> = self
            .ordered()
            .into_iter()
            .filter(|r| r.test_top1.is_some() && !r.bits.is_empty())
            .collect();
        let mut out = Vec::new();
        for ccq in rows.iter().filter(|r| r.method == name) {
            out.extend(
                rows.iter()
                    .filter(|r| r.budget == ccq.budget && !r.method.starts_with(name))
                    .filter_map(|r| versus(ccq, r)),
            );
        }
        out.sort_by(|x, y| x.budget.total_cmp(&y.budget));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::policy::LayerBits;

    fn result(method: &str, w: u32, each: &[f64]) -> MethodResult {
        MethodResult {
            method: method.into(),
            budget: 8.0,
            bits: vec![LayerBits { w, a: w }],
            size_bytes: 1,
            compression: 8.0,
            avg_bits: w as f64,
            bops: 1,
            test_top1: Some(each.iter().sum::<f64>() / each.len() as f64),
            loss_points: Some(0.0),
            seconds: 1.0,
            test_top1_each: if each.len() > 1 {
                each.to_vec()
            } else {
                vec![]
            },
            note: None,
            epochs: Some(2.0),
            audition_epochs: None,
        }
    }

    #[test]
    fn pairs_by_repeat_and_judges_by_the_confidence_interval() {
        // Paired, the differences are 0.20, 0.30, 0.10, 0.20 points: ahead although the two
        // results' own spreads (0.4 points) overlap.
        let ccq = result("ccq", 4, &[0.902, 0.898, 0.906, 0.894]);
        let hawq = result("hawq", 3, &[0.900, 0.895, 0.905, 0.892]);
        let v = versus(&ccq, &hawq).unwrap();
        assert_eq!(v.pairs, 4);
        assert!((v.points - 0.2).abs() < 1e-9, "{v:?}");
        // sd of the differences 0.0816; t(3) = 3.182; half-width 3.182 * 0.0816 / 2 = 0.130.
        assert!((v.half_width.unwrap() - 0.1299).abs() < 1e-3, "{v:?}");
        assert_eq!(v.verdict(), Verdict::Ahead);
        // The same differences, reversed: behind; spread wider than the mean: level.
        let back = versus(&hawq, &ccq).unwrap();
        assert_eq!(back.verdict(), Verdict::Behind);
        let noisy = result("hawq", 3, &[0.890, 0.905, 0.895, 0.900]);
        assert_eq!(versus(&ccq, &noisy).unwrap().verdict(), Verdict::Level);
        // One fine-tuning each: no interval. The same policy and fine-tunings: the same.
        let one = versus(&result("ccq", 4, &[0.9]), &result("hawq", 3, &[0.89])).unwrap();
        assert_eq!((one.half_width, one.verdict()), (None, Verdict::Unknown));
        let twin = versus(&ccq, &result("hawq", 4, &[0.902, 0.898, 0.906, 0.894])).unwrap();
        assert_eq!((twin.points, twin.verdict()), (0.0, Verdict::Same));
        // Unequal repeats pair as far as the shorter goes.
        let short = versus(&ccq, &result("hawq", 3, &[0.900, 0.895])).unwrap();
        assert_eq!(short.pairs, 2);
        assert!((short.half_width.unwrap() - 12.706 * 0.05).abs() < 1e-6);
    }

    #[test]
    fn a_report_gives_ccq_against_each_other_method_at_each_budget() {
        let at = |method: &str, budget: f64, w: u32| MethodResult {
            budget,
            ..result(method, w, &[0.90, 0.91])
        };
        let mut skipped = at("random", 8.0, 4);
        skipped.bits.clear();
        skipped.test_top1 = None;
        let r = Report {
            title: "t".into(),
            model: "m".into(),
            layers: vec!["a".into()],
            fp_test: Some(0.92),
            ft_epochs: 2,
            results: vec![
                at("ccq", 10.0, 3),
                at("ccq", 8.0, 4),
                at("ccq (not re-allocated)", 8.0, 3),
                at("hawq", 8.0, 3),
                at("hawq", 10.0, 3),
                skipped,
            ],
            ccq_steps: vec![],
            notes: vec![],
            control: None,
        };
        let versus = r.ccq_versus();
        let v: Vec<(f64, &str, Verdict)> = versus
            .iter()
            .map(|v| (v.budget, v.method.as_str(), v.verdict()))
            .collect();
        // Not CCQ's own other rows, not a method without a result; at 10x the same policy.
        assert_eq!(
            v,
            [(8.0, "hawq", Verdict::Level), (10.0, "hawq", Verdict::Same)]
        );
    }
}
