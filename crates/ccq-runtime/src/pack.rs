//! Tight bit packing: k-bit unsigned codes, least significant bit first, no padding between codes.

use anyhow::{Result, bail};

/// Packs `codes` (each `< 2^bits`) into `ceil(n·bits/8)` bytes.
pub fn pack(codes: &[u32], bits: u32) -> Vec<u8> {
    assert!((1..=16).contains(&bits), "pack supports 1..16 bits");
    let mut out = vec![0u8; (codes.len() * bits as usize).div_ceil(8)];
    let mut pos = 0usize;
    for &c in codes {
        debug_assert!(c < (1 << bits), "code {c} does not fit {bits} bits");
        let mut v = c as u64;
        let mut left = bits as usize;
        while left > 0 {
            let byte = pos / 8;
            let off = pos % 8;
            let take = (8 - off).min(left);
            out[byte] |= ((v & ((1 << take) - 1)) as u8) << off;
            v >>= take;
            left -= take;
            pos += take;
        }
    }
    out
}

/// Unpacks `n` codes of `bits` bits from `bytes`.
pub fn unpack(bytes: &[u8], bits: u32, n: usize) -> Result<Vec<u32>> {
    if !(1..=16).contains(&bits) {
        bail!("cannot unpack {bits}-bit codes (1..16 supported)");
    }
    let need = (n * bits as usize).div_ceil(8);
    if bytes.len() < need {
        bail!(
            "packed weights truncated: {n} codes of {bits} bits need {need} bytes, found {}",
            bytes.len()
        );
    }
    let mut out = Vec::with_capacity(n);
    let mut pos = 0usize;
    for _ in 0..n {
        let mut v = 0u32;
        let mut got = 0usize;
        while got < bits as usize {
            let byte = pos / 8;
            let off = pos % 8;
            let take = (8 - off).min(bits as usize - got);
            v |= (((bytes[byte] >> off) as u32) & ((1 << take) - 1)) << got;
            got += take;
            pos += take;
        }
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_width_and_odd_sizes() {
        for bits in 1..=8u32 {
            for n in [0usize, 1, 3, 7, 13, 100, 257] {
                let codes: Vec<u32> = (0..n)
                    .map(|i| ((i * 2654435761usize) >> 7) as u32 % (1 << bits))
                    .collect();
                let p = pack(&codes, bits);
                assert_eq!(
                    p.len(),
                    (n * bits as usize).div_ceil(8),
                    "{bits} bits × {n} is tight"
                );
                assert_eq!(unpack(&p, bits, n).unwrap(), codes, "{bits} bits × {n}");
            }
        }
        assert_eq!(pack(&[1, 2, 3], 3), vec![0b11_010_001, 0]);
        assert!(unpack(&[0xff], 3, 3).is_err());
    }
}
