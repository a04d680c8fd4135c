//! Per-layer Hessian traces by Hutchinson's method, with Hessian-vector products taken as central
//! finite differences of gradients: `H·v ≈ (∇L(w + εv) − ∇L(w − εv)) / 2ε` (burn 0.22 has no
//! double backward).
//!
//! One Rademacher vector over *all* layers at once gives an unbiased estimate of every layer's
//! block trace: `E[v_lᵀ (H v)_l] = tr(H_ll)`, as the cross terms `v_lᵀ H_lk v_k` average to zero.

use rand::Rng;

/// Gradients of the loss at the given per-layer weights.
pub type GradOracle<'a> = dyn FnMut(&[Vec<f32>]) -> Vec<Vec<f32>> + 'a;

/// Estimates `tr(H_ll)` for every layer `l` of `params` (one vector per layer) from a gradient
/// oracle, with `samples` Rademacher vectors and relative step `eps` (scaled by each layer's
/// RMS weight).
pub fn hutchinson(
    grad: &mut GradOracle,
    params: &[Vec<f32>],
    samples: usize,
    eps: f32,
    rng: &mut impl Rng,
) -> Vec<f64> {
    let mut traces = vec![0f64; params.len()];
    let steps: Vec<f32> = params
        .iter()
        .map(|p| {
            let rms = (p.iter().map(|x| x * x).sum::<f32>() / p.len().max(1) as f32).sqrt();
            eps * rms.max(1e-3)
        })
        .collect();
    for _ in 0..samples {
        let v: Vec<Vec<f32>> = params
            .iter()
            .map(|p| {
                p.iter()
                    .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                    .collect()
            })
            .collect();
        let shifted = |sign: f32| -> Vec<Vec<f32>> {
            params
                .iter()
                .zip(&v)
                .zip(&steps)
                .map(|((p, v), h)| p.iter().zip(v).map(|(w, d)| w + sign * h * d).collect())
                .collect()
        };
        let gp = grad(&shifted(1.0));
        let gm = grad(&shifted(-1.0));
        for l in 0..params.len() {
            let h = steps[l] as f64;
            let vhv: f64 = v[l]
                .iter()
                .zip(&gp[l])
                .zip(&gm[l])
                .map(|((d, a), b)| *d as f64 * (*a as f64 - *b as f64) / (2.0 * h))
                .sum();
            traces[l] += vhv / samples as f64;
        }
    }
    traces
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn quadratic_with_known_hessian() {
        // L = ½ Σ_l w_lᵀ A_l w_l + w_0ᵀ C w_1 (a cross term that must not leak into the traces).
        let a0 = [[4.0f32, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]]; // trace 9
        let a1 = [[10.0f32, -2.0], [-2.0, 0.5]]; // trace 10.5
        let c = [[0.7f32, -0.3], [0.2, 0.9], [-1.0, 0.4]];
        let mut grad = |w: &[Vec<f32>]| -> Vec<Vec<f32>> {
            let g0 = (0..3)
                .map(|i| {
                    (0..3).map(|j| a0[i][j] * w[0][j]).sum::<f32>()
                        + (0..2).map(|j| c[i][j] * w[1][j]).sum::<f32>()
                })
                .collect();
            let g1 = (0..2)
                .map(|i| {
                    (0..2).map(|j| a1[i][j] * w[1][j]).sum::<f32>()
                        + (0..3).map(|j| c[j][i] * w[0][j]).sum::<f32>()
                })
                .collect();
            vec![g0, g1]
        };
        let params = vec![vec![0.3, -0.2, 0.5], vec![1.0, -0.4]];
        let t = hutchinson(
            &mut grad,
            &params,
            4000,
            1e-2,
            &mut StdRng::seed_from_u64(1),
        );
        assert!((t[0] - 9.0).abs() < 0.25, "{t:?}");
        assert!((t[1] - 10.5).abs() < 0.3, "{t:?}");
    }
}
