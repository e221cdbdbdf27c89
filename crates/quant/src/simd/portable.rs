//! [`Isa`] in plain Rust on 32-byte arrays: the fallback on CPUs without AVX2 and on
//! other architectures (on aarch64 the compiler turns these fixed-size lane loops into
//! NEON, which is always present there). Exact integer arithmetic, no saturation;
//! multiply-adds are not fused (`mul_add` would call a slow libm `fmaf` on a baseline
//! x86_64 build).

use super::Isa;

/// 32 bytes viewed as u8 / i16 / i32 lanes (little-endian), like a 256-bit register.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(crate) struct V([u8; 32]);

impl V {
    #[inline(always)]
    fn i32s(self) -> [i32; 8] {
        std::array::from_fn(|i| {
            i32::from_le_bytes([
                self.0[4 * i],
                self.0[4 * i + 1],
                self.0[4 * i + 2],
                self.0[4 * i + 3],
            ])
        })
    }
    #[inline(always)]
    fn from_i32s(v: [i32; 8]) -> V {
        let mut out = [0u8; 32];
        for (i, x) in v.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
        }
        V(out)
    }
    #[inline(always)]
    fn i16s(self) -> [i16; 16] {
        std::array::from_fn(|i| i16::from_le_bytes([self.0[2 * i], self.0[2 * i + 1]]))
    }
    #[inline(always)]
    fn from_i16s(v: [i16; 16]) -> V {
        let mut out = [0u8; 32];
        for (i, x) in v.iter().enumerate() {
            out[2 * i..2 * i + 2].copy_from_slice(&x.to_le_bytes());
        }
        V(out)
    }
    #[inline(always)]
    fn map32(self, f: impl Fn(i32) -> i32) -> V {
        V::from_i32s(self.i32s().map(f))
    }
    #[inline(always)]
    fn zip32(self, o: V, f: impl Fn(i32, i32) -> i32) -> V {
        let (a, b) = (self.i32s(), o.i32s());
        V::from_i32s(std::array::from_fn(|i| f(a[i], b[i])))
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Portable;

impl Isa for Portable {
    type I = V;
    type F = [f32; 8];
    const Q8_BIASED: bool = false;

    #[inline(always)]
    unsafe fn load(p: *const u8) -> V {
        V((p as *const [u8; 32]).read_unaligned())
    }
    #[inline(always)]
    unsafe fn bcast4(p: *const u8) -> V {
        let w = (p as *const [u8; 4]).read_unaligned();
        V(std::array::from_fn(|i| w[i % 4]))
    }
    #[inline(always)]
    fn zero() -> V {
        V([0; 32])
    }
    #[inline(always)]
    fn splat8(v: u8) -> V {
        V([v; 32])
    }
    #[inline(always)]
    fn splat32(v: i32) -> V {
        V::from_i32s([v; 8])
    }
    #[inline(always)]
    fn and(a: V, b: V) -> V {
        V(std::array::from_fn(|i| a.0[i] & b.0[i]))
    }
    #[inline(always)]
    fn or(a: V, b: V) -> V {
        V(std::array::from_fn(|i| a.0[i] | b.0[i]))
    }
    #[inline(always)]
    fn srl16<const N: i32>(a: V) -> V {
        V::from_i16s(a.i16s().map(|x| ((x as u16) >> N) as i16))
    }
    #[inline(always)]
    fn sll16<const N: i32>(a: V) -> V {
        V::from_i16s(a.i16s().map(|x| ((x as u16) << N) as i16))
    }
    #[inline(always)]
    fn add32(a: V, b: V) -> V {
        a.zip32(b, i32::wrapping_add)
    }
    #[inline(always)]
    fn mul32(a: V, b: V) -> V {
        a.zip32(b, i32::wrapping_mul)
    }
    #[inline(always)]
    fn sra32<const N: i32>(a: V) -> V {
        a.map32(|x| x >> N)
    }
    #[inline(always)]
    fn sll32<const N: i32>(a: V) -> V {
        a.map32(|x| x << N)
    }
    #[inline(always)]
    fn madd16(a: V, b: V) -> V {
        let (x, y) = (a.i16s(), b.i16s());
        V::from_i32s(std::array::from_fn(|i| {
            x[2 * i] as i32 * y[2 * i] as i32 + x[2 * i + 1] as i32 * y[2 * i + 1] as i32
        }))
    }
    #[inline(always)]
    unsafe fn u8_to_16(p: *const u8) -> V {
        let b = (p as *const [u8; 16]).read_unaligned();
        V::from_i16s(b.map(|x| x as i16))
    }
    #[inline(always)]
    unsafe fn i8_to_16(p: *const u8) -> V {
        let b = (p as *const [u8; 16]).read_unaligned();
        V::from_i16s(b.map(|x| x as i8 as i16))
    }
    #[inline(always)]
    fn dot(acc: V, w: V, a: V) -> V {
        let mut s = acc.i32s();
        for (i, v) in s.iter_mut().enumerate() {
            for k in 4 * i..4 * i + 4 {
                *v += w.0[k] as i32 * a.0[k] as i8 as i32;
            }
        }
        V::from_i32s(s)
    }
    #[inline(always)]
    fn q8_prep(w: V) -> V {
        w
    }
    #[inline(always)]
    fn dot_q8(acc: V, w: V, a: V) -> V {
        let mut s = acc.i32s();
        for (i, v) in s.iter_mut().enumerate() {
            for k in 4 * i..4 * i + 4 {
                *v += w.0[k] as i8 as i32 * a.0[k] as i8 as i32;
            }
        }
        V::from_i32s(s)
    }
    #[inline(always)]
    fn to_f32(a: V) -> [f32; 8] {
        a.i32s().map(|x| x as f32)
    }
    #[inline(always)]
    fn fzero() -> [f32; 8] {
        [0.0; 8]
    }
    #[inline(always)]
    fn fsplat(v: f32) -> [f32; 8] {
        [v; 8]
    }
    #[inline(always)]
    unsafe fn f16x8(p: *const u8) -> [f32; 8] {
        let b = (p as *const [u8; 16]).read_unaligned();
        std::array::from_fn(|i| half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32())
    }
    #[inline(always)]
    unsafe fn bf16x8(p: *const u8) -> [f32; 8] {
        let b = (p as *const [u8; 16]).read_unaligned();
        std::array::from_fn(|i| half::bf16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32())
    }
    #[inline(always)]
    unsafe fn floadu(p: *const f32) -> [f32; 8] {
        (p as *const [f32; 8]).read_unaligned()
    }
    #[inline(always)]
    unsafe fn fstoreu(p: *mut f32, v: [f32; 8]) {
        (p as *mut [f32; 8]).write_unaligned(v)
    }
    #[inline(always)]
    fn fmul(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    fn fmadd(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    fn fnmadd(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| c[i] - a[i] * b[i])
    }
    #[inline(always)]
    fn hsum(a: [f32; 8]) -> f32 {
        ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
    }
}
