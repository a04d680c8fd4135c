//! Graph validation: everything the engine relies on, checked once before it runs.
//!
//! A `.ccq` file's CRC only detects accidents, so a crafted or corrupted-then-rehashed file must
//! be refused here rather than crash, wrap or allocate without bound. The checks:
//! - the input: non-zero size, finite normalisation with `std > 0`, and a fixed-point input that
//!   fits 31 bits;
//! - each layer: non-zero channels, kernel and stride, groups that divide the channels (the
//!   first layer grouped or dilated too), a linear layer's kernel 1, finite scales,
//!   integer weights in `i16`, and accumulators that cannot overflow (32 bits for k-bit inputs,
//!   64 bits for the first layer's fixed-point input);
//! - each op: layer indices in range and of the right kind, every register read of the right
//!   type (the input, an accumulator of the named layer, or a wide register), terms of equal
//!   shape, pooling windows that fit, and bounded register sizes;
//! - the graph ends in a wide register of `[classes, 1, 1]`.

use super::format::{IntKind, IntModel, Op, Term};
use anyhow::{Result, bail};

/// A register's shape `[c, h, w]`.
pub type Shape = [usize; 3];

/// Most elements one register (or one convolution's patch matrix) may hold.
pub const MAX_ELEMENTS: usize = 1 << 26;
/// Most terms one affine op may sum.
pub const MAX_TERMS: usize = 16;

/// What a register holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Register 0: the fixed-point normalised input.
    Input,
    /// A layer's integer accumulators.
    Acc(usize),
    /// Wide fixed-point activations.
    Wide,
}

/// Largest absolute integer weight a layer may hold.
fn max_weight(model: &IntModel, li: usize) -> Result<i64> {
    let l = &model.layers[li];
    let code_max = (1i64 << l.w_bits) - 1;
    let ends = [
        l.code_off as i64,
        code_max * l.code_mul as i64 + l.code_off as i64,
    ];
    let m = ends.iter().map(|v| v.abs()).max().unwrap_or(0);
    if m > i16::MAX as i64 {
        bail!(
            "layer `{}`: integer weights reach {m}, beyond the engine's 16-bit range",
            l.name
        );
    }
    Ok(m)
}

fn check_input(model: &IntModel) -> Result<()> {
    let i = &model.input;
    if i.channels == 0 || i.height == 0 || i.width == 0 || i.classes == 0 {
        bail!(
            "input: zero-size input {}×{}×{} or {} classes",
            i.channels,
            i.height,
            i.width,
            i.classes
        );
    }
    elements(&[i.channels, i.height, i.width], "input")?;
    let limit = 2f64.powi(31 - i.frac_bits as i32);
    for (c, (&m, &s)) in i.mean.iter().zip(&i.std).enumerate() {
        if !m.is_finite() || !s.is_finite() || s <= 0.0 {
            bail!("input: channel {c} has mean {m} and std {s} (need finite, std > 0)");
        }
        let (m, s) = (m as f64, s as f64);
        if m.abs().max((1.0 - m).abs()) / s >= limit {
            bail!(
                "input: channel {c}'s normalised pixels do not fit 31 bits at {} fractional bits",
                i.frac_bits
            );
        }
    }
    Ok(())
}

fn check_layer(model: &IntModel, li: usize) -> Result<()> {
    let l = &model.layers[li];
    let name = &l.name;
    if l.in_ch == 0 || l.out_ch == 0 || l.kernel == 0 || l.stride == 0 {
        bail!("layer `{name}`: zero channels, kernel or stride");
    }
    if !(1..=16).contains(&l.w_bits) || !(1..=16).contains(&l.a_bits) {
        bail!(
            "layer `{name}`: {} weight bits / {} activation bits (1..16 supported)",
            l.w_bits,
            l.a_bits
        );
    }
    if l.kind == IntKind::Linear
        && (l.kernel != 1 || l.stride != 1 || l.padding != 0 || l.groups != 1 || l.dilation != 1)
    {
        bail!("layer `{name}`: a linear layer has kernel 1, stride 1, no padding, one group");
    }
    if l.groups == 0
        || !l.in_ch.is_multiple_of(l.groups)
        || !l.out_ch.is_multiple_of(l.groups)
        || l.dilation == 0
    {
        bail!(
            "layer `{name}`: {} groups of {} → {} channels, dilation {}",
            l.groups,
            l.in_ch,
            l.out_ch,
            l.dilation
        );
    }
    let half = 1i32 << (l.a_bits - 1);
    if l.a_min != 0 && l.a_min != -half && l.a_min != 1 - half {
        bail!(
            "layer `{name}`: lowest activation level {} (0, {} or {} at {} bits)",
            l.a_min,
            1 - half,
            -half,
            l.a_bits
        );
    }
    let count = match l.kind {
        IntKind::Conv => l.out_ch * (l.in_ch / l.groups) * l.kernel * l.kernel,
        IntKind::Linear => l.out_ch * l.in_ch,
    };
    if l.codes.len() != count {
        bail!(
            "layer `{name}`: {} weight codes, not {count}",
            l.codes.len()
        );
    }
    let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
    if !finite(&l.w_scale) || !finite(&l.post_mul) || !finite(&l.post_bias) {
        bail!("layer `{name}`: non-finite weight scale, BatchNorm multiplier or bias");
    }
    if li != 0 && !(l.act_step.is_finite() && l.act_step > 0.0) {
        bail!(
            "layer `{name}`: activation step {} (need finite and > 0)",
            l.act_step
        );
    }
    let k = (l.in_ch / l.groups) as u128 * (l.kernel * l.kernel) as u128;
    let w = max_weight(model, li)? as u128;
    // Bound of |Σ x·w| over one output: 32-bit accumulation of k-bit levels (pairs for the
    // SIMD multiply-add included), 64-bit for the first layer's 31-bit fixed-point input.
    let (x, limit) = if li == 0 {
        (1u128 << 31, i64::MAX as u128)
    } else {
        ((1u128 << l.a_bits) - 1, i32::MAX as u128)
    };
    if k.max(2) * x * w > limit {
        bail!("layer `{name}`: {k}-term dot products of these bit widths can overflow");
    }
    Ok(())
}

/// Product of `dims`, refused past [`MAX_ELEMENTS`].
fn elements(dims: &[usize], what: &str) -> Result<usize> {
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS);
    match n {
        Some(n) => Ok(n),
        None => bail!("{what}: {dims:?} is larger than {MAX_ELEMENTS} elements"),
    }
}

/// Output size of a window of `k`, stride `s`, padding `p` over `n`, if the window fits.
fn out_size(n: usize, k: usize, s: usize, p: usize) -> Option<usize> {
    (n + 2 * p).checked_sub(k).map(|d| d / s + 1)
}

/// The span of a kernel of `k` taps dilated by `d`.
fn span(k: usize, d: usize) -> usize {
    d * (k - 1) + 1
}

/// Checks the whole model; returns every register's shape (register 0 is the input).
pub fn validate(model: &IntModel) -> Result<Vec<Shape>> {
    check_input(model)?;
    for li in 0..model.layers.len() {
        check_layer(model, li)?;
    }
    let i = &model.input;
    let mut shapes: Vec<Shape> = vec![[i.channels, i.height, i.width]];
    let mut kinds = vec![Kind::Input];
    if model.ops.is_empty() {
        bail!("the graph has no operations");
    }
    for (oi, op) in model.ops.iter().enumerate() {
        let read = |reg: usize| -> Result<(Shape, Kind)> {
            match (shapes.get(reg), kinds.get(reg)) {
                (Some(s), Some(k)) => Ok((*s, *k)),
                _ => bail!("op {oi}: reads register {reg}, which is not written yet"),
            }
        };
        let wide = |reg: usize| -> Result<Shape> {
            match read(reg)? {
                (s, Kind::Wide) => Ok(s),
                (_, k) => bail!("op {oi}: register {reg} holds {k:?}, not wide activations"),
            }
        };
        let (shape, kind) = match op {
            Op::Conv { layer, src } | Op::Linear { layer, src } => {
                let Some(l) = model.layers.get(*layer) else {
                    bail!(
                        "op {oi}: layer {layer} does not exist (the model has {} layers)",
                        model.layers.len()
                    );
                };
                let want = match op {
                    Op::Conv { .. } => IntKind::Conv,
                    _ => IntKind::Linear,
                };
                if l.kind != want {
                    bail!("op {oi}: layer `{}` is {:?}, not {want:?}", l.name, l.kind);
                }
                let (s, k) = read(*src)?;
                let expect = if *layer == 0 { Kind::Input } else { Kind::Wide };
                if k != expect {
                    bail!(
                        "op {oi}: layer `{}` reads register {src} ({k:?}); it must read {expect:?}",
                        l.name
                    );
                }
                let [c, h, w] = s;
                let out = if want == IntKind::Conv {
                    let k = span(l.kernel, l.dilation);
                    let (Some(oh), Some(ow)) = (
                        out_size(h, k, l.stride, l.padding),
                        out_size(w, k, l.stride, l.padding),
                    ) else {
                        bail!(
                            "op {oi}: conv `{}` does not fit its input {c}×{h}×{w}",
                            l.name
                        );
                    };
                    if c != l.in_ch {
                        bail!(
                            "op {oi}: conv `{}` takes {} channels, its input has {c}",
                            l.name,
                            l.in_ch
                        );
                    }
                    elements(
                        &[oh, ow, c / l.groups, l.kernel, l.kernel],
                        &format!("op {oi} patches"),
                    )?;
                    [l.out_ch, oh, ow]
                } else {
                    if c * h * w != l.in_ch {
                        bail!(
                            "op {oi}: linear `{}` expects {} inputs, gets {}",
                            l.name,
                            l.in_ch,
                            c * h * w
                        );
                    }
                    [l.out_ch, 1, 1]
                };
                (out, Kind::Acc(*layer))
            }
            Op::Affine { terms, .. } => {
                if terms.is_empty() || terms.len() > MAX_TERMS {
                    bail!(
                        "op {oi}: an affine op sums 1..{MAX_TERMS} terms, not {}",
                        terms.len()
                    );
                }
                let mut first = None;
                for t in terms {
                    let s = match *t {
                        Term::Acc { reg, layer } => match read(reg)? {
                            (s, Kind::Acc(l)) if l == layer => s,
                            (_, k) => bail!(
                                "op {oi}: term reads register {reg} ({k:?}) as layer {layer}'s accumulators"
                            ),
                        },
                        Term::Wide { reg } => wide(reg)?,
                    };
                    if *first.get_or_insert(s) != s {
                        bail!("op {oi}: affine terms have different shapes");
                    }
                }
                (first.expect("at least one term"), Kind::Wide)
            }
            Op::MaxPool {
                src,
                kernel,
                stride,
                padding,
            }
            | Op::AvgPool {
                src,
                kernel,
                stride,
                padding,
                ..
            } => {
                let [c, h, w] = wide(*src)?;
                if *kernel == 0 || *stride == 0 || 2 * padding > *kernel {
                    bail!(
                        "op {oi}: bad pooling window (kernel {kernel}, stride {stride}, padding {padding})"
                    );
                }
                let (Some(oh), Some(ow)) = (
                    out_size(h, *kernel, *stride, *padding),
                    out_size(w, *kernel, *stride, *padding),
                ) else {
                    bail!("op {oi}: pooling window {kernel} does not fit {c}×{h}×{w}");
                };
                ([c, oh, ow], Kind::Wide)
            }
            Op::GlobalAvgPool { src } => ([wide(*src)?[0], 1, 1], Kind::Wide),
            Op::Scale { src, mul, bias } => {
                let s = wide(*src)?;
                if mul.len() != s[0] || bias.len() != s[0] {
                    bail!(
                        "op {oi}: {} multipliers and {} offsets for {} channels",
                        mul.len(),
                        bias.len(),
                        s[0]
                    );
                }
                if mul.iter().any(|m| m.unsigned_abs() >= 1 << 48)
                    || bias.iter().any(|b| b.unsigned_abs() >= 1 << 62)
                {
                    bail!("op {oi}: a channel scale beyond 2^24 or an offset beyond 2^62");
                }
                (s, Kind::Wide)
            }
            Op::Clip { src, lo, hi } => {
                if lo > hi {
                    bail!("op {oi}: clip bounds {lo} > {hi}");
                }
                (wide(*src)?, Kind::Wide)
            }
        };
        elements(&shape, &format!("op {oi} output"))?;
        shapes.push(shape);
        kinds.push(kind);
    }
    let (last, kind) = (shapes[shapes.len() - 1], kinds[kinds.len() - 1]);
    if kind != Kind::Wide || last != [i.classes, 1, 1] {
        bail!(
            "the graph ends in {kind:?} {last:?}, not wide activations of {} logits",
            i.classes
        );
    }
    Ok(shapes)
}
