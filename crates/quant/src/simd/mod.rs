//! Instruction sets, chosen when the program runs (not when it is compiled), and the
//! small vector vocabulary ([`Isa`]) every CPU kernel is written in once.
//!
//! A default x86_64 build has no AVX in its compile-time target features; the kernels
//! are compiled for each level inside `#[target_feature]` functions and [`Level::detect`]
//! picks the best one the CPU reports. Levels, best first:
//!
//! | level         | needs                                   | 8-bit dot product      |
//! |---------------|-----------------------------------------|------------------------|
//! | `avx512-vnni` | AVX-512 F/BW/VL + VNNI, AVX2, FMA, F16C | `vpdpbusd` (EVEX, 32 registers) |
//! | `avx-vnni`    | AVX-VNNI, AVX2, FMA, F16C               | `vpdpbusd` (VEX)       |
//! | `avx512`      | AVX-512 F/BW/VL, AVX2, FMA, F16C        | `vpmaddubsw` + `vpmaddwd`, 32 registers |
//! | `avx2`        | AVX2, FMA, F16C                         | `vpmaddubsw` + `vpmaddwd` |
//! | `portable`    | nothing                                 | plain Rust on 8-lane arrays (autovectorized: NEON on aarch64) |
//!
//! The vectors are 256 bits wide at every level: a lane is one weight row of a packed
//! tile of 8 rows (see [`crate::pack`]). AMX is never used (the build machines advertise
//! it but fault on its tile instructions).

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use portable::Portable;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512, Avx512Vnni, AvxVnni};

use crate::error::{QuantError, Result};

/// An instruction-set level for the CPU kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Portable,
    Avx2,
    Avx512,
    AvxVnni,
    Avx512Vnni,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Portable,
        Level::Avx2,
        Level::Avx512,
        Level::AvxVnni,
        Level::Avx512Vnni,
    ];

    /// The best level this CPU supports.
    pub fn detect() -> Level {
        Level::ALL
            .into_iter()
            .rev()
            .find(|l| l.is_supported())
            .unwrap_or(Level::Portable)
    }

    /// Every level this CPU can run (for tests and benches that force each in turn).
    pub fn available() -> Vec<Level> {
        Level::ALL
            .into_iter()
            .filter(|l| l.is_supported())
            .collect()
    }

    /// Whether this CPU can run the level's kernels.
    pub fn is_supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            let avx512 = avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl");
            match self {
                Level::Portable => true,
                Level::Avx2 => avx2,
                Level::Avx512 => avx512,
                Level::AvxVnni => avx2 && has!("avxvnni"),
                Level::Avx512Vnni => avx512 && has!("avx512vnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Level::Portable
        }
    }

    /// This level if the CPU supports it, else an error naming it.
    pub fn checked(self) -> Result<Level> {
        match self.is_supported() {
            true => Ok(self),
            false => Err(QuantError::Input(format!(
                "SIMD level {} is not supported by this CPU (available: {})",
                self.name(),
                Level::available()
                    .iter()
                    .map(|l| l.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::AvxVnni => "avx-vnni",
            Level::Avx512Vnni => "avx512-vnni",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Level {
    type Err = QuantError;
    fn from_str(s: &str) -> Result<Level> {
        Level::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| {
                QuantError::Input(format!(
                    "unknown SIMD level {s:?}: expected portable, avx2, avx512, avx-vnni or avx512-vnni"
                ))
            })
    }
}

/// The vector operations the kernels use: 256-bit integer vectors `I` (32 x u8/i8,
/// 16 x i16 or 8 x i32 as each op says) and 8 x f32 vectors `F`.
///
/// Every method is `#[inline(always)]` and is only called from inside a function
/// compiled with the level's target features, so the intrinsics inline into it.
/// Pointer arguments must be valid for the bytes the method reads or writes.
pub(crate) trait Isa: Copy {
    type I: Copy;
    type F: Copy;
    /// Whether `dot_q8` computes Σ (w + 128) * a (the caller subtracts 128 * Σ a).
    const Q8_BIASED: bool;

    /// 32 bytes, unaligned.
    unsafe fn load(p: *const u8) -> Self::I;
    /// The 4 bytes at `p` in every 32-bit lane.
    unsafe fn bcast4(p: *const u8) -> Self::I;
    fn zero() -> Self::I;
    fn splat8(v: u8) -> Self::I;
    fn splat32(v: i32) -> Self::I;
    fn and(a: Self::I, b: Self::I) -> Self::I;
    fn or(a: Self::I, b: Self::I) -> Self::I;
    /// Logical shifts of 16-bit lanes (callers mask off bits crossing bytes).
    fn srl16<const N: i32>(a: Self::I) -> Self::I;
    fn sll16<const N: i32>(a: Self::I) -> Self::I;
    fn add32(a: Self::I, b: Self::I) -> Self::I;
    fn mul32(a: Self::I, b: Self::I) -> Self::I;
    /// Arithmetic / logical shifts of 32-bit lanes.
    fn sra32<const N: i32>(a: Self::I) -> Self::I;
    fn sll32<const N: i32>(a: Self::I) -> Self::I;
    /// Σ over each 32-bit lane's 2 i16 pairs of a * b.
    fn madd16(a: Self::I, b: Self::I) -> Self::I;
    /// 16 bytes at `p`, zero- or sign-extended to 16 x i16.
    unsafe fn u8_to_16(p: *const u8) -> Self::I;
    unsafe fn i8_to_16(p: *const u8) -> Self::I;
    /// `acc` + Σ over each 32-bit lane's 4 byte pairs of w (u8, < 128) * a (i8).
    fn dot(acc: Self::I, w: Self::I, a: Self::I) -> Self::I;
    /// Prepare signed 8-bit weights for `dot_q8`.
    fn q8_prep(w: Self::I) -> Self::I;
    /// `acc` + Σ w * a over 4-byte lanes of signed weights prepared by `q8_prep`
    /// (Σ (w + 128) * a when `Q8_BIASED`).
    fn dot_q8(acc: Self::I, w: Self::I, a: Self::I) -> Self::I;

    fn to_f32(a: Self::I) -> Self::F;
    fn fzero() -> Self::F;
    fn fsplat(v: f32) -> Self::F;
    /// 8 little-endian f16 at `p`.
    unsafe fn f16x8(p: *const u8) -> Self::F;
    /// 8 little-endian bf16 at `p`.
    unsafe fn bf16x8(p: *const u8) -> Self::F;
    unsafe fn floadu(p: *const f32) -> Self::F;
    unsafe fn fstoreu(p: *mut f32, v: Self::F);
    fn fmul(a: Self::F, b: Self::F) -> Self::F;
    /// a * b + c.
    fn fmadd(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// c - a * b.
    fn fnmadd(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    fn hsum(a: Self::F) -> f32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_picks_the_best_available_level() {
        let all = Level::available();
        assert_eq!(all.first(), Some(&Level::Portable));
        assert_eq!(Some(&Level::detect()), all.last());
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // A default build (no target-cpu flags) must not fall back to portable code.
            assert_ne!(Level::detect(), Level::Portable);
        }
        for l in Level::ALL {
            assert_eq!(l.name().parse::<Level>().unwrap(), l);
            assert_eq!(l.checked().is_ok(), l.is_supported());
        }
        assert!("sse9".parse::<Level>().is_err());
    }
}
