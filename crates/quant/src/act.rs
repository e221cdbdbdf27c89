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
//! Codes are round(x * 127 / max|x|), so they stay in -127..=127 (the AVX2 sign trick
//! needs -128 never to occur). These are in-memory formats of this crate, not GGUF types:
//! the scales are held as f32. The Q8 blocks copy llama.cpp's roundings (f16 scale and
//! sum, ties to even: see [`quantize_q8`]): a matmul then gives llama.cpp's result on the
//! same input to f32 rounding (crates/model/tests/quant_vs_llamacpp.rs), not one that
//! differs by the f16 rounding of every block's scale.

use crate::types::{QK, QK_K};

/// 32 activation values: `x[i] ≈ d * qs[i]`, `sum = Σ qs`, `s ≈ d * sum` (rounded as
/// llama.cpp's Q8_1 stores it: see [`quantize_q8`]).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8 {
    pub d: f32,
    pub s: f32,
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
            s: 0.0,
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

/// `x` rounded to f16 (as llama.cpp stores its activation scales), kept as an f32.
#[inline]
fn f16_round(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Scale and codes of `x` (any length), codes written into `qs`: the unrounded scale.
#[inline]
fn codes(x: &[f32], qs: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = round_ties_even_small(v * id) as i8;
    }
    amax / 127.0
}

/// `x.round_ties_even()` for |x| < 2^22, in two adds that vectorize: a default x86_64
/// build has no SSE4.1 `roundps`, so `round_ties_even` is a libm call per value (20 % of
/// a 16-sequence decode step in a profile). Adding 1.5 * 2^23 leaves no fraction bits,
/// so the add itself rounds, half to even (the default rounding mode).
#[inline]
fn round_ties_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + MAGIC) - MAGIC
}

/// Quantize `x` (a multiple of 32 values) into `out` (`x.len() / 32` blocks), with
/// llama.cpp's arithmetic (ggml-cpu's quantize_row_q8_0 and _q8_1): codes
/// round-half-even(x * 127 / max|x|), `d` = max|x| / 127 rounded to f16, `s` = the
/// unrounded d times the code sum, rounded to f16. Copying its roundings keeps our
/// 8-bit rounding noise the same as llama.cpp's on the same input.
pub fn quantize_q8(x: &[f32], out: &mut [BlockQ8]) {
    for (blk, o) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let d = codes(blk, &mut o.qs);
        o.sum = o.qs.iter().map(|&q| q as i32).sum();
        o.d = f16_round(d);
        o.s = f16_round(d * o.sum as f32);
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

/// Quantize `x` as the CUDA mat-vec kernels do (kernels/quant_matvec.cu): `d` =
/// max|x| / 127 kept in f32, codes round-half-even(x / d), `s` = d * sum. For the
/// reference of those kernels; the CPU kernels use [`quantize_q8`].
pub fn quantize_q8_f32_scale(x: &[f32], out: &mut [BlockQ8]) {
    for (blk, o) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let d = blk.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        for (q, &v) in o.qs.iter_mut().zip(blk) {
            *q = if d > 0.0 {
                (v / d).round_ties_even() as i8
            } else {
                0
            };
        }
        o.sum = o.qs.iter().map(|&q| q as i32).sum();
        o.d = d;
        o.s = d * o.sum as f32;
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
            // Half a step, plus the f16 rounding of d (2^-11 relative) times |q| <= 127.
            for (v, &q) in blk.iter().zip(&b.qs) {
                assert!((v - b.d * q as f32).abs() <= amax / 254.0 * 1.0001 + amax / 2048.0);
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
            .all(|(a, b)| (a - b).abs() <= amax / 254.0 * 1.0001 + amax / 2048.0));
        assert_eq!(dequantize_q8(&q8).len(), 512);
    }

    /// llama.cpp's roundings (ggml-cpu quantize_row_q8_0 / _q8_1 on x86): ties to even,
    /// d stored in f16, s = f16(unrounded d * code sum). The values are chosen so that
    /// each differs from the f32-scale, ties-away rounding this replaced.
    #[test]
    fn roundings_are_llama_cpps() {
        // max|x| = 127: x * 127 / max|x| = x exactly, so 2.5 and -0.5 are ties.
        let mut x = [1.0f32; 32];
        x[..4].copy_from_slice(&[127.0, 2.5, -2.5, -0.5]);
        let mut b = [BlockQ8::default()];
        quantize_q8(&x, &mut b);
        assert_eq!(&b[0].qs[..5], &[127, 2, -2, 0, 1]);
        assert_eq!(b[0].d, 1.0);
        // All ones: codes 127, sum 4064; d = 1/127 is not an f16, s = 4064/127 = 32 is.
        quantize_q8(&[1.0; 32], &mut b);
        assert_eq!(b[0].sum, 32 * 127);
        let d16 = half::f16::from_f32(1.0 / 127.0).to_f32();
        assert_ne!(d16, 1.0 / 127.0);
        assert_eq!(b[0].d, d16);
        assert_eq!(b[0].s, 32.0);
        assert_ne!(b[0].s, d16 * b[0].sum as f32);
        // The f32-scale variant (CUDA's) keeps d and s unrounded.
        quantize_q8_f32_scale(&[1.0; 32], &mut b);
        assert_eq!((b[0].d, b[0].s), (1.0 / 127.0, 4064.0 / 127.0));
    }

    #[test]
    fn small_rounding_is_round_ties_even() {
        let mut x: Vec<f32> = (-2600..=2600).map(|i| i as f32 * 0.05).collect();
        x.extend((-300..=300).map(|i| i as f32 + 0.5)); // every tie in the code range
        x.extend([127.49999, -127.50001, 0.49999997, -0.5, 1e-30, -0.0]);
        for v in x {
            assert_eq!(round_ties_even_small(v), v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn zero_blocks_have_zero_scale() {
        let mut q8 = [BlockQ8::default()];
        quantize_q8(&[0.0; 32], &mut q8);
        assert_eq!((q8[0].d, q8[0].sum), (0.0, 0));
        assert!(q8[0].qs.iter().all(|&q| q == 0));
    }
}
