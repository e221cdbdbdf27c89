//! Activation quantization: the f32 rows a matmul multiplies are turned into 8-bit
//! blocks once per call, so the kernels do integer dot products (as llama.cpp pairs
//! each weight type with Q8_0/Q8_1 or Q8_K activations).
//!
//! - [`BlockQ8`] (32 values) goes with Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 weights: the codes,
//!   their scale and the sum of the codes, which folds each weight block's offset (exactly,
//!   in integers) or min (one multiply-add) into the block's result.
//! - [`BlockQ8K`] (256 values) goes with the K-quants: one scale per super-block and the
//!   code sums of every 16 and 32 values, for the mins and offsets of the K formats.
//!
//! Codes are round(x / d) with d = max|x| / 127, so they stay in -127..=127 (the AVX2
//! sign trick needs -128 never to occur). These are in-memory formats of this crate, not
//! GGUF types: the scales are f32, not f16.

use crate::types::{QK, QK_K};

/// 32 activation values: `x[i] ≈ d * qs[i]`, `sum = Σ qs`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8 {
    pub d: f32,
    pub sum: i32,
    pub qs: [i8; QK],
}

/// 256 activation values: `x[i] ≈ d * qs[i]`, `bsums16[j] = Σ qs[16j..16j+16]`,
/// `bsums32[j] = Σ qs[32j..32j+32]`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums16: [i16; 16],
    pub bsums32: [i16; 8],
}

impl Default for BlockQ8 {
    fn default() -> Self {
        BlockQ8 {
            d: 0.0,
            sum: 0,
            qs: [0; QK],
        }
    }
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums16: [0; 16],
            bsums32: [0; 8],
        }
    }
}

/// Scale and codes of `x` (any length), codes written into `qs`.
#[inline]
fn codes(x: &[f32], qs: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    d
}

/// Quantize `x` (a multiple of 32 values) into `out` (`x.len() / 32` blocks).
pub fn quantize_q8(x: &[f32], out: &mut [BlockQ8]) {
    for (blk, o) in x.chunks_exact(QK).zip(out.iter_mut()) {
        o.d = codes(blk, &mut o.qs);
        o.sum = o.qs.iter().map(|&q| q as i32).sum();
    }
}

/// Quantize `x` (a multiple of 256 values) into `out` (`x.len() / 256` blocks).
pub fn quantize_q8k(x: &[f32], out: &mut [BlockQ8K]) {
    for (blk, o) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        o.d = codes(blk, &mut o.qs);
        for (j, s) in o.bsums16.iter_mut().enumerate() {
            *s = o.qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
        }
        for (j, s) in o.bsums32.iter_mut().enumerate() {
            *s = o.bsums16[2 * j] + o.bsums16[2 * j + 1];
        }
    }
}

/// The values the codes stand for (what the kernels multiply), for references.
pub fn dequantize_q8(blocks: &[BlockQ8]) -> Vec<f32> {
    blocks
        .iter()
        .flat_map(|b| b.qs.iter().map(move |&q| b.d * q as f32))
        .collect()
}

/// The values the codes stand for, for references.
pub fn dequantize_q8k(blocks: &[BlockQ8K]) -> Vec<f32> {
    blocks
        .iter()
        .flat_map(|b| b.qs.iter().map(move |&q| b.d * q as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::gaussian;

    #[test]
    fn codes_sums_and_round_trip() {
        let x = gaussian(512, 3, 2.0);
        let mut q8 = vec![BlockQ8::default(); 16];
        quantize_q8(&x, &mut q8);
        let mut q8k = vec![BlockQ8K::default(); 2];
        quantize_q8k(&x, &mut q8k);
        for (blk, b) in x.chunks(32).zip(&q8) {
            let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(b.qs.iter().all(|&q| q > -128));
            assert!(b.qs.iter().any(|&q| q.abs() == 127));
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            assert_eq!(b.sum, sum);
            for (v, &q) in blk.iter().zip(&b.qs) {
                assert!((v - b.d * q as f32).abs() <= amax / 254.0 * 1.0001);
            }
        }
        for b in &q8k {
            for j in 0..16 {
                let s: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
                assert_eq!(b.bsums16[j] as i32, s);
            }
            for j in 0..8 {
                let s: i32 = b.qs[32 * j..32 * j + 32].iter().map(|&q| q as i32).sum();
                assert_eq!(b.bsums32[j] as i32, s);
            }
        }
        let y = dequantize_q8k(&q8k);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(x
            .iter()
            .zip(&y)
            .all(|(a, b)| (a - b).abs() <= amax / 254.0 * 1.0001));
        assert_eq!(dequantize_q8(&q8).len(), 512);
    }

    #[test]
    fn zero_blocks_have_zero_scale() {
        let mut q8 = [BlockQ8::default()];
        quantize_q8(&[0.0; 32], &mut q8);
        assert_eq!((q8[0].d, q8[0].sum), (0.0, 0));
        assert!(q8[0].qs.iter().all(|&q| q == 0));
    }
}
