//! Float weight rows (F32 `T` = 0, F16 = 1, BF16 = 2) against f32 activations: row by
//! row, `C` columns at a time, 8-wide fused multiply-adds, the tail in scalar code.
//! GGUF files store norms and sometimes an output head this way.

use super::{col, Tile};
use crate::simd::Isa;

#[inline(always)]
unsafe fn weight(p: *const u8, i: usize, t: u8) -> f32 {
    match t {
        0 => (p.add(4 * i) as *const f32).read_unaligned(),
        1 => half::f16::from_bits((p.add(2 * i) as *const u16).read_unaligned()).to_f32(),
        _ => half::bf16::from_bits((p.add(2 * i) as *const u16).read_unaligned()).to_f32(),
    }
}

#[inline(always)]
pub(crate) unsafe fn rows<I: Isa, const C: usize, const T: u8>(tile: &Tile) {
    let k = tile.nb;
    let esize = if T == 0 { 4 } else { 2 };
    for r in 0..tile.rows {
        let w = tile.w.add(r * k * esize);
        let mut acc = [I::fzero(); C];
        let mut i = 0;
        while i + 8 <= k {
            let wv = match T {
                0 => I::floadu(w.add(4 * i) as *const f32),
                1 => I::f16x8(w.add(2 * i)),
                _ => I::bf16x8(w.add(2 * i)),
            };
            for (c, acc) in acc.iter_mut().enumerate() {
                let x = I::floadu((col(tile, c) as *const f32).add(i));
                *acc = I::fmadd(wv, x, *acc);
            }
            i += 8;
        }
        for (c, acc) in acc.iter().enumerate() {
            let x = col(tile, c) as *const f32;
            let mut s = I::hsum(*acc);
            for j in i..k {
                s += weight(w, j, T) * x.add(j).read_unaligned();
            }
            *tile.y.add(c * tile.y_stride + r) = s;
        }
    }
}
