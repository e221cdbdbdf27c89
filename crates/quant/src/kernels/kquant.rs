//! Tile kernels of the K-quants (Q2_K ... Q6_K) against
//! [`BlockQ8K`](crate::act::BlockQ8K) activations. Layouts: [`crate::pack`].
//!
//! Per super-block and column, in 32-bit integers: for each group of 16 or 32 values,
//! `t += isum * scale` (the scales come as i16 pairs: lane r holds groups 2p and 2p+1);
//! offsets (-4 for Q3_K, -32 for Q6_K) and mins use the activation's code sums with a
//! 16-bit multiply-add of the scale (or min) pairs against the sum pairs. Then once per
//! super-block: `acc += float(t) * d_w * d_a - float(Σ min * sum) * dmin_w * d_a`.

use super::legacy::bit_to_4;
use super::{col, dot_cols, store, Tile};
use crate::simd::Isa;

/// Activation (BlockQ8K) byte offsets: scale, codes, sums of 16, sums of 32.
const A_QS: usize = 4;
const A_BS16: usize = 260;
const A_BS32: usize = 292;
pub(crate) const Q8K_BYTES: usize = 308;

/// Low / high i16 of each 32-bit lane, sign-extended to i32.
#[inline(always)]
fn pair_lo<I: Isa>(p: I::I) -> I::I {
    I::sra32::<16>(I::sll32::<16>(p))
}
#[inline(always)]
fn pair_hi<I: Isa>(p: I::I) -> I::I {
    I::sra32::<16>(p)
}

/// Bits 2j..2j+2 of every byte, moved to bits 0..2 (`AT` = 0) or 4..6 (`AT` = 4).
#[inline(always)]
fn two_bits<I: Isa, const AT: i32>(b2: I::I, j: usize) -> I::I {
    let v = match (AT, j) {
        (0, 0) | (4, 2) => b2,
        (0, 1) | (4, 3) => I::srl16::<2>(b2),
        (0, 2) => I::srl16::<4>(b2),
        (0, _) => I::srl16::<6>(b2),
        (_, 0) => I::sll16::<4>(b2),
        _ => I::sll16::<2>(b2),
    };
    I::and(v, I::splat8(3 << AT))
}

/// Bit `g` (0..8) of every byte, moved to bit 2 (Q3_K's third bit).
#[inline(always)]
fn bit_to_2<I: Isa>(hb: I::I, g: usize) -> I::I {
    I::and(
        match g {
            0 => I::sll16::<2>(hb),
            1 => I::sll16::<1>(hb),
            2 => hb,
            3 => I::srl16::<1>(hb),
            4 => I::srl16::<2>(hb),
            5 => I::srl16::<3>(hb),
            6 => I::srl16::<4>(hb),
            _ => I::srl16::<5>(hb),
        },
        I::splat8(4),
    )
}

/// `t[c] += isum[c] * scale` for every column.
#[inline(always)]
fn scale_add<I: Isa, const C: usize>(t: &mut [I::I; C], isum: &[I::I; C], scale: I::I) {
    for c in 0..C {
        t[c] = I::add32(t[c], I::mul32(isum[c], scale));
    }
}

/// `v[c] += pairs ⋅ (the column's i16 pair at byte `off`)` (16-bit multiply-add).
#[inline(always)]
unsafe fn madd_cols<I: Isa, const C: usize>(v: &mut [I::I; C], pairs: I::I, t: &Tile, off: usize) {
    for (c, v) in v.iter_mut().enumerate() {
        *v = I::add32(*v, I::madd16(pairs, I::bcast4(col(t, c).add(off))));
    }
}

/// `acc += float(t) * d_w * d_a - float(mins) * dmin_w * d_a`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn finish<I: Isa, const C: usize>(
    acc: &mut [I::F; C],
    t: &[I::I; C],
    mins: Option<(&[I::I; C], I::F)>,
    d: I::F,
    tile: &Tile,
    a: usize,
) {
    for c in 0..C {
        let da = I::fsplat((col(tile, c).add(a) as *const f32).read_unaligned());
        acc[c] = I::fmadd(I::to_f32(t[c]), I::fmul(d, da), acc[c]);
        if let Some((m, dmin)) = mins {
            acc[c] = I::fnmadd(I::to_f32(m[c]), I::fmul(dmin, da), acc[c]);
        }
    }
}

/// Q4_K (`FIVE` = false) and Q5_K: 8 groups of 32, 6-bit scales and mins.
#[inline(always)]
pub(crate) unsafe fn q4_q5_k<I: Isa, const C: usize, const FIVE: bool>(tile: &Tile) {
    let (part, bytes) = if FIVE { (320, 1440) } else { (256, 1184) };
    let (mask, lo16) = (I::splat8(15), I::splat32(0xFFFF));
    let mut acc = [I::fzero(); C];
    for b in 0..tile.nb {
        let w = tile.w.add(b * bytes);
        let a = b * Q8K_BYTES;
        let mut t = [I::zero(); C];
        for c in 0..4 {
            let q = w.add(160 + part * c);
            let sc = I::u8_to_16(w.add(32 + 16 * c));
            for (p, scale) in [(0, I::and(sc, lo16)), (1, I::sra32::<16>(sc))] {
                let hb = if FIVE {
                    I::load(q.add(256 + 32 * p))
                } else {
                    I::zero()
                };
                let mut isum = [I::zero(); C];
                for j in 0..8 {
                    let x = I::load(q.add(32 * j));
                    let mut v = match p {
                        0 => I::and(x, mask),
                        _ => I::and(I::srl16::<4>(x), mask),
                    };
                    if FIVE {
                        v = I::or(v, bit_to_4::<I>(hb, j));
                    }
                    dot_cols::<I, C>(&mut isum, v, tile, a + A_QS + 64 * c + 32 * p + 4 * j);
                }
                scale_add::<I, C>(&mut t, &isum, scale);
            }
        }
        // Σ min * sum32, after the codes so that fewer accumulators are live at once.
        let mut mins = [I::zero(); C];
        for c in 0..4 {
            let pairs = I::u8_to_16(w.add(96 + 16 * c));
            madd_cols::<I, C>(&mut mins, pairs, tile, a + A_BS32 + 4 * c);
        }
        let (d, dmin) = (I::f16x8(w), I::f16x8(w.add(16)));
        finish::<I, C>(&mut acc, &t, Some((&mins, dmin)), d, tile, a);
    }
    store::<I, C>(tile, &acc);
}

/// Q6_K: 16 groups of 16, i8 scales, codes - 32.
#[inline(always)]
pub(crate) unsafe fn q6_k<I: Isa, const C: usize>(tile: &Tile) {
    let mask = I::splat8(15);
    let mut acc = [I::fzero(); C];
    for b in 0..tile.nb {
        let w = tile.w.add(b * 1680);
        let a = b * Q8K_BYTES;
        let mut t = [I::zero(); C];
        for part in 0..8 {
            let q = w.add(144 + 192 * part);
            let sc = I::i8_to_16(w.add(16 + 16 * part));
            for (h, scale) in [(0, pair_lo::<I>(sc)), (1, pair_hi::<I>(sc))] {
                let b2 = I::load(q.add(128 + 32 * h));
                let mut isum = [I::zero(); C];
                for j in 0..4 {
                    let x = I::load(q.add(32 * j));
                    let low = match h {
                        0 => I::and(x, mask),
                        _ => I::and(I::srl16::<4>(x), mask),
                    };
                    let v = I::or(low, two_bits::<I, 4>(b2, j));
                    dot_cols::<I, C>(&mut isum, v, tile, a + A_QS + 32 * part + 16 * h + 4 * j);
                }
                scale_add::<I, C>(&mut t, &isum, scale);
            }
            // t -= 32 * Σ scale * sum16 over this part's two groups.
            let mut corr = [I::zero(); C];
            madd_cols::<I, C>(&mut corr, sc, tile, a + A_BS16 + 4 * part);
            for c in 0..C {
                t[c] = I::add32(t[c], I::mul32(corr[c], I::splat32(-32)));
            }
        }
        finish::<I, C>(&mut acc, &t, None, I::f16x8(w), tile, a);
    }
    store::<I, C>(tile, &acc);
}

/// The scale pairs of part `p` (groups 2p, 2p+1) as i16: Q3_K's signed scales, or the
/// low nibbles of Q2_K's scale bytes.
#[inline(always)]
unsafe fn scales<I: Isa, const THREE: bool>(w: *const u8, p: usize) -> I::I {
    match THREE {
        true => I::i8_to_16(w.add(16 + 16 * p)),
        false => I::and(I::u8_to_16(w.add(32 + 16 * p)), I::splat32(0x000F_000F)),
    }
}

/// Q2_K (`THREE` = false: 2-bit codes, 4-bit scales and mins) and Q3_K (3-bit codes -
/// 4, signed 6-bit scales): 16 groups of 16.
#[inline(always)]
pub(crate) unsafe fn q2_q3_k<I: Isa, const C: usize, const THREE: bool>(tile: &Tile) {
    let (part, bytes, head) = if THREE {
        (96, 912, 144)
    } else {
        (64, 672, 160)
    };
    let nib = I::splat32(0x000F_000F);
    let mut acc = [I::fzero(); C];
    for b in 0..tile.nb {
        let w = tile.w.add(b * bytes);
        let a = b * Q8K_BYTES;
        let mut t = [I::zero(); C];
        for p in 0..8 {
            let q = w.add(head + part * p);
            let sc = scales::<I, THREE>(w, p);
            let hb = if THREE { I::load(q.add(64)) } else { I::zero() };
            for (h, scale) in [(0, pair_lo::<I>(sc)), (1, pair_hi::<I>(sc))] {
                let b2 = I::load(q.add(32 * h));
                let mut isum = [I::zero(); C];
                for j in 0..4 {
                    let mut v = two_bits::<I, 0>(b2, j);
                    if THREE {
                        v = I::or(v, bit_to_2::<I>(hb, 4 * h + j));
                    }
                    dot_cols::<I, C>(&mut isum, v, tile, a + A_QS + 32 * p + 16 * h + 4 * j);
                }
                scale_add::<I, C>(&mut t, &isum, scale);
            }
        }
        // Q3_K: Σ scale * sum16 (for the -4 offset); Q2_K: Σ min * sum16. After the
        // codes so that fewer accumulators are live at once.
        let mut corr = [I::zero(); C];
        for p in 0..8 {
            let pairs = match THREE {
                true => scales::<I, THREE>(w, p),
                false => I::and(I::srl16::<4>(I::u8_to_16(w.add(32 + 16 * p))), nib),
            };
            madd_cols::<I, C>(&mut corr, pairs, tile, a + A_BS16 + 4 * p);
        }
        let d = I::f16x8(w);
        if THREE {
            for c in 0..C {
                t[c] = I::add32(t[c], I::mul32(corr[c], I::splat32(-4)));
            }
            finish::<I, C>(&mut acc, &t, None, d, tile, a);
        } else {
            finish::<I, C>(&mut acc, &t, Some((&corr, I::f16x8(w.add(16)))), d, tile, a);
        }
    }
    store::<I, C>(tile, &acc);
}
