//! Quantizer maths: levels, ranges, per-channel scales, and gradients through the STE and PACT.

use ccq::host::{tensor, to_f32};
use ccq::quant::quantizer::{dorefa_weight, lsq, pact, signed_range, ste_round};
use tch::{Device, Kind, Tensor};

fn distinct(v: &[f32]) -> Vec<f32> {
    let mut d: Vec<f32> = v.to_vec();
    d.sort_by(|a, b| a.total_cmp(b));
    d.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
    d
}

fn t(v: &[f32]) -> Tensor {
    tensor(v, &[v.len() as i64], Device::Cpu)
}

/// `d sum(y) / d x` for each input.
fn grads(y: &Tensor, inputs: &[&Tensor]) -> Vec<Vec<f32>> {
    let loss = y.sum(Kind::Float);
    Tensor::run_backward(&[loss], inputs, false, false)
        .iter()
        .map(to_f32)
        .collect()
}

#[test]
fn dorefa_has_2_pow_k_levels_in_minus_one_one() {
    tch::manual_seed(1);
    let w = Tensor::randn([64, 50], (Kind::Float, Device::Cpu)) * 0.5;
    for bits in 2..=8u32 {
        let q = to_f32(&dorefa_weight(&w, bits));
        let d = distinct(&q);
        assert!(d.len() <= 1 << bits, "{bits} bits: {} levels", d.len());
        assert!(
            d.len() >= (1 << bits).min(8) - 1,
            "{bits} bits uses its levels: {}",
            d.len()
        );
        assert!(q.iter().all(|x| (-1.0..=1.0).contains(x)));
        // levels sit on the grid 2k/(2^b-1) - 1
        let n = ((1u32 << bits) - 1) as f32;
        assert!(
            d.iter()
                .all(|x| (((x + 1.0) / 2.0 * n) - ((x + 1.0) / 2.0 * n).round()).abs() < 1e-3)
        );
        let ends = (d[0] + 1.0).abs() < 1e-6 || (d.last().unwrap() - 1.0).abs() < 1e-6;
        assert!(ends, "the largest |tanh w| maps to ±1: {d:?}");
    }
}

#[test]
fn dorefa_gradient_is_straight_through_tanh() {
    let w = t(&[0.3, -0.8, 1.2]).set_requires_grad(true);
    let g = &grads(&dorefa_weight(&w, 4), &[&w])[0];
    assert!(
        g.iter().all(|x| x.is_finite()) && g.iter().any(|x| *x != 0.0),
        "{g:?}"
    );
}

#[test]
fn pact_levels_range_and_alpha_gradient() {
    let x = t(&[-1.0, 0.1, 0.5, 0.9, 1.5, 3.0]).set_requires_grad(true);
    let alpha = t(&[1.0]).set_requires_grad(true);
    let y = pact(&x, &alpha, 2);
    let v = to_f32(&y);
    // step α/3: 0, 1/3, 2/3, 1
    let want = [0.0, 0.0, 2.0 / 3.0, 1.0, 1.0, 1.0];
    for (a, b) in v.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{v:?}");
    }
    let g = grads(&y, &[&x, &alpha]);
    assert_eq!(
        g[1],
        vec![2.0],
        "α gets gradient 1 from each of the two inputs above it"
    );
    assert_eq!(
        g[0],
        vec![0.0, 1.0, 1.0, 1.0, 0.0, 0.0],
        "STE inside [0, α], zero outside"
    );
}

#[test]
fn ste_round_passes_gradient() {
    let x = t(&[0.2, 1.7, -2.4]).set_requires_grad(true);
    let y = ste_round(&x) * 3.0;
    assert_eq!(to_f32(&y), vec![0.0, 6.0, -6.0]);
    assert_eq!(grads(&y, &[&x])[0], vec![3.0, 3.0, 3.0]);
}

#[test]
fn lsq_per_channel_scales() {
    tch::manual_seed(2);
    let w = Tensor::randn([4, 30], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let steps = [0.1f32, 0.2, 0.5, 1.0];
    let s = t(&steps).set_requires_grad(true);
    let bits = 3;
    let (qn, qp) = signed_range(bits);
    assert_eq!((qn, qp), (-4.0, 3.0));
    let q = lsq(&w, &s, 0, qn, qp);
    let v = to_f32(&q);
    for (c, step) in steps.iter().enumerate() {
        let row = &v[c * 30..(c + 1) * 30];
        for x in row {
            let k = x / step;
            assert!(
                (k - k.round()).abs() < 1e-4,
                "channel {c}: {x} is not a multiple of {step}"
            );
            assert!(k.round() >= qn && k.round() <= qp);
        }
        assert!(distinct(row).len() <= 8);
    }
    let g = grads(&q, &[&w, &s]);
    assert!(
        g[1].iter().all(|x| x.is_finite()) && g[1].iter().any(|x| *x != 0.0),
        "steps learn: {:?}",
        g[1]
    );
    assert_eq!(g[0].len(), 120);
}

/// The fused LSQ op computes the LSQ paper's gradients: inside the range `round(v) - v`, below
/// it `qn`, above it `qp`, all times `1/sqrt(n·qp)`; a per-tensor step gets their sum.
#[test]
fn lsq_gradients_match_the_paper() {
    let x = t(&[0.26, -0.74, 3.0, -5.0, 0.5]).set_requires_grad(true);
    let s = t(&[0.5]).set_requires_grad(true);
    let (qn, qp) = signed_range(3);
    let q = lsq(&x, &s, 0, qn, qp);
    assert_eq!(to_f32(&q), vec![0.5, -0.5, 1.5, -2.0, 0.5]);
    let g = grads(&q, &[&x, &s]);
    assert_eq!(g[0], vec![1.0, 1.0, 0.0, 0.0, 1.0]);
    let scale = 1.0 / (5.0f32 * qp).sqrt();
    let v: [f32; 5] = [0.52, -1.48, 6.0, -10.0, 1.0];
    let want: f32 = v
        .iter()
        .map(|&v| {
            if v < qn {
                qn
            } else if v > qp {
                qp
            } else {
                v.round() - v
            }
        })
        .sum::<f32>()
        * scale;
    assert!((g[1][0] - want).abs() < 1e-5, "{} vs {want}", g[1][0]);
}
