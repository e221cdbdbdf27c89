//! Host helpers shared by the CPU ports: typed views of contiguous storage (of candle's
//! operands and of tensors an op holds, read-only or mutably), f32 conversion of the
//! float element types, poisoned output buffers.

use crate::Fill;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, InplaceOp1, Layout, Storage, Tensor, WithDType};
use std::cell::Cell;
use std::marker::PhantomData;
/// A float element the kernels accept (f32, f16, bf16); CPU ports compute in f32 like
/// the CUDA kernels do and round once when storing.
pub(crate) trait Float: WithDType + Copy + Send + Sync {
    fn f(self) -> f32;
    fn from_f(x: f32) -> Self;
    /// The storage variant holding this type, mutably.
    fn vec_mut(s: &mut CpuStorage) -> Option<&mut Vec<Self>>;
}

macro_rules! impl_float {
    ($t:ty, $variant:ident, $to:expr, $from:expr) => {
        impl Float for $t {
            #[inline]
            fn f(self) -> f32 {
                $to(self)
            }
            #[inline]
            fn from_f(x: f32) -> Self {
                $from(x)
            }
            fn vec_mut(s: &mut CpuStorage) -> Option<&mut Vec<Self>> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
impl_float!(f32, F32, |x: f32| x, |x: f32| x);
impl_float!(half::f16, F16, half::f16::to_f32, half::f16::from_f32);
impl_float!(half::bf16, BF16, half::bf16::to_f32, half::bf16::from_f32);

/// Run `$body` with `$T` bound to the Rust type of a float `DType`.
macro_rules! with_float {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $T = f32;
                $body
            }
            candle_core::DType::F16 => {
                type $T = half::f16;
                $body
            }
            candle_core::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            d => Err(candle_core::Error::Msg(format!(
                "unsupported dtype {d:?}: the kernels take f32, f16 or bf16"
            ))),
        }
    };
}
pub(crate) use with_float;

fn offsets(l: &Layout) -> candle_core::Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("kernel inputs must be contiguous".into()))
}

/// The elements `l` addresses in `s` (contiguous).
pub(crate) fn slice<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a [T]> {
    let (a, b) = offsets(l)?;
    Ok(&s.as_slice::<T>()?[a..b])
}

/// The elements `l` addresses in `s`, mutably (contiguous).
pub(crate) fn slice_mut<'a, T: Float>(
    s: &'a mut CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a mut [T]> {
    let (a, b) = offsets(l)?;
    let dtype = s.dtype();
    let v = T::vec_mut(s).ok_or_else(|| {
        candle_core::Error::Msg(format!("expected {:?}, got {dtype:?}", T::DTYPE))
    })?;
    Ok(&mut v[a..b])
}

/// Run `f` on the host elements of a tensor held by an op (not one of candle's operands).
pub(crate) fn with_host<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(slice::<T>(s, layout)?),
        _ => Err(candle_core::Error::Msg(
            "kernel operand is not on the CPU".into(),
        )),
    }
}

/// Run `f` on the host elements of a tensor held by an op, mutably (an op that writes
/// more than its destination: rope_and_cache's caches). The tensor's write lock is taken
/// while candle holds the op's operands' locks, so the wrapper must have checked that it
/// shares no storage with them ([`crate::error::shares_storage`]).
pub(crate) fn with_host_mut<T: Float>(
    t: &Tensor,
    f: impl FnOnce(&mut [T]) -> candle_core::Result<()>,
) -> candle_core::Result<()> {
    t.inplace_op1(&HostMut {
        f: Cell::new(Some(f)),
        _t: PhantomData,
    })
}

/// [`with_host_mut`]'s op: `f` runs once on the storage candle locks for writing.
struct HostMut<T, F> {
    f: Cell<Option<F>>,
    _t: PhantomData<T>,
}

impl<T: Float, F: FnOnce(&mut [T]) -> candle_core::Result<()>> InplaceOp1 for HostMut<T, F> {
    fn name(&self) -> &'static str {
        "host_mut"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let f = self
            .f
            .take()
            .ok_or_else(|| candle_core::Error::Msg("host_mut: ran twice".into()))?;
        f(slice_mut::<T>(s, l)?)
    }
}

/// An output buffer: NaN with [`Fill::Poison`], else zeros.
pub(crate) fn out_vec<T: Float>(n: usize, fill: Fill) -> Vec<T> {
    let value = match fill {
        Fill::Poison => f32::NAN,
        Fill::Uninit => 0.0,
    };
    vec![T::from_f(value); n]
}

// ---- SIMD for the ports' hot loops --------------------------------------------------

/// The widest x86 vector set this CPU has, detected at run time (a default x86_64 build
/// only assumes SSE2): the hot loops below are plain Rust written so that LLVM
/// vectorizes them, compiled once per level by [`multiversion!`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Simd {
    Avx512,
    Avx2,
    Base,
}

pub(crate) fn simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512vl") && has!("avx2") && has!("fma") {
            return Simd::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Simd::Avx2;
        }
    }
    Simd::Base
}

/// `fn NAME<T: Bound>(args) -> R` that runs `BODY::<T, L>(args)` (`L`: the [`Level`]),
/// or `fn NAME(args) -> R` that runs `BODY(args)`, compiled for the CPU's
/// [`Simd`] level: BODY is `#[inline(always)]` so that its loops are vectorized inside
/// each `#[target_feature]` wrapper.
macro_rules! multiversion {
    ($vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) -> $r:ty = $body:ident) => {
        $vis fn $name($($a: $t),*) -> $r {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512($($a: $t),*) -> $r {
                    $body($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($a: $t),*) -> $r {
                    $body($($a),*)
                }
                match $crate::cpu::simd() {
                    // SAFETY: simd() detected every feature the wrapper enables.
                    $crate::cpu::Simd::Avx512 => return unsafe { avx512($($a),*) },
                    $crate::cpu::Simd::Avx2 => return unsafe { avx2($($a),*) },
                    $crate::cpu::Simd::Base => {}
                }
            }
            $body($($a),*)
        }
    };
    ($vis:vis fn $name:ident<$T:ident: $B:path>($($a:ident: $t:ty),* $(,)?) -> $r:ty = $body:ident) => {
        $vis fn $name<$T: $B>($($a: $t),*) -> $r {
            use $crate::cpu::{Simd, L256, L512, LBase};
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512<$T: $B>($($a: $t),*) -> $r {
                    $body::<$T, L512>($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<$T: $B>($($a: $t),*) -> $r {
                    $body::<$T, L256>($($a),*)
                }
                match $crate::cpu::simd() {
                    // SAFETY: simd() detected every feature the wrapper enables.
                    Simd::Avx512 => return unsafe { avx512::<$T>($($a),*) },
                    Simd::Avx2 => return unsafe { avx2::<$T>($($a),*) },
                    Simd::Base => {}
                }
            }
            $body::<$T, LBase>($($a),*)
        }
    };
}
pub(crate) use multiversion;

/// Lanes of the accumulators below: one AVX-512 register, two AVX2 ones.
const LANES: usize = 16;

/// The [`Simd`] level a body is compiled for (a type parameter of [`multiversion!`]'s
/// bodies), for the few loops written with intrinsics.
pub(crate) trait Level {
    const SIMD: Simd;
}
pub(crate) struct L512;
pub(crate) struct L256;
pub(crate) struct LBase;
impl Level for L512 {
    const SIMD: Simd = Simd::Avx512;
}
impl Level for L256 {
    const SIMD: Simd = Simd::Avx2;
}
impl Level for LBase {
    const SIMD: Simd = Simd::Base;
}

/// `sum_i a[i] * b[i]` (same length). f32 at the AVX-512 level: two FMA chains and one
/// tree reduction; else `LANES` partial sums that LLVM vectorizes (a sequential float
/// sum would keep its order and stay scalar).
#[inline(always)]
pub(crate) fn dot<L: Level, T: Float>(a: &[f32], b: &[T]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if L::SIMD == Simd::Avx512 && T::DTYPE == candle_core::DType::F32 {
        // SAFETY: T is f32 (the one Float of dtype F32), so the cast is the identity;
        // L512 bodies run only inside functions compiled with avx512f (multiversion!).
        return unsafe {
            let b = std::slice::from_raw_parts(b.as_ptr() as *const f32, n);
            x86::dot512(a, b)
        };
    }
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i].f();
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y.f()).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// Only inside a function compiled with avx512f; `a` and `b` of the same length.
    #[inline(always)]
    pub(super) unsafe fn dot512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        // SAFETY (loads): i + 16 <= n for each 16-float load.
        while i + 32 <= n {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
                acc1,
            );
            i += 32;
        }
        if i + 16 <= n {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            i += 16;
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        while i < n {
            sum += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        sum
    }
}

/// `acc[i] += w * x[i]` (same length).
#[inline(always)]
pub(crate) fn axpy<T: Float>(acc: &mut [f32], w: f32, x: &[T]) {
    for (a, e) in acc.iter_mut().zip(x) {
        *a += w * e.f();
    }
}

/// `exp(x)` for `x <= 0` without branches (so that loops over it vectorize): inputs are
/// clamped to [-87, 0] (below -87 it returns about 1.6e-38 instead of 0); Cody-Waite
/// reduction by ln 2 and a degree-6 polynomial (Cephes' expf), relative error < 3e-7.
#[inline(always)]
pub(crate) fn exp_nonpos(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 0.0);
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = (x - n * 0.693_359_4) + n * 2.121_944_4e-4; // ln 2 = 0.6933594 - 2.1219444e-4
    let mut p = 1.987_569_1e-4;
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = p * r + c;
    }
    let y = (p * r) * r + r + 1.0;
    // 2^n for n in [-126, 0]: t's low mantissa bits hold n.
    let e = t.to_bits().wrapping_sub(SHIFT.to_bits());
    y * f32::from_bits(e.wrapping_add(127) << 23)
}

/// `x = exp(x - m)` for every element (all `<= m`); returns their sum.
#[inline(always)]
pub(crate) fn exp_shifted_sum(xs: &mut [f32], m: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            c[i] = exp_nonpos(c[i] - m);
            acc[i] += c[i];
        }
    }
    let mut tail = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_nonpos(*x - m);
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest element (-inf for an empty slice; NaN elements are skipped).
#[inline(always)]
pub(crate) fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter().fold(tail, |a, &b| a.max(b))
}
