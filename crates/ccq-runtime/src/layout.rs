//! Patch matrices of convolutions, laid out for the GEMM kernels: pair-interleaved (each `u32`
//! holds two `i16` of the reduction dimension), positions padded to the kernels' block.

use crate::engine::PreparedLayer;
use crate::kernels::POS_BLOCK;
use crate::validate::Shape;

/// The geometry of a [`Plan::Rows`] convolution.
pub(crate) struct Rows {
    /// Channel pairs, kernel, stride, padding.
    pub(crate) pairs: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
    /// The padded input plane (h + 2·pad, w + 2·pad).
    pub(crate) hp: usize,
    pub(crate) wp: usize,
    /// Output rows and columns; positions padded to POS_BLOCK.
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) padded: usize,
    /// Weights as `(w[oc][2i, ky, kx], w[oc][2i+1, ky, kx])` pairs, `[oc][(i·k + ky)·k + kx]`.
    pub(crate) wpairs: Vec<i32>,
    /// Read the padded plane directly (stride 1, whole blocks in each output row), or copy the
    /// patch matrix first.
    pub(crate) direct: bool,
    /// The GEMM's addressing ([`crate::kernels::Patches`]) of the plane or of the copy.
    pub(crate) offsets: Vec<u32>,
    pub(crate) bases: Vec<u32>,
}

/// The plan of a convolution over `c` (even) channels without a gather table.
pub(crate) fn rows_plan(
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
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    let padded = (oh * ow).div_ceil(POS_BLOCK) * POS_BLOCK;
    let direct = stride == 1 && ow.is_multiple_of(POS_BLOCK);
    let (offsets, bases) = if direct {
        // Tap (i, ky, kx) reads the plane shifted by i·size + ky·wp + kx; block b starts at
        // output row p/ow, column p%ow (p = 16·b), i.e. at that row and column of the plane.
        let offsets = (0..pairs)
            .flat_map(|i| {
                (0..k).flat_map(move |ky| (0..k).map(move |kx| (i * hp * wp + ky * wp + kx) as u32))
            })
            .collect();
        let bases = (0..padded / POS_BLOCK)
            .map(|b| {
                let p = b * POS_BLOCK;
                ((p / ow) * wp + p % ow) as u32
            })
            .collect();
        (offsets, bases)
    } else {
        im2col_addressing(pairs * taps, padded)
    };
    Rows {
        pairs,
        k,
        stride,
        pad,
        hp,
        wp,
        oh,
        ow,
        padded,
        wpairs,
        direct,
        offsets,
        bases,
    }
}

/// The addressing of a copied patch matrix of `rows` pair rows of `padded` positions.
pub(crate) fn im2col_addressing(rows: usize, padded: usize) -> (Vec<u32>, Vec<u32>) {
    (
        (0..rows).map(|j| (j * padded) as u32).collect(),
        (0..padded / POS_BLOCK)
            .map(|b| (b * POS_BLOCK) as u32)
            .collect(),
    )
}

/// The patch matrix of a [`Plan::Rows`] convolution, `[(pair·k + ky)·k + kx][position]`: for
/// stride 1 each output row's patches are one contiguous run of the padded plane.
#[inline(always)]
pub(crate) fn rows_into(r: &Rows, plane: &[u32], cols: &mut Vec<u32>) {
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

/// The gather table of a convolution's pair-interleaved patch matrix: for pair `j`, position
/// `p` and half `h`, the index of the input value of column `2j + h` (`[c, ky, kx]` order, like
/// the weights) at output position `p`, or the zero slot (the source's length) for padding,
/// padded positions and the odd column.
pub(crate) fn gather_table(
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
pub(crate) fn gather_halves_into(
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
pub(crate) fn gather_into(src: &[i16], gather: &[u32], cols: &mut Vec<u32>) {
    cols.clear();
    cols.extend(
        gather.chunks_exact(2).map(|g| {
            (src[g[0] as usize] as u16 as u32) | ((src[g[1] as usize] as u16 as u32) << 16)
        }),
    );
}
