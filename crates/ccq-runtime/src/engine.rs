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
use anyhow::{Result, bail};
use rayon::prelude::*;

/// Fractional bits of the requantization multipliers.
const SHIFT: u32 = 24;

/// Wide registers saturate at ±2^62 (±2.7·10^11 in real units), far beyond any activation of a
/// trained network; with at most 16 terms of < 2^127/32 each the affine sum cannot overflow i128.
const WIDE_LIMIT: i64 = 1 << 62;

/// Output positions per register block of the GEMM kernel.
const POS_BLOCK: usize = 16;
/// Output channels per register block of the GEMM kernel.
const OC_BLOCK: usize = 4;

/// `round(v / 2^s)`, saturated to the i64 range.
fn round_shift(v: i128, s: u32) -> i64 {
    (v.saturating_add(1i128 << (s - 1)) >> s).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

struct PreparedLayer {
    /// Integer weights `[out][k]`, rows contiguous.
    w: Vec<i16>,
    /// The same as i64 (the first layer's fallback multiplies them with the wide input).
    w64: Vec<i64>,
    /// Weights as `(w[2j], w[2j+1])` pairs packed in an i32, `[out][pairs]` (odd rows padded
    /// with a zero weight).
    wpairs: Vec<i32>,
    /// Row length and pairs per row.
    k: usize,
    pairs: usize,
    /// Per output channel: multiplier and bias of the accumulator in units of 2^-(WIDE+SHIFT).
    mult: Vec<i64>,
    bias: Vec<i64>,
    /// Quantization of a wide input to this layer's grid: `round(2^SHIFT / step)` and the max level.
    q_mult: i64,
    q_max: i32,
    /// With an i64 quantizer: the wide value from which every input maps to `q_max`.
    q_sat: Option<i64>,
    first: bool,
    /// Largest Σ|w| over output channels.
    row_abs: u128,
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
    },
    /// An affine op whose sum is proven to fit i64.
    AffineI64,
    /// Anything else (an affine op then needs i128).
    Plain,
}

/// The geometry of a [`Plan::Rows`] convolution.
struct Rows {
    /// Channel pairs, kernel, stride, padding.
    pairs: usize,
    k: usize,
    stride: usize,
    pad: usize,
    /// The padded input plane (h + 2·pad, w + 2·pad).
    hp: usize,
    wp: usize,
    /// Output rows and columns; positions padded to POS_BLOCK.
    oh: usize,
    ow: usize,
    padded: usize,
    /// Weights as `(w[oc][2i, ky, kx], w[oc][2i+1, ky, kx])` pairs, `[oc][(i·k + ky)·k + kx]`.
    wpairs: Vec<i32>,
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
                        l.q_max as u128
                    };
                    let split = l.first && split_is_exact(l, bound[*src]);
                    let spec = &model.layers[*layer];
                    let [c, h, w] = shapes[*src];
                    let plan = if !l.first && c % 2 == 0 {
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
                        Plan::Conv {
                            gather,
                            positions,
                            padded,
                            split,
                        }
                    };
                    (plan, l.row_abs * x)
                }
                Op::Linear { layer, .. } => {
                    let l = &layers[*layer];
                    (Plan::Plain, l.row_abs * l.q_max as u128)
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
        let hw = self.model.input.height * self.model.input.width;
        pixels
            .iter()
            .enumerate()
            .map(|(j, &p)| self.input_lut[(j / hw) * 256 + p as usize])
            .collect()
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
                            let split =
                                matches!(self.plans[oi - 1], Plan::Conv { split: true, .. })
                                    && self.first_conv(oi - 1);
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
                Op::GlobalAvgPool { src } => {
                    let [c, h, w] = self.shapes[*src];
                    global_avg_pool(&regs[*src], c, h * w, self.gap_i64[oi])
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
            rows_into(r, &s.planes[li], &mut s.cols);
            let kp = r.pairs * r.k * r.k;
            gemm(&r.wpairs, kp, o, &s.cols, r.padded, &mut s.acc);
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
            gemm(&l.wpairs, l.pairs, o, &s.cols, padded, &mut s.acc);
            gemm(&l.wpairs, l.pairs, o, &s.cols_hi, padded, &mut s.acc_hi);
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
        gemm(&l.wpairs, l.pairs, o, &s.cols, padded, &mut s.acc);
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

    /// Whether op `oi` is a convolution of the first layer.
    fn first_conv(&self, oi: usize) -> bool {
        matches!(self.model.ops[oi], Op::Conv { layer, .. } if self.layers[layer].first)
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
                Op::MaxPool { src, .. } | Op::GlobalAvgPool { src } => (*src == reg) as usize,
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
            split_or_later && next_takes_it && reads(reg) == 1
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
            .clamp(0, l.q_max as i64) as i16,
    }
}

/// The plan of a convolution over `c` (even) channels without a gather table.
fn rows_plan(
    l: &PreparedLayer,
    k: usize,
    stride: usize,
    pad: usize,
    [c, h, w]: Shape,
    [_, oh, ow]: Shape,
) -> Rows {
    let pairs = c / 2;
    let taps = k * k;
    let mut wpairs = vec![0i32; l.w.len() / 2];
    for (oc, row) in l.w.chunks_exact(l.k).enumerate() {
        for i in 0..pairs {
            for t in 0..taps {
                let lo = row[2 * i * taps + t] as u16 as u32;
                let hi = row[(2 * i + 1) * taps + t] as u16 as u32;
                wpairs[oc * pairs * taps + i * taps + t] = (lo | (hi << 16)) as i32;
            }
        }
    }
    Rows {
        pairs,
        k,
        stride,
        pad,
        hp: h + 2 * pad,
        wp: w + 2 * pad,
        oh,
        ow,
        padded: (oh * ow).div_ceil(POS_BLOCK) * POS_BLOCK,
        wpairs,
    }
}

/// The patch matrix of a [`Plan::Rows`] convolution, `[(pair·k + ky)·k + kx][position]`: for
/// stride 1 each output row's patches are one contiguous run of the padded plane.
#[inline(always)]
fn rows_into(r: &Rows, plane: &[u32], cols: &mut Vec<u32>) {
    let n = r.pairs * r.k * r.k * r.padded;
    if cols.len() < n {
        cols.resize(n, 0);
    }
    let size = r.hp * r.wp;
    for i in 0..r.pairs {
        for ky in 0..r.k {
            for kx in 0..r.k {
                let j = (i * r.k + ky) * r.k + kx;
                let dst = &mut cols[j * r.padded..(j + 1) * r.padded];
                for oy in 0..r.oh {
                    let src = &plane[i * size + (oy * r.stride + ky) * r.wp + kx..];
                    let d = &mut dst[oy * r.ow..(oy + 1) * r.ow];
                    if r.stride == 1 {
                        d.copy_from_slice(&src[..r.ow]);
                    } else {
                        for (ox, v) in d.iter_mut().enumerate() {
                            *v = src[ox * r.stride];
                        }
                    }
                }
            }
        }
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
            let q_max = if l.a_bits >= 16 {
                i16::MAX as i32
            } else {
                (1i32 << l.a_bits) - 1
            };
            let s = SHIFT + WIDE_FRAC;
            // i64 quantizer: needs q_mult > 0 and q_max·2^s + q_mult + 2^(s-1) < 2^63.
            let q_sat = (q_mult > 0
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
                q_sat,
                first,
                row_abs,
            }
        })
        .collect()
}

/// Whether the first layer's input (|x| ≤ `bound`) can be split into 16-bit halves whose
/// products the 32-bit kernel sums exactly: every half within i16, and Σ|w| × 2^15 (and each
/// pair's sum) below 2^31.
fn split_is_exact(l: &PreparedLayer, bound: u128) -> bool {
    let halves_fit = bound + (1 << 15) < (1u128 << 31);
    halves_fit && l.row_abs.max(1) * (1 << 15) < i32::MAX as u128
}

/// The gather table of a convolution's pair-interleaved patch matrix: for pair `j`, position
/// `p` and half `h`, the index of the input value of column `2j + h` (`[c, ky, kx]` order, like
/// the weights) at output position `p`, or the zero slot (the source's length) for padding,
/// padded positions and the odd column.
fn gather_table(
    k: usize,
    s: usize,
    pad: usize,
    [c, h, w]: Shape,
    [_, oh, ow]: Shape,
    pairs: usize,
) -> (Vec<u32>, usize, usize) {
    let positions = oh * ow;
    let padded = positions.div_ceil(POS_BLOCK) * POS_BLOCK;
    let zero = (c * h * w) as u32;
    let kk = c * k * k;
    let mut table = vec![zero; pairs * padded * 2];
    for oy in 0..oh {
        for ox in 0..ow {
            let p = oy * ow + ox;
            for col in 0..kk {
                let (ci, ky, kx) = (col / (k * k), col / k % k, col % k);
                let iy = (oy * s + ky) as isize - pad as isize;
                let ix = (ox * s + kx) as isize - pad as isize;
                if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < w {
                    table[((col / 2) * padded + p) * 2 + col % 2] =
                        (ci * h * w + iy as usize * w + ix as usize) as u32;
                }
            }
        }
    }
    (table, positions, padded)
}

/// [`gather_into`] for the low and the high halves of the first layer's input at once.
#[inline(always)]
fn gather_halves_into(
    lo: &[i16],
    hi: &[i16],
    gather: &[u32],
    cols: &mut Vec<u32>,
    cols_hi: &mut Vec<u32>,
) {
    cols.clear();
    cols_hi.clear();
    for g in gather.chunks_exact(2) {
        let (a, b) = (g[0] as usize, g[1] as usize);
        cols.push((lo[a] as u16 as u32) | ((lo[b] as u16 as u32) << 16));
        cols_hi.push((hi[a] as u16 as u32) | ((hi[b] as u16 as u32) << 16));
    }
}

/// The patch matrix: each `u32` of `cols` packs `src[gather[2i]]` (low half) and
/// `src[gather[2i+1]]` (`src` ends with its zero slot).
#[inline(always)]
fn gather_into(src: &[i16], gather: &[u32], cols: &mut Vec<u32>) {
    cols.clear();
    cols.extend(
        gather.chunks_exact(2).map(|g| {
            (src[g[0] as usize] as u16 as u32) | ((src[g[1] as usize] as u16 as u32) << 16)
        }),
    );
}

/// `acc[oc][p] = Σ_j madd(wpairs[oc][j], cols[j][p])`: the exact 32-bit dot product of each
/// weight row with each patch (validation bounds every partial sum below 2^31).
fn gemm(
    wpairs: &[i32],
    pairs: usize,
    out_ch: usize,
    cols: &[u32],
    padded: usize,
    acc: &mut Vec<i32>,
) {
    // Both kernels write every element of `acc[..out_ch·padded]`.
    if acc.len() < out_ch * padded {
        acc.resize(out_ch * padded, 0);
    }
    match gemm_kernel() {
        #[cfg(target_arch = "x86_64")]
        Kernel::Vnni => {
            // SAFETY: the CPU supports AVX-512 VNNI and VL (detected); sizes as documented.
            unsafe { gemm_vnni(wpairs, pairs, out_ch, cols, padded, acc) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            // SAFETY: the CPU supports AVX2 (detected); sizes as documented.
            unsafe { gemm_avx2(wpairs, pairs, out_ch, cols, padded, acc) }
        }
        Kernel::Portable => gemm_portable(wpairs, pairs, out_ch, cols, padded, acc),
    }
}

/// Which GEMM kernel runs: the best the CPU has (detected once; `CCQ_PORTABLE_KERNELS` set in
/// the environment forces the portable one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// AVX-512 VNNI on 256-bit registers (`vpdpwssd`: multiply, pair-add and accumulate in one).
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// AVX2 `vpmaddwd` + `vpaddd`.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Plain Rust.
    Portable,
}

/// Whether the elementwise ops run with AVX-512 (detected once; `CCQ_PORTABLE_KERNELS` turns
/// it off too).
#[cfg(target_arch = "x86_64")]
fn wide_vectors() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| {
        std::env::var_os("CCQ_PORTABLE_KERNELS").is_none()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bw")
    })
}

fn gemm_kernel() -> Kernel {
    static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| {
        if std::env::var_os("CCQ_PORTABLE_KERNELS").is_some() {
            return Kernel::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512vnni")
                && std::is_x86_feature_detected!("avx512vl")
            {
                return Kernel::Vnni;
            }
            if std::is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    })
}

/// The portable [`gemm`] (the compiler vectorises the inner loop).
fn gemm_portable(
    wpairs: &[i32],
    pairs: usize,
    out_ch: usize,
    cols: &[u32],
    padded: usize,
    acc: &mut [i32],
) {
    for oc in 0..out_ch {
        let dst = &mut acc[oc * padded..(oc + 1) * padded];
        dst.fill(0);
        for j in 0..pairs {
            let wp = wpairs[oc * pairs + j];
            let (w0, w1) = (wp as i16 as i32, (wp >> 16) as i16 as i32);
            let src = &cols[j * padded..(j + 1) * padded];
            for (d, &x) in dst.iter_mut().zip(src) {
                *d += w0 * (x as i16 as i32) + w1 * ((x >> 16) as i16 as i32);
            }
        }
    }
}

/// AVX2 [`gemm`]: blocks of 4 output channels × 16 positions, 8 accumulators in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gemm_avx2(
    wpairs: &[i32],
    pairs: usize,
    out_ch: usize,
    cols: &[u32],
    padded: usize,
    acc: &mut [i32],
) {
    use std::arch::x86_64::*;
    assert!(wpairs.len() >= out_ch * pairs && cols.len() >= pairs * padded);
    assert!(acc.len() >= out_ch * padded && padded.is_multiple_of(POS_BLOCK));
    let full = out_ch / OC_BLOCK * OC_BLOCK;
    // SAFETY (every load and store below): oc + r < out_ch, j < pairs and p + 16 ≤ padded, so
    // reads stay within `wpairs[..out_ch·pairs]` and `cols[..pairs·padded]` (checked above),
    // and writes within `acc[..out_ch·padded]`.
    unsafe {
        for p in (0..padded).step_by(POS_BLOCK) {
            let mut oc = 0;
            while oc < full {
                let mut a = [_mm256_setzero_si256(); 2 * OC_BLOCK];
                for j in 0..pairs {
                    let src = cols.as_ptr().add(j * padded + p);
                    let x0 = _mm256_loadu_si256(src as *const __m256i);
                    let x1 = _mm256_loadu_si256(src.add(8) as *const __m256i);
                    for r in 0..OC_BLOCK {
                        let w = _mm256_set1_epi32(*wpairs.get_unchecked((oc + r) * pairs + j));
                        a[2 * r] = _mm256_add_epi32(a[2 * r], _mm256_madd_epi16(w, x0));
                        a[2 * r + 1] = _mm256_add_epi32(a[2 * r + 1], _mm256_madd_epi16(w, x1));
                    }
                }
                for r in 0..OC_BLOCK {
                    let dst = acc.as_mut_ptr().add((oc + r) * padded + p);
                    _mm256_storeu_si256(dst as *mut __m256i, a[2 * r]);
                    _mm256_storeu_si256(dst.add(8) as *mut __m256i, a[2 * r + 1]);
                }
                oc += OC_BLOCK;
            }
            for oc in full..out_ch {
                let mut a0 = _mm256_setzero_si256();
                let mut a1 = _mm256_setzero_si256();
                for j in 0..pairs {
                    let src = cols.as_ptr().add(j * padded + p);
                    let w = _mm256_set1_epi32(*wpairs.get_unchecked(oc * pairs + j));
                    a0 = _mm256_add_epi32(
                        a0,
                        _mm256_madd_epi16(w, _mm256_loadu_si256(src as *const __m256i)),
                    );
                    a1 = _mm256_add_epi32(
                        a1,
                        _mm256_madd_epi16(w, _mm256_loadu_si256(src.add(8) as *const __m256i)),
                    );
                }
                let dst = acc.as_mut_ptr().add(oc * padded + p);
                _mm256_storeu_si256(dst as *mut __m256i, a0);
                _mm256_storeu_si256(dst.add(8) as *mut __m256i, a1);
            }
        }
    }
}

/// AVX-512 VNNI [`gemm`]: the AVX2 blocking with one `vpdpwssd` per multiply-add-accumulate.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
unsafe fn gemm_vnni(
    wpairs: &[i32],
    pairs: usize,
    out_ch: usize,
    cols: &[u32],
    padded: usize,
    acc: &mut [i32],
) {
    use std::arch::x86_64::*;
    assert!(wpairs.len() >= out_ch * pairs && cols.len() >= pairs * padded);
    assert!(acc.len() >= out_ch * padded && padded.is_multiple_of(POS_BLOCK));
    let full = out_ch / OC_BLOCK * OC_BLOCK;
    // SAFETY (every load and store below): oc + r < out_ch, j < pairs and p + 16 ≤ padded, so
    // reads stay within `wpairs[..out_ch·pairs]` and `cols[..pairs·padded]` (checked above),
    // and writes within `acc[..out_ch·padded]`.
    unsafe {
        for p in (0..padded).step_by(POS_BLOCK) {
            let mut oc = 0;
            while oc < full {
                let mut a = [_mm256_setzero_si256(); 2 * OC_BLOCK];
                for j in 0..pairs {
                    let src = cols.as_ptr().add(j * padded + p);
                    let x0 = _mm256_loadu_si256(src as *const __m256i);
                    let x1 = _mm256_loadu_si256(src.add(8) as *const __m256i);
                    for r in 0..OC_BLOCK {
                        let w = _mm256_set1_epi32(*wpairs.get_unchecked((oc + r) * pairs + j));
                        a[2 * r] = _mm256_dpwssd_epi32(a[2 * r], w, x0);
                        a[2 * r + 1] = _mm256_dpwssd_epi32(a[2 * r + 1], w, x1);
                    }
                }
                for r in 0..OC_BLOCK {
                    let dst = acc.as_mut_ptr().add((oc + r) * padded + p);
                    _mm256_storeu_si256(dst as *mut __m256i, a[2 * r]);
                    _mm256_storeu_si256(dst.add(8) as *mut __m256i, a[2 * r + 1]);
                }
                oc += OC_BLOCK;
            }
            for oc in full..out_ch {
                let mut a0 = _mm256_setzero_si256();
                let mut a1 = _mm256_setzero_si256();
                for j in 0..pairs {
                    let src = cols.as_ptr().add(j * padded + p);
                    let w = _mm256_set1_epi32(*wpairs.get_unchecked(oc * pairs + j));
                    a0 = _mm256_dpwssd_epi32(a0, w, _mm256_loadu_si256(src as *const __m256i));
                    a1 = _mm256_dpwssd_epi32(
                        a1,
                        w,
                        _mm256_loadu_si256(src.add(8) as *const __m256i),
                    );
                }
                let dst = acc.as_mut_ptr().add(oc * padded + p);
                _mm256_storeu_si256(dst as *mut __m256i, a0);
                _mm256_storeu_si256(dst.add(8) as *mut __m256i, a1);
            }
        }
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

#[inline(always)]
fn max_pool(
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
            let y0 = (oy * s).saturating_sub(p);
            let y1 = (oy * s + k).saturating_sub(p).min(h);
            for ox in 0..ow {
                let x0 = (ox * s).saturating_sub(p);
                let x1 = (ox * s + k).saturating_sub(p).min(w);
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

/// Rounded mean of each channel (`hw` values each), in i64 when the sum is proven to fit.
#[inline(always)]
fn global_avg_pool(x: &[i64], c: usize, hw: usize, in_i64: bool) -> Vec<i64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_dot_matches_portable() {
        for n in [0usize, 1, 15, 16, 17, 100, 577] {
            let a: Vec<i16> = (0..n).map(|i| (i as i16 * 37 % 511) - 255).collect();
            let b: Vec<i16> = (0..n).map(|i| i as i16 * 13 % 256).collect();
            assert_eq!(dot(&a, &b), dot_portable(&a, &b), "n = {n}");
        }
    }

    #[test]
    fn simd_gemm_matches_portable() {
        for (out_ch, pairs, padded) in [(1, 1, 16), (4, 5, 32), (7, 72, 48), (16, 9, 16)] {
            let wpairs: Vec<i32> = (0..out_ch * pairs)
                .map(|i| {
                    ((i as i32 * 7919) % 511 - 255) & 0xffff | (((i as i32 * 31) % 255 - 127) << 16)
                })
                .collect();
            let cols: Vec<u32> = (0..pairs * padded)
                .map(|i| (i * 97 % 256) as u32 | (((i * 31 % 256) as u32) << 16))
                .collect();
            let mut want = vec![0; out_ch * padded];
            gemm_portable(&wpairs, pairs, out_ch, &cols, padded, &mut want);
            let mut got = Vec::new();
            gemm(&wpairs, pairs, out_ch, &cols, padded, &mut got);
            assert_eq!(got, want, "{:?} {out_ch}×{pairs}×{padded}", gemm_kernel());
            #[cfg(target_arch = "x86_64")]
            {
                let mut got = vec![7; out_ch * padded];
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 detected.
                    unsafe { gemm_avx2(&wpairs, pairs, out_ch, &cols, padded, &mut got) };
                    assert_eq!(got, want, "AVX2");
                }
                if std::is_x86_feature_detected!("avx512vnni")
                    && std::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: VNNI and VL detected.
                    unsafe { gemm_vnni(&wpairs, pairs, out_ch, &cols, padded, &mut got) };
                    assert_eq!(got, want, "VNNI");
                }
            }
        }
    }
}
