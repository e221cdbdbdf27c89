//! `out = silu(gate) * up` of the MLP's fused gate/up projection, in one pass
//! (kernels/silu_mul.cu; vLLM's `silu_and_mul`): the input row is `[gate | up]`, the
//! output row half as wide, so the gate/up matmul stays one GEMM and no copy splits it.
//!
//! This module is the template for a kernel: the public op, the candle `CustomOp`
//! (CPU port in `cpu_fwd`, CUDA launch in `cuda_fwd`), the reference, the
//! [`KernelSpec`] that `engine kernels` and the tests drive, and the tests.

use crate::cpu::{self, with_float, Float};
use crate::error::{input_err, Result};
#[cfg(feature = "cuda")]
use crate::functions::Func;
use crate::functions::Kernels;
use crate::harness::{self, BenchCase, Check, KernelSpec};
use crate::Fill;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, WithDType};

/// `silu(gate) * up` of `gate_up` = `[.., 2 * I]` (gate the first `I` columns of each
/// row, up the last `I`); returns `[.., I]`. A float dtype (f32, f16, bf16).
pub fn silu_mul(gate_up: &Tensor) -> Result<Tensor> {
    silu_mul_with(gate_up, Fill::Uninit)
}

/// [`silu_mul`] with its output filled as `fill` says before the kernel runs (the
/// harness poisons it).
pub fn silu_mul_with(gate_up: &Tensor, fill: Fill) -> Result<Tensor> {
    Kernels::NONE.silu_mul_with(gate_up, fill)
}

impl Kernels {
    /// [`silu_mul`] launched from this table.
    pub fn silu_mul(&self, gate_up: &Tensor) -> Result<Tensor> {
        self.silu_mul_with(gate_up, Fill::Uninit)
    }

    /// [`silu_mul_with`] launched from this table.
    pub fn silu_mul_with(&self, gate_up: &Tensor, fill: Fill) -> Result<Tensor> {
        let width = gate_up.dims().last().copied().unwrap_or(0);
        if gate_up.rank() == 0 || width == 0 || width % 2 != 0 {
            input_err!(
                "silu_mul: gate_up {:?} must be [.., 2 * intermediate] with intermediate >= 1",
                gate_up.shape()
            );
        }
        if !matches!(gate_up.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            input_err!(
                "silu_mul: dtype {:?} unsupported (f32, f16, bf16)",
                gate_up.dtype()
            );
        }
        Ok(gate_up.contiguous()?.apply_op1_no_bwd(&SiluMul {
            fill,
            kernels: self,
        })?)
    }
}

/// The reference, written the obvious way in f32: rows of `[gate | up]` of width `2 i`.
pub fn reference(gate_up: &[f32], i: usize) -> Vec<f32> {
    gate_up
        .chunks(2 * i)
        .flat_map(|row| {
            let (gate, up) = row.split_at(i);
            gate.iter()
                .zip(up)
                .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
        })
        .collect()
}

/// The output shape: the input's with the last dimension halved.
fn half_shape(l: &Layout) -> Shape {
    let mut dims = l.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last /= 2;
    }
    Shape::from(dims)
}

struct SiluMul<'a> {
    fill: Fill,
    /// The function table the launch uses ([`Kernels::NONE`]: looked up at the launch).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    kernels: &'a Kernels,
}

impl CustomOp1 for SiluMul<'_> {
    fn name(&self) -> &'static str {
        "silu_mul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = half_shape(l1);
        let i = shape.dims().last().copied().unwrap_or(1).max(1);
        with_float!(s1.dtype(), T => {
            let x = cpu::slice::<T>(s1, l1)?;
            let mut out = cpu::out_vec::<T>(x.len() / 2, self.fill);
            for (o, row) in out.chunks_mut(i).zip(x.chunks(2 * i)) {
                let (gate, up) = row.split_at(i);
                for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
                    let g = g.f();
                    *o = T::from_f(g / (1.0 + (-g).exp()) * u.f());
                }
            }
            Ok((T::to_cpu_storage_owned(out), shape))
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda;
        use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
        let dev = &s1.device;
        let shape = half_shape(l1);
        let n = shape.elem_count();
        let i = shape.dims().last().copied().unwrap_or(1).max(1);
        let dtype = s1.dtype();
        let out = cuda::alloc_storage(dev, dtype, n, self.fill)?;
        let (x, o) = (cuda::ptr(s1, l1)?, cuda::ptr(&out, &Layout::contiguous(n))?);
        let f = self.kernels.get(dev, Func::SiluMul, dtype)?;
        let cfg = LaunchConfig {
            grid_dim: (cuda::blocks_for(n.div_ceil(8), 256).min(65535 * 32), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = f.builder();
        candle_core::builder_arg!(b, x, o, n as i64, i as i64);
        // SAFETY: x addresses 2 * n elements of `dtype` (rows of [gate | up], checked
        // contiguous by the wrapper), o the n fresh output elements; the kernel's
        // signature is (const T*, T*, int64 n, int64 i).
        unsafe { b.launch(cfg) }
            .map_err(|e| candle_core::Error::Msg(format!("silu_mul: {e:?}")))?;
        Ok((out, shape))
    }
}

/// `engine kernels test|bench silu_mul`: shape `tokens,intermediate`.
pub struct Spec;

impl KernelSpec for Spec {
    fn name(&self) -> &'static str {
        "silu_mul"
    }
    fn about(&self) -> &'static str {
        "out = silu(gate) * up of rows [gate | up] (SwiGLU activation), one pass"
    }
    fn shape_names(&self) -> &'static str {
        "tokens,intermediate"
    }
    fn test_shapes(&self) -> Vec<Vec<usize>> {
        vec![
            vec![1, 8],
            vec![3, 77],
            vec![2, 3],
            vec![17, 1000],
            vec![64, 14336],
        ]
    }
    fn bench_shapes(&self) -> Vec<Vec<usize>> {
        vec![
            vec![1, 14336],
            vec![32, 14336],
            vec![256, 14336],
            vec![4096, 14336],
        ]
    }
    fn check(&self, dev: &Device, dtype: DType, shape: &[usize], seed: u64) -> Result<Check> {
        let [t, i] = harness::dims::<2>(shape, self.shape_names())?;
        let (gate_up, x) = harness::random_input(&[t, 2 * i], 4.0, seed, dtype, dev)?;
        let out = harness::host_f32(&silu_mul_with(&gate_up, Fill::Poison)?)?;
        Ok(harness::compare(
            &out,
            &reference(&x, i),
            harness::tolerance(dtype),
        ))
    }
    fn bench(&self, dev: &Device, dtype: DType, shape: &[usize]) -> Result<BenchCase> {
        let [t, i] = harness::dims::<2>(shape, self.shape_names())?;
        let (gate_up, _) = harness::random_input(&[t, 2 * i], 4.0, 1, dtype, dev)?;
        let bytes = 3 * t * i * dtype.size_in_bytes();
        Ok(BenchCase {
            run: Box::new(move || silu_mul(&gate_up).map(|_| ())),
            bytes: bytes as u64,
            flops: (5 * t * i) as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_port_matches_reference_in_every_dtype() -> anyhow::Result<()> {
        Ok(harness::check_all_shapes(&Spec, &Device::Cpu)?)
    }

    #[test]
    fn splits_each_row_into_gate_and_up() -> anyhow::Result<()> {
        // Rows [g0 g1 | u0 u1]: out = [silu(g0) u0, silu(g1) u1].
        let x = Tensor::new(
            &[[1.0f32, -2.0, 3.0, 0.5], [0.0, 4.0, 7.0, -1.0]],
            &Device::Cpu,
        )?;
        let got = silu_mul(&x)?.to_vec2::<f32>()?;
        let silu = |g: f32| g / (1.0 + (-g).exp());
        let want = [
            [silu(1.0) * 3.0, silu(-2.0) * 0.5],
            [silu(0.0) * 7.0, -silu(4.0)],
        ];
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        Ok(())
    }

    #[test]
    fn rejects_odd_widths_and_integer_dtypes() -> anyhow::Result<()> {
        let a = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
        let err = silu_mul(&a).unwrap_err().to_string();
        assert!(err.contains("2 * intermediate"), "{err}");
        let b = Tensor::zeros((2, 4), DType::U32, &Device::Cpu)?;
        assert!(silu_mul(&b).is_err());
        Ok(())
    }

    #[test]
    #[ignore = "requires a CUDA device"]
    fn cuda_matches_reference_in_every_dtype() -> anyhow::Result<()> {
        Ok(harness::check_all_shapes(&Spec, &Device::new_cuda(0)?)?)
    }
}
