//! The competition's maths: exponential weights over layers, the memory prior, the λ mix and
//! seeded sampling.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Multiplicative update `α_l ← α_l · exp(η · a_l)` for every awake arm (`acc[l]` is `Some`);
/// asleep arms get α = 0.
pub fn update_weights(alpha: &mut [f64], acc: &[Option<f64>], eta: f64) {
    for (a, acc) in alpha.iter_mut().zip(acc) {
        *a = match acc {
            Some(x) => *a * (eta * x).exp(),
            None => 0.0,
        };
    }
}

/// Normalises non-negative weights to probabilities; all-zero input gives all zeros.
pub fn normalise(w: &[f64]) -> Vec<f64> {
    let s: f64 = w.iter().sum();
    if s <= 0.0 {
        return vec![0.0; w.len()];
    }
    w.iter().map(|x| x / s).collect()
}

/// Memory prior: proportional to what lowering each awake arm saves (`savings[l]`, 0 when asleep).
/// Falls back to uniform over awake arms when no arm saves anything in the target metric.
pub fn memory_prior(savings: &[f64], awake: &[bool]) -> Vec<f64> {
    let w: Vec<f64> = savings
        .iter()
        .zip(awake)
        .map(|(s, a)| if *a { s.max(0.0) } else { 0.0 })
        .collect();
    if w.iter().sum::<f64>() > 0.0 {
        normalise(&w)
    } else {
        normalise(
            &awake
                .iter()
                .map(|a| if *a { 1.0 } else { 0.0 })
                .collect::<Vec<_>>(),
        )
    }
}

/// The λ schedule: `odd` on odd steps; `a·(T − t)/T + b` on even steps (reference: 0, 0.6, 0.4).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LambdaSchedule {
    /// λ on odd steps.
    pub odd: f64,
    /// Slope term on even steps.
    pub a: f64,
    /// Constant term on even steps.
    pub b: f64,
}

impl Default for LambdaSchedule {
    fn default() -> Self {
        LambdaSchedule {
            odd: 0.0,
            a: 0.6,
            b: 0.4,
        }
    }
}

impl LambdaSchedule {
    /// λ_t for step `t` (1-based) of `total`.
    pub fn at(&self, t: usize, total: usize) -> f64 {
        if t % 2 == 1 {
            self.odd
        } else {
            let total = total.max(1) as f64;
            (self.a * (total - t as f64).max(0.0) / total + self.b).clamp(0.0, 1.0)
        }
    }
}

/// `P = (1 − λ)·p + λ·r`.
pub fn mix(p: &[f64], r: &[f64], lambda: f64) -> Vec<f64> {
    p.iter()
        .zip(r)
        .map(|(p, r)| (1.0 - lambda) * p + lambda * r)
        .collect()
}

/// Samples an index from the distribution `probs` (need not be exactly normalised); never
/// returns an index of zero probability.
pub fn sample(probs: &[f64], rng: &mut impl Rng) -> Option<usize> {
    let total: f64 = probs.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = rng.random::<f64>() * total;
    let mut last = None;
    for (i, &p) in probs.iter().enumerate() {
        if p <= 0.0 {
            continue;
        }
        last = Some(i);
        if x < p {
            return Some(i);
        }
        x -= p;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn exponential_weights_and_probabilities() {
        let mut alpha = vec![1.0, 1.0, 1.0];
        update_weights(&mut alpha, &[Some(0.9), None, Some(0.5)], 1.0);
        assert!((alpha[0] - 0.9f64.exp()).abs() < 1e-12);
        assert_eq!(alpha[1], 0.0);
        let p = normalise(&alpha);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(p[1], 0.0);
        assert!(p[0] > p[2], "the more accurate trial gets more weight");
    }

    #[test]
    fn prior_and_mix_sum_to_one_and_skip_asleep() {
        let r = memory_prior(&[300.0, 500.0, 200.0], &[true, false, true]);
        assert_eq!(r, vec![0.6, 0.0, 0.4]);
        let p = vec![0.5, 0.0, 0.5];
        for lambda in [0.0, 0.4, 0.76, 1.0] {
            let m = mix(&p, &r, lambda);
            assert!((m.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert_eq!(m[1], 0.0);
        }
        assert_eq!(memory_prior(&[0.0, 0.0], &[true, false]), vec![1.0, 0.0]);
    }

    #[test]
    fn lambda_schedule_values() {
        let s = LambdaSchedule::default();
        assert_eq!(s.at(1, 10), 0.0);
        assert_eq!(s.at(3, 10), 0.0);
        assert!((s.at(2, 10) - (0.6 * 0.8 + 0.4)).abs() < 1e-12);
        assert!((s.at(10, 10) - 0.4).abs() < 1e-12);
        assert!(
            s.at(2, 10) > s.at(8, 10),
            "early even steps lean on memory savings"
        );
    }

    #[test]
    fn sampling_never_picks_asleep() {
        let mut rng = StdRng::seed_from_u64(7);
        let probs = [0.2, 0.0, 0.8, 0.0];
        let mut counts = [0usize; 4];
        for _ in 0..5000 {
            counts[sample(&probs, &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[1] + counts[3], 0);
        assert!((counts[2] as f64 / 5000.0 - 0.8).abs() < 0.03, "{counts:?}");
        assert_eq!(sample(&[0.0, 0.0], &mut rng), None);
    }
}

/// Exponential weights over the arms: reset every step (the reference), or log-weights that
/// carry over with decay.
#[derive(Clone, Debug, PartialEq)]
pub struct Competition {
    /// α per arm.
    pub alpha: Vec<f64>,
    /// log α per arm, carried between steps when `carry` > 0.
    pub log_w: Vec<f64>,
}

impl Competition {
    /// α = 1 for awake arms, 0 for asleep ones.
    pub fn new(awake: &[bool]) -> Self {
        let mut c = Competition {
            alpha: vec![0.0; awake.len()],
            log_w: vec![0.0; awake.len()],
        };
        c.reset(awake);
        c
    }

    /// The reset at the end of a step: awake arms back to 1, asleep arms at 0.
    pub fn reset(&mut self, awake: &[bool]) {
        for (a, w) in self.alpha.iter_mut().zip(awake) {
            *a = if *w { 1.0 } else { 0.0 };
        }
    }

    /// Updates with the trial accuracies and returns the inter-layer probabilities.
    pub fn score(&mut self, acc: &[Option<f64>], eta: f64) -> Vec<f64> {
        update_weights(&mut self.alpha, acc, eta);
        normalise(&self.alpha)
    }

    /// Updates with `rewards` and returns the inter-layer probabilities. With `carry` = 0 this
    /// is [`Competition::score`] after a reset; otherwise `log α ← carry·log α + η·reward` for
    /// the arms that compete, and the others get probability 0 (their log-weight is kept).
    pub fn update(&mut self, rewards: &[Option<f64>], eta: f64, carry: f64) -> Vec<f64> {
        if carry == 0.0 {
            let awake: Vec<bool> = rewards.iter().map(Option::is_some).collect();
            self.reset(&awake);
            return self.score(rewards, eta);
        }
        for (lw, r) in self.log_w.iter_mut().zip(rewards) {
            if let Some(r) = r {
                *lw = carry * *lw + eta * r;
            }
        }
        let max = rewards
            .iter()
            .zip(&self.log_w)
            .filter(|(r, _)| r.is_some())
            .map(|(_, &l)| l)
            .fold(f64::NEG_INFINITY, f64::max);
        for ((a, r), &l) in self.alpha.iter_mut().zip(rewards).zip(&self.log_w) {
            *a = if r.is_some() { (l - max).exp() } else { 0.0 };
        }
        normalise(&self.alpha)
    }
}
