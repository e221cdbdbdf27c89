//! The CUDA side of [`QuantLinear`](crate::linear::QuantLinear): candle ops launching
//! kernels/quant_matvec.cu (small batches) and kernels/quant_dequant.cu (a dense weight
//! for cuBLAS on large batches). Everything runs on candle's stream of the device.

use crate::error::{input_err, Result};
use crate::types::GgmlType;
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use candle_core::cuda::CudaStorageSlice;
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp1, DType, Layout, Shape, Storage, Tensor,
};

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

type R<T> = candle_core::Result<T>;

fn err(msg: String) -> candle_core::Error {
    candle_core::Error::Msg(msg)
}

/// Most activation rows the mat-vec kernels take in one launch; more use dequantize + GEMM.
pub(crate) const MATVEC_MAX_ROWS: usize = 8;
/// Bytes of one Q8 activation block on the device (kernels/quant_common.cuh `block_q8`).
const Q8_BYTES: usize = 40;

fn base<T>(s: &CudaSlice<T>, dev: &CudaDevice) -> u64 {
    // The guard records a read event on drop; candle uses one stream, so ordering holds.
    let (p, _guard) = s.device_ptr(&dev.cuda_stream());
    p
}

/// Device address of a contiguous storage's first element.
fn ptr(s: &CudaStorage, l: &Layout) -> R<u64> {
    let (start, _) = l
        .contiguous_offsets()
        .ok_or_else(|| err("quantized matmul inputs must be contiguous".into()))?;
    let dev = &s.device;
    let (p, size) = match &s.slice {
        CudaStorageSlice::U8(x) => (base(x, dev), 1),
        CudaStorageSlice::F32(x) => (base(x, dev), 4),
        CudaStorageSlice::F16(x) => (base(x, dev), 2),
        CudaStorageSlice::BF16(x) => (base(x, dev), 2),
        _ => return Err(err(format!("unsupported dtype {:?}", s.dtype()))),
    };
    Ok(p + (start * size) as u64)
}

/// A kernel argument.
enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
}

/// Launch `name` from `module` on `grid` blocks of `block` threads.
fn launch(
    dev: &CudaDevice,
    module: &str,
    name: &str,
    grid: usize,
    block: u32,
    args: &[Arg],
) -> R<()> {
    let ptx = match module {
        "quant_matvec" => ptx::QUANT_MATVEC,
        _ => ptx::QUANT_DEQUANT,
    };
    let func = dev
        .get_or_load_custom_func(name, module, ptx)?
        .into_cuda_function();
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    for a in args {
        match a {
            Arg::Ptr(p) => b.arg(p),
            Arg::I32(v) => b.arg(v),
            Arg::I64(v) => b.arg(v),
        };
    }
    let cfg = LaunchConfig {
        grid_dim: (grid.max(1) as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: every caller passes pointers to device buffers of the sizes the kernel's
    // header comment states, in the order and types of its signature.
    unsafe { b.launch(cfg) }.map_err(|e| err(format!("{name}: {e:?}")))?;
    Ok(())
}

fn dtype_suffix(d: DType) -> R<&'static str> {
    match d {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        d => Err(err(format!("quantized matmul: unsupported dtype {d:?}"))),
    }
}

/// `x [m, cols]` (any float dtype, contiguous) -> `y [m, rows]` f32 via the mat-vec
/// kernels; the weight's GGUF bytes are held as a U8 tensor.
struct MatVec {
    w: Tensor,
    ty: GgmlType,
    rows: usize,
    cols: usize,
}

impl CustomOp1 for MatVec {
    fn name(&self) -> &'static str {
        "quant-matvec"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> R<(CpuStorage, Shape)> {
        Err(err(
            "quant-matvec runs on CUDA only (the CPU uses QMatrix)".into()
        ))
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> R<(CudaStorage, Shape)> {
        let dev = &s.device;
        let m = l.shape().elem_count() / self.cols;
        let blocks = m * self.cols / 32;
        // SAFETY: fully written by quantize_q8 below (one warp per block).
        let q8 = unsafe { dev.alloc::<u8>(blocks * Q8_BYTES)? };
        let q8p = base(&q8, dev);
        let name = format!("quantize_q8_{}", dtype_suffix(s.dtype())?);
        let args = [Arg::Ptr(ptr(s, l)?), Arg::Ptr(q8p), Arg::I64(blocks as i64)];
        launch(dev, "quant_matvec", &name, blocks.div_ceil(8), 256, &args)?;
        // SAFETY: every row of every column is written by one warp of qmv below.
        let y = unsafe { dev.alloc::<f32>(m * self.rows)? };
        let yp = base(&y, dev);
        let wp = {
            let (ws, wl) = self.w.storage_and_layout();
            match &*ws {
                Storage::Cuda(c) => ptr(c, wl)?,
                _ => return Err(err("quant-matvec: weight is not on CUDA".into())),
            }
        };
        let mut c0 = 0;
        while c0 < m {
            let nc = [8, 4, 2, 1].into_iter().find(|&n| n <= m - c0).unwrap_or(1);
            let name = format!("qmv_{}_c{nc}", self.ty.name());
            let a = q8p + (c0 * (self.cols / 32) * Q8_BYTES) as u64;
            let out = yp + (c0 * self.rows * 4) as u64;
            let args = [
                Arg::Ptr(wp),
                Arg::Ptr(a),
                Arg::Ptr(out),
                Arg::I32(self.rows as i32),
                Arg::I32(self.cols as i32),
            ];
            launch(
                dev,
                "quant_matvec",
                &name,
                self.rows.div_ceil(4),
                128,
                &args,
            )?;
            c0 += nc;
        }
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            Shape::from((m, self.rows)),
        ))
    }
}

/// An output of `n` elements, and its device address. Uninitialized: the kernels that
/// fill it write every element.
fn alloc_out<T: candle_core::cuda::CudaDType + candle_core::cuda::cudarc::driver::DeviceRepr>(
    dev: &CudaDevice,
    n: usize,
) -> R<(CudaStorage, u64)> {
    // SAFETY: see above; the caller's kernel writes all `n` elements.
    let y = unsafe { dev.alloc::<T>(n)? };
    let p = base(&y, dev);
    Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), p))
}

/// The U8 tensor of GGUF bytes -> the dense weight `[rows, cols]` of `dtype`.
struct Dequant {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    dtype: DType,
}

impl CustomOp1 for Dequant {
    fn name(&self) -> &'static str {
        "quant-dequant"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> R<(CpuStorage, Shape)> {
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| err("quant-dequant: weight bytes must be contiguous".into()))?;
        let v = crate::dequant::dequantize(self.ty, &s.as_slice::<u8>()?[a..b])
            .map_err(|e| err(e.to_string()))?;
        let t = Tensor::from_vec(v, (self.rows, self.cols), &candle_core::Device::Cpu)?
            .to_dtype(self.dtype)?;
        let (st, _) = t.storage_and_layout();
        match &*st {
            Storage::Cpu(c) => Ok((c.clone(), Shape::from((self.rows, self.cols)))),
            _ => Err(err("quant-dequant: expected CPU storage".into())),
        }
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> R<(CudaStorage, Shape)> {
        let dev = &s.device;
        let n = self.rows * self.cols;
        let parts = n / 32;
        let (out, op) = match self.dtype {
            DType::F32 => alloc_out::<f32>(dev, n)?,
            DType::F16 => alloc_out::<half::f16>(dev, n)?,
            DType::BF16 => alloc_out::<half::bf16>(dev, n)?,
            d => return Err(err(format!("quant-dequant: unsupported dtype {d:?}"))),
        };
        let name = format!("dequant_{}_{}", self.ty.name(), dtype_suffix(self.dtype)?);
        let args = [Arg::Ptr(ptr(s, l)?), Arg::Ptr(op), Arg::I64(parts as i64)];
        launch(dev, "quant_dequant", &name, parts.div_ceil(256), 256, &args)?;
        Ok((out, Shape::from((self.rows, self.cols))))
    }
}

/// The CUDA forward of a quantized linear layer (see [`crate::linear`]).
pub(crate) fn forward(
    w: &Tensor,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    x: &Tensor,
    m: usize,
) -> Result<Tensor> {
    if !x.device().same_device(w.device()) {
        input_err!(
            "{ty} [{rows}, {cols}]: the input is on {:?}, the weight on {:?}",
            x.device().location(),
            w.device().location()
        );
    }
    let x2 = x.reshape((m, cols))?.contiguous()?;
    if m <= MATVEC_MAX_ROWS {
        let y = x2.apply_op1_no_bwd(&MatVec {
            w: w.clone(),
            ty,
            rows,
            cols,
        })?; // [m, rows] f32
        return Ok(y.to_dtype(x.dtype())?);
    }
    let dense = w.apply_op1_no_bwd(&Dequant {
        ty,
        rows,
        cols,
        dtype: x.dtype(),
    })?; // [rows, cols]
    Ok(x2.matmul(&dense.t()?)?)
}

/// Dequantize GGUF bytes held in a U8 tensor (either device) to `[rows, cols]` of `dtype`.
pub fn dequantize_tensor(
    w: &Tensor,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    dtype: DType,
) -> Result<Tensor> {
    Ok(w.apply_op1_no_bwd(&Dequant {
        ty,
        rows,
        cols,
        dtype,
    })?)
}
