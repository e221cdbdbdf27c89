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
