//! Exact bit allocation: minimise the summed sensitivity `Σ Ω_l(b_l)` subject to a budget on
//! the summed cost `Σ c_l(b_l)`, by dynamic programming over layers and integer costs.

/// One layer's options: `(bits, cost, sensitivity)`.
pub type Options = Vec<(u32, u64, f64)>;

/// The choice per layer minimising total sensitivity with total cost ≤ `budget`, or `None` if
/// even the cheapest choices exceed it. Costs are divided by `unit` (rounded up, so every
/// returned allocation is feasible); `unit = 1` is exact.
pub fn allocate(layers: &[Options], budget: u64, unit: u64) -> Option<Vec<u32>> {
    let unit = unit.max(1);
    let cap = (budget / unit) as usize;
    let n = layers.len();
    // best[c] = min sensitivity using layers so far with total (scaled) cost exactly c.
    let mut best = vec![f64::INFINITY; cap + 1];
    best[0] = 0.0;
    let mut choice: Vec<Vec<u8>> = Vec::with_capacity(n);
    for opts in layers {
        let mut next = vec![f64::INFINITY; cap + 1];
        let mut pick = vec![u8::MAX; cap + 1];
        for (c, &s) in best.iter().enumerate() {
            if !s.is_finite() {
                continue;
            }
            for (k, &(_, cost, omega)) in opts.iter().enumerate() {
                let nc = c + cost.div_ceil(unit) as usize;
                if nc <= cap && s + omega < next[nc] {
                    next[nc] = s + omega;
                    pick[nc] = k as u8;
                }
            }
        }
        best = next;
        choice.push(pick);
    }
    let (mut c, _) = best
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_finite())
        .min_by(|a, b| a.1.total_cmp(b.1))?;
    let mut out = vec![0u32; n];
    for l in (0..n).rev() {
        let k = choice[l][c] as usize;
        out[l] = layers[l][k].0;
        c -= layers[l][k].1.div_ceil(unit) as usize;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(layers: &[Options], budget: u64) -> Option<(f64, Vec<u32>)> {
        let mut best: Option<(f64, Vec<u32>)> = None;
        let n = layers.len();
        let total: usize = layers.iter().map(|o| o.len()).product();
        for mut code in 0..total {
            let (mut cost, mut s, mut bits) = (0, 0.0, vec![]);
            for o in layers.iter().take(n) {
                let (b, c, w) = o[code % o.len()];
                code /= o.len();
                cost += c;
                s += w;
                bits.push(b);
            }
            if cost <= budget && best.as_ref().is_none_or(|(bs, _)| s < *bs) {
                best = Some((s, bits));
            }
        }
        best
    }

    #[test]
    fn matches_brute_force() {
        // Three layers, ladder 8/4/2; sensitivity grows as bits shrink, at layer-specific rates.
        let mk = |params: u64, sens: f64| -> Options {
            [8u32, 4, 2]
                .iter()
                .map(|&b| (b, params * b as u64, sens / 4f64.powi(b as i32)))
                .collect()
        };
        let layers = vec![mk(100, 50.0), mk(1000, 1.0), mk(300, 900.0)];
        for budget in [2800, 3000, 5000, 7000, 9000, 11200, 20000] {
            let got = allocate(&layers, budget, 1);
            let want = brute(&layers, budget);
            match (got, want) {
                (Some(g), Some((ws, _))) => {
                    let gs: f64 = g
                        .iter()
                        .zip(&layers)
                        .map(|(b, o)| o.iter().find(|x| x.0 == *b).unwrap().2)
                        .sum();
                    let gc: u64 = g
                        .iter()
                        .zip(&layers)
                        .map(|(b, o)| o.iter().find(|x| x.0 == *b).unwrap().1)
                        .sum();
                    assert!(gc <= budget);
                    assert!(
                        (gs - ws).abs() < 1e-12,
                        "budget {budget}: {g:?} has {gs}, optimum {ws}"
                    );
                }
                (None, None) => {}
                (g, w) => panic!("budget {budget}: {g:?} vs {w:?}"),
            }
        }
        assert_eq!(
            allocate(&layers, 2000, 1),
            None,
            "below the cheapest allocation"
        );
    }
}
