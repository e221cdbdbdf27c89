//! Device helpers: the PTX modules build.rs produced, kernel functions (looked up per
//! launch, or once into a [`Table`]), raw device addresses of tensors, output allocation. Everything runs on candle's one stream per device, so kernels are
//! ordered with candle's own work and need no extra synchronization.

use crate::functions::{dtype_index, Func, Kernels, DTYPES};
use crate::Fill;
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda::cudarc::driver::{
    result, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchArgs,
};
use candle_core::cuda::CudaStorageSlice;
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Storage, Tensor};
use std::borrow::Cow;
use std::sync::Arc;

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

type R<T> = candle_core::Result<T>;

fn err(msg: String) -> candle_core::Error {
    candle_core::Error::Msg(msg)
}

/// Load `name` from the PTX of `kernels/{module}.cu` (the module is cached per device
/// by candle). Launch it with [`Kernel::builder`]. A lookup per call: the hot ops launch
/// from a [`Table`] instead ([`Kernels::get`]).
pub(crate) fn func(dev: &CudaDevice, module: &str, name: &str) -> R<Kernel<'static>> {
    let ptx = ptx::ALL
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, p)| *p)
        .ok_or_else(|| err(format!("no PTX module {module} (kernels/{module}.cu)")))?;
    let f = dev.get_or_load_custom_func(name, module, ptx)?;
    Ok(Kernel {
        func: Cow::Owned(f.into_cuda_function()),
        stream: Cow::Owned(dev.cuda_stream()),
    })
}

/// A loaded kernel and the stream it runs on (candle's): owned when looked up for one
/// launch, borrowed from a [`Table`].
pub(crate) struct Kernel<'a> {
    func: Cow<'a, CudaFunction>,
    stream: Cow<'a, Arc<CudaStream>>,
}

impl Kernel<'_> {
    /// Argument builder; push with `candle_core::builder_arg!`, then `launch(cfg)`.
    pub(crate) fn builder(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }
}

/// The functions of [`Func::ALL`] in every dtype of [`DTYPES`], loaded on one device
/// (see crate::functions): `funcs[func as usize * DTYPES.len() + dtype_index]`.
pub(crate) struct Table {
    device: CudaDevice,
    stream: Arc<CudaStream>,
    funcs: Vec<CudaFunction>,
}

impl Table {
    pub(crate) fn load(dev: &CudaDevice) -> R<Self> {
        let mut funcs = Vec::with_capacity(Func::ALL.len() * DTYPES.len());
        for f in Func::ALL {
            let (module, stem) = f.names();
            for dtype in DTYPES {
                let name = format!("{stem}_{}", suffix(dtype)?);
                funcs.push(func(dev, module, &name)?.func.into_owned());
            }
        }
        Ok(Table {
            device: dev.clone(),
            stream: dev.cuda_stream(),
            funcs,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.funcs.len()
    }
}

impl Kernels {
    /// `f` in `dtype` for a launch on `dev`: from the table when it was loaded on `dev`,
    /// else looked up now (no table, or one of another device).
    pub(crate) fn get(&self, dev: &CudaDevice, f: Func, dtype: DType) -> R<Kernel<'_>> {
        if let (Some(t), Some(i)) = (&self.table, dtype_index(dtype)) {
            if t.device.same_device(dev) {
                return Ok(Kernel {
                    func: Cow::Borrowed(&t.funcs[f as usize * DTYPES.len() + i]),
                    stream: Cow::Borrowed(&t.stream),
                });
            }
        }
        let (module, stem) = f.names();
        func(dev, module, &format!("{stem}_{}", suffix(dtype)?))
    }
}

/// Kernel name suffix of a float dtype: `f32`, `f16`, `bf16`.
pub(crate) fn suffix(dtype: DType) -> R<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        d => Err(err(format!(
            "unsupported dtype {d:?}: the kernels take f32, f16 or bf16"
        ))),
    }
}

fn base<T>(s: &CudaSlice<T>, dev: &CudaDevice) -> u64 {
    let stream = dev.cuda_stream();
    // The guard records a read event when dropped; with one stream that is a no-op
    // ordering-wise, and the tensor outlives the launch (the caller holds it).
    let (p, _guard) = s.device_ptr(&stream);
    p
}

/// Device address of the first element `l` addresses in `s`; `l` must be contiguous.
pub(crate) fn ptr(s: &CudaStorage, l: &Layout) -> R<u64> {
    let (start, _) = l
        .contiguous_offsets()
        .ok_or_else(|| err("kernel inputs must be contiguous".into()))?;
    let dev = &s.device;
    let (p, size) = match &s.slice {
        CudaStorageSlice::U8(x) => (base(x, dev), 1),
        CudaStorageSlice::U32(x) => (base(x, dev), 4),
        CudaStorageSlice::I64(x) => (base(x, dev), 8),
        CudaStorageSlice::BF16(x) => (base(x, dev), 2),
        CudaStorageSlice::F16(x) => (base(x, dev), 2),
        CudaStorageSlice::F32(x) => (base(x, dev), 4),
        _ => return Err(err(format!("unsupported dtype {:?}", s.dtype()))),
    };
    Ok(p + (start * size) as u64)
}

/// Device address of a tensor an op holds besides candle's operands.
pub(crate) fn tensor_ptr(t: &Tensor) -> R<u64> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cuda(s) => ptr(s, layout),
        _ => Err(err("kernel operand is not on the CUDA device".into())),
    }
}

/// An uninitialized output of `n` elements; filled with 0xFF bytes (NaN for every float
/// type) with [`Fill::Poison`].
pub(crate) fn alloc<T: DeviceRepr>(dev: &CudaDevice, n: usize, fill: Fill) -> R<CudaSlice<T>> {
    // SAFETY: the memory is uninitialized; every op writes each element it returns
    // (the harness checks this by poisoning).
    let slice = unsafe { dev.alloc::<T>(n.max(1))? };
    if fill == Fill::Poison {
        let stream = dev.cuda_stream();
        let p = base(&slice, dev);
        // SAFETY: `p` addresses `n.max(1) * size_of::<T>()` bytes just allocated.
        unsafe {
            result::memset_d8_async(
                p,
                0xFF,
                n.max(1) * std::mem::size_of::<T>(),
                stream.cu_stream(),
            )
        }
        .map_err(|e| err(format!("poison memset: {e:?}")))?;
    }
    Ok(slice)
}

/// An uninitialized output of `n` elements of a float dtype, as candle storage.
pub(crate) fn alloc_storage(
    dev: &CudaDevice,
    dtype: DType,
    n: usize,
    fill: Fill,
) -> R<CudaStorage> {
    let dev2 = dev.clone();
    Ok(match dtype {
        DType::F32 => CudaStorage::wrap_cuda_slice(alloc::<f32>(dev, n, fill)?, dev2),
        DType::F16 => CudaStorage::wrap_cuda_slice(alloc::<half::f16>(dev, n, fill)?, dev2),
        DType::BF16 => CudaStorage::wrap_cuda_slice(alloc::<half::bf16>(dev, n, fill)?, dev2),
        d => return Err(err(format!("unsupported output dtype {d:?}"))),
    })
}

/// The device's streaming multiprocessors.
pub(crate) fn sm_count(dev: &CudaDevice) -> crate::Result<usize> {
    use candle_core::cuda::cudarc::driver::sys::CUdevice_attribute;
    let n = dev
        .cuda_stream()
        .context()
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| err(format!("multiprocessor count: {e:?}")))?;
    Ok(n.max(1) as usize)
}

/// Blocks of `threads` covering `n` items.
pub(crate) fn blocks_for(n: usize, threads: usize) -> u32 {
    n.div_ceil(threads).max(1) as u32
}

/// The copy-ceiling benchmark: `copy_u4` over `bytes` (read) + `bytes` (written).
pub(crate) fn copy_case(
    dev: &CudaDevice,
    bytes: usize,
) -> crate::Result<crate::harness::BenchCase> {
    use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
    let words = bytes / 16;
    let src = alloc::<u8>(dev, words * 16, Fill::Uninit)?;
    let dst = alloc::<u8>(dev, words * 16, Fill::Uninit)?;
    let f = func(dev, "copy", "copy_u4")?;
    let dev = dev.clone();
    Ok(crate::harness::BenchCase {
        run: Box::new(move || {
            let (s, d) = (base(&src, &dev), base(&dst, &dev));
            let cfg = LaunchConfig {
                grid_dim: (blocks_for(words, 256).min(132 * 16), 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = f.builder();
            candle_core::builder_arg!(b, s, d, words as i64);
            // SAFETY: src and dst hold `words` 16-byte words each (cudaMalloc alignment).
            unsafe { b.launch(cfg) }.map_err(|e| err(format!("copy_u4: {e:?}")))?;
            Ok(())
        }),
        bytes: 2 * (words * 16) as u64,
        flops: 0,
    })
}
