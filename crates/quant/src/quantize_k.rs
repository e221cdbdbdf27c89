//! f32 to the K-quant layouts (Q2_K ... Q6_K), one 256-value super-block at a time.
//!
//! Each group of 16 or 32 values gets a float scale (and for Q2_K/Q4_K/Q5_K a min) from
//! a least-squares search over a small grid of candidate steps; the group scales are
//! then quantized to 4, 6 or 8 bits against the super-block's f16 scale, and every
//! value is re-rounded against the scale actually stored, so the stored codes are the
//! best ones for the stored scales. Element orders are those of [`crate::dequant`].

use crate::block::Unpacked;
use crate::quantize::{f16_bits, signed_absmax};
use crate::types::GgmlType;

/// Squared error of `x` coded as `a * q - m`, q in 0..=nmax rounded to nearest.
fn affine_error(x: &[f32], a: f32, m: f32, nmax: u32) -> f32 {
    x.iter()
        .map(|&v| {
            let q = if a > 0.0 {
                ((v + m) / a).round().clamp(0.0, nmax as f32)
            } else {
                0.0
            };
            (a * q - m - v).powi(2)
        })
        .sum()
}

/// Fit x ≈ a * q - m with q in 0..=nmax, a >= 0, m >= 0 (the formats store -m).
fn fit_affine(x: &[f32], nmax: u32) -> (f32, f32) {
    let lo = x.iter().fold(0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(f32::MIN, |m, &v| m.max(v));
    if hi <= lo {
        return (0.0, -lo);
    }
    let n = nmax as f32;
    let first = ((hi - lo) / n, -lo);
    let mut best = (first.0, first.1, affine_error(x, first.0, first.1, nmax));
    let cnt = x.len() as f32;
    for step in -10..=10 {
        let iscale = (n + 0.1 * step as f32) / (hi - lo);
        let (mut sq, mut sqq, mut sqx, mut sx) = (0f32, 0f32, 0f32, 0f32);
        for &v in x {
            let q = (iscale * (v - lo)).round().clamp(0.0, n);
            (sq, sqq, sqx, sx) = (sq + q, sqq + q * q, sqx + q * v, sx + v);
        }
        let det = cnt * sqq - sq * sq;
        if det <= 0.0 {
            continue;
        }
        let (mut a, mut b) = ((cnt * sqx - sq * sx) / det, (sqq * sx - sq * sqx) / det);
        if b > 0.0 {
            (a, b) = (sqx / sqq, 0.0);
        }
        if a <= 0.0 {
            continue;
        }
        let e = affine_error(x, a, -b, nmax);
        if e < best.2 {
            best = (a, -b, e);
        }
    }
    (best.0, best.1)
}

/// Squared error of `x` coded as `s * q`, q in -n..n rounded to nearest.
fn symmetric_error(x: &[f32], s: f32, n: i32) -> f32 {
    x.iter()
        .map(|&v| {
            let q = if s != 0.0 {
                (v / s).round().clamp(-n as f32, (n - 1) as f32)
            } else {
                0.0
            };
            (s * q - v).powi(2)
        })
        .sum()
}

/// Fit x ≈ s * q with q in -n..n (s may be negative: the extreme value maps to -n).
fn fit_symmetric(x: &[f32], n: i32) -> f32 {
    let m = signed_absmax(x);
    if m == 0.0 {
        return 0.0;
    }
    let first = m / -(n as f32);
    let mut best = (first, symmetric_error(x, first, n));
    for step in -9..=9 {
        let iscale = -(n as f32 + 0.1 * step as f32) / m;
        let (mut sqq, mut sqx) = (0f32, 0f32);
        for &v in x {
            let q = (iscale * v).round().clamp(-n as f32, (n - 1) as f32);
            (sqq, sqx) = (sqq + q * q, sqx + q * v);
        }
        if sqq == 0.0 {
            continue;
        }
        let s = sqx / sqq;
        let e = symmetric_error(x, s, n);
        if e < best.1 {
            best = (s, e);
        }
    }
    best.0
}

/// Quantize a non-negative group scale against the super-block scale `d` (f16-rounded).
fn code(v: f32, d: f32, max: i32) -> i32 {
    if d > 0.0 {
        ((v / d).round() as i32).clamp(0, max)
    } else {
        0
    }
}

fn f16_round(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// Q2_K, Q4_K, Q5_K: x = d * sc[g] * code - dmin * mn[g], group scales and mins of
/// 4 (Q2_K) or 6 bits.
pub(crate) fn affine(ty: GgmlType, x: &[f32]) -> Unpacked {
    let (group, nmax, sbits) = match ty {
        GgmlType::Q2K => (16, 3, 4),
        GgmlType::Q4K => (32, 15, 6),
        _ => (32, 31, 6),
    };
    let fits: Vec<(f32, f32)> = x.chunks(group).map(|g| fit_affine(g, nmax)).collect();
    let smax = ((1 << sbits) - 1) as f32;
    let d = f16_round(fits.iter().fold(0f32, |a, f| a.max(f.0)) / smax);
    let dmin = f16_round(fits.iter().fold(0f32, |a, f| a.max(f.1)) / smax);
    let mut u = Unpacked {
        d: f16_bits(d),
        m: f16_bits(dmin),
        ..Unpacked::default()
    };
    for (g, f) in fits.iter().enumerate() {
        u.sc[g] = code(f.0, d, smax as i32) as u8;
        u.mn[g] = code(f.1, dmin, smax as i32) as u8;
    }
    for (i, (q, &v)) in u.codes.iter_mut().zip(x).enumerate() {
        let (a, m) = (d * u.sc[i / group] as f32, dmin * u.mn[i / group] as f32);
        if a > 0.0 {
            *q = ((v + m) / a).round().clamp(0.0, nmax as f32) as u8;
        }
    }
    u
}

/// Q3_K, Q6_K: x = d * sc[g] * (code - n), signed group scales of 6 (stored + 32) or
/// 8 bits.
pub(crate) fn symmetric(ty: GgmlType, x: &[f32]) -> Unpacked {
    let (n, smax, bias) = match ty {
        GgmlType::Q3K => (4, 32, 32),
        _ => (32, 128, 0),
    };
    let fits: Vec<f32> = x.chunks(16).map(|g| fit_symmetric(g, n)).collect();
    let d = f16_round(signed_absmax(&fits) / -(smax as f32));
    let mut u = Unpacked {
        d: f16_bits(d),
        ..Unpacked::default()
    };
    let mut sc = [0i32; 16];
    for (g, &s) in fits.iter().enumerate() {
        if d != 0.0 {
            sc[g] = ((s / d).round() as i32).clamp(-smax, smax - 1);
        }
        u.sc[g] = (sc[g] + bias) as u8;
    }
    for (i, (q, &v)) in u.codes.iter_mut().zip(x).enumerate() {
        let s = d * sc[i / 16] as f32;
        *q = match s != 0.0 {
            true => ((v / s).round().clamp(-n as f32, (n - 1) as f32) as i32 + n) as u8,
            false => n as u8,
        };
    }
    u
}

#[cfg(test)]
mod tests {
    use crate::dequant::dequantize;
    use crate::quantize::quantize;
    use crate::random::{gaussian, rms};
    use crate::types::GgmlType;

    /// Relative RMS error of a round trip on N(0, 1) data: what each format's bits buy,
    /// with room for this search's choices (llama.cpp's reference quantizer lands near
    /// these: q2_k ~0.3, q3_k ~0.16, q4_k ~0.075, q5_k ~0.037, q6_k ~0.018).
    #[test]
    fn round_trip_error_matches_the_bits() {
        let x = gaussian(256 * 64, 11, 1.0);
        for (ty, limit) in [
            (GgmlType::Q2K, 0.36),
            (GgmlType::Q3K, 0.19),
            (GgmlType::Q4K, 0.085),
            (GgmlType::Q5K, 0.043),
            (GgmlType::Q6K, 0.021),
        ] {
            let bytes = quantize(ty, &x).unwrap();
            assert_eq!(bytes.len(), ty.bytes_for(x.len()), "{ty}");
            let y = dequantize(ty, &bytes).unwrap();
            let err: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a - b).collect();
            let rel = rms(&err) / rms(&x);
            assert!(rel < limit, "{ty}: relative rms error {rel}");
        }
    }

    #[test]
    fn fits_recover_exact_grids() {
        // Values already on a grid come back exactly (up to the f16 scales).
        let x: Vec<f32> = (0..256).map(|i| ((i % 16) as f32 - 8.0) * 0.25).collect();
        for ty in [GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
            let y = dequantize(ty, &quantize(ty, &x).unwrap()).unwrap();
            for (i, (a, b)) in x.iter().zip(&y).enumerate() {
                assert!((a - b).abs() < 4e-3, "{ty} elem {i}: {a} vs {b}");
            }
        }
    }
}
