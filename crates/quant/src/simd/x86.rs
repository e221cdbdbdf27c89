//! [`Isa`] on x86_64 with 256-bit AVX2 vectors; three flavours of the 8-bit dot product.
//!
//! - [`Avx2`]: `vpmaddubsw` (u8 x i8 pairs to saturating i16) + `vpmaddwd` with ones.
//!   Weights below 128 times codes in -127..=127 cannot saturate a pair (2 * 127 * 127
//!   < 32768). Signed Q8_0 weights use the sign trick: |w| * (a * sign(w)). The
//!   AVX-512 level (no VNNI) runs these same operations with 32 registers.
//! - [`Avx512Vnni`]: `vpdpbusd` (EVEX encoding, AVX-512 VL + VNNI).
//! - [`AvxVnni`]: `vpdpbusd` (VEX encoding, AVX-VNNI).
//!
//! With VNNI, signed Q8_0 weights are biased by +128 (one xor) and the kernel subtracts
//! 128 * Σ a, which the activation blocks carry.

use super::Isa;
use std::arch::x86_64::*;

#[derive(Clone, Copy)]
pub(crate) struct Avx2;
#[derive(Clone, Copy)]
pub(crate) struct Avx512Vnni;
#[derive(Clone, Copy)]
pub(crate) struct AvxVnni;
/// The AVX-512 level without VNNI: the AVX2 operations (see the module docs).
pub(crate) type Avx512 = Avx2;

/// Everything but the dot products, shared by the three flavours.
macro_rules! common {
    () => {
        type I = __m256i;
        type F = __m256;

        #[inline(always)]
        unsafe fn load(p: *const u8) -> __m256i {
            _mm256_loadu_si256(p as *const __m256i)
        }
        #[inline(always)]
        unsafe fn bcast4(p: *const u8) -> __m256i {
            _mm256_set1_epi32((p as *const i32).read_unaligned())
        }
        #[inline(always)]
        fn zero() -> __m256i {
            unsafe { _mm256_setzero_si256() }
        }
        #[inline(always)]
        fn splat8(v: u8) -> __m256i {
            unsafe { _mm256_set1_epi8(v as i8) }
        }
        #[inline(always)]
        fn splat32(v: i32) -> __m256i {
            unsafe { _mm256_set1_epi32(v) }
        }
        #[inline(always)]
        fn and(a: __m256i, b: __m256i) -> __m256i {
            unsafe { _mm256_and_si256(a, b) }
        }
        #[inline(always)]
        fn or(a: __m256i, b: __m256i) -> __m256i {
            unsafe { _mm256_or_si256(a, b) }
        }
        #[inline(always)]
        fn srl16<const N: i32>(a: __m256i) -> __m256i {
            unsafe { _mm256_srli_epi16::<N>(a) }
        }
        #[inline(always)]
        fn sll16<const N: i32>(a: __m256i) -> __m256i {
            unsafe { _mm256_slli_epi16::<N>(a) }
        }
        #[inline(always)]
        fn add32(a: __m256i, b: __m256i) -> __m256i {
            unsafe { _mm256_add_epi32(a, b) }
        }
        #[inline(always)]
        fn mul32(a: __m256i, b: __m256i) -> __m256i {
            unsafe { _mm256_mullo_epi32(a, b) }
        }
        #[inline(always)]
        fn sra32<const N: i32>(a: __m256i) -> __m256i {
            unsafe { _mm256_srai_epi32::<N>(a) }
        }
        #[inline(always)]
        fn sll32<const N: i32>(a: __m256i) -> __m256i {
            unsafe { _mm256_slli_epi32::<N>(a) }
        }
        #[inline(always)]
        fn madd16(a: __m256i, b: __m256i) -> __m256i {
            unsafe { _mm256_madd_epi16(a, b) }
        }
        #[inline(always)]
        unsafe fn u8_to_16(p: *const u8) -> __m256i {
            _mm256_cvtepu8_epi16(_mm_loadu_si128(p as *const __m128i))
        }
        #[inline(always)]
        unsafe fn i8_to_16(p: *const u8) -> __m256i {
            _mm256_cvtepi8_epi16(_mm_loadu_si128(p as *const __m128i))
        }
        #[inline(always)]
        fn to_f32(a: __m256i) -> __m256 {
            unsafe { _mm256_cvtepi32_ps(a) }
        }
        #[inline(always)]
        fn fzero() -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        fn fsplat(v: f32) -> __m256 {
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn f16x8(p: *const u8) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        }
        #[inline(always)]
        unsafe fn bf16x8(p: *const u8) -> __m256 {
            let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w))
        }
        #[inline(always)]
        unsafe fn floadu(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn fstoreu(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        #[inline(always)]
        fn fmul(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn fnmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fnmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn hsum(a: __m256) -> f32 {
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }
        }
    };
}

impl Isa for Avx2 {
    common!();
    const Q8_BIASED: bool = false;

    #[inline(always)]
    fn dot(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        unsafe {
            let pairs = _mm256_maddubs_epi16(w, a);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }
    #[inline(always)]
    fn q8_prep(w: __m256i) -> __m256i {
        w
    }
    #[inline(always)]
    fn dot_q8(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        unsafe {
            let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w));
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }
}

impl Isa for Avx512Vnni {
    common!();
    const Q8_BIASED: bool = true;

    #[inline(always)]
    fn dot(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        unsafe { _mm256_dpbusd_epi32(acc, w, a) }
    }
    #[inline(always)]
    fn q8_prep(w: __m256i) -> __m256i {
        unsafe { _mm256_xor_si256(w, _mm256_set1_epi8(-128)) }
    }
    #[inline(always)]
    fn dot_q8(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        unsafe { _mm256_dpbusd_epi32(acc, w, a) }
    }
}

impl Isa for AvxVnni {
    common!();
    const Q8_BIASED: bool = true;

    #[inline(always)]
    fn dot(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        unsafe { _mm256_dpbusd_avx_epi32(acc, w, a) }
    }
    #[inline(always)]
    fn q8_prep(w: __m256i) -> __m256i {
        unsafe { _mm256_xor_si256(w, _mm256_set1_epi8(-128)) }
    }
    #[inline(always)]
    fn dot_q8(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        unsafe { _mm256_dpbusd_avx_epi32(acc, w, a) }
    }
}
