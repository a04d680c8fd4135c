//! The engine's integer kernels: the GEMM of a convolution's weight pairs with its
//! pair-interleaved patch matrix (AVX-512 VNNI, AVX2, or portable, detected once) and the dot
//! product of a linear layer. All compute the same exact 32-bit sums.

/// Output positions per register block of the GEMM kernel.
pub(crate) const POS_BLOCK: usize = 16;

/// Output channels per register block of the AVX2 kernel.
pub(crate) const OC_BLOCK: usize = 4;
/// Output channels per register block of the VNNI kernel (AVX-512 has 32 vector registers).
pub(crate) const VNNI_OC_BLOCK: usize = 8;

/// Where a GEMM reads its patch matrix: entry `[j][16·b + i]` (pair row `j`, position `i` of
/// block `b`) is `src[offsets[j] + bases[b] + i]`. An im2col matrix has `offsets[j] = j·padded`
/// and `bases[b] = 16·b`; a stride-1 convolution whose output rows hold whole blocks reads its
/// padded input plane directly (`offsets`: each tap's shift, `bases`: each block's start).
#[derive(Clone, Copy)]
pub(crate) struct Patches<'a> {
    pub(crate) src: &'a [u32],
    pub(crate) offsets: &'a [u32],
    pub(crate) bases: &'a [u32],
}

impl Patches<'_> {
    /// Positions, padded to whole blocks.
    pub(crate) fn padded(&self) -> usize {
        self.bases.len() * POS_BLOCK
    }

    /// Panics unless every read stays inside `src`.
    fn check(&self) {
        let o = self.offsets.iter().max().copied().unwrap_or(0) as usize;
        let b = self.bases.iter().max().copied().unwrap_or(0) as usize;
        assert!(
            self.offsets.is_empty() || self.bases.is_empty() || o + b + POS_BLOCK <= self.src.len(),
            "patch addressing past the source"
        );
    }
}

/// `acc[oc][p] = Σ_j madd(wpairs[oc][j], patches[j][p])`: the exact 32-bit dot product of each
/// weight row with each patch (validation bounds every partial sum below 2^31); rows of `acc`
/// are `patches.padded()` long.
pub(crate) fn gemm(wpairs: &[i32], out_ch: usize, patches: Patches, acc: &mut Vec<i32>) {
    let n = out_ch * patches.padded();
    // Every kernel writes every element of `acc[..n]`.
    if acc.len() < n {
        acc.resize(n, 0);
    }
    patches.check();
    assert!(wpairs.len() >= out_ch * patches.offsets.len());
    match gemm_kernel() {
        #[cfg(target_arch = "x86_64")]
        Kernel::Vnni => {
            // SAFETY: the CPU supports AVX-512 VNNI and VL (detected); reads checked above.
            unsafe { gemm_vnni(wpairs, out_ch, patches, acc) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            // SAFETY: the CPU supports AVX2 (detected); reads checked above.
            unsafe { gemm_avx2(wpairs, out_ch, patches, acc) }
        }
        Kernel::Portable => gemm_portable(wpairs, out_ch, patches, acc),
    }
}

/// Which GEMM kernel runs: the best the CPU has (detected once; `CCQ_PORTABLE_KERNELS` set in
/// the environment forces the portable one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
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
pub(crate) fn wide_vectors() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| {
        std::env::var_os("CCQ_PORTABLE_KERNELS").is_none()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bw")
    })
}

pub(crate) fn gemm_kernel() -> Kernel {
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
pub(crate) fn gemm_portable(wpairs: &[i32], out_ch: usize, p: Patches, acc: &mut [i32]) {
    let (pairs, padded) = (p.offsets.len(), p.padded());
    // Blocks of 4 channels × 16 positions with the accumulators in a local array, so that the
    // compiler keeps them in registers and vectorises the pair multiply-adds.
    for (b, &base) in p.bases.iter().enumerate() {
        let mut oc = 0;
        while oc < out_ch {
            let rows = (out_ch - oc).min(OC_BLOCK);
            let mut a = [[0i32; POS_BLOCK]; OC_BLOCK];
            for (j, &off) in p.offsets.iter().enumerate() {
                let at = (off + base) as usize;
                let x: &[u32; POS_BLOCK] = p.src[at..at + POS_BLOCK].try_into().expect("16");
                let lo: [i32; POS_BLOCK] = std::array::from_fn(|i| x[i] as i16 as i32);
                let hi: [i32; POS_BLOCK] = std::array::from_fn(|i| (x[i] >> 16) as i16 as i32);
                for (r, sums) in a.iter_mut().enumerate().take(rows) {
                    let wp = wpairs[(oc + r) * pairs + j];
                    let (w0, w1) = (wp as i16 as i32, (wp >> 16) as i16 as i32);
                    for i in 0..POS_BLOCK {
                        sums[i] += w0 * lo[i] + w1 * hi[i];
                    }
                }
            }
            for (r, sums) in a.iter().enumerate().take(rows) {
                let at = (oc + r) * padded + b * POS_BLOCK;
                acc[at..at + POS_BLOCK].copy_from_slice(sums);
            }
            oc += rows;
        }
    }
}

/// Defines a SIMD [`gemm`] kernel: blocks of `$block` output channels × 16 positions, two 8-lane
/// accumulators per channel, `$mac(acc, weight pair, patches)` accumulating one pair row.
macro_rules! simd_gemm {
    ($(#[$doc:meta])* $name:ident, $feat:literal, $block:expr, $mac:expr) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn $name(wpairs: &[i32], out_ch: usize, p: Patches, acc: &mut [i32]) {
            use std::arch::x86_64::*;
            let (pairs, padded) = (p.offsets.len(), p.padded());
            assert!(wpairs.len() >= out_ch * pairs && acc.len() >= out_ch * padded);
            let src = p.src.as_ptr();
            // SAFETY (every load and store below): `Patches::check` (called by `gemm`, and by
            // the tests before calling a kernel directly) bounds offsets[j] + bases[b] + 16 by
            // the source's length; oc < out_ch and j < pairs bound the weight reads (asserted
            // above), and the stores stay within `acc[..out_ch·padded]`.
            unsafe {
                for (b, &base) in p.bases.iter().enumerate() {
                    let at = b * POS_BLOCK;
                    let full = out_ch / $block * $block;
                    let mut oc = 0;
                    // Full blocks (a constant trip count keeps the accumulators in registers),
                    // then the remaining channels one at a time.
                    while oc < full {
                        let mut a = [_mm256_setzero_si256(); 2 * $block];
                        for (j, &off) in p.offsets.iter().enumerate() {
                            let s = src.add((off + base) as usize);
                            let x0 = _mm256_loadu_si256(s as *const __m256i);
                            let x1 = _mm256_loadu_si256(s.add(8) as *const __m256i);
                            for r in 0..$block {
                                let w = _mm256_set1_epi32(*wpairs.get_unchecked((oc + r) * pairs + j));
                                a[2 * r] = $mac(a[2 * r], w, x0);
                                a[2 * r + 1] = $mac(a[2 * r + 1], w, x1);
                            }
                        }
                        for r in 0..$block {
                            let dst = acc.as_mut_ptr().add((oc + r) * padded + at);
                            _mm256_storeu_si256(dst as *mut __m256i, a[2 * r]);
                            _mm256_storeu_si256(dst.add(8) as *mut __m256i, a[2 * r + 1]);
                        }
                        oc += $block;
                    }
                    for oc in full..out_ch {
                        let (mut a0, mut a1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                        for (j, &off) in p.offsets.iter().enumerate() {
                            let s = src.add((off + base) as usize);
                            let w = _mm256_set1_epi32(*wpairs.get_unchecked(oc * pairs + j));
                            a0 = $mac(a0, w, _mm256_loadu_si256(s as *const __m256i));
                            a1 = $mac(a1, w, _mm256_loadu_si256(s.add(8) as *const __m256i));
                        }
                        let dst = acc.as_mut_ptr().add(oc * padded + at);
                        _mm256_storeu_si256(dst as *mut __m256i, a0);
                        _mm256_storeu_si256(dst.add(8) as *mut __m256i, a1);
                    }
                }
            }
        }
    };
}

simd_gemm!(
    /// AVX2 [`gemm`]: blocks of 4 output channels × 16 positions, `vpmaddwd` + `vpaddd`.
    gemm_avx2,
    "avx2",
    OC_BLOCK,
    |a, w, x| _mm256_add_epi32(a, _mm256_madd_epi16(w, x))
);

simd_gemm!(
    /// AVX-512 VNNI [`gemm`]: blocks of 8 output channels × 16 positions (16 accumulators), one
    /// `vpdpwssd` per multiply-add-accumulate.
    gemm_vnni,
    "avx2,avx512f,avx512vl,avx512vnni",
    VNNI_OC_BLOCK,
    |a, w, x| _mm256_dpwssd_epi32(a, w, x)
);

/// `Σ a·b` of two i16 slices with 32-bit accumulation: AVX2 multiply-add (16 lanes) where the
/// CPU has it, else the portable loop (which the compiler vectorises with SSE2).
pub(crate) fn dot(a: &[i16], b: &[i16]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

pub(crate) fn dot_portable(a: &[i16], b: &[i16]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// AVX2 version of [`dot`]. Products of k-bit levels (≤ 255) and k-bit weights (≤ 255 in
/// magnitude) cannot overflow `vpmaddwd`'s pairwise 32-bit sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dot_avx2(a: &[i16], b: &[i16]) -> i32 {
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

    /// Every kernel the CPU has against the portable one, on im2col and on shifted addressing.
    #[test]
    fn simd_gemm_matches_portable() {
        for (out_ch, pairs, blocks, shifted) in [
            (1, 1, 1, false),
            (4, 5, 2, false),
            (7, 72, 3, true),
            (16, 9, 1, true),
            (17, 30, 2, false),
        ] {
            let padded = blocks * POS_BLOCK;
            let wpairs: Vec<i32> = (0..out_ch * pairs)
                .map(|i| {
                    ((i as i32 * 7919) % 511 - 255) & 0xffff | (((i as i32 * 31) % 255 - 127) << 16)
                })
                .collect();
            let (offsets, bases): (Vec<u32>, Vec<u32>) = if shifted {
                (
                    (0..pairs as u32).map(|j| j * 3).collect(),
                    (0..blocks as u32).map(|b| b * 21).collect(),
                )
            } else {
                (
                    (0..pairs as u32).map(|j| j * padded as u32).collect(),
                    (0..blocks as u32).map(|b| b * 16).collect(),
                )
            };
            let len =
                (offsets.iter().max().unwrap() + bases.iter().max().unwrap()) as usize + POS_BLOCK;
            let src: Vec<u32> = (0..len)
                .map(|i| (i * 97 % 256) as u32 | (((i * 31 % 256) as u32) << 16))
                .collect();
            let p = Patches {
                src: &src,
                offsets: &offsets,
                bases: &bases,
            };
            p.check();
            let mut want = vec![0; out_ch * padded];
            gemm_portable(&wpairs, out_ch, p, &mut want);
            let mut got = Vec::new();
            gemm(&wpairs, out_ch, p, &mut got);
            assert_eq!(got, want, "{:?} {out_ch}×{pairs}×{padded}", gemm_kernel());
            #[cfg(target_arch = "x86_64")]
            {
                let mut got = vec![7; out_ch * padded];
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 detected; reads checked above.
                    unsafe { gemm_avx2(&wpairs, out_ch, p, &mut got) };
                    assert_eq!(got, want, "AVX2");
                }
                if std::is_x86_feature_detected!("avx512vnni")
                    && std::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: VNNI and VL detected; reads checked above.
                    unsafe { gemm_vnni(&wpairs, out_ch, p, &mut got) };
                    assert_eq!(got, want, "VNNI");
                }
            }
        }
    }
}
