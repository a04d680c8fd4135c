//! The `.ccq` deployment format: packed k-bit weights, scales, folded BatchNorm, activation
//! quantizers and the layer graph, behind a header with magic, version and CRC-32.
//!
//! Layout (little-endian):
//! ```text
//! magic "CCQMODEL" (8 bytes) | version u32 | body length u64 | body CRC-32 u32 | body
//! body: input spec | layers | ops     (integers as LEB128 varints, floats as f32)
//! ```
//! A layer's integer weight is `code · code_mul + code_off`, with `code` stored in `w_bits` bits;
//! its real value is that integer times the layer's weight scale (one, or one per output channel).

use super::pack::{pack, unpack};
use anyhow::{Context, Result, bail};
use std::path::Path;

/// File magic.
pub const MAGIC: &[u8; 8] = b"CCQMODEL";
/// Newest format version, which this build reads along with versions 1 and 2. Version 2 adds
/// each layer's groups, dilation and lowest activation level, and the clip op; version 3 the
/// average-pooling and per-channel affine ops. A model is written in the oldest version that
/// holds it.
pub const VERSION: u32 = 3;
/// Fractional bits of the fixed-point ("wide") activations between layers.
pub const WIDE_FRAC: u32 = 24;

/// The network input and how it is quantized.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// Per-channel mean (pixel/255 units).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
    /// Fractional bits of the fixed-point normalised input.
    pub frac_bits: u32,
    /// Number of classes.
    pub classes: usize,
}

/// Conv or linear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntKind {
    /// 2D convolution.
    Conv,
    /// Fully connected.
    Linear,
}

/// One quantized layer.
#[derive(Clone, Debug, PartialEq)]
pub struct IntLayer {
    /// Dotted name.
    pub name: String,
    /// Conv or linear.
    pub kind: IntKind,
    /// Input channels / features.
    pub in_ch: usize,
    /// Output channels / features.
    pub out_ch: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub padding: usize,
    /// Groups of a grouped convolution (`in_ch` for a depthwise one); 1 otherwise.
    pub groups: usize,
    /// Dilation of the kernel (1: none).
    pub dilation: usize,
    /// Weight bits (the width of a stored code).
    pub w_bits: u32,
    /// Integer weight = code · code_mul + code_off.
    pub code_mul: i32,
    /// See `code_mul`.
    pub code_off: i32,
    /// Real value of one integer weight step: one value, or one per output channel.
    pub w_scale: Vec<f32>,
    /// Weight codes, `[out, in / groups, k, k]` order.
    pub codes: Vec<u32>,
    /// Input activation bits (the first layer reads the fixed-point input instead).
    pub a_bits: u32,
    /// Lowest input activation level: 0 after a ReLU; for an input that can be negative,
    /// `−(2^(a_bits−1) − 1)` (symmetric) or `−2^(a_bits−1)` (two's complement). The highest
    /// level is then `2^(a_bits−1) − 1`, else `2^a_bits − 1`.
    pub a_min: i32,
    /// Input activation step (real value of one integer level).
    pub act_step: f32,
    /// Folded BatchNorm multiplier per output channel (empty for linear layers).
    pub post_mul: Vec<f32>,
    /// Folded BatchNorm shift, or the linear bias, per output channel.
    pub post_bias: Vec<f32>,
}

impl IntLayer {
    /// The highest input activation level (see [`IntLayer::a_min`]).
    pub fn a_max(&self) -> i32 {
        let bits = self.a_bits.min(16);
        if self.a_min < 0 {
            (1i32 << (bits - 1)) - 1
        } else {
            (1i32 << bits) - 1
        }
    }

    /// The integer weights.
    pub fn weights(&self) -> Vec<i32> {
        self.codes
            .iter()
            .map(|&c| c as i32 * self.code_mul + self.code_off)
            .collect()
    }

    /// Real weight scale of output channel `c`.
    pub fn scale(&self, c: usize) -> f32 {
        if self.w_scale.len() == 1 {
            self.w_scale[0]
        } else {
            self.w_scale[c]
        }
    }
}

/// A term of an affine op: a layer's accumulator (with its scales, BN and bias) or a wide tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Term {
    /// Accumulator register of layer `layer`.
    Acc {
        /// Register.
        reg: usize,
        /// Layer whose scales apply.
        layer: usize,
    },
    /// Wide fixed-point register.
    Wide {
        /// Register.
        reg: usize,
    },
}

/// One operation of the graph; each writes a new register (registers are numbered in order,
/// register 0 being the input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Quantize `src` with `layer`'s input quantizer and convolve: writes an accumulator.
    Conv {
        /// Layer index.
        layer: usize,
        /// Source register.
        src: usize,
    },
    /// Quantize `src` (flattened) and multiply by `layer`'s weights: writes an accumulator.
    Linear {
        /// Layer index.
        layer: usize,
        /// Source register.
        src: usize,
    },
    /// Sum of terms (+ ReLU), requantized to a wide fixed-point register.
    Affine {
        /// Summed terms (same shape).
        terms: Vec<Term>,
        /// Apply ReLU.
        relu: bool,
    },
    /// Max pooling.
    MaxPool {
        /// Source register.
        src: usize,
        /// Window.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding.
        padding: usize,
    },
    /// Global average pooling to `[C, 1, 1]`.
    GlobalAvgPool {
        /// Source register.
        src: usize,
    },
    /// Clamp a wide register to `[lo, hi]` (wide fixed-point values; ReLU6 is 0..6·2^24).
    Clip {
        /// Source register.
        src: usize,
        /// Lower bound.
        lo: i64,
        /// Upper bound.
        hi: i64,
    },
    /// Average pooling of a wide register: each window's sum divided by its count (the whole
    /// window with `count_pad`, else its positions inside the input), rounded to nearest.
    AvgPool {
        /// Source register.
        src: usize,
        /// Window.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding.
        padding: usize,
        /// Whether padded positions count in the divisor (ONNX `count_include_pad`).
        count_pad: bool,
    },
    /// A per-channel affine map of a wide register, `v·mul[c]·2^-24 + bias[c]` rounded to
    /// nearest (a BatchNorm that follows no conv).
    Scale {
        /// Source register.
        src: usize,
        /// Per channel: the multiplier in units of 2^-24.
        mul: Vec<i64>,
        /// Per channel: the offset, a wide value.
        bias: Vec<i64>,
    },
}

/// Fractional bits of [`Op::Scale`]'s multipliers.
pub const SCALE_FRAC: u32 = 24;

/// A complete integer model.
#[derive(Clone, Debug, PartialEq)]
pub struct IntModel {
    /// Model name (architecture).
    pub name: String,
    /// Input.
    pub input: InputSpec,
    /// Quantized layers.
    pub layers: Vec<IntLayer>,
    /// Graph; the last op's register holds the logits (wide fixed-point).
    pub ops: Vec<Op>,
}

/// Appends `v` as a LEB128 varint (also protobuf's varint).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn uv(&mut self, v: u64) {
        put_varint(&mut self.0, v);
    }
    fn iv(&mut self, v: i64) {
        self.uv(((v << 1) ^ (v >> 63)) as u64);
    }
    fn f(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn fs(&mut self, v: &[f32]) {
        self.uv(v.len() as u64);
        v.iter().for_each(|x| self.f(*x));
    }
    fn bytes(&mut self, b: &[u8]) {
        self.uv(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.pos + n > self.b.len() {
            bail!(
                "unexpected end of data at byte {} (wanted {n} more)",
                self.pos
            );
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn uv(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("malformed varint at byte {}", self.pos)
    }
    fn us(&mut self, max: usize, what: &str) -> Result<usize> {
        let v = self.uv()? as usize;
        if v > max {
            bail!("{what} = {v} is out of range (max {max})");
        }
        Ok(v)
    }
    fn iv(&mut self) -> Result<i64> {
        let u = self.uv()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    fn f(&mut self) -> Result<f32> {
        let s = self.take(4)?;
        Ok(f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn fs(&mut self, max: usize) -> Result<Vec<f32>> {
        let n = self.us(max, "float vector length")?;
        (0..n).map(|_| self.f()).collect()
    }
    fn bytes(&mut self) -> Result<&[u8]> {
        let n = self.us(self.b.len(), "byte length")?;
        self.take(n)
    }
}

const LIMIT: usize = 1 << 28;

impl IntModel {
    /// The version [`IntModel::to_bytes`] writes: 1 unless a layer is grouped or dilated, or
    /// reads signed activations, or the graph clips (2), or average-pools or scales channels
    /// (3).
    pub fn version(&self) -> u32 {
        if self
            .ops
            .iter()
            .any(|op| matches!(op, Op::AvgPool { .. } | Op::Scale { .. }))
        {
            3
        } else if self
            .layers
            .iter()
            .all(|l| l.groups == 1 && l.dilation == 1 && l.a_min == 0)
            && !self.ops.iter().any(|op| matches!(op, Op::Clip { .. }))
        {
            1
        } else {
            2
        }
    }

    /// Serialises the model (header + body).
    pub fn to_bytes(&self) -> Vec<u8> {
        let version = self.version();
        let mut w = Writer(Vec::new());
        w.bytes(self.name.as_bytes());
        let i = &self.input;
        for v in [
            i.channels,
            i.height,
            i.width,
            i.frac_bits as usize,
            i.classes,
        ] {
            w.uv(v as u64);
        }
        w.fs(&i.mean);
        w.fs(&i.std);
        w.uv(self.layers.len() as u64);
        for l in &self.layers {
            w.bytes(l.name.as_bytes());
            w.uv(match l.kind {
                IntKind::Conv => 0,
                IntKind::Linear => 1,
            });
            for v in [l.in_ch, l.out_ch, l.kernel, l.stride, l.padding] {
                w.uv(v as u64);
            }
            if version >= 2 {
                w.uv(l.groups as u64);
                w.uv(l.dilation as u64);
                w.iv(l.a_min as i64);
            }
            for v in [l.w_bits, l.a_bits] {
                w.uv(v as u64);
            }
            w.iv(l.code_mul as i64);
            w.iv(l.code_off as i64);
            w.f(l.act_step);
            w.fs(&l.w_scale);
            w.fs(&l.post_mul);
            w.fs(&l.post_bias);
            w.bytes(&pack(&l.codes, l.w_bits));
        }
        w.uv(self.ops.len() as u64);
        for op in &self.ops {
            match op {
                Op::Conv { layer, src } => {
                    w.uv(0);
                    w.uv(*layer as u64);
                    w.uv(*src as u64);
                }
                Op::Linear { layer, src } => {
                    w.uv(1);
                    w.uv(*layer as u64);
                    w.uv(*src as u64);
                }
                Op::Affine { terms, relu } => {
                    w.uv(2);
                    w.uv(*relu as u64);
                    w.uv(terms.len() as u64);
                    for t in terms {
                        match t {
                            Term::Acc { reg, layer } => {
                                w.uv(0);
                                w.uv(*reg as u64);
                                w.uv(*layer as u64);
                            }
                            Term::Wide { reg } => {
                                w.uv(1);
                                w.uv(*reg as u64);
                            }
                        }
                    }
                }
                Op::MaxPool {
                    src,
                    kernel,
                    stride,
                    padding,
                } => {
                    w.uv(3);
                    for v in [src, kernel, stride, padding] {
                        w.uv(*v as u64);
                    }
                }
                Op::GlobalAvgPool { src } => {
                    w.uv(4);
                    w.uv(*src as u64);
                }
                Op::Clip { src, lo, hi } => {
                    w.uv(5);
                    w.uv(*src as u64);
                    w.iv(*lo);
                    w.iv(*hi);
                }
                Op::AvgPool {
                    src,
                    kernel,
                    stride,
                    padding,
                    count_pad,
                } => {
                    w.uv(6);
                    for v in [src, kernel, stride, padding] {
                        w.uv(*v as u64);
                    }
                    w.uv(*count_pad as u64);
                }
                Op::Scale { src, mul, bias } => {
                    w.uv(7);
                    w.uv(*src as u64);
                    w.uv(mul.len() as u64);
                    for (m, b) in mul.iter().zip(bias) {
                        w.iv(*m);
                        w.iv(*b);
                    }
                }
            }
        }
        let body = w.0;
        let mut out = Vec::with_capacity(body.len() + 24);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses and validates a serialised model.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 24 {
            bail!("too short for a .ccq header ({} bytes)", bytes.len());
        }
        if &bytes[..8] != MAGIC {
            bail!("not a .ccq model (bad magic)");
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if !(1..=VERSION).contains(&version) {
            bail!("unsupported .ccq version {version} (this ccq reads versions 1 to {VERSION})");
        }
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
        let body = &bytes[24..];
        if body.len() != len {
            bail!(
                "truncated or padded: header declares {len} body bytes, file has {}",
                body.len()
            );
        }
        if crc32fast::hash(body) != crc {
            bail!("checksum mismatch: the file is corrupt");
        }
        let mut r = Reader { b: body, pos: 0 };
        let name = String::from_utf8(r.bytes()?.to_vec()).context("model name is not UTF-8")?;
        let channels = r.us(4096, "channels")?;
        let height = r.us(1 << 16, "height")?;
        let width = r.us(1 << 16, "width")?;
        let frac_bits = r.us(30, "input fractional bits")? as u32;
        let classes = r.us(1 << 20, "classes")?;
        let mean = r.fs(4096)?;
        let std = r.fs(4096)?;
        if mean.len() != channels || std.len() != channels {
            bail!(
                "input normalisation has {} / {} values for {channels} channels",
                mean.len(),
                std.len()
            );
        }
        let input = InputSpec {
            channels,
            height,
            width,
            mean,
            std,
            frac_bits,
            classes,
        };
        let n = r.us(1 << 16, "layer count")?;
        let mut layers = Vec::with_capacity(n);
        for li in 0..n {
            let name = String::from_utf8(r.bytes()?.to_vec()).context("layer name is not UTF-8")?;
            let kind = match r.uv()? {
                0 => IntKind::Conv,
                1 => IntKind::Linear,
                k => bail!("layer {li}: unknown kind {k}"),
            };
            let in_ch = r.us(1 << 20, "in channels")?;
            let out_ch = r.us(1 << 20, "out channels")?;
            let kernel = r.us(64, "kernel")?;
            let stride = r.us(64, "stride")?;
            let padding = r.us(64, "padding")?;
            let (groups, dilation, a_min) = if version >= 2 {
                let g = r.us(1 << 20, "groups")?;
                let d = r.us(64, "dilation")?;
                let m = r.iv()?;
                if !(-(1 << 16)..=0).contains(&m) {
                    bail!("layer `{name}`: lowest activation level {m} is out of range");
                }
                (g, d, m as i32)
            } else {
                (1, 1, 0)
            };
            let w_bits = r.us(16, "weight bits")? as u32;
            let a_bits = r.us(16, "activation bits")? as u32;
            if w_bits == 0 || stride == 0 || kernel == 0 || dilation == 0 {
                bail!("layer `{name}`: zero weight bits, kernel, stride or dilation");
            }
            if groups == 0 || in_ch % groups != 0 || out_ch % groups != 0 {
                // The same words as validation's, which a model built in memory meets.
                bail!(
                    "layer `{name}`: {groups} groups of {in_ch} → {out_ch} channels, dilation {dilation}"
                );
            }
            let code_mul = r.iv()? as i32;
            let code_off = r.iv()? as i32;
            let act_step = r.f()?;
            let w_scale = r.fs(LIMIT)?;
            let post_mul = r.fs(LIMIT)?;
            let post_bias = r.fs(LIMIT)?;
            let count = match kind {
                IntKind::Conv => out_ch * (in_ch / groups) * kernel * kernel,
                IntKind::Linear => out_ch * in_ch,
            };
            let codes =
                unpack(r.bytes()?, w_bits, count).with_context(|| format!("layer `{name}`"))?;
            if !(w_scale.len() == 1 || w_scale.len() == out_ch)
                || post_bias.len() != out_ch
                || !(post_mul.is_empty() || post_mul.len() == out_ch)
            {
                bail!("layer `{name}`: scale/bias vectors do not match {out_ch} output channels");
            }
            layers.push(IntLayer {
                name,
                kind,
                in_ch,
                out_ch,
                kernel,
                stride,
                padding,
                groups,
                dilation,
                w_bits,
                code_mul,
                code_off,
                w_scale,
                codes,
                a_bits,
                a_min,
                act_step,
                post_mul,
                post_bias,
            });
        }
        let nops = r.us(1 << 20, "op count")?;
        let mut ops = Vec::with_capacity(nops);
        for oi in 0..nops {
            let reg_max = oi; // op oi writes register oi+1; it may read 0..=oi
            let reg = |r: &mut Reader| r.us(reg_max, "register");
            let tag = r.uv()?;
            let op = match tag {
                0 | 1 => {
                    let layer = r.us(1 << 16, "layer index")?;
                    let src = reg(&mut r)?;
                    if tag == 0 {
                        Op::Conv { layer, src }
                    } else {
                        Op::Linear { layer, src }
                    }
                }
                2 => {
                    let relu = r.uv()? != 0;
                    let nt = r.us(16, "term count")?;
                    let mut terms = Vec::with_capacity(nt);
                    for _ in 0..nt {
                        terms.push(match r.uv()? {
                            0 => Term::Acc {
                                reg: reg(&mut r)?,
                                layer: r.us(1 << 16, "layer index")?,
                            },
                            1 => Term::Wide { reg: reg(&mut r)? },
                            t => bail!("op {oi}: unknown term kind {t}"),
                        });
                    }
                    Op::Affine { terms, relu }
                }
                3 => Op::MaxPool {
                    src: reg(&mut r)?,
                    kernel: r.us(64, "kernel")?,
                    stride: r.us(64, "stride")?,
                    padding: r.us(64, "padding")?,
                },
                4 => Op::GlobalAvgPool { src: reg(&mut r)? },
                5 if version >= 2 => Op::Clip {
                    src: reg(&mut r)?,
                    lo: r.iv()?,
                    hi: r.iv()?,
                },
                6 if version >= 3 => Op::AvgPool {
                    src: reg(&mut r)?,
                    kernel: r.us(64, "kernel")?,
                    stride: r.us(64, "stride")?,
                    padding: r.us(64, "padding")?,
                    count_pad: r.uv()? != 0,
                },
                7 if version >= 3 => {
                    let src = reg(&mut r)?;
                    let n = r.us(1 << 16, "channel count")?;
                    let (mut mul, mut bias) = (Vec::with_capacity(n), Vec::with_capacity(n));
                    for _ in 0..n {
                        mul.push(r.iv()?);
                        bias.push(r.iv()?);
                    }
                    Op::Scale { src, mul, bias }
                }
                t => bail!("op {oi}: unknown op {t}"),
            };
            ops.push(op);
        }
        if r.pos != body.len() {
            bail!("{} trailing bytes after the graph", body.len() - r.pos);
        }
        let model = IntModel {
            name,
            input,
            layers,
            ops,
        };
        model.validate()?;
        Ok(model)
    }

    /// Checks everything the engine relies on (see [`crate::validate`]); returns each register's
    /// shape.
    pub fn validate(&self) -> Result<Vec<crate::validate::Shape>> {
        crate::validate::validate(self)
    }

    /// Writes the model to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<u64> {
        let bytes = self.to_bytes();
        crate::write_atomic(path, &bytes)?;
        Ok(bytes.len() as u64)
    }

    /// Reads a model file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("{}", path.display()))
    }
}
