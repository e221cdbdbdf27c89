//! `sum = x + residual; normed = rms_norm(sum) * weight`, both returned, in one pass
//! (kernels/add_rms_norm.cu): vLLM's `fused_add_rms_norm`, out of place.
//!
//! `sum` is rounded to the dtype and the norm is computed in f32 from the rounded sum,
//! so the pair equals the decoder's candle path `x = o + residual; rms_norm(x)`.

use crate::cpu::{self, with_float, Float};
use crate::error::{input_err, same_device, Result};
#[cfg(feature = "cuda")]
use crate::functions::Func;
use crate::functions::Kernels;
use crate::harness::{self, BenchCase, Check, KernelSpec};
use crate::Fill;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Tensor, WithDType};

/// Returns `(normed, sum)`: `sum = round(x + residual)`, `normed = round(sum *
/// rsqrt(mean(sum^2) + eps) * weight)` over the last dimension.
///
/// `x`, `residual`: same shape `[.., hidden]` (the decoder's `[T, hidden]`) and float
/// dtype; `weight`: `[hidden]`, same dtype; `eps`: finite, `>= 0`. Both results are
/// contiguous views of one `[2, ..x.shape]` buffer (index 0 normed, 1 sum).
pub fn add_rms_norm(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    add_rms_norm_with(x, residual, weight, eps, Fill::Uninit)
}

/// [`add_rms_norm`] with its output buffer filled as `fill` says before the kernel runs
/// (the harness poisons it).
pub fn add_rms_norm_with(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f32,
    fill: Fill,
) -> Result<(Tensor, Tensor)> {
    Kernels::NONE.add_rms_norm_with(x, residual, weight, eps, fill)
}

impl Kernels {
    /// [`add_rms_norm`] launched from this table.
    pub fn add_rms_norm(
        &self,
        x: &Tensor,
        residual: &Tensor,
        weight: &Tensor,
        eps: f32,
    ) -> Result<(Tensor, Tensor)> {
        self.add_rms_norm_with(x, residual, weight, eps, Fill::Uninit)
    }

    /// [`add_rms_norm_with`] launched from this table.
    pub fn add_rms_norm_with(
        &self,
        x: &Tensor,
        residual: &Tensor,
        weight: &Tensor,
        eps: f32,
        fill: Fill,
    ) -> Result<(Tensor, Tensor)> {
        if x.rank() == 0 {
            input_err!("add_rms_norm: x must have a hidden dimension, got a scalar");
        }
        if x.shape() != residual.shape() {
            input_err!(
                "add_rms_norm: x {:?} and residual {:?} differ in shape",
                x.shape(),
                residual.shape()
            );
        }
        let hidden = x.dims()[x.rank() - 1];
        if hidden == 0 {
            input_err!(
                "add_rms_norm: hidden size (last dim of x {:?}) is 0",
                x.shape()
            );
        }
        if weight.dims() != [hidden] {
            input_err!(
                "add_rms_norm: weight {:?} must be [{hidden}] (x's last dim)",
                weight.shape()
            );
        }
        for (name, t) in [("residual", residual), ("weight", weight)] {
            if t.dtype() != x.dtype() {
                input_err!(
                    "add_rms_norm: x is {:?}, {name} is {:?}",
                    x.dtype(),
                    t.dtype()
                );
            }
        }
        same_device(
            "add_rms_norm",
            ("x", x),
            &[("residual", residual), ("weight", weight)],
        )?;
        if !matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            input_err!(
                "add_rms_norm: dtype {:?} unsupported (f32, f16, bf16)",
                x.dtype()
            );
        }
        if !eps.is_finite() || eps < 0.0 {
            input_err!("add_rms_norm: eps must be finite and >= 0, got {eps}");
        }
        let (x, residual, weight) = (
            x.contiguous()?,
            residual.contiguous()?,
            weight.contiguous()?,
        );
        let out = x.apply_op3_no_bwd(
            &residual,
            &weight,
            &AddRmsNorm {
                eps,
                fill,
                kernels: self,
            },
        )?;
        Ok((
            out.narrow(0, 0, 1)?.squeeze(0)?,
            out.narrow(0, 1, 1)?.squeeze(0)?,
        ))
    }
}

/// The reference, the obvious way: `round` rounds an f32 to the dtype (the sum is
/// rounded before the norm, as in the candle path). Returns `(normed, sum)`.
pub fn reference(
    x: &[f32],
    residual: &[f32],
    weight: &[f32],
    eps: f32,
    round: impl Fn(f32) -> f32,
) -> (Vec<f32>, Vec<f32>) {
    let h = weight.len();
    let sum: Vec<f32> = x
        .iter()
        .zip(residual)
        .map(|(&a, &b)| round(a + b))
        .collect();
    let mut normed = Vec::with_capacity(sum.len());
    for row in sum.chunks(h) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        normed.extend(row.iter().zip(weight).map(|(&s, &w)| s * inv * w));
    }
    (normed, sum)
}

/// Units (vectors of `width` elements, or single elements) per row and threads per block,
/// as the .cu header describes: about two units per thread, 32..=1024 threads.
fn plan(hidden: usize, vec: bool, elem_size: usize) -> (usize, usize, usize) {
    let width = if vec { 16 / elem_size } else { 1 };
    let units = hidden / width;
    let threads = (units.div_ceil(2).div_ceil(32) * 32).clamp(32, 1024);
    (units, width, threads)
}

/// `block_sum` of common.cuh: an xor-butterfly within each warp of 32 lanes, then the
/// same over the warps' sums (lanes past the last warp read 0).
fn block_sum(lanes: &[f32]) -> f32 {
    fn warp(v: &mut [f32; 32]) -> f32 {
        for o in [16, 8, 4, 2, 1] {
            let prev = *v;
            for (l, x) in v.iter_mut().enumerate() {
                *x = prev[l] + prev[l ^ o];
            }
        }
        v[0]
    }
    let mut scratch = [0f32; 32];
    for (w, chunk) in lanes.chunks(32).enumerate() {
        let mut v = [0f32; 32];
        v[..chunk.len()].copy_from_slice(chunk);
        scratch[w] = warp(&mut v);
    }
    warp(&mut scratch)
}

struct AddRmsNorm<'a> {
    eps: f32,
    fill: Fill,
    /// The function table the launch uses ([`Kernels::NONE`]: looked up at the launch).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    kernels: &'a Kernels,
}

/// The CPU port: one row as one CUDA block does it (per-thread partial sums over the
/// same units, the same block reduction, `sum` stored then normalized).
fn cpu_rows<T: Float>(x: &[T], r: &[T], w: &[T], out: &mut [T], eps: f32) {
    let hidden = w.len();
    let n = x.len();
    let (units, width, threads) = plan(
        hidden,
        hidden.is_multiple_of(16 / T::DTYPE.size_in_bytes()),
        T::DTYPE.size_in_bytes(),
    );
    let inv_hidden = 1.0 / hidden as f32;
    let (normed, sum) = out.split_at_mut(n);
    let mut part = vec![0f32; threads];
    for row in 0..n / hidden {
        let off = row * hidden;
        let (xs, rs) = (&x[off..off + hidden], &r[off..off + hidden]);
        let (ns, ss) = (&mut normed[off..off + hidden], &mut sum[off..off + hidden]);
        for (t, p) in part.iter_mut().enumerate() {
            *p = 0.0;
            for u in (t..units).step_by(threads) {
                for i in u * width..(u + 1) * width {
                    let s = T::from_f(xs[i].f() + rs[i].f());
                    ss[i] = s;
                    *p += s.f() * s.f();
                }
            }
        }
        let inv_rms = 1.0 / (block_sum(&part) * inv_hidden + eps).sqrt();
        for ((o, s), g) in ns.iter_mut().zip(ss.iter()).zip(w) {
            *o = T::from_f(s.f() * inv_rms * g.f());
        }
    }
}

impl CustomOp3 for AddRmsNorm<'_> {
    fn name(&self) -> &'static str {
        "add_rms_norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        with_float!(s1.dtype(), T => {
            let (x, r, w) = (cpu::slice::<T>(s1, l1)?, cpu::slice::<T>(s2, l2)?, cpu::slice::<T>(s3, l3)?);
            let mut out = cpu::out_vec::<T>(2 * x.len(), self.fill);
            cpu_rows(x, r, w, &mut out, self.eps);
            Ok((T::to_cpu_storage_owned(out), out_shape(l1)))
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda;
        use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
        let dev = &s1.device;
        let dtype = s1.dtype();
        let n = l1.shape().elem_count();
        let hidden = l3.shape().elem_count();
        let rows = n / hidden.max(1);
        let out = cuda::alloc_storage(dev, dtype, 2 * n, self.fill)?;
        if rows == 0 {
            return Ok((out, out_shape(l1)));
        }
        let (x, r, w) = (cuda::ptr(s1, l1)?, cuda::ptr(s2, l2)?, cuda::ptr(s3, l3)?);
        let normed = cuda::ptr(&out, &Layout::contiguous(2 * n))?;
        let sum = normed + (n * dtype.size_in_bytes()) as u64;
        let size = dtype.size_in_bytes();
        let aligned = [x, r, w, normed, sum].iter().all(|p| p % 16 == 0);
        let vec = aligned && hidden.is_multiple_of(16 / size);
        let (_, _, threads) = plan(hidden, vec, size);
        let f = self.kernels.get(dev, Func::AddRmsNorm, dtype)?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let (rows, hidden, vec) = (rows as i64, hidden as i64, vec as i32);
        let mut b = f.builder();
        candle_core::builder_arg!(b, x, r, w, normed, sum, rows, hidden, self.eps, vec);
        // SAFETY: x, r address rows * hidden elements of `dtype`, w hidden (contiguous,
        // shapes checked by the wrapper); normed and sum are the two halves of the fresh
        // 2 * n output; `vec` only when every pointer is 16-byte aligned and hidden is a
        // multiple of the vector width. Signature: (T*, T*, T*, T*, T*, i64, i64, f32, i32).
        unsafe { b.launch(cfg) }
            .map_err(|e| candle_core::Error::Msg(format!("add_rms_norm: {e:?}")))?;
        Ok((out, out_shape(l1)))
    }
}

/// `[2, ..x.shape]`.
fn out_shape(l: &Layout) -> Shape {
    let mut dims = vec![2];
    dims.extend_from_slice(l.dims());
    Shape::from(dims)
}

/// Round an f32 to `dtype` (and back), as a store does.
pub(crate) fn round_to(dtype: DType) -> impl Fn(f32) -> f32 {
    move |v| match dtype {
        DType::F16 => half::f16::from_f32(v).to_f32(),
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// `engine kernels test|bench add_rms_norm`: shape `tokens,hidden`.
pub struct Spec;

const EPS: f32 = 1e-5;

impl KernelSpec for Spec {
    fn name(&self) -> &'static str {
        "add_rms_norm"
    }
    fn about(&self) -> &'static str {
        "sum = x + residual; normed = rms_norm(sum) * w; both out, one pass"
    }
    fn shape_names(&self) -> &'static str {
        "tokens,hidden"
    }
    fn test_shapes(&self) -> Vec<Vec<usize>> {
        vec![
            vec![1, 7],
            vec![2, 8],
            vec![3, 100],
            vec![65, 64],
            vec![17, 4096],
            vec![5, 5120],
            vec![1, 8192],
            vec![2, 40000], // past the register cache: pass 2 re-reads `sum`
        ]
    }
    fn bench_shapes(&self) -> Vec<Vec<usize>> {
        vec![
            vec![1, 4096],
            vec![32, 4096],
            vec![256, 4096],
            vec![4096, 4096],
        ]
    }
    fn check(&self, dev: &Device, dtype: DType, shape: &[usize], seed: u64) -> Result<Check> {
        let [t, h] = harness::dims::<2>(shape, self.shape_names())?;
        let (x, xh) = harness::random_input(&[t, h], 2.0, seed, dtype, dev)?;
        let (r, rh) = harness::random_input(&[t, h], 2.0, seed + 1, dtype, dev)?;
        let (w, wh) = harness::random_input(&[h], 1.5, seed + 2, dtype, dev)?;
        let (normed, sum) = add_rms_norm_with(&x, &r, &w, EPS, Fill::Poison)?;
        let (rn, rs) = reference(&xh, &rh, &wh, EPS, round_to(dtype));
        let cn = harness::compare(&harness::host_f32(&normed)?, &rn, harness::tolerance(dtype));
        // The sum is one rounded add: it must match exactly (mismatches count as `nan`).
        let cs = harness::compare(&harness::host_f32(&sum)?, &rs, 0.0);
        let exact = match cs.pass() {
            true => 0,
            false => cs.nan.max(1),
        };
        Ok(Check {
            nan: cn.nan + exact,
            elems: cn.elems + cs.elems,
            ..cn
        })
    }
    fn bench(&self, dev: &Device, dtype: DType, shape: &[usize]) -> Result<BenchCase> {
        let [t, h] = harness::dims::<2>(shape, self.shape_names())?;
        let (x, _) = harness::random_input(&[t, h], 2.0, 1, dtype, dev)?;
        let (r, _) = harness::random_input(&[t, h], 2.0, 2, dtype, dev)?;
        let (w, _) = harness::random_input(&[h], 1.5, 3, dtype, dev)?;
        let bytes = (4 * t * h + h) * dtype.size_in_bytes();
        Ok(BenchCase {
            run: Box::new(move || add_rms_norm(&x, &r, &w, EPS).map(|_| ())),
            bytes: bytes as u64,
            flops: (5 * t * h) as u64,
        })
    }
}

#[cfg(test)]
#[path = "add_rms_norm_tests.rs"]
mod tests;
