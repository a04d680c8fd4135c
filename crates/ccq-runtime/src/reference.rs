//! The integer engine as it was before the speed work (one image at a time, i128 fixed point,
//! checked im2col), kept as the reference the fast engine ([`crate::engine`]) must match bit for
//! bit. Not for deployment: it is several times slower.
//!
//! Between the input quantization (normalised pixels to fixed point) and the logits everything is
//! integer: k-bit activations × k-bit weights accumulate in 32 bits; BatchNorm, scales and
//! residual adds are one fixed-point requantization per output into a wide (64-bit, 2^-24)
//! fixed-point register; each layer then takes its k-bit levels from that register with one
//! integer multiply-shift and clip; ReLU and pooling act on integers.
//! Images run in parallel (rayon); the inner products are contiguous `i16` dot products that the
//! compiler vectorises (SIMD multiply-add).

use super::format::{IntModel, Op, Term, WIDE_FRAC};
use super::validate::Shape;
use anyhow::{Result, bail};
use rayon::prelude::*;

/// Fractional bits of the requantization multipliers.
const SHIFT: u32 = 24;

struct PreparedLayer {
    /// Integer weights `[out][k]`, rows contiguous.
    w: Vec<i16>,
    /// The same as i32 (the first layer multiplies them with the wide fixed-point input).
    w32: Vec<i32>,
    /// Row length.
    k: usize,
    /// Per output channel: multiplier and bias of the accumulator in units of 2^-(WIDE+SHIFT).
    mult: Vec<i64>,
    bias: Vec<i64>,
    /// Quantization of a wide input to this layer's grid: `round(2^SHIFT / step)` and the max level.
    q_mult: i64,
    q_max: i32,
    q_min: i32,
    first: bool,
}

/// A model ready to run.
pub struct ReferenceEngine {
    /// The model.
    pub model: IntModel,
    layers: Vec<PreparedLayer>,
    shapes: Vec<Shape>,
}

/// Wide registers saturate at ±2^62 (±2.7·10^11 in real units), far beyond any activation of a
/// trained network; with at most 16 terms of < 2^127/32 each the affine sum cannot overflow i128.
const WIDE_LIMIT: i64 = 1 << 62;

/// `round(v / 2^s)`, saturated to the i64 range.
fn round_shift(v: i128, s: u32) -> i64 {
    (v.saturating_add(1i128 << (s - 1)) >> s).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl ReferenceEngine {
    /// Prepares the fixed-point constants and checks the graph's shapes.
    pub fn new(model: IntModel) -> Result<Self> {
        let shapes = model.validate()?;
        let wide = 2f64.powi(WIDE_FRAC as i32);
        let one = 2f64.powi(SHIFT as i32);
        let mut layers = Vec::new();
        for (li, l) in model.layers.iter().enumerate() {
            // Validation bounds every integer weight to the i16 range.
            let w: Vec<i16> = l.weights().iter().map(|&v| v as i16).collect();
            let k = w.len() / l.out_ch.max(1);
            let first = li == 0;
            let s_in = if first {
                2f64.powi(-(model.input.frac_bits as i32))
            } else {
                l.act_step as f64
            };
            let mut mult = Vec::with_capacity(l.out_ch);
            let mut bias = Vec::with_capacity(l.out_ch);
            for c in 0..l.out_ch {
                let pm = l.post_mul.get(c).copied().unwrap_or(1.0) as f64;
                mult.push((pm * s_in * l.scale(c) as f64 * wide * one).round() as i64);
                bias.push((l.post_bias[c] as f64 * wide * one).round() as i64);
            }
            let q_mult = if first {
                0
            } else {
                (one / l.act_step as f64).round() as i64
            };
            let q_max = if l.a_bits >= 16 && l.a_min == 0 {
                i16::MAX as i32
            } else {
                l.a_max()
            };
            let q_min = l.a_min;
            let w32 = w.iter().map(|&v| v as i32).collect();
            layers.push(PreparedLayer {
                w,
                w32,
                k,
                mult,
                bias,
                q_mult,
                q_max,
                q_min,
                first,
            });
        }
        Ok(ReferenceEngine {
            model,
            layers,
            shapes,
        })
    }

    /// Normalised, fixed-point input of one image of raw pixels.
    fn input(&self, pixels: &[u8]) -> Vec<i64> {
        let i = &self.model.input;
        let hw = i.height * i.width;
        let f = 2f64.powi(i.frac_bits as i32);
        let mut out = Vec::with_capacity(pixels.len());
        for c in 0..i.channels {
            let (m, s) = (i.mean[c] as f64, i.std[c] as f64);
            out.extend(
                pixels[c * hw..(c + 1) * hw]
                    .iter()
                    .map(|&p| (((p as f64 / 255.0 - m) / s) * f).round() as i64),
            );
        }
        out
    }

    /// The k-bit levels a layer reads from a wide register.
    fn quantize(&self, l: &PreparedLayer, x: &[i64]) -> Vec<i16> {
        x.iter()
            .map(|&v| {
                round_shift(v as i128 * l.q_mult as i128, SHIFT + WIDE_FRAC)
                    .clamp(l.q_min as i64, l.q_max as i64) as i16
            })
            .collect()
    }

    /// Runs one image (raw `u8`, CHW); returns every register (register 0 is the input).
    pub fn run_traced(&self, pixels: &[u8]) -> Result<Vec<Vec<i64>>> {
        let i = &self.model.input;
        if pixels.len() != i.channels * i.height * i.width {
            bail!(
                "{} pixel values for one {}×{}×{} image",
                pixels.len(),
                i.channels,
                i.height,
                i.width
            );
        }
        Ok(self.run(pixels))
    }

    /// [`ReferenceEngine::run_traced`] on an image of the right size.
    fn run(&self, pixels: &[u8]) -> Vec<Vec<i64>> {
        let mut regs: Vec<Vec<i64>> = Vec::with_capacity(self.model.ops.len() + 1);
        regs.push(self.input(pixels));
        for (oi, op) in self.model.ops.iter().enumerate() {
            let out = match op {
                Op::Conv { layer, src } => {
                    self.conv(*layer, &regs[*src], self.shapes[*src], self.shapes[oi + 1])
                }
                Op::Linear { layer, src } => {
                    let l = &self.layers[*layer];
                    let x = self.quantize(l, &regs[*src]);
                    l.w.chunks_exact(l.k)
                        .map(|row| dot(row, &x) as i64)
                        .collect()
                }
                Op::Affine { terms, relu } => self.affine(terms, *relu, &regs, self.shapes[oi + 1]),
                Op::MaxPool {
                    src,
                    kernel,
                    stride,
                    padding,
                } => max_pool(
                    &regs[*src],
                    self.shapes[*src],
                    self.shapes[oi + 1],
                    *kernel,
                    *stride,
                    *padding,
                ),
                Op::Clip { src, lo, hi } => {
                    regs[*src].iter().map(|v| (*v).clamp(*lo, *hi)).collect()
                }
                Op::AvgPool {
                    src,
                    kernel,
                    stride,
                    padding,
                    count_pad,
                } => crate::pool::avg_pool(
                    &regs[*src],
                    self.shapes[*src],
                    self.shapes[oi + 1],
                    (*kernel, *stride, *padding),
                    *count_pad,
                ),
                Op::Scale { src, mul, bias } => {
                    let [_, h, w] = self.shapes[*src];
                    crate::pool::scale(&regs[*src], h * w, mul, bias, 1 << 62)
                }
                Op::GlobalAvgPool { src } => {
                    let [c, h, w] = self.shapes[*src];
                    let n = (h * w) as i128;
                    regs[*src]
                        .chunks_exact(h * w)
                        .take(c)
                        .map(|ch| {
                            let sum: i128 = ch.iter().map(|&v| v as i128).sum();
                            (sum * 2 + n).div_euclid(2 * n) as i64
                        })
                        .collect()
                }
            };
            regs.push(out);
        }
        regs
    }

    fn conv(&self, li: usize, x: &[i64], [c, h, w]: Shape, [o, oh, ow]: Shape) -> Vec<i64> {
        let l = &self.layers[li];
        let spec = &self.model.layers[li];
        let g = spec.groups;
        let (cg, og) = (c / g, o / g);
        let kk = cg * spec.kernel.pow(2);
        let mut out = vec![0i64; o * oh * ow];
        if l.first {
            // The fixed-point input is wider than 16 bits: 64-bit products for this layer.
            for gi in 0..g {
                let cols = self.im2col(li, x, [c, h, w], [o, oh, ow], gi * cg..(gi + 1) * cg);
                for oc in gi * og..(gi + 1) * og {
                    let row = &l.w32[oc * kk..(oc + 1) * kk];
                    for (d, col) in out[oc * oh * ow..(oc + 1) * oh * ow]
                        .iter_mut()
                        .zip(cols.chunks_exact(kk))
                    {
                        *d = row.iter().zip(col).map(|(&a, &b)| a as i64 * b).sum();
                    }
                }
            }
            return out;
        }
        let q = self.quantize(l, x);
        for gi in 0..g {
            let cols = self.im2col(li, &q, [c, h, w], [o, oh, ow], gi * cg..(gi + 1) * cg);
            for oc in gi * og..(gi + 1) * og {
                let row = &l.w[oc * kk..(oc + 1) * kk];
                let dst = &mut out[oc * oh * ow..(oc + 1) * oh * ow];
                for (d, col) in dst.iter_mut().zip(cols.chunks_exact(kk)) {
                    *d = dot(row, col) as i64;
                }
            }
        }
        out
    }

    /// im2col over input channels `chans`: one contiguous patch per output position, in
    /// `[c, ky, kx]` order like the weights (taps `dilation` apart).
    fn im2col<T: Copy + Default>(
        &self,
        li: usize,
        q: &[T],
        [_, h, w]: Shape,
        [_, oh, ow]: Shape,
        chans: std::ops::Range<usize>,
    ) -> Vec<T> {
        let spec = &self.model.layers[li];
        let (k, s, p, d) = (spec.kernel, spec.stride, spec.padding, spec.dilation);
        let kk = chans.len() * k * k;
        let mut cols = vec![T::default(); oh * ow * kk];
        for oy in 0..oh {
            for ox in 0..ow {
                let col = &mut cols[(oy * ow + ox) * kk..(oy * ow + ox + 1) * kk];
                let mut j = 0;
                for ci in chans.clone() {
                    for ky in 0..k {
                        let iy = (oy * s + ky * d) as isize - p as isize;
                        for kx in 0..k {
                            let ix = (ox * s + kx * d) as isize - p as isize;
                            col[j] = if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < w
                            {
                                q[ci * h * w + iy as usize * w + ix as usize]
                            } else {
                                T::default()
                            };
                            j += 1;
                        }
                    }
                }
            }
        }
        cols
    }

    fn affine(&self, terms: &[Term], relu: bool, regs: &[Vec<i64>], [c, h, w]: Shape) -> Vec<i64> {
        let hw = h * w;
        let mut out = vec![0i64; c * hw];
        for ch in 0..c {
            for i in 0..hw {
                let mut acc: i128 = 0;
                for t in terms {
                    acc = acc.saturating_add(match *t {
                        Term::Acc { reg, layer } => {
                            let l = &self.layers[layer];
                            regs[reg][ch * hw + i] as i128 * l.mult[ch] as i128 + l.bias[ch] as i128
                        }
                        Term::Wide { reg } => (regs[reg][ch * hw + i] as i128) << SHIFT,
                    });
                }
                let mut v = round_shift(acc, SHIFT).clamp(-WIDE_LIMIT, WIDE_LIMIT);
                if relu {
                    v = v.max(0);
                }
                out[ch * hw + i] = v;
            }
        }
        out
    }

    /// Logits (real values) of each image of `pixels` (`n` images, raw `u8`, CHW each).
    pub fn logits(&self, pixels: &[u8]) -> Result<Vec<Vec<f32>>> {
        let i = &self.model.input;
        let per = i.channels * i.height * i.width;
        if !pixels.len().is_multiple_of(per) {
            bail!(
                "{} pixel values are not a whole number of {}×{}×{} images",
                pixels.len(),
                i.channels,
                i.height,
                i.width
            );
        }
        let scale = 2f64.powi(-(WIDE_FRAC as i32));
        Ok(pixels
            .par_chunks(per)
            .map(|img| {
                let regs = self.run(img);
                regs.last()
                    .expect("at least the input")
                    .iter()
                    .map(|&v| (v as f64 * scale) as f32)
                    .collect()
            })
            .collect())
    }

    /// Shape of register `r`.
    pub fn shape(&self, r: usize) -> Shape {
        self.shapes[r]
    }
}

/// `Σ a·b` of two i16 slices with 32-bit accumulation: AVX2 multiply-add (16 lanes) where the
/// CPU has it, else the portable loop (which the compiler vectorises with SSE2).
fn dot(a: &[i16], b: &[i16]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

fn dot_portable(a: &[i16], b: &[i16]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// AVX2 version of [`dot`]. Products of k-bit levels (≤ 255) and k-bit weights (≤ 255 in
/// magnitude) cannot overflow `vpmaddwd`'s pairwise 32-bit sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[i16], b: &[i16]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let mut i = 0;
    let mut sum = 0i32;
    // SAFETY: every load reads 16 i16 inside `a[..n]` / `b[..n]` (i + 16 <= n).
    unsafe {
        let mut acc = _mm256_setzero_si256();
        while i + 16 <= n {
            let x = _mm256_loadu_si256(a.as_ptr().add(i) as *const __m256i);
            let y = _mm256_loadu_si256(b.as_ptr().add(i) as *const __m256i);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, y));
            i += 16;
        }
        let mut lanes = [0i32; 8];
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc);
        for l in lanes {
            sum += l;
        }
    }
    sum + dot_portable(&a[i..n], &b[i..n])
}

fn max_pool(
    x: &[i64],
    [c, h, w]: Shape,
    [_, oh, ow]: Shape,
    k: usize,
    s: usize,
    p: usize,
) -> Vec<i64> {
    let mut out = Vec::with_capacity(c * oh * ow);
    for ch in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = i64::MIN;
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * s + ky) as isize - p as isize;
                        let ix = (ox * s + kx) as isize - p as isize;
                        if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < w {
                            m = m.max(x[ch * h * w + iy as usize * w + ix as usize]);
                        }
                    }
                }
                out.push(m);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn simd_dot_matches_portable() {
        for n in [0usize, 1, 15, 16, 17, 100, 577] {
            let a: Vec<i16> = (0..n).map(|i| (i as i16 * 37 % 511) - 255).collect();
            let b: Vec<i16> = (0..n).map(|i| i as i16 * 13 % 256).collect();
            assert_eq!(super::dot(&a, &b), super::dot_portable(&a, &b), "n = {n}");
        }
    }
}
