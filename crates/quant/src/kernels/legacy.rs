//! Tile kernels of the 32-element types: Q4_0, Q4_1, Q5_0, Q5_1 (4-bit codes, maybe a
//! fifth bit, maybe a min) and Q8_0, against [`BlockQ8`](crate::act::BlockQ8)
//! activations. Layouts: [`crate::pack`].
//!
//! Per packed block and column: `isum` (8 lanes = 8 rows) = Σ over the 8 groups of the
//! 8-bit dot of the rows' codes with the column's 4 codes of that group; then
//! `acc += float(isum + offset * Σa) * d_w * d_a`, plus `m_w * s_a` (s_a ≈ d_a * Σa, as
//! llama.cpp rounds it) for the types with a min. The offsets (-8, -16, and -128 for biased Q8_0) are exact integers.

use super::{col, dot_cols, store, Tile, Q8_BYTES, Q8_CODES, Q8_S, Q8_SUM};
use crate::simd::Isa;

/// Bit `g` (0..8) of every byte, moved to bit 4 (the fifth bit of a 5-bit code).
#[inline(always)]
pub(super) fn bit_to_4<I: Isa>(hb: I::I, g: usize) -> I::I {
    let v = match g {
        0 => I::sll16::<4>(hb),
        1 => I::sll16::<3>(hb),
        2 => I::sll16::<2>(hb),
        3 => I::sll16::<1>(hb),
        4 => hb,
        5 => I::srl16::<1>(hb),
        6 => I::srl16::<2>(hb),
        _ => I::srl16::<3>(hb),
    };
    I::and(v, I::splat8(0x10))
}

/// Q4_0 (`T` = 0), Q4_1 (1), Q5_0 (2), Q5_1 (3).
#[inline(always)]
pub(crate) unsafe fn legacy<I: Isa, const C: usize, const T: u8>(t: &Tile) {
    let (has_m, five) = (T == 1 || T == 3, T >= 2);
    let bytes = 144 + 16 * has_m as usize + 32 * five as usize;
    let qs_at = 16 + 16 * has_m as usize;
    let offset = match T {
        0 => -8,
        2 => -16,
        _ => 0,
    };
    let mask = I::splat8(15);
    let mut acc = [I::fzero(); C];
    for b in 0..t.nb {
        let w = t.w.add(b * bytes);
        let a = b * Q8_BYTES;
        let hb = if five {
            I::load(w.add(qs_at + 128))
        } else {
            I::zero()
        };
        let mut isum = [I::zero(); C];
        for j in 0..4 {
            let x = I::load(w.add(qs_at + 32 * j));
            let (mut lo, mut hi) = (I::and(x, mask), I::and(I::srl16::<4>(x), mask));
            if five {
                lo = I::or(lo, bit_to_4::<I>(hb, j));
                hi = I::or(hi, bit_to_4::<I>(hb, j + 4));
            }
            dot_cols::<I, C>(&mut isum, lo, t, a + Q8_CODES + 4 * j);
            dot_cols::<I, C>(&mut isum, hi, t, a + Q8_CODES + 16 + 4 * j);
        }
        let dw = I::f16x8(w);
        let mw = if has_m { I::f16x8(w.add(16)) } else { dw };
        for (c, acc) in acc.iter_mut().enumerate() {
            let p = col(t, c).add(a);
            let da = (p as *const f32).read_unaligned();
            let mut s = isum[c];
            if offset != 0 {
                let sum = (p.add(Q8_SUM) as *const i32).read_unaligned();
                s = I::add32(s, I::splat32(offset * sum));
            }
            *acc = I::fmadd(I::to_f32(s), I::fmul(dw, I::fsplat(da)), *acc);
            if has_m {
                let sa = (p.add(Q8_S) as *const f32).read_unaligned();
                *acc = I::fmadd(mw, I::fsplat(sa), *acc);
            }
        }
    }
    store::<I, C>(t, &acc);
}

/// Q8_0: signed 8-bit codes (biased by +128 at the VNNI levels, see [`Isa::dot_q8`]).
#[inline(always)]
pub(crate) unsafe fn q8_0<I: Isa, const C: usize>(t: &Tile) {
    let mut acc = [I::fzero(); C];
    for b in 0..t.nb {
        let w = t.w.add(b * 272);
        let a = b * Q8_BYTES;
        let mut isum = [I::zero(); C];
        for g in 0..8 {
            let x = I::q8_prep(I::load(w.add(16 + 32 * g)));
            for (c, s) in isum.iter_mut().enumerate() {
                *s = I::dot_q8(*s, x, I::bcast4(col(t, c).add(a + Q8_CODES + 4 * g)));
            }
        }
        let dw = I::f16x8(w);
        for (c, acc) in acc.iter_mut().enumerate() {
            let p = col(t, c).add(a);
            let da = (p as *const f32).read_unaligned();
            let mut s = isum[c];
            if I::Q8_BIASED {
                let sum = (p.add(Q8_SUM) as *const i32).read_unaligned();
                s = I::add32(s, I::splat32(-128 * sum));
            }
            *acc = I::fmadd(I::to_f32(s), I::fmul(dw, I::fsplat(da)), *acc);
        }
    }
    store::<I, C>(t, &acc);
}
