//! The reference matmul the kernels are checked against: weights decoded by the
//! reference dequantizer, activations passed through the same 8-bit quantization the
//! kernels of the weight type use, products summed in f64. For the types with a block
//! min (Q4_1, Q5_1) the min multiplies the activation block's stored sum `s` (f16, as
//! llama.cpp's Q8_1 holds it) rather than the sum of its values, as in the kernels.
//!
//! A kernel differs from it only by f32 rounding (scales multiplied and accumulated in
//! f32, sums in another order), so the tests hold kernels to [`tolerance`] of the sum of
//! the absolute products.

use crate::act::{
    dequantize_q8, dequantize_q8k, quantize_q8, quantize_q8_f32_scale, quantize_q8k, BlockQ8,
    BlockQ8K,
};
use crate::block::decode;
use crate::dequant::dequantize;
use crate::error::{input_err, Result};
use crate::types::{GgmlType, QK, QK_K};

/// How a matmul quantizes its activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acts {
    /// Q8 blocks of 32 with llama.cpp's roundings (the CPU's legacy-type kernels).
    Q8,
    /// Q8 blocks of 32 with an f32 scale (every CUDA mat-vec kernel).
    Q8F32,
    /// Q8_K blocks of 256 (the CPU's K-quant kernels).
    Q8K,
    /// Not at all (float weights; CUDA's dequantize + GEMM path).
    F32,
}

impl Acts {
    /// What the CPU kernels of `ty` use.
    pub fn cpu(ty: GgmlType) -> Acts {
        match ty.block_elems() {
            QK => Acts::Q8,
            QK_K => Acts::Q8K,
            _ => Acts::F32,
        }
    }
}

/// The activation values the CPU kernels of `ty` multiply: `x` through Q8 (32-blocks)
/// or Q8_K (256-blocks) and back; unchanged for float weights.
pub fn act_values(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    quantized_values(Acts::cpu(ty), x)
}

/// `x` (a multiple of 256 values for Q8_K, of 32 for Q8) through `acts` and back.
pub fn quantized_values(acts: Acts, x: &[f32]) -> Vec<f32> {
    match acts {
        Acts::Q8 | Acts::Q8F32 => dequantize_q8(&q8_blocks(acts, x)),
        Acts::Q8K => {
            let mut b = vec![BlockQ8K::default(); x.len() / QK_K];
            quantize_q8k(x, &mut b);
            dequantize_q8k(&b)
        }
        Acts::F32 => x.to_vec(),
    }
}

/// `y = x · Wᵀ` for GGUF bytes `w` (`[rows, cols]` of `ty`) and `x` (`[m, cols]`), with
/// the CPU kernels' activation quantization, and for each output the sum of |products|
/// (the scale of its rounding error).
pub fn matmul(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    matmul_with(ty, w, rows, cols, x, m, Acts::cpu(ty))
}

/// [`matmul`] with a given activation quantization.
pub fn matmul_with(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
    acts: Acts,
) -> Result<(Vec<f32>, Vec<f32>)> {
    ty.check_row_len(cols)?;
    if x.len() != m * cols || w.len() != rows * ty.bytes_for(cols) {
        input_err!("reference matmul: shapes do not match [{rows}, {cols}] x [{m}, {cols}]");
    }
    let wf = dequantize(ty, w)?;
    let xf = quantized_values(acts, x);
    let (mut y, mut mag) = (vec![0f32; m * rows], vec![0f32; m * rows]);
    for i in 0..m {
        let xr = &xf[i * cols..(i + 1) * cols];
        let min_fix = min_correction(ty, w, rows, &x[i * cols..(i + 1) * cols], acts);
        for r in 0..rows {
            let wr = &wf[r * cols..(r + 1) * cols];
            let (s, a) = wr.iter().zip(xr).fold((0f64, 0f64), |(s, a), (&w, &x)| {
                let p = w as f64 * x as f64;
                (s + p, a + p.abs())
            });
            y[i * rows + r] = (s + min_fix[r]) as f32;
            mag[i * rows + r] = a as f32;
        }
    }
    Ok((y, mag))
}

/// `x` as the Q8 blocks of `acts` (Q8 or Q8F32).
fn q8_blocks(acts: Acts, x: &[f32]) -> Vec<BlockQ8> {
    let mut b = vec![BlockQ8::default(); x.len() / QK];
    match acts {
        Acts::Q8F32 => quantize_q8_f32_scale(x, &mut b),
        _ => quantize_q8(x, &mut b),
    }
    b
}

/// Per weight row: Σ over blocks of `m_w * (s_a - d_a * Σ codes_a)`, what the min types'
/// kernels add beyond the product of the values (zero for the other types and acts).
fn min_correction(ty: GgmlType, w: &[u8], rows: usize, x: &[f32], acts: Acts) -> Vec<f64> {
    if acts != Acts::Q8 || !matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        return vec![0.0; rows];
    }
    let blocks = q8_blocks(acts, x);
    let per_row = x.len() / QK * ty.block_bytes();
    (0..rows)
        .map(|r| {
            let row = &w[r * per_row..(r + 1) * per_row];
            row.chunks_exact(ty.block_bytes())
                .zip(&blocks)
                .map(|(wb, a)| {
                    let m = half::f16::from_bits(decode(ty, wb).m).to_f32() as f64;
                    m * (a.s as f64 - a.d as f64 * a.sum as f64)
                })
                .sum()
        })
        .collect()
}

/// Largest allowed |kernel - reference| for an output whose products sum to `mag` in
/// absolute value, with reduction length `cols`: f32 rounding of each block's scaled sum
/// and of the running sum, about (cols / 8 + 16) roundings of 2^-24 at worst.
pub fn tolerance(cols: usize, mag: f32) -> f32 {
    4e-7 * (cols as f32 / 8.0 + 16.0) * mag + 1e-30
}
