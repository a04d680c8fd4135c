//! The engine's integer kernels: the GEMM of a convolution's weight pairs with its
//! pair-interleaved patch matrix (AVX-512 VNNI, AVX2, or portable, detected once) and the dot
//! product of a linear layer. All compute the same exact 32-bit sums.

/// Output positions per register block of the GEMM kernel.
pub(crate) const POS_BLOCK: usize = 16;

/// Output channels per register block of the GEMM kernel.
pub(crate) const OC_BLOCK: usize = 4;
/// Output channels per register block of the VNNI kernel (AVX-512 has 32 vector registers).
pub(crate) const VNNI_OC_BLOCK: usize = 8;

/// `acc[oc][p] = Σ_j madd(wpairs[oc][j], cols[j][p])`: the exact 32-bit dot product of each
/// weight row with each patch (validation bounds every partial sum below 2^31).
pub(crate) fn gemm(
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
pub(crate) fn gemm_portable(
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
pub(crate) unsafe fn gemm_avx2(
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

/// AVX-512 VNNI [`gemm`]: blocks of 8 output channels × 16 positions (16 accumulators), one
/// `vpdpwssd` per multiply-add-accumulate.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_vnni(
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
    let full = out_ch / VNNI_OC_BLOCK * VNNI_OC_BLOCK;
    // SAFETY (every load and store below): oc + r < out_ch, j < pairs and p + 16 ≤ padded, so
    // reads stay within `wpairs[..out_ch·pairs]` and `cols[..pairs·padded]` (checked above),
    // and writes within `acc[..out_ch·padded]`.
    unsafe {
        for p in (0..padded).step_by(POS_BLOCK) {
            let mut oc = 0;
            while oc < full {
                let mut a = [_mm256_setzero_si256(); 2 * VNNI_OC_BLOCK];
                for j in 0..pairs {
                    let src = cols.as_ptr().add(j * padded + p);
                    let x0 = _mm256_loadu_si256(src as *const __m256i);
                    let x1 = _mm256_loadu_si256(src.add(8) as *const __m256i);
                    for r in 0..VNNI_OC_BLOCK {
                        let w = _mm256_set1_epi32(*wpairs.get_unchecked((oc + r) * pairs + j));
                        a[2 * r] = _mm256_dpwssd_epi32(a[2 * r], w, x0);
                        a[2 * r + 1] = _mm256_dpwssd_epi32(a[2 * r + 1], w, x1);
                    }
                }
                for r in 0..VNNI_OC_BLOCK {
                    let dst = acc.as_mut_ptr().add((oc + r) * padded + p);
                    _mm256_storeu_si256(dst as *mut __m256i, a[2 * r]);
                    _mm256_storeu_si256(dst.add(8) as *mut __m256i, a[2 * r + 1]);
                }
                oc += VNNI_OC_BLOCK;
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
