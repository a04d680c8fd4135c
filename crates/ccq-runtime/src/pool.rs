//! Pooling on wide integer registers.

use crate::validate::Shape;

#[inline(always)]
pub(crate) fn max_pool(
    x: &[i64],
    [c, h, w]: Shape,
    [_, oh, ow]: Shape,
    k: usize,
    s: usize,
    p: usize,
) -> Vec<i64> {
    let mut out = Vec::with_capacity(c * oh * ow);
    if k == 2 && s == 2 && p == 0 {
        // The common 2×2 window, every window inside the plane.
        for plane in x.chunks_exact(h * w).take(c) {
            for oy in 0..oh {
                let a = &plane[2 * oy * w..2 * oy * w + 2 * ow];
                let b = &plane[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow];
                out.extend(
                    a.chunks_exact(2)
                        .zip(b.chunks_exact(2))
                        .map(|(a, b)| a[0].max(a[1]).max(b[0].max(b[1]))),
                );
            }
        }
        return out;
    }
    for ch in 0..c {
        let plane = &x[ch * h * w..(ch + 1) * h * w];
        for oy in 0..oh {
            let (y0, y1) = window(oy, (k, s, p), h);
            for ox in 0..ow {
                let (x0, x1) = window(ox, (k, s, p), w);
                let mut m = i64::MIN;
                if y0 < y1 && x0 < x1 {
                    for row in plane[y0 * w..y1 * w].chunks_exact(w) {
                        for &v in &row[x0..x1] {
                            m = m.max(v);
                        }
                    }
                }
                out.push(m);
            }
        }
    }
    out
}

/// The input positions `start..end` (clipped to `0..n`) of output position `o`'s window of
/// `k`, stride `s`, padding `p`.
#[inline(always)]
fn window(o: usize, (k, s, p): (usize, usize, usize), n: usize) -> (usize, usize) {
    (
        (o * s).saturating_sub(p),
        (o * s + k).saturating_sub(p).min(n),
    )
}

/// Rounded mean of each channel (`hw` values each), in i64 when the sum is proven to fit.
#[inline(always)]
pub(crate) fn global_avg_pool(x: &[i64], c: usize, hw: usize, in_i64: bool) -> Vec<i64> {
    x.chunks_exact(hw)
        .take(c)
        .map(|ch| {
            if in_i64 {
                let n = hw as i64;
                (ch.iter().sum::<i64>() * 2 + n).div_euclid(2 * n)
            } else {
                let n = hw as i128;
                let sum: i128 = ch.iter().map(|&v| v as i128).sum();
                (sum * 2 + n).div_euclid(2 * n) as i64
            }
        })
        .collect()
}

/// Average pooling: each window's sum (in i128) divided by its count, rounded half up: the
/// whole `k×k` window with `count_pad`, else its positions inside the plane.
pub(crate) fn avg_pool(
    x: &[i64],
    [c, h, w]: Shape,
    [_, oh, ow]: Shape,
    (k, s, p): (usize, usize, usize),
    count_pad: bool,
) -> Vec<i64> {
    let mut out = Vec::with_capacity(c * oh * ow);
    for ch in 0..c {
        let plane = &x[ch * h * w..(ch + 1) * h * w];
        for oy in 0..oh {
            let (y0, y1) = window(oy, (k, s, p), h);
            for ox in 0..ow {
                let (x0, x1) = window(ox, (k, s, p), w);
                let mut sum: i128 = 0;
                for row in plane[y0 * w..y1.max(y0) * w].chunks_exact(w) {
                    for &v in &row[x0..x1.max(x0)] {
                        sum += v as i128;
                    }
                }
                let n = if count_pad {
                    (k * k) as i128
                } else {
                    ((y1.saturating_sub(y0)) * (x1.saturating_sub(x0))).max(1) as i128
                };
                out.push((sum * 2 + n).div_euclid(2 * n) as i64);
            }
        }
    }
    out
}

/// Per-channel `v·mul[c]·2^-SCALE_FRAC + bias[c]`, rounded half up, within ±`limit`.
pub(crate) fn scale(x: &[i64], hw: usize, mul: &[i64], bias: &[i64], limit: i64) -> Vec<i64> {
    let f = crate::format::SCALE_FRAC;
    x.chunks_exact(hw)
        .zip(mul.iter().zip(bias))
        .flat_map(|(ch, (&m, &b))| {
            ch.iter().map(move |&v| {
                let y = ((v as i128 * m as i128 + (1i128 << (f - 1))) >> f) + b as i128;
                y.clamp(-limit as i128, limit as i128) as i64
            })
        })
        .collect()
}
