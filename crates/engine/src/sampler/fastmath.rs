//! Fast math for sampling over a whole vocabulary: the NaN-free view of a logit and a
//! vectorizable `exp` for the softmax sums (a 150k-entry row is summed every step).

/// Maps a logit to a NaN-free value: NaN becomes `-inf`, `+inf` becomes `f32::MAX`.
#[inline]
pub(super) fn clean(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        f32::MAX
    } else {
        x
    }
}

/// `exp(x)` for `x <= 0`, accurate to a few ulp, branch-free so the loops that call it
/// vectorize (several times faster than `f32::exp` over a 150k vocabulary).
/// Results below `exp(-87)` (~1.6e-38) flush to 0; `-inf` and NaN give 0.
#[inline]
pub(super) fn exp_nonpos(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // NaN fails both comparisons: clamp it into range here and zero it at the end.
    let xc = if x > -87.0 { x.min(0.0) } else { -87.0 };
    // Round x / ln 2 (in [-126, 0]) to nearest with the 1.5 * 2^23 trick: after the add,
    // the integer sits in the low mantissa bits. Plain float/integer ops only (no libm
    // `floor`, no float-to-int conversion), so the loop vectorizes on baseline x86-64.
    const SHIFT: f32 = 12_582_912.0;
    let t = xc * LOG2E + SHIFT;
    let n = t - SHIFT;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Cephes expf minimax polynomial on |r| <= ln(2) / 2.
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let y = p * r * r + r + 1.0;
    // 2^n for n in [-126, 0] is a normal f32: exponent field n + 127.
    let n_int = t.to_bits().wrapping_sub(SHIFT.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    if x > -87.0 {
        y * scale
    } else {
        0.0
    }
}

/// `ln(sum_i exp(x_i - max))`, so that `log_softmax(x)_i = (x_i - max) - result`.
pub(super) fn log_sum_exp_offset(logits: &[f32], max: f32) -> f32 {
    // Exponentials a block at a time into a stack buffer (a loop that vectorizes),
    // then summed in f64.
    let mut buf = [0.0f32; 1024];
    let mut s = 0.0f64;
    for block in logits.chunks(buf.len()) {
        for (b, &x) in buf.iter_mut().zip(block) {
            *b = exp_nonpos(clean(x) - max);
        }
        s += buf[..block.len()]
            .iter()
            .map(|&e| f64::from(e))
            .sum::<f64>();
    }
    // s >= 1 because the maximum contributes exp(0) = 1.
    s.ln() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_nonpos_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = 0.0f32;
        while x > -87.0 {
            let want = (x as f64).exp();
            let got = exp_nonpos(x) as f64;
            worst = worst.max((got - want).abs() / want);
            x -= 0.000_731;
        }
        assert!(worst < 5e-7, "max relative error {worst}");
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(-0.0), 1.0);
        assert_eq!(exp_nonpos(-100.0), 0.0);
        assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos(f32::NAN), 0.0);
        assert_eq!(exp_nonpos(f32::MIN), 0.0);
    }
}
