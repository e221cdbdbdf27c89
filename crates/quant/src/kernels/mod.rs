//! The CPU tile kernels and their dispatch by (SIMD level, weight type, column count).
//!
//! A tile kernel computes `y[c][r] = Σ_k W[r][k] * x[c][k]` for the 8 rows of one packed
//! tile and `C` columns (activation rows), over the whole reduction dimension, keeping
//! the `C` accumulators (8 lanes = 8 rows each) in registers. Every kernel is written
//! once, generic over [`Isa`], and compiled per level inside a `#[target_feature]`
//! function (see [`crate::simd`]), for C in {1, 2, 4} and, at the levels with 32
//! vector registers, 8.

mod float;
mod kquant;
mod legacy;

pub(crate) use kquant::Q8K_BYTES;

use crate::pack::TILE;
use crate::simd::{Isa, Level};
use crate::types::GgmlType;

/// Bytes of one [`BlockQ8`](crate::act::BlockQ8): d (f32), s (f32), sum (i32), 32 codes.
pub(crate) const Q8_BYTES: usize = std::mem::size_of::<crate::act::BlockQ8>();
/// Byte offsets of its `s`, `sum` and codes (its `d` is at 0).
pub(crate) const Q8_S: usize = std::mem::offset_of!(crate::act::BlockQ8, s);
pub(crate) const Q8_SUM: usize = std::mem::offset_of!(crate::act::BlockQ8, sum);
pub(crate) const Q8_CODES: usize = std::mem::offset_of!(crate::act::BlockQ8, qs);
const _: () = assert!(std::mem::offset_of!(crate::act::BlockQ8, d) == 0);

/// One call of a tile kernel. Pointers are valid for the whole reduction dimension.
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    /// The tile's first packed block (float rows: its first row).
    pub w: *const u8,
    /// Blocks per row (float rows: elements per row).
    pub nb: usize,
    /// The first column's activations (quantized blocks, or f32 for float rows).
    pub a: *const u8,
    /// Bytes between two columns' activations.
    pub a_stride: usize,
    /// The first column's output at the tile's first row.
    pub y: *mut f32,
    /// Floats between two columns' outputs.
    pub y_stride: usize,
    /// Valid rows of this tile (1..=8; the packed padding rows are not written).
    pub rows: usize,
}

/// The activations of column `c`.
#[inline(always)]
pub(super) unsafe fn col(t: &Tile, c: usize) -> *const u8 {
    t.a.add(c * t.a_stride)
}

/// `isum[c] += dot(w, the 4 activation codes at byte `off` of column c)`.
#[inline(always)]
pub(super) unsafe fn dot_cols<I: Isa, const C: usize>(
    isum: &mut [I::I; C],
    w: I::I,
    t: &Tile,
    off: usize,
) {
    for (c, s) in isum.iter_mut().enumerate() {
        *s = I::dot(*s, w, I::bcast4(col(t, c).add(off)));
    }
}

/// Write each column's 8 row results (only the tile's valid rows).
#[inline(always)]
pub(super) unsafe fn store<I: Isa, const C: usize>(t: &Tile, acc: &[I::F; C]) {
    for (c, v) in acc.iter().enumerate() {
        let y = t.y.add(c * t.y_stride);
        if t.rows == TILE {
            I::fstoreu(y, *v);
        } else {
            let mut tmp = [0f32; TILE];
            I::fstoreu(tmp.as_mut_ptr(), *v);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), y, t.rows);
        }
    }
}

/// Call the kernel of a weight type for one ISA and column count (direct calls, so that
/// the `#[inline(always)]` kernels inline into the caller's target features).
macro_rules! by_type {
    ($isa:ty, $c:expr, $ty:expr, $t:expr) => {
        match $ty {
            GgmlType::Q4_0 => legacy::legacy::<$isa, $c, 0>($t),
            GgmlType::Q4_1 => legacy::legacy::<$isa, $c, 1>($t),
            GgmlType::Q5_0 => legacy::legacy::<$isa, $c, 2>($t),
            GgmlType::Q5_1 => legacy::legacy::<$isa, $c, 3>($t),
            GgmlType::Q8_0 => legacy::q8_0::<$isa, $c>($t),
            GgmlType::Q2K => kquant::q2_q3_k::<$isa, $c, false>($t),
            GgmlType::Q3K => kquant::q2_q3_k::<$isa, $c, true>($t),
            GgmlType::Q4K => kquant::q4_q5_k::<$isa, $c, false>($t),
            GgmlType::Q5K => kquant::q4_q5_k::<$isa, $c, true>($t),
            GgmlType::Q6K => kquant::q6_k::<$isa, $c>($t),
            GgmlType::F32 => float::rows::<$isa, $c, 0>($t),
            GgmlType::F16 => float::rows::<$isa, $c, 1>($t),
            GgmlType::BF16 => float::rows::<$isa, $c, 2>($t),
        }
    };
}

/// One level's entry point: `call::<C>(ty, tile)` runs the kernel inside a function
/// compiled with the level's target features.
#[cfg(target_arch = "x86_64")]
macro_rules! level {
    ($module:ident, $isa:ident, $features:literal) => {
        mod $module {
            use super::*;
            use crate::simd::$isa;

            #[target_feature(enable = $features)]
            pub(super) unsafe fn call<const C: usize>(ty: GgmlType, t: &Tile) {
                // SAFETY: the caller checked that the CPU has this level's features; the
                // tile's pointers are the caller's contract.
                unsafe { by_type!($isa, C, ty, t) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
level!(avx2, Avx2, "avx2,fma,f16c");
#[cfg(target_arch = "x86_64")]
level!(
    avx512,
    Avx512,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq"
);
#[cfg(target_arch = "x86_64")]
level!(avx_vnni, AvxVnni, "avx2,fma,f16c,avxvnni");
#[cfg(target_arch = "x86_64")]
level!(
    avx512_vnni,
    Avx512Vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"
);

mod portable {
    use super::*;
    use crate::simd::Portable;

    pub(super) unsafe fn call<const C: usize>(ty: GgmlType, t: &Tile) {
        // SAFETY: the tile's pointers are the caller's contract.
        unsafe { by_type!(Portable, C, ty, t) }
    }
}

/// Columns per kernel call of `ty`, widest first, at a level: 8 where there are 32
/// vector registers, except Q4_K, whose 8-column kernel measured slower than its
/// 4-column one (150 vs 260 GFLOP/s on one Zen 4 core; every other type gains a little
/// or breaks even at 8).
pub(crate) fn widths(level: Level, ty: GgmlType) -> &'static [usize] {
    match level {
        Level::Avx512 | Level::Avx512Vnni if ty != GgmlType::Q4K => &[8, 4, 2, 1],
        _ => &[4, 2, 1],
    }
}

/// Run the kernel of `ty` at `level` on `C` columns of one tile.
///
/// # Safety
/// `level` must be supported by this CPU ([`Level::is_supported`]) and `t`'s pointers
/// valid for a tile of `ty` (see [`Tile`]).
pub(crate) unsafe fn run<const C: usize>(level: Level, ty: GgmlType, t: &Tile) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match level {
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => avx2::call::<C>(ty, t),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => avx512::call::<C>(ty, t),
            #[cfg(target_arch = "x86_64")]
            Level::AvxVnni => avx_vnni::call::<C>(ty, t),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512Vnni => avx512_vnni::call::<C>(ty, t),
            _ => portable::call::<C>(ty, t),
        }
    }
}

/// The widest kernel call for `cols` columns left.
pub(crate) fn width_for(level: Level, ty: GgmlType, cols: usize) -> usize {
    widths(level, ty)
        .iter()
        .copied()
        .find(|&w| w <= cols)
        .unwrap_or(1)
}

/// Run the kernel of `ty` at `level` on `c` columns (1, 2, 4 or 8) of one tile.
///
/// # Safety
/// As [`run`], for `c` columns.
pub(crate) unsafe fn run_width(level: Level, ty: GgmlType, t: &Tile, c: usize) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match c {
            8 => run::<8>(level, ty, t),
            4 => run::<4>(level, ty, t),
            2 => run::<2>(level, ty, t),
            _ => run::<1>(level, ty, t),
        }
    }
}
