//! One GGML block, byte-exact as in a GGUF file, and its neutral form [`Unpacked`]:
//! one code per element and the block's scales as plain numbers.
//!
//! Everything that knows GGML's bit layouts is here: [`decode`] and [`encode`] are exact
//! inverses. The reference dequantizer ([`crate::dequant`]), the quantizers and the
//! packer of the CPU kernels ([`crate::pack`]) all go through `Unpacked`.
//!
//! ```text
//! type  elems bytes  layout (f16 = little-endian half)
//! q4_0   32    18   d:f16 qs[16]                 code i: nibble i of qs (see below)
//! q4_1   32    20   d:f16 m:f16 qs[16]
//! q5_0   32    22   d:f16 qh:u32 qs[16]          fifth bit of code i: qh >> i & 1
//! q5_1   32    24   d:f16 m:f16 qh:u32 qs[16]
//! q8_0   32    34   d:f16 qs:i8[32]
//!   nibble i = qs[i] & 15 for i < 16, qs[i-16] >> 4 otherwise
//! q2_k  256    84   scales[16] qs[64] d:f16 dmin:f16        16 groups of 16
//! q3_k  256   110   hmask[32] qs[64] scales[12] d:f16       16 groups of 16
//! q4_k  256   144   d:f16 dmin:f16 scales[12] qs[128]       8 groups of 32
//! q5_k  256   176   d:f16 dmin:f16 scales[12] qh[32] qs[128]
//! q6_k  256   210   ql[128] qh[64] scales:i8[16] d:f16      16 groups of 16
//! ```
//! The K-quant element orders are spelled out at each type below.

use crate::types::{GgmlType, QK_K};

/// A block as codes and scales. Which fields a type uses, and what a value is:
///
/// | type | code        | value of element i (g = its group)        |
/// |------|-------------|-------------------------------------------|
/// | q4_0 | 0..16       | d * (code - 8)                            |
/// | q4_1 | 0..16       | d * code + m                              |
/// | q5_0 | 0..32       | d * (code - 16)                           |
/// | q5_1 | 0..32       | d * code + m                              |
/// | q8_0 | i8 as u8    | d * code                                  |
/// | q2_k | 0..4        | d * sc[g] * code - m * mn[g] (g = i / 16) |
/// | q3_k | 0..8        | d * (sc[g] - 32) * (code - 4) (g = i / 16)|
/// | q4_k | 0..16       | d * sc[g] * code - m * mn[g] (g = i / 32) |
/// | q5_k | 0..32       | as q4_k                                   |
/// | q6_k | 0..64       | d * (sc[g] as i8) * (code - 32) (g = i/16)|
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unpacked {
    pub codes: [u8; QK_K],
    /// f16 bits of the block scale.
    pub d: u16,
    /// f16 bits of the block min (q4_1, q5_1) or of the min scale (q2_k, q4_k, q5_k).
    pub m: u16,
    pub sc: [u8; 16],
    pub mn: [u8; 16],
}

impl Default for Unpacked {
    fn default() -> Self {
        Unpacked {
            codes: [0; QK_K],
            d: 0,
            m: 0,
            sc: [0; 16],
            mn: [0; 16],
        }
    }
}

fn u16_at(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// Nibble `i` of 16 bytes holding 32 codes.
fn nibble(qs: &[u8], i: usize) -> u8 {
    if i < 16 {
        qs[i] & 15
    } else {
        qs[i - 16] >> 4
    }
}

/// Positions of K-quant element `i` (< 256): (h, j, p, l) = (i/128, i%128/32, i%32/16,
/// i%16) for the 16-value groups of q2_k/q3_k; q6_k uses (h, j, l) = (i/128, i%128/32,
/// i%32); q4_k/q5_k use (c, p, l) = (i/64, i%64/32, i%32).
fn hjpl(i: usize) -> (usize, usize, usize, usize) {
    (i / 128, (i % 128) / 32, (i % 32) / 16, i % 16)
}

/// The block `b` (exactly `ty.block_bytes()` bytes of a quantized type) as codes.
pub(crate) fn decode(ty: GgmlType, b: &[u8]) -> Unpacked {
    let mut u = Unpacked::default();
    let n = ty.block_elems();
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let has_m = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
            let five = matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1);
            u.d = u16_at(b);
            let mut at = 2;
            if has_m {
                u.m = u16_at(&b[2..]);
                at = 4;
            }
            let qh = match five {
                true => u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]),
                false => 0,
            };
            let qs = &b[at + 4 * five as usize..];
            for i in 0..n {
                u.codes[i] = nibble(qs, i) | ((((qh >> i) & 1) as u8) << 4);
            }
        }
        GgmlType::Q8_0 => {
            u.d = u16_at(b);
            u.codes[..32].copy_from_slice(&b[2..34]);
        }
        // q2_k: code i is bits 2j of qs[32h + 16p + l]; scales[g] = sc | mn << 4.
        GgmlType::Q2K => {
            for (g, &s) in b[..16].iter().enumerate() {
                (u.sc[g], u.mn[g]) = (s & 15, s >> 4);
            }
            for i in 0..n {
                let (h, j, p, l) = hjpl(i);
                u.codes[i] = (b[16 + 32 * h + 16 * p + l] >> (2 * j)) & 3;
            }
            (u.d, u.m) = (u16_at(&b[80..]), u16_at(&b[82..]));
        }
        // q3_k: low bits as q2_k (qs at 32), third bit in hmask[16p + l] at bit 4h + j.
        // Scale g (6 bits, + 32): low 4 bits in byte g (g < 8) or the high nibble of
        // byte g - 8; high 2 bits at bit 2 * (g / 4) of byte 8 + g % 4.
        GgmlType::Q3K => {
            for i in 0..n {
                let (h, j, p, l) = hjpl(i);
                let low = (b[32 + 32 * h + 16 * p + l] >> (2 * j)) & 3;
                let third = (b[16 * p + l] >> (4 * h + j)) & 1;
                u.codes[i] = low | (third << 2);
            }
            let s = &b[96..108];
            for g in 0..16 {
                let low = if g < 8 { s[g] & 15 } else { s[g - 8] >> 4 };
                u.sc[g] = low | (((s[8 + g % 4] >> (2 * (g / 4))) & 3) << 4);
            }
            u.d = u16_at(&b[108..]);
        }
        // q4_k/q5_k: code 64c + 32p + l is nibble p of qs[32c + l] (+ bit 2c + p of
        // qh[l] as the fifth bit); 8 six-bit (scale, min) pairs in 12 bytes.
        GgmlType::Q4K | GgmlType::Q5K => {
            (u.d, u.m) = (u16_at(b), u16_at(&b[2..]));
            let s = &b[4..16];
            for g in 0..8 {
                (u.sc[g], u.mn[g]) = match g < 4 {
                    true => (s[g] & 63, s[g + 4] & 63),
                    false => (
                        (s[g + 4] & 15) | ((s[g - 4] >> 6) << 4),
                        (s[g + 4] >> 4) | ((s[g] >> 6) << 4),
                    ),
                };
            }
            let five = ty == GgmlType::Q5K;
            let qs = &b[16 + 32 * five as usize..];
            for i in 0..n {
                let (c, p, l) = (i / 64, (i % 64) / 32, i % 32);
                let hi = if five {
                    (b[16 + l] >> (2 * c + p)) & 1
                } else {
                    0
                };
                u.codes[i] = ((qs[32 * c + l] >> (4 * p)) & 15) | (hi << 4);
            }
        }
        // q6_k: code 128h + 32j + l: low 4 bits = nibble j / 2 of ql[64h + 32(j%2) + l],
        // high 2 bits = bits 2j of qh[32h + l].
        GgmlType::Q6K => {
            for i in 0..n {
                let (h, j, l) = (i / 128, (i % 128) / 32, i % 32);
                let low = (b[64 * h + 32 * (j % 2) + l] >> (4 * (j / 2))) & 15;
                let high = (b[128 + 32 * h + l] >> (2 * j)) & 3;
                u.codes[i] = low | (high << 4);
            }
            u.sc.copy_from_slice(&b[192..208]);
            u.d = u16_at(&b[208..]);
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {}
    }
    u
}

/// Append the GGML bytes of `u` as a block of `ty` (the inverse of [`decode`]).
pub(crate) fn encode(ty: GgmlType, u: &Unpacked, out: &mut Vec<u8>) {
    let c = &u.codes;
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
            out.extend_from_slice(&u.d.to_le_bytes());
            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                out.extend_from_slice(&u.m.to_le_bytes());
            }
            if matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1) {
                let qh = (0..32).fold(0u32, |h, i| h | (((c[i] >> 4) & 1) as u32) << i);
                out.extend_from_slice(&qh.to_le_bytes());
            }
            out.extend((0..16).map(|i| (c[i] & 15) | ((c[i + 16] & 15) << 4)));
        }
        GgmlType::Q8_0 => {
            out.extend_from_slice(&u.d.to_le_bytes());
            out.extend_from_slice(&c[..32]);
        }
        GgmlType::Q2K => {
            out.extend((0..16).map(|g| (u.sc[g] & 15) | (u.mn[g] << 4)));
            let mut qs = [0u8; 64];
            for (i, &v) in c.iter().enumerate() {
                let (h, j, p, l) = hjpl(i);
                qs[32 * h + 16 * p + l] |= (v & 3) << (2 * j);
            }
            out.extend_from_slice(&qs);
            out.extend_from_slice(&u.d.to_le_bytes());
            out.extend_from_slice(&u.m.to_le_bytes());
        }
        GgmlType::Q3K => {
            let (mut hmask, mut qs, mut s) = ([0u8; 32], [0u8; 64], [0u8; 12]);
            for (i, &v) in c.iter().enumerate() {
                let (h, j, p, l) = hjpl(i);
                qs[32 * h + 16 * p + l] |= (v & 3) << (2 * j);
                hmask[16 * p + l] |= ((v >> 2) & 1) << (4 * h + j);
            }
            for (g, v) in s[..8].iter_mut().enumerate() {
                *v = (u.sc[g] & 15) | ((u.sc[g + 8] & 15) << 4);
            }
            for (g, &v) in u.sc.iter().enumerate() {
                s[8 + g % 4] |= ((v >> 4) & 3) << (2 * (g / 4));
            }
            out.extend_from_slice(&hmask);
            out.extend_from_slice(&qs);
            out.extend_from_slice(&s);
            out.extend_from_slice(&u.d.to_le_bytes());
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            out.extend_from_slice(&u.d.to_le_bytes());
            out.extend_from_slice(&u.m.to_le_bytes());
            let (sc, mn) = (&u.sc, &u.mn);
            let mut s = [0u8; 12];
            for g in 0..4 {
                s[g] = (sc[g] & 63) | ((sc[g + 4] >> 4) << 6);
                s[g + 4] = (mn[g] & 63) | ((mn[g + 4] >> 4) << 6);
                s[g + 8] = (sc[g + 4] & 15) | ((mn[g + 4] & 15) << 4);
            }
            out.extend_from_slice(&s);
            if ty == GgmlType::Q5K {
                let mut qh = [0u8; 32];
                for (i, &v) in c.iter().enumerate() {
                    let (cc, p, l) = (i / 64, (i % 64) / 32, i % 32);
                    qh[l] |= ((v >> 4) & 1) << (2 * cc + p);
                }
                out.extend_from_slice(&qh);
            }
            out.extend((0..128).map(|i| {
                let (cc, l) = (i / 32, i % 32);
                (c[64 * cc + l] & 15) | ((c[64 * cc + 32 + l] & 15) << 4)
            }));
        }
        GgmlType::Q6K => {
            let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
            for (i, &v) in c.iter().enumerate() {
                let (h, j, l) = (i / 128, (i % 128) / 32, i % 32);
                ql[64 * h + 32 * (j % 2) + l] |= (v & 15) << (4 * (j / 2));
                qh[32 * h + l] |= ((v >> 4) & 3) << (2 * j);
            }
            out.extend_from_slice(&ql);
            out.extend_from_slice(&qh);
            out.extend_from_slice(&u.sc);
            out.extend_from_slice(&u.d.to_le_bytes());
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any bytes are a valid block: decode then encode gives them back exactly.
    #[test]
    fn decode_encode_is_the_identity_on_random_bytes() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for ty in GgmlType::QUANTIZED {
            for _ in 0..20 {
                let bytes: Vec<u8> = (0..ty.block_bytes())
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state >> 24) as u8
                    })
                    .collect();
                let mut again = Vec::new();
                encode(ty, &decode(ty, &bytes), &mut again);
                assert_eq!(again, bytes, "{ty}");
            }
        }
    }
}
