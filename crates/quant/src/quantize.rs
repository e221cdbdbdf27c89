//! f32 to GGML blocks (the layouts in [`crate::dequant`]), for `--quant TYPE` of
//! safetensors or dummy weights at load.
//!
//! Legacy types use the usual round-to-nearest rules (the extreme value of a block maps
//! to the end of the code range). K-quants fit each group's scale (and min) by a small
//! search minimizing the squared error, then quantize the group scales with the
//! super-block's scale and re-round the values against the scales actually stored; see
//! [`crate::quantize_k`]. Round trips are tested against error bounds and against
//! candle's own quantizer's error on the same data.

use crate::block::{encode, Unpacked};
use crate::error::{input_err, Result};
use crate::quantize_k;
use crate::types::GgmlType;

/// Quantize `x` (a whole number of blocks of `ty`) into `ty`'s byte layout.
pub fn quantize(ty: GgmlType, x: &[f32]) -> Result<Vec<u8>> {
    if !x.len().is_multiple_of(ty.block_elems()) {
        input_err!(
            "{ty}: {} values is not a whole number of {}-value blocks",
            x.len(),
            ty.block_elems()
        );
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        input_err!("{ty}: value {i} is {} (not finite)", x[i]);
    }
    let mut out = Vec::with_capacity(ty.bytes_for(x.len()));
    for blk in x.chunks_exact(ty.block_elems()) {
        let u = match ty {
            GgmlType::F32 => {
                out.extend_from_slice(&blk[0].to_le_bytes());
                continue;
            }
            GgmlType::F16 => {
                out.extend_from_slice(&f16_bits(blk[0]).to_le_bytes());
                continue;
            }
            GgmlType::BF16 => {
                out.extend_from_slice(&half::bf16::from_f32(blk[0]).to_le_bytes());
                continue;
            }
            GgmlType::Q4_0 => legacy_symmetric(blk, 4),
            GgmlType::Q5_0 => legacy_symmetric(blk, 5),
            GgmlType::Q4_1 => legacy_affine(blk, 4),
            GgmlType::Q5_1 => legacy_affine(blk, 5),
            GgmlType::Q8_0 => q8_0(blk),
            GgmlType::Q2K | GgmlType::Q4K | GgmlType::Q5K => quantize_k::affine(ty, blk),
            GgmlType::Q3K | GgmlType::Q6K => quantize_k::symmetric(ty, blk),
        };
        encode(ty, &u, &mut out);
    }
    Ok(out)
}

pub(crate) fn f16_bits(v: f32) -> u16 {
    half::f16::from_f32(v).to_bits()
}

/// The value of largest magnitude, with its sign (0 for an all-zero block).
pub(crate) fn signed_absmax(x: &[f32]) -> f32 {
    x.iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
}

/// Q4_0 / Q5_0: x = d * (q - 2^(bits-1)); the extreme value maps to code 0.
fn legacy_symmetric(x: &[f32], bits: u32) -> Unpacked {
    let half = (1 << (bits - 1)) as f32;
    let top = (1u32 << bits) - 1;
    let d = signed_absmax(x) / -half;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut u = Unpacked {
        d: f16_bits(d),
        ..Unpacked::default()
    };
    for (c, &v) in u.codes.iter_mut().zip(x) {
        *c = ((v * id + half + 0.5) as u32).min(top) as u8;
    }
    u
}

/// Q4_1 / Q5_1: x = d * q + m with m the block's minimum.
fn legacy_affine(x: &[f32], bits: u32) -> Unpacked {
    let top = (1u32 << bits) - 1;
    let (lo, hi) = x
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let d = (hi - lo) / top as f32;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut u = Unpacked {
        d: f16_bits(d),
        m: f16_bits(lo),
        ..Unpacked::default()
    };
    for (c, &v) in u.codes.iter_mut().zip(x) {
        *c = (((v - lo) * id + 0.5) as u32).min(top) as u8;
    }
    u
}

/// Q8_0: x = d * q, q in -127..=127.
fn q8_0(x: &[f32]) -> Unpacked {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut u = Unpacked {
        d: f16_bits(d),
        ..Unpacked::default()
    };
    for (c, &v) in u.codes.iter_mut().zip(x) {
        *c = (v * id).round().clamp(-127.0, 127.0) as i8 as u8;
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::dequantize;
    use crate::random::{gaussian, rms};

    /// Worst-case error of one value: half a step of its block's grid.
    fn max_err_bound(ty: GgmlType, blk: &[f32]) -> f32 {
        let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let range = blk.iter().fold(f32::MIN, |m, &v| m.max(v))
            - blk.iter().fold(f32::MAX, |m, &v| m.min(v));
        // f16 rounding of d and m adds at most 2^-11 relative per stored scale.
        let slack = 1.0 + 4.0 / 2048.0;
        match ty {
            // The extreme value maps to code 0; values near its opposite clamp at the
            // top code, up to one step away.
            GgmlType::Q4_0 => amax / 8.0 * slack + amax * 2e-3,
            GgmlType::Q5_0 => amax / 16.0 * slack + amax * 2e-3,
            GgmlType::Q4_1 => range / 15.0 * 0.5 * slack + amax * 2e-3,
            GgmlType::Q5_1 => range / 31.0 * 0.5 * slack + amax * 2e-3,
            GgmlType::Q8_0 => amax / 127.0 * 0.5 * slack + amax * 2e-3,
            _ => unreachable!(),
        }
    }

    #[test]
    fn legacy_round_trips_within_a_step() {
        let x = gaussian(32 * 64, 7, 1.0);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            let bytes = quantize(ty, &x).unwrap();
            assert_eq!(bytes.len(), ty.bytes_for(x.len()));
            let y = dequantize(ty, &bytes).unwrap();
            for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                let bound = max_err_bound(ty, xb);
                for (i, (a, r)) in xb.iter().zip(yb).enumerate() {
                    assert!(
                        (a - r).abs() <= bound,
                        "{ty} block {b} elem {i}: {a} vs {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn float_rows_and_zero_blocks() {
        let x = [1.5f32, -2.25, 0.0, 65504.0];
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            let y = dequantize(ty, &quantize(ty, &x).unwrap()).unwrap();
            assert_eq!(&y[..3], &x[..3], "{ty}");
        }
        for ty in GgmlType::QUANTIZED {
            let zeros = vec![0f32; ty.block_elems()];
            let y = dequantize(ty, &quantize(ty, &zeros).unwrap()).unwrap();
            assert!(y.iter().all(|&v| v == 0.0), "{ty}: {y:?}");
        }
        assert!(rms(&x) > 0.0);
    }

    #[test]
    fn rejects_partial_blocks_and_non_finite_values() {
        let err = quantize(GgmlType::Q4K, &[0.0; 32]).unwrap_err().to_string();
        assert!(err.contains("q4_k") && err.contains("256"), "{err}");
        let mut x = vec![0.0; 32];
        x[5] = f32::NAN;
        let err = quantize(GgmlType::Q8_0, &x).unwrap_err().to_string();
        assert!(err.contains("value 5"), "{err}");
    }
}
