//! Quantizer maths: levels, ranges, per-channel scales, and gradients through the STE and PACT.

use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use ccq::host::to_f32;
use ccq::quant::quantizer::{dorefa_weight, lsq, pact, signed_range, ste_round};

fn distinct(v: &[f32]) -> Vec<f32> {
    let mut d: Vec<f32> = v.to_vec();
    d.sort_by(|a, b| a.total_cmp(b));
    d.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
    d
}

#[test]
fn dorefa_has_2_pow_k_levels_in_minus_one_one() {
    let dev = Device::flex();
    let w = Tensor::<2>::random([64, 50], Distribution::Normal(0.0, 0.5), &dev);
    for bits in 2..=8u32 {
        let q = to_f32(dorefa_weight(w.clone(), bits));
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
fn pact_levels_range_and_alpha_gradient() {
    let dev = Device::flex().autodiff();
    let x = Tensor::<1>::from_data(TensorData::from([-1.0f32, 0.1, 0.5, 0.9, 1.5, 3.0]), &dev)
        .require_grad();
    let alpha = Tensor::<1>::from_data(TensorData::from([1.0f32]), &dev).require_grad();
    let y = pact(x.clone(), alpha.clone(), 2);
    let v = to_f32(y.clone());
    // step α/3: 0, 1/3, 2/3, 1
    let want = [0.0, 0.0, 2.0 / 3.0, 1.0, 1.0, 1.0];
    for (a, b) in v.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{v:?}");
    }
    let g = y.sum().backward();
    let ga = to_f32(alpha.grad(&g).unwrap());
    assert_eq!(
        ga,
        vec![2.0],
        "α gets gradient 1 from each of the two inputs above it"
    );
    let gx = to_f32(x.grad(&g).unwrap());
    assert_eq!(
        gx,
        vec![0.0, 1.0, 1.0, 1.0, 0.0, 0.0],
        "STE inside [0, α], zero outside"
    );
}

#[test]
fn ste_round_passes_gradient() {
    let dev = Device::flex().autodiff();
    let x = Tensor::<1>::from_data(TensorData::from([0.2f32, 1.7, -2.4]), &dev).require_grad();
    let y = ste_round(x.clone()) * 3.0;
    assert_eq!(to_f32(y.clone()), vec![0.0, 6.0, -6.0]);
    let g = y.sum().backward();
    assert_eq!(to_f32(x.grad(&g).unwrap()), vec![3.0, 3.0, 3.0]);
}

#[test]
fn lsq_per_channel_scales() {
    let dev = Device::flex().autodiff();
    let w = Tensor::<2>::random([4, 30], Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let steps = [0.1f32, 0.2, 0.5, 1.0];
    let s = Tensor::<1>::from_data(TensorData::from(steps), &dev).require_grad();
    let bits = 3;
    let (qn, qp) = signed_range(bits);
    assert_eq!((qn, qp), (-4.0, 3.0));
    let q = lsq(w.clone(), s.clone(), 0, qn, qp);
    let v = to_f32(q.clone());
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
    let g = q.sum().backward();
    let gs = to_f32(s.grad(&g).unwrap());
    assert!(
        gs.iter().all(|x| x.is_finite()) && gs.iter().any(|x| *x != 0.0),
        "steps learn: {gs:?}"
    );
    assert!(w.grad(&g).is_some());
}
