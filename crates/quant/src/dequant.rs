//! The reference decoder: GGML blocks, byte-exact as in a GGUF file, to f32.
//!
//! Written the obvious way, one element at a time from the codes and scales of
//! [`crate::block::decode`] (the value formulas are in [`crate::block::Unpacked`]'s
//! table). The kernels, the packed layout and the CUDA kernels are checked against it;
//! it is checked against candle's own, independent, dequantization of the same bytes.

use crate::block::{decode, Unpacked};
use crate::error::{input_err, Result};
use crate::types::GgmlType;

fn f16(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// Decode `bytes` (whole blocks of `ty`) into `bytes.len() / block_bytes * block_elems`
/// values.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(ty.block_bytes()) {
        input_err!(
            "{ty}: {} bytes is not a whole number of {}-byte blocks",
            bytes.len(),
            ty.block_bytes()
        );
    }
    let mut out = vec![0f32; bytes.len() / ty.block_bytes() * ty.block_elems()];
    dequantize_into(ty, bytes, &mut out);
    Ok(out)
}

/// Decode whole blocks into `out` (`bytes` holds exactly `out.len()` elements).
pub(crate) fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let (be, bb) = (ty.block_elems(), ty.block_bytes());
    for (blk, y) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
        match ty {
            GgmlType::F32 => y[0] = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]),
            GgmlType::F16 => y[0] = f16(u16::from_le_bytes([blk[0], blk[1]])),
            GgmlType::BF16 => y[0] = half::bf16::from_le_bytes([blk[0], blk[1]]).to_f32(),
            _ => values(ty, &decode(ty, blk), y),
        }
    }
}

/// The values of one decoded block.
pub(crate) fn values(ty: GgmlType, u: &Unpacked, y: &mut [f32]) {
    let (d, m) = (f16(u.d), f16(u.m));
    for (i, v) in y.iter_mut().enumerate() {
        let c = u.codes[i] as i32;
        *v = match ty {
            GgmlType::Q4_0 => d * (c - 8) as f32,
            GgmlType::Q5_0 => d * (c - 16) as f32,
            GgmlType::Q4_1 | GgmlType::Q5_1 => d * c as f32 + m,
            GgmlType::Q8_0 => d * (c as u8 as i8) as f32,
            GgmlType::Q2K => {
                let g = i / 16;
                d * u.sc[g] as f32 * c as f32 - m * u.mn[g] as f32
            }
            GgmlType::Q3K => d * (u.sc[i / 16] as i32 - 32) as f32 * (c - 4) as f32,
            GgmlType::Q4K | GgmlType::Q5K => {
                let g = i / 32;
                d * u.sc[g] as f32 * c as f32 - m * u.mn[g] as f32
            }
            GgmlType::Q6K => d * (u.sc[i / 16] as i8) as f32 * (c - 32) as f32,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 0.0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-built blocks with known values: each layout read by a second route.
    #[test]
    fn hand_built_blocks() {
        // q4_0: d = 0.5, element 3 = nibble 3 (low of qs[3]) = 11 -> 0.5 * 3;
        // element 19 = high nibble of qs[3] = 2 -> 0.5 * -6.
        let mut b = vec![0u8; 18];
        b[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        b[2 + 3] = 11 | (2 << 4);
        let y = dequantize(GgmlType::Q4_0, &b).unwrap();
        assert_eq!((y[3], y[19], y[0]), (1.5, -3.0, -4.0));

        // q5_1: d = 1, m = -16; element 20 has nibble (qs[4] >> 4) = 1 and fifth bit 20.
        let mut b = vec![0u8; 24];
        b[..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        b[2..4].copy_from_slice(&half::f16::from_f32(-16.0).to_le_bytes());
        b[4..8].copy_from_slice(&(1u32 << 20).to_le_bytes());
        b[8 + 4] = 1 << 4;
        let y = dequantize(GgmlType::Q5_1, &b).unwrap();
        assert_eq!((y[20], y[4]), (1.0, -16.0));

        // q4_k: d = 1, dmin = 1, group 5 (elements 160..192) has scale 9 (low 4 bits in
        // byte 9's low nibble, high 2 bits = 0) and min 2 (byte 9's high nibble);
        // element 170 = high nibble of qs[32*2 + 10] = 3 -> 9 * 3 - 2.
        let mut b = vec![0u8; 144];
        b[..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        b[2..4].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        b[4 + 9] = 9 | (2 << 4);
        b[16 + 64 + 10] = 3 << 4;
        let y = dequantize(GgmlType::Q4K, &b).unwrap();
        assert_eq!((y[170], y[160]), (25.0, -2.0));

        // q6_k: d = 0.25, scale 13 = -2; element 200 = 128 + 64 + 8: half 1, quarter 2
        // (high nibble of ql[64 + 8]), high bits at bit 4 of qh[32 + 8].
        let mut b = vec![0u8; 210];
        b[208..].copy_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
        b[192 + 12] = (-2i8) as u8;
        b[64 + 8] = 5 << 4;
        b[128 + 32 + 8] = 2 << 4;
        let y = dequantize(GgmlType::Q6K, &b).unwrap();
        assert_eq!(y[200], 0.25 * -2.0 * ((5 | (2 << 4)) - 32) as f32);

        assert!(dequantize(GgmlType::Q8_0, &[0; 35]).is_err());
    }
}
