//! The integer-only inference engine.
//!
//! Between the input quantization (normalised pixels to fixed point) and the logits everything is
//! integer: k-bit activations × k-bit weights accumulate in 32 bits; BatchNorm, scales and
//! residual adds are one fixed-point requantization per output into a wide (64-bit, 2^-24)
//! fixed-point register; each layer then takes its k-bit levels from that register with one
//! integer multiply-shift and clip; ReLU and pooling act on integers.
//!
//! The arithmetic is exactly that of [`crate::reference::ReferenceEngine`] (the logits are
//! bit-identical); what differs is how it is scheduled:
//! - **Convolutions are GEMMs.** At load time each conv gets a gather table (im2col without
//!   bounds checks: padding reads a zero slot) and its weights as pairs of `i16`. The patches of
//!   an image are laid out pair-interleaved, so that one AVX2 `vpmaddwd` multiplies a broadcast
//!   weight pair with 8 output positions at once; a 4-channel × 16-position register block keeps
//!   8 accumulators in registers. Every output is the same exact integer sum as before.
//! - **The first layer** reads a fixed-point input with up to 31 bits. Its 256 possible values
//!   per channel come from a table computed with the reference formula, and each is split into a
//!   high and a low 16-bit half so that the same `i16` kernel computes both halves' sums, joined
//!   in 64 bits (when the load-time bound allows it; otherwise 64-bit products).
//! - **Fixed point in 64 bits where the range is proven.** At load time, interval bounds are
//!   propagated through the graph (input table → accumulators: Σ|w| × largest level →
//!   affine: Σ bound × |multiplier| + |bias| → pools). Where the bound of an affine sum stays
//!   below 2^63, and where a quantizer's clipped product does (`q_max · 2^48 + q_mult < 2^63`),
//!   i64 replaces i128 with identical results; elsewhere the i128 path of the reference runs.
//!
//! Images run in parallel (rayon).

use super::format::{IntModel, Op, Term, WIDE_FRAC};
use super::validate::Shape;
#[cfg(target_arch = "x86_64")]
use crate::kernels::wide_vectors;
use crate::kernels::{Patches, dot, gemm};
use crate::layout::{
    Rows, gather_halves_into, gather_into, gather_table, im2col_addressing, rows_into, rows_plan,
};
use crate::pool::{avg_pool, global_avg_pool, max_pool, scale};
use anyhow::{Result, bail};
use rayon::prelude::*;

/// Fractional bits of the requantization multipliers.
const SHIFT: u32 = 24;

/// Wide registers saturate at ±2^62 (±2.7·10^11 in real units), far beyond any activation of a
/// trained network; with at most 16 terms of < 2^127/32 each the affine sum cannot overflow i128.
const WIDE_LIMIT: i64 = 1 << 62;

/// `round(v / 2^s)`, saturated to the i64 range.
fn round_shift(v: i128, s: u32) -> i64 {
    (v.saturating_add(1i128 << (s - 1)) >> s).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

pub(crate) struct PreparedLayer {
    /// Integer weights `[out][k]`, rows contiguous.
    pub(crate) w: Vec<i16>,
    /// The same as i64 (the first layer's fallback multiplies them with the wide input).
    pub(crate) w64: Vec<i64>,
    /// Weights as `(w[2j], w[2j+1])` pairs packed in an i32, `[out][pairs]` (odd rows padded
    /// with a zero weight).
    pub(crate) wpairs: Vec<i32>,
    /// Row length and pairs per row.
    pub(crate) k: usize,
    pub(crate) pairs: usize,
    /// Per output channel: multiplier and bias of the accumulator in units of 2^-(WIDE+SHIFT).
    pub(crate) mult: Vec<i64>,
    pub(crate) bias: Vec<i64>,
    /// Quantization of a wide input to this layer's grid: `round(2^SHIFT / step)` and the max level.
    pub(crate) q_mult: i64,
    pub(crate) q_max: i32,
    /// The lowest level: 0, or negative for an input that can be negative.
    pub(crate) q_min: i32,
    /// With an i64 quantizer: the wide value from which every input maps to `q_max`.
    pub(crate) q_sat: Option<i64>,
    pub(crate) first: bool,
    /// Largest Σ|w| over output channels.
    pub(crate) row_abs: u128,
}

/// What one op needs at run time beyond the model.
enum Plan {
    /// A convolution over an even number of channels: the patch matrix pairs channels `2i` and
    /// `2i+1` at the same tap, so its rows are copies of rows of the zero-padded,
    /// channel-pair-interleaved input (no gather).
    Rows(Rows),
    /// A convolution (the first layer, or an odd number of channels): the gather table of its
    /// pair-interleaved patch matrix.
    Conv {
        /// Index into the source (its length = the zero slot) for every entry of the patch
        /// matrix, `[pair][position (padded to POS_BLOCK)][2]`.
        gather: Vec<u32>,
        /// Output positions, and the same padded.
        positions: usize,
        padded: usize,
        /// First layer: split the input into 16-bit halves (proven exact), or 64-bit products.
        split: bool,
        /// The GEMM's addressing of the patch matrix.
        offsets: Vec<u32>,
        bases: Vec<u32>,
    },
    /// A grouped (depthwise included) or dilated convolution: a direct loop over each output's
    /// taps, reading its group's channels.
    Grouped,
    /// An affine op whose sum is proven to fit i64.
    AffineI64,
    /// Anything else (an affine op then needs i128).
    Plain,
}

/// A model ready to run.
pub struct Engine {
    /// The model.
    pub model: IntModel,
    layers: Vec<PreparedLayer>,
    shapes: Vec<Shape>,
    plans: Vec<Plan>,
    /// The fixed-point value of every pixel value, per channel (`[c][256]`).
    input_lut: Vec<i64>,
    /// Whether a global pool's sum fits i64 (per op).
    gap_i64: Vec<bool>,
    /// Per op: a convolution whose accumulators only the next op (an i64 affine, as its first
    /// term) reads; outside a trace they go straight from the GEMM into that affine op.
    fused: Vec<bool>,
}

impl Engine {
    /// Prepares the fixed-point constants, the gather tables and the proven bounds, and checks
    /// the graph's shapes.
    pub fn new(model: IntModel) -> Result<Self> {
        let shapes = model.validate()?;
        let layers = prepare_layers(&model);
        let input_lut = input_table(&model);
        // Interval bounds (max |value|) of every register, from the input table on.
        let mut bound: Vec<u128> = Vec::with_capacity(model.ops.len() + 1);
        bound.push(
            input_lut
                .iter()
                .map(|v| v.unsigned_abs() as u128)
                .max()
                .unwrap_or(0),
        );
        let mut plans = Vec::with_capacity(model.ops.len());
        let mut gap_i64 = vec![false; model.ops.len()];
        for (oi, op) in model.ops.iter().enumerate() {
            let (plan, b) = match op {
                Op::Conv { layer, src } => {
                    let l = &layers[*layer];
                    let x = if l.first {
                        bound[*src]
                    } else {
                        l.q_max.max(-l.q_min) as u128
                    };
                    let split = l.first && split_is_exact(l, bound[*src]);
                    let spec = &model.layers[*layer];
                    let [c, h, w] = shapes[*src];
                    let plan = if spec.groups != 1 || spec.dilation != 1 {
                        Plan::Grouped
                    } else if !l.first && c % 2 == 0 {
                        Plan::Rows(rows_plan(
                            l,
                            spec.kernel,
                            spec.stride,
                            spec.padding,
                            [c, h, w],
                            shapes[oi + 1],
                        ))
                    } else {
                        let (gather, positions, padded) = gather_table(
                            spec.kernel,
                            spec.stride,
                            spec.padding,
                            shapes[*src],
                            shapes[oi + 1],
                            l.pairs,
                        );
                        let (offsets, bases) = im2col_addressing(l.pairs, padded);
                        Plan::Conv {
                            gather,
                            positions,
                            padded,
                            split,
                            offsets,
                            bases,
                        }
                    };
                    (plan, l.row_abs * x)
                }
                Op::Linear { layer, .. } => {
                    let l = &layers[*layer];
                    (Plan::Plain, l.row_abs * l.q_max.max(-l.q_min) as u128)
                }
                Op::Affine { terms, .. } => {
                    let c = shapes[oi + 1][0];
                    let mut worst: u128 = 0;
                    for ch in 0..c {
                        let mut sum: u128 = 1 << (SHIFT - 1);
                        for t in terms {
                            sum = sum.saturating_add(match *t {
                                Term::Acc { reg, layer } => {
                                    let l = &layers[layer];
                                    bound[reg]
                                        .saturating_mul(l.mult[ch].unsigned_abs() as u128)
                                        .saturating_add(l.bias[ch].unsigned_abs() as u128)
                                }
                                Term::Wide { reg } => bound[reg].saturating_mul(1 << SHIFT),
                            });
                        }
                        worst = worst.max(sum);
                    }
                    let plan = if worst < i64::MAX as u128 {
                        Plan::AffineI64
                    } else {
                        Plan::Plain
                    };
                    ((plan), ((worst >> SHIFT) + 1).min(WIDE_LIMIT as u128))
                }
                Op::MaxPool { src, .. } => (Plan::Plain, bound[*src]),
                Op::Clip { src, lo, hi } => {
                    let edge = lo.unsigned_abs().max(hi.unsigned_abs()) as u128;
                    let b = if *lo <= 0 && *hi >= 0 {
                        bound[*src].min(edge)
                    } else {
                        edge
                    };
                    (Plan::Plain, b)
                }
                Op::AvgPool { src, .. } => (Plan::Plain, bound[*src]),
                Op::Scale { src, mul, bias } => {
                    let worst = mul
                        .iter()
                        .zip(bias)
                        .map(|(m, b)| {
                            (bound[*src].saturating_mul(m.unsigned_abs() as u128)
                                >> crate::format::SCALE_FRAC)
                                .saturating_add(b.unsigned_abs() as u128 + 1)
                        })
                        .max()
                        .unwrap_or(0);
                    (Plan::Plain, worst.min(WIDE_LIMIT as u128))
                }
                Op::GlobalAvgPool { src } => {
                    let [_, h, w] = shapes[*src];
                    gap_i64[oi] = bound[*src]
                        .saturating_mul(2 * (h * w) as u128)
                        .saturating_add((h * w) as u128)
                        < i64::MAX as u128;
                    (Plan::Plain, bound[*src])
                }
            };
            plans.push(plan);
            bound.push(b);
        }
        let fused = fusable(&model, &plans, &layers);
        Ok(Engine {
            model,
            layers,
            shapes,
            plans,
            input_lut,
            gap_i64,
            fused,
        })
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
        Ok(self.run(pixels, &mut Scratch::default(), true))
    }

    /// Normalised, fixed-point input of one image of raw pixels.
    #[inline(always)]
    fn input(&self, pixels: &[u8]) -> Vec<i64> {
        // One 256-entry table per channel plane: no division per pixel.
        let hw = self.model.input.height * self.model.input.width;
        let mut out = Vec::with_capacity(pixels.len());
        for (plane, lut) in pixels
            .chunks_exact(hw)
            .zip(self.input_lut.chunks_exact(256))
        {
            out.extend(plane.iter().map(|&p| lut[p as usize]));
        }
        out
    }

    /// [`Engine::run_traced`] on an image of the right size.
    /// Without `trace`, fused convolutions leave their register empty. Compiled twice: for the
    /// baseline CPU and, where the CPU has it, with AVX-512 (64-bit multiplies and shifts in
    /// vectors for the fixed-point ops); the arithmetic is the same integer arithmetic.
    fn run(&self, pixels: &[u8], s: &mut Scratch, trace: bool) -> Vec<Vec<i64>> {
        #[cfg(target_arch = "x86_64")]
        {
            if wide_vectors() {
                // SAFETY: the CPU has the features `run_avx512` is compiled for (detected).
                return unsafe { self.run_avx512(pixels, s, trace) };
            }
        }
        self.run_body(pixels, s, trace)
    }

    /// [`Engine::run`] compiled with AVX-512.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,avx512f,avx512dq,avx512vl,avx512bw")]
    unsafe fn run_avx512(&self, pixels: &[u8], s: &mut Scratch, trace: bool) -> Vec<Vec<i64>> {
        self.run_body(pixels, s, trace)
    }

    #[inline(always)]
    fn run_body(&self, pixels: &[u8], s: &mut Scratch, trace: bool) -> Vec<Vec<i64>> {
        let mut regs: Vec<Vec<i64>> = Vec::with_capacity(self.model.ops.len() + 1);
        regs.push(self.input(pixels));
        for (oi, op) in self.model.ops.iter().enumerate() {
            let out_shape = self.shapes[oi + 1];
            let out = match op {
                Op::Conv { layer, src } if matches!(self.plans[oi], Plan::Grouped) => {
                    self.grouped_conv(*layer, &regs[*src], self.shapes[*src], out_shape, s)
                }
                Op::Conv { layer, src } => {
                    let keep = self.fused[oi] && !trace;
                    self.conv(*layer, &self.plans[oi], &regs[*src], out_shape, s, keep)
                }
                Op::Linear { layer, src } => {
                    let l = &self.layers[*layer];
                    self.quantize_into(l, &regs[*src], &mut s.levels);
                    l.w.chunks_exact(l.k)
                        .map(|row| dot(row, &s.levels[..l.k]) as i64)
                        .collect()
                }
                Op::Affine { terms, relu } => match self.plans[oi] {
                    Plan::AffineI64 => {
                        let from_gemm = (oi > 0 && self.fused[oi - 1] && !trace).then(|| {
                            // Only a first layer splits its input into halves.
                            let split =
                                matches!(self.plans[oi - 1], Plan::Conv { split: true, .. });
                            FromGemm {
                                lo: &s.acc[..],
                                hi: split.then_some(&s.acc_hi[..]),
                                padded: conv_padded(&self.plans[oi - 1]),
                            }
                        });
                        self.affine_i64(terms, *relu, &regs, out_shape, from_gemm)
                    }
                    _ => self.affine(terms, *relu, &regs, out_shape),
                },
                Op::MaxPool {
                    src,
                    kernel,
                    stride,
                    padding,
                } => max_pool(
                    &regs[*src],
                    self.shapes[*src],
                    out_shape,
                    *kernel,
                    *stride,
                    *padding,
                ),
                Op::Clip { src, lo, hi } => {
                    regs[*src].iter().map(|v| (*v).clamp(*lo, *hi)).collect()
                }
                Op::GlobalAvgPool { src } => {
                    let [c, h, w] = self.shapes[*src];
                    global_avg_pool(&regs[*src], c, h * w, self.gap_i64[oi])
                }
                Op::AvgPool {
                    src,
                    kernel,
                    stride,
                    padding,
                    count_pad,
                } => avg_pool(
                    &regs[*src],
                    self.shapes[*src],
                    out_shape,
                    (*kernel, *stride, *padding),
                    *count_pad,
                ),
                Op::Scale { src, mul, bias } => {
                    let [_, h, w] = self.shapes[*src];
                    scale(&regs[*src], h * w, mul, bias, WIDE_LIMIT)
                }
            };
            regs.push(out);
        }
        regs
    }

    /// The k-bit levels a layer reads from a wide register, into `out` (plus a zero slot).
    #[inline(always)]
    fn quantize_into(&self, l: &PreparedLayer, x: &[i64], out: &mut Vec<i16>) {
        out.clear();
        out.extend(x.iter().map(|&v| level(l, v)));
        out.push(0);
    }

    /// The k-bit levels of a wide register as the zero-padded, channel-pair-interleaved plane
    /// of a [`Plan::Rows`] convolution (`[pair][y][x]`, each `u32` two channels' levels).
    /// `out` is this op's own buffer: its zero margins are written once, the interior every
    /// time.
    #[inline(always)]
    fn quantize_padded(&self, l: &PreparedLayer, r: &Rows, x: &[i64], out: &mut Vec<u32>) {
        let plane = r.hp * r.wp;
        if out.len() != r.pairs * plane {
            out.clear();
            out.resize(r.pairs * plane, 0);
        }
        let (h, w) = (r.hp - 2 * r.pad, r.wp - 2 * r.pad);
        for (pair, chs) in x.chunks_exact(2 * h * w).enumerate() {
            let (lo, hi) = chs.split_at(h * w);
            for y in 0..h {
                let base = pair * plane + (y + r.pad) * r.wp + r.pad;
                let (a, b) = (&lo[y * w..(y + 1) * w], &hi[y * w..(y + 1) * w]);
                for ((d, &u), &v) in out[base..base + w].iter_mut().zip(a).zip(b) {
                    *d = (level(l, u) as u16 as u32) | ((level(l, v) as u16 as u32) << 16);
                }
            }
        }
    }

    /// A grouped or dilated convolution: each output sums its group's
    /// channels over the kernel's taps, `dilation` apart, in 32 bits (validation bounds it).
    /// Each input channel's levels are laid out once in a zero-padded plane, so every tap adds
    /// a weight times a strided run of that plane into a row of accumulators, with no bounds
    /// checks in the inner loop.
    fn grouped_conv(
        &self,
        li: usize,
        x: &[i64],
        [c, h, w]: Shape,
        [o, oh, ow]: Shape,
        s: &mut Scratch,
    ) -> Vec<i64> {
        let l = &self.layers[li];
        let spec = &self.model.layers[li];
        let (k, st, p, d) = (spec.kernel, spec.stride, spec.padding, spec.dilation);
        let (cg, og) = (c / spec.groups, o / spec.groups);
        if l.first {
            return first_grouped_conv(l, spec, x, [c, h, w], [o, oh, ow]);
        }
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let plane = hp * wp;
        s.levels.clear();
        s.levels.resize(c * plane, 0);
        for (ci, chan) in x.chunks_exact(h * w).enumerate() {
            for y in 0..h {
                let dst = ci * plane + (y + p) * wp + p;
                for (v, &u) in s.levels[dst..dst + w]
                    .iter_mut()
                    .zip(&chan[y * w..(y + 1) * w])
                {
                    *v = level(l, u);
                }
            }
        }
        let lev = &s.levels;
        let mut out = vec![0i64; o * oh * ow];
        let mut acc = vec![0i32; ow];
        for oc in 0..o {
            let row = &l.w[oc * l.k..(oc + 1) * l.k];
            let c0 = (oc / og) * cg;
            for oy in 0..oh {
                acc.fill(0);
                for ci in 0..cg {
                    let pl = &lev[(c0 + ci) * plane..(c0 + ci + 1) * plane];
                    for ky in 0..k {
                        let line = &pl[(oy * st + ky * d) * wp..(oy * st + ky * d + 1) * wp];
                        for kx in 0..k {
                            let wt = row[(ci * k + ky) * k + kx] as i32;
                            if wt == 0 {
                                continue;
                            }
                            let run = &line[kx * d..];
                            if st == 1 {
                                for (a, &v) in acc.iter_mut().zip(&run[..ow]) {
                                    *a += wt * v as i32;
                                }
                            } else {
                                for (a, &v) in acc.iter_mut().zip(run.iter().step_by(st)) {
                                    *a += wt * v as i32;
                                }
                            }
                        }
                    }
                }
                let dst = &mut out[(oc * oh + oy) * ow..(oc * oh + oy + 1) * ow];
                for (d, &a) in dst.iter_mut().zip(&acc) {
                    *d = a as i64;
                }
            }
        }
        out
    }

    /// With `keep`, the accumulators stay in `s.acc` (padded rows) and the register is empty.
    #[inline(always)]
    fn conv(
        &self,
        li: usize,
        plan: &Plan,
        x: &[i64],
        [o, _, _]: Shape,
        s: &mut Scratch,
        keep: bool,
    ) -> Vec<i64> {
        let l = &self.layers[li];
        if let Plan::Rows(r) = plan {
            if s.planes.len() <= li {
                s.planes.resize_with(li + 1, Vec::new);
            }
            self.quantize_padded(l, r, x, &mut s.planes[li]);
            let src = if r.direct {
                &s.planes[li]
            } else {
                rows_into(r, &s.planes[li], &mut s.cols);
                &s.cols
            };
            let patches = Patches {
                src,
                offsets: &r.offsets,
                bases: &r.bases,
            };
            gemm(&r.wpairs, o, patches, &mut s.acc);
            if keep {
                return Vec::new();
            }
            return widen(&s.acc, o, r.oh * r.ow, r.padded);
        }
        let Plan::Conv {
            gather,
            positions,
            padded,
            split,
            offsets,
            bases,
        } = plan
        else {
            unreachable!("a conv op has a conv plan")
        };
        let (positions, padded) = (*positions, *padded);
        let mut out = vec![0i64; o * positions];
        if l.first && !split {
            // 64-bit products of the wide input (a bound too large for the 16-bit halves).
            s.wide.clear();
            s.wide.extend_from_slice(x);
            s.wide.push(0);
            for (oc, row) in l.w64.chunks_exact(l.k).enumerate() {
                for p in 0..positions {
                    let mut acc = 0i64;
                    for j in 0..l.k {
                        let idx = gather[((j / 2) * padded + p) * 2 + j % 2] as usize;
                        acc += row[j] * s.wide[idx];
                    }
                    out[oc * positions + p] = acc;
                }
            }
            return out;
        }
        if l.first {
            // x = hi·2^16 + lo with lo in [-2^15, 2^15): two exact 16-bit GEMMs.
            s.levels.clear();
            s.levels.extend(
                x.iter()
                    .map(|&v| (v - (((v + (1 << 15)) >> 16) << 16)) as i16),
            );
            s.levels.push(0);
            s.hi.clear();
            s.hi.extend(x.iter().map(|&v| ((v + (1 << 15)) >> 16) as i16));
            s.hi.push(0);
            gather_halves_into(&s.levels, &s.hi, gather, &mut s.cols, &mut s.cols_hi);
            let at = |src| Patches {
                src,
                offsets,
                bases,
            };
            gemm(&l.wpairs, o, at(&s.cols), &mut s.acc);
            gemm(&l.wpairs, o, at(&s.cols_hi), &mut s.acc_hi);
            if keep {
                return Vec::new();
            }
            for oc in 0..o {
                for p in 0..positions {
                    let j = oc * padded + p;
                    out[oc * positions + p] = ((s.acc_hi[j] as i64) << 16) + s.acc[j] as i64;
                }
            }
            return out;
        }
        self.quantize_into(l, x, &mut s.levels);
        gather_into(&s.levels, gather, &mut s.cols);
        let patches = Patches {
            src: &s.cols,
            offsets,
            bases,
        };
        gemm(&l.wpairs, o, patches, &mut s.acc);
        if keep {
            return Vec::new();
        }
        widen(&s.acc, o, positions, padded)
    }

    /// An affine op in i128 (the reference arithmetic).
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

    /// An affine op whose every partial sum is proven below 2^63: the same result in i64.
    /// `from_gemm`: the first term's accumulators as the GEMM left them instead of its register.
    #[inline(always)]
    fn affine_i64(
        &self,
        terms: &[Term],
        relu: bool,
        regs: &[Vec<i64>],
        [c, h, w]: Shape,
        from_gemm: Option<FromGemm>,
    ) -> Vec<i64> {
        let hw = h * w;
        let half = 1i64 << (SHIFT - 1);
        let mut out: Vec<i64> = Vec::with_capacity(c * hw);
        match terms.first() {
            Some(&Term::Acc { layer, .. }) if from_gemm.is_some() => {
                let g = from_gemm.expect("checked");
                let l = &self.layers[layer];
                for ch in 0..c {
                    let (m, b) = (l.mult[ch], l.bias[ch] + half);
                    let lo = &g.lo[ch * g.padded..ch * g.padded + hw];
                    match g.hi {
                        None => out.extend(lo.iter().map(|&v| v as i64 * m + b)),
                        Some(hi) => {
                            let hi = &hi[ch * g.padded..ch * g.padded + hw];
                            out.extend(
                                lo.iter()
                                    .zip(hi)
                                    .map(|(&v, &u)| (((u as i64) << 16) + v as i64) * m + b),
                            );
                        }
                    }
                }
            }
            Some(&Term::Acc { reg, layer }) => {
                let l = &self.layers[layer];
                for (ch, x) in regs[reg].chunks_exact(hw).take(c).enumerate() {
                    let (m, b) = (l.mult[ch], l.bias[ch] + half);
                    out.extend(x.iter().map(|&v| v * m + b));
                }
            }
            Some(&Term::Wide { reg }) => {
                out.extend(regs[reg][..c * hw].iter().map(|&v| (v << SHIFT) + half));
            }
            None => out.resize(c * hw, half),
        }
        for t in terms.iter().skip(1) {
            for ch in 0..c {
                let dst = &mut out[ch * hw..(ch + 1) * hw];
                match *t {
                    Term::Acc { reg, layer } => {
                        let l = &self.layers[layer];
                        let (m, b) = (l.mult[ch], l.bias[ch]);
                        for (d, &v) in dst.iter_mut().zip(&regs[reg][ch * hw..(ch + 1) * hw]) {
                            *d += v * m + b;
                        }
                    }
                    Term::Wide { reg } => {
                        for (d, &v) in dst.iter_mut().zip(&regs[reg][ch * hw..(ch + 1) * hw]) {
                            *d += v << SHIFT;
                        }
                    }
                }
            }
        }
        let low = if relu { 0 } else { -WIDE_LIMIT };
        for v in &mut out {
            *v = (*v >> SHIFT).clamp(low, WIDE_LIMIT);
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
            .map_init(Scratch::default, |s, img| {
                let regs = self.run(img, s, false);
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

/// A convolution's accumulators as its GEMM left them: rows of `padded`, and for the first
/// layer's split input the high halves' sums too (the accumulator is `hi·2^16 + lo`).
#[derive(Clone, Copy)]
struct FromGemm<'a> {
    lo: &'a [i32],
    hi: Option<&'a [i32]>,
    padded: usize,
}

/// The padded row length of a convolution plan's accumulators.
fn conv_padded(plan: &Plan) -> usize {
    match plan {
        Plan::Rows(r) => r.padded,
        Plan::Conv { padded, .. } => *padded,
        _ => unreachable!("only convolutions are fused"),
    }
}

/// Which convolutions hand their accumulators straight to the next op: any but a first layer
/// on 64-bit products, read by no op but the next, an i64 affine op taking them as its first
/// term.
fn fusable(model: &IntModel, plans: &[Plan], layers: &[PreparedLayer]) -> Vec<bool> {
    let reads = |reg: usize| -> usize {
        model
            .ops
            .iter()
            .map(|op| match op {
                Op::Conv { src, .. } | Op::Linear { src, .. } => (*src == reg) as usize,
                Op::MaxPool { src, .. }
                | Op::GlobalAvgPool { src }
                | Op::Clip { src, .. }
                | Op::AvgPool { src, .. }
                | Op::Scale { src, .. } => (*src == reg) as usize,
                Op::Affine { terms, .. } => terms
                    .iter()
                    .filter(|t| match t {
                        Term::Acc { reg: r, .. } | Term::Wide { reg: r } => *r == reg,
                    })
                    .count(),
            })
            .sum()
    };
    model
        .ops
        .iter()
        .enumerate()
        .map(|(oi, op)| {
            let Op::Conv { layer, .. } = op else {
                return false;
            };
            let reg = oi + 1;
            let next_takes_it = match (model.ops.get(oi + 1), plans.get(oi + 1)) {
                (Some(Op::Affine { terms, .. }), Some(Plan::AffineI64)) => {
                    matches!(terms.first(), Some(Term::Acc { reg: r, .. }) if *r == reg)
                }
                _ => false,
            };
            let split_or_later =
                !layers[*layer].first || matches!(plans[oi], Plan::Conv { split: true, .. });
            let gemm = !matches!(plans[oi], Plan::Grouped);
            gemm && split_or_later && next_takes_it && reads(reg) == 1
        })
        .collect()
}

/// The accumulators of `out_ch` channels (rows of `padded` in `acc`, `positions` used) as a
/// register.
#[inline(always)]
fn widen(acc: &[i32], out_ch: usize, positions: usize, padded: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(out_ch * positions);
    for row in acc.chunks_exact(padded).take(out_ch) {
        out.extend(row[..positions].iter().map(|&v| v as i64));
    }
    out
}

/// The k-bit level layer `l` reads from wide value `v`.
#[inline(always)]
fn level(l: &PreparedLayer, v: i64) -> i16 {
    match l.q_sat {
        // v ≤ 0 maps to 0 and v ≥ sat to q_max (see `q_sat`); in between the product and the
        // rounding stay below 2^63.
        Some(sat) => {
            let v = v.clamp(0, sat);
            ((v * l.q_mult + (1 << (SHIFT + WIDE_FRAC - 1))) >> (SHIFT + WIDE_FRAC))
                .min(l.q_max as i64) as i16
        }
        None => round_shift(v as i128 * l.q_mult as i128, SHIFT + WIDE_FRAC)
            .clamp(l.q_min as i64, l.q_max as i64) as i16,
    }
}

/// Buffers one worker reuses from image to image.
#[derive(Default)]
struct Scratch {
    levels: Vec<i16>,
    hi: Vec<i16>,
    wide: Vec<i64>,
    /// Per layer: its padded input plane ([`Plan::Rows`]).
    planes: Vec<Vec<u32>>,
    cols: Vec<u32>,
    cols_hi: Vec<u32>,
    acc: Vec<i32>,
    acc_hi: Vec<i32>,
}

/// The fixed-point value of every pixel value of every channel, by the reference formula.
fn input_table(model: &IntModel) -> Vec<i64> {
    let i = &model.input;
    let f = 2f64.powi(i.frac_bits as i32);
    (0..i.channels)
        .flat_map(|c| {
            let (m, s) = (i.mean[c] as f64, i.std[c] as f64);
            (0..256u32).map(move |p| (((p as f64 / 255.0 - m) / s) * f).round() as i64)
        })
        .collect()
}

fn prepare_layers(model: &IntModel) -> Vec<PreparedLayer> {
    let wide = 2f64.powi(WIDE_FRAC as i32);
    let one = 2f64.powi(SHIFT as i32);
    model
        .layers
        .iter()
        .enumerate()
        .map(|(li, l)| {
            // Validation bounds every integer weight to the i16 range.
            let w: Vec<i16> = l.weights().iter().map(|&v| v as i16).collect();
            let k = w.len() / l.out_ch.max(1);
            let pairs = k.div_ceil(2);
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
            let s = SHIFT + WIDE_FRAC;
            // i64 quantizer: needs q_mult > 0 and q_max·2^s + q_mult + 2^(s-1) < 2^63.
            // (For a signed input, the i128 quantizer.)
            let q_sat = (q_mult > 0
                && q_min == 0
                && ((q_max as u128) << s) + q_mult as u128 + (1u128 << (s - 1)) < i64::MAX as u128)
                .then(|| ((q_max as u64) << s).div_ceil(q_mult as u64) as i64);
            let mut wpairs = vec![0i32; l.out_ch * pairs];
            for (oc, row) in w.chunks_exact(k.max(1)).enumerate() {
                for j in 0..pairs {
                    let lo = row[2 * j] as u16 as u32;
                    let hi = row.get(2 * j + 1).map_or(0, |&v| v as u16 as u32);
                    wpairs[oc * pairs + j] = (lo | (hi << 16)) as i32;
                }
            }
            let row_abs = w
                .chunks_exact(k.max(1))
                .map(|row| row.iter().map(|&v| v.unsigned_abs() as u128).sum::<u128>())
                .max()
                .unwrap_or(0);
            PreparedLayer {
                w64: w.iter().map(|&v| v as i64).collect(),
                w,
                wpairs,
                k,
                pairs,
                mult,
                bias,
                q_mult,
                q_max,
                q_min,
                q_sat,
                first,
                row_abs,
            }
        })
        .collect()
}

/// A grouped or dilated first layer: its fixed-point input is wider than 16 bits, so each
/// output sums 64-bit products, by a direct loop (validation bounds the sum to 64 bits).
fn first_grouped_conv(
    l: &PreparedLayer,
    spec: &crate::format::IntLayer,
    x: &[i64],
    [c, h, w]: Shape,
    [o, oh, ow]: Shape,
) -> Vec<i64> {
    let (k, st, p, d) = (spec.kernel, spec.stride, spec.padding, spec.dilation);
    let (cg, og) = (c / spec.groups, o / spec.groups);
    let mut out = vec![0i64; o * oh * ow];
    for oc in 0..o {
        let row = &l.w[oc * l.k..(oc + 1) * l.k];
        let c0 = (oc / og) * cg;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = 0i64;
                for ci in 0..cg {
                    let plane = &x[(c0 + ci) * h * w..(c0 + ci + 1) * h * w];
                    for ky in 0..k {
                        let iy = (oy * st + ky * d) as isize - p as isize;
                        if iy < 0 || iy as usize >= h {
                            continue;
                        }
                        for kx in 0..k {
                            let ix = (ox * st + kx * d) as isize - p as isize;
                            if ix < 0 || ix as usize >= w {
                                continue;
                            }
                            let wt = row[(ci * k + ky) * k + kx] as i64;
                            acc += wt * plane[iy as usize * w + ix as usize];
                        }
                    }
                }
                out[(oc * oh + oy) * ow + ox] = acc;
            }
        }
    }
    out
}

/// Whether the first layer's input (|x| ≤ `bound`) can be split into 16-bit halves whose
/// products the 32-bit kernel sums exactly: every half within i16, and Σ|w| × 2^15 (and each
/// pair's sum) below 2^31.
fn split_is_exact(l: &PreparedLayer, bound: u128) -> bool {
    let halves_fit = bound + (1 << 15) < (1u128 << 31);
    halves_fit && l.row_abs.max(1) * (1 << 15) < i32::MAX as u128
}
