//! The CPU kernels' layout: 8 weight rows interleaved, one block at a time.
//!
//! A packed block holds the same block (the same 32 or 256 columns) of 8 consecutive
//! rows. Its codes sit in 32-byte chunks of 8 lanes x 4 bytes: lane r holds row r's
//! codes for one "group" of 4 consecutive elements (group g = elements 4g..4g+4), so one
//! 8-bit dot instruction with the activation's 4 bytes of that group broadcast to every
//! lane advances all 8 rows at once, and the 8 lanes of the result are the 8 outputs.
//! Scales are gathered per field (8 f16 `d`, then 8 `m`, ...) so one conversion serves
//! 8 rows; group scales are stored as pairs (lane r: group 2p and 2p+1) ready for the
//! 16-bit multiply-add.
//!
//! ```text
//! chunk kinds (lane r, byte t; codes c = row r's codes):
//!   nib(a, b)   c[4a+t] & 15 | (c[4b+t] & 15) << 4      two groups of 4-bit codes
//!   byte(g)     c[4g+t]                                  one group of 8-bit codes
//!   bits2(g, s) Σ_i (c[4(g+i)+t] >> s & 3) << 2i         4 groups, 2 bits from bit s
//!   bit(g, s)   Σ_i (c[4(g+i)+t] >> s & 1) << i          8 groups, 1 bit from bit s
//! per type (P = 32-element part, 0..8 in a K super-block):
//!   q4_0 d | nib(j, 4+j) j<4                                   144 B = 8 x 18
//!   q4_1 d m | nib(j, 4+j) j<4                                 160 B = 8 x 20
//!   q5_0 d | nib x4 | bit(0, 4)                                176 B = 8 x 22
//!   q5_1 d m | nib x4 | bit(0, 4)                              192 B = 8 x 24
//!   q8_0 d | byte(g) g<8                                       272 B = 8 x 34
//!   q2_k d dmin | (sc|mn<<4) pairs x8 | per P: bits2(8P,0) bits2(8P+4,0)       672 B = 8 x 84
//!   q3_k d | (sc-32) pairs x8 | per P: bits2(8P,0) bits2(8P+4,0) bit(8P,2)     912 B = 8 x 114
//!   q4_k d dmin | sc pairs x4 | mn pairs x4 | per P pair c<4: nib(16c+j, 16c+8+j) j<8
//!                                                                             1184 B = 8 x 148
//!   q5_k as q4_k, each c followed by bit(16c, 4) bit(16c+8, 4)               1440 B = 8 x 180
//!   q6_k d | sc pairs x8 | per P: nib(8P+j, 8P+4+j) j<4, bits2(8P,4) bits2(8P+4,4)
//!                                                                             1680 B = 8 x 210
//! ```
//! Q4_K, Q5_K and Q3_K store their 6-bit group scales as bytes: 4 bytes more per row
//! and super-block than GGUF (+2.8 %, +2.3 %, +3.6 %); the other types keep GGUF's size.
//! Float rows (f32, f16, bf16) are not packed.

use crate::block::Unpacked;
use crate::types::GgmlType;

/// Rows per packed tile (one per 32-bit lane of a 256-bit vector).
pub(crate) const TILE: usize = 8;

/// Bytes of one packed block (8 rows x one block of `ty`); 0 for float rows.
pub(crate) fn packed_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_0 => 144,
        GgmlType::Q4_1 => 160,
        GgmlType::Q5_0 => 176,
        GgmlType::Q5_1 => 192,
        GgmlType::Q8_0 => 272,
        GgmlType::Q2K => 672,
        GgmlType::Q3K => 912,
        GgmlType::Q4K => 1184,
        GgmlType::Q5K => 1440,
        GgmlType::Q6K => 1680,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 0,
    }
}

/// What a group-scale pair field holds.
#[derive(Clone, Copy)]
enum PairOf {
    /// `sc` as stored.
    Sc,
    /// `mn` as stored.
    Mn,
    /// `sc - 32` as i8 (q3_k's biased 6-bit scales).
    ScMinus32,
    /// `sc | mn << 4` (q2_k's scale bytes).
    ScMn4,
}

/// One field of a packed block, in order.
#[derive(Clone, Copy)]
enum Field {
    D,
    M,
    Pairs(PairOf, usize),
    Nib(usize, usize),
    Byte(usize),
    Bits2(usize, u32),
    Bit(usize, u32),
}

fn layout(ty: GgmlType) -> Vec<Field> {
    use Field::*;
    let mut f = vec![D];
    let nibs = |f: &mut Vec<Field>, base: usize, n: usize| {
        f.extend((0..n).map(|j| Nib(base + j, base + n + j)));
    };
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                f.push(M);
            }
            nibs(&mut f, 0, 4);
            if matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1) {
                f.push(Bit(0, 4));
            }
        }
        GgmlType::Q8_0 => f.extend((0..8).map(Byte)),
        GgmlType::Q2K | GgmlType::Q3K => {
            match ty == GgmlType::Q2K {
                true => f.extend([M, Pairs(PairOf::ScMn4, 8)]),
                false => f.push(Pairs(PairOf::ScMinus32, 8)),
            }
            for p in 0..8 {
                f.extend([Bits2(8 * p, 0), Bits2(8 * p + 4, 0)]);
                if ty == GgmlType::Q3K {
                    f.push(Bit(8 * p, 2));
                }
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            f.extend([M, Pairs(PairOf::Sc, 4), Pairs(PairOf::Mn, 4)]);
            for c in 0..4 {
                nibs(&mut f, 16 * c, 8);
                if ty == GgmlType::Q5K {
                    f.extend([Bit(16 * c, 4), Bit(16 * c + 8, 4)]);
                }
            }
        }
        GgmlType::Q6K => {
            f.push(Pairs(PairOf::Sc, 8));
            for p in 0..8 {
                nibs(&mut f, 8 * p, 4);
                f.extend([Bits2(8 * p, 4), Bits2(8 * p + 4, 4)]);
            }
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => f.clear(),
    }
    f
}

/// Bytes of a field in a packed block.
fn field_bytes(field: Field) -> usize {
    match field {
        Field::D | Field::M => 2 * TILE,
        Field::Pairs(_, count) => 2 * TILE * count,
        _ => 32,
    }
}

/// Write the packed block of 8 rows' blocks `u` into `out` (`packed_bytes(ty)` bytes).
pub(crate) fn pack(ty: GgmlType, u: &[Unpacked; TILE], out: &mut [u8]) {
    let mut at = 0;
    for field in layout(ty) {
        let n = field_bytes(field);
        let dst = &mut out[at..at + n];
        at += n;
        for (r, row) in u.iter().enumerate() {
            let c = &row.codes;
            match field {
                Field::D => dst[2 * r..2 * r + 2].copy_from_slice(&row.d.to_le_bytes()),
                Field::M => dst[2 * r..2 * r + 2].copy_from_slice(&row.m.to_le_bytes()),
                Field::Pairs(of, _) => {
                    for (p, pair) in dst.chunks_exact_mut(2 * TILE).enumerate() {
                        for k in 0..2 {
                            let g = 2 * p + k;
                            pair[2 * r + k] = match of {
                                PairOf::Sc => row.sc[g],
                                PairOf::Mn => row.mn[g],
                                PairOf::ScMinus32 => (row.sc[g] as i8 - 32) as u8,
                                PairOf::ScMn4 => row.sc[g] | (row.mn[g] << 4),
                            };
                        }
                    }
                }
                _ => {
                    for t in 0..4 {
                        dst[4 * r + t] = chunk_byte(field, c, t);
                    }
                }
            }
        }
    }
    debug_assert_eq!(at, packed_bytes(ty));
}

fn chunk_byte(field: Field, c: &[u8], t: usize) -> u8 {
    match field {
        Field::Nib(a, b) => (c[4 * a + t] & 15) | ((c[4 * b + t] & 15) << 4),
        Field::Byte(g) => c[4 * g + t],
        Field::Bits2(g, s) => (0..4).fold(0, |v, i| v | ((c[4 * (g + i) + t] >> s) & 3) << (2 * i)),
        Field::Bit(g, s) => (0..8).fold(0, |v, i| v | ((c[4 * (g + i) + t] >> s) & 1) << i),
        _ => 0,
    }
}

/// Read a packed block back into 8 rows' blocks (the inverse of [`pack`]).
pub(crate) fn unpack(ty: GgmlType, src: &[u8]) -> [Unpacked; TILE] {
    let mut u: [Unpacked; TILE] = Default::default();
    let mut at = 0;
    for field in layout(ty) {
        let n = field_bytes(field);
        let s = &src[at..at + n];
        at += n;
        for (r, row) in u.iter_mut().enumerate() {
            let half = u16::from_le_bytes([s[2 * r], s[2 * r + 1]]);
            match field {
                Field::D => row.d = half,
                Field::M => row.m = half,
                Field::Pairs(of, _) => {
                    for (p, pair) in s.chunks_exact(2 * TILE).enumerate() {
                        for k in 0..2 {
                            let (g, b) = (2 * p + k, pair[2 * r + k]);
                            match of {
                                PairOf::Sc => row.sc[g] = b,
                                PairOf::Mn => row.mn[g] = b,
                                PairOf::ScMinus32 => row.sc[g] = (b as i8 + 32) as u8,
                                PairOf::ScMn4 => (row.sc[g], row.mn[g]) = (b & 15, b >> 4),
                            }
                        }
                    }
                }
                _ => {
                    for t in 0..4 {
                        put_chunk_byte(field, &mut row.codes, t, s[4 * r + t]);
                    }
                }
            }
        }
    }
    u
}

fn put_chunk_byte(field: Field, c: &mut [u8], t: usize, v: u8) {
    match field {
        Field::Nib(a, b) => {
            c[4 * a + t] |= v & 15;
            c[4 * b + t] |= v >> 4;
        }
        Field::Byte(g) => c[4 * g + t] = v,
        Field::Bits2(g, s) => (0..4).for_each(|i| c[4 * (g + i) + t] |= ((v >> (2 * i)) & 3) << s),
        Field::Bit(g, s) => (0..8).for_each(|i| c[4 * (g + i) + t] |= ((v >> i) & 1) << s),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{decode, encode};

    #[test]
    fn pack_unpack_round_trips_random_blocks() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut byte = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        };
        for ty in GgmlType::QUANTIZED {
            let rows: Vec<Vec<u8>> = (0..TILE)
                .map(|_| (0..ty.block_bytes()).map(|_| byte()).collect())
                .collect();
            let u: [Unpacked; TILE] = std::array::from_fn(|r| decode(ty, &rows[r]));
            let mut packed = vec![0u8; packed_bytes(ty)];
            pack(ty, &u, &mut packed);
            for (r, back) in unpack(ty, &packed).iter().enumerate() {
                let mut bytes = Vec::new();
                encode(ty, back, &mut bytes);
                assert_eq!(bytes, rows[r], "{ty} row {r}");
            }
        }
    }
}
