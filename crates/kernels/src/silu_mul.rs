//! `out = silu(gate) * up`, the SwiGLU activation, in one pass (kernels/silu_mul.cu).
//!
//! This module is the template for a kernel: the public op, the candle `CustomOp`
//! (CPU port in `cpu_fwd`, CUDA launch in `cuda_fwd`), the reference, the
//! [`KernelSpec`] that `engine kernels` and the tests drive, and the tests.

use crate::cpu::{self, with_float, Float};
use crate::error::{input_err, Result};
use crate::harness::{self, BenchCase, Check, KernelSpec};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Tensor, WithDType};

/// `silu(gate) * up` elementwise. `gate`, `up`: same shape and float dtype.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.shape() != up.shape() {
        input_err!(
            "silu_mul: gate {:?} and up {:?} differ in shape",
            gate.shape(),
            up.shape()
        );
    }
    if gate.dtype() != up.dtype() {
        input_err!(
            "silu_mul: gate is {:?}, up is {:?}",
            gate.dtype(),
            up.dtype()
        );
    }
    let (gate, up) = (gate.contiguous()?, up.contiguous()?);
    Ok(gate.apply_op2_no_bwd(&up, &SiluMul)?)
}

/// The reference, written the obvious way in f32.
pub fn reference(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
        .collect()
}

struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu_mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        with_float!(s1.dtype(), T => {
            let (g, u) = (cpu::slice::<T>(s1, l1)?, cpu::slice::<T>(s2, l2)?);
            let mut out = cpu::out_vec::<T>(g.len());
            for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                let g = g.f();
                *o = T::from_f(g / (1.0 + (-g).exp()) * u.f());
            }
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda;
        use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
        let dev = &s1.device;
        let n = l1.shape().elem_count();
        let dtype = s1.dtype();
        let out = cuda::alloc_storage(dev, dtype, n)?;
        let (g, u, o) = (
            cuda::ptr(s1, l1)?,
            cuda::ptr(s2, l2)?,
            cuda::ptr(&out, &Layout::contiguous(n))?,
        );
        let f = cuda::func(
            dev,
            "silu_mul",
            &format!("silu_mul_{}", cuda::suffix(dtype)?),
        )?;
        let cfg = LaunchConfig {
            grid_dim: (cuda::blocks_for(n.div_ceil(8), 256).min(65535 * 32), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = f.builder();
        candle_core::builder_arg!(b, g, u, o, n as i64);
        // SAFETY: g, u, o address n elements of `dtype` each (checked contiguous, same
        // shape by the wrapper); the kernel's signature is (T*, T*, T*, int64).
        unsafe { b.launch(cfg) }
            .map_err(|e| candle_core::Error::Msg(format!("silu_mul: {e:?}")))?;
        Ok((out, l1.shape().clone()))
    }
}

/// `engine kernels test|bench silu_mul`: shape `tokens,intermediate`.
pub struct Spec;

impl KernelSpec for Spec {
    fn name(&self) -> &'static str {
        "silu_mul"
    }
    fn about(&self) -> &'static str {
        "out = silu(gate) * up (SwiGLU activation), one pass"
    }
    fn shape_names(&self) -> &'static str {
        "tokens,intermediate"
    }
    fn test_shapes(&self) -> Vec<Vec<usize>> {
        vec![vec![1, 8], vec![3, 77], vec![17, 1000], vec![64, 14336]]
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
        let (gate, g) = harness::random_input(&[t, i], 4.0, seed, dtype, dev)?;
        let (up, u) = harness::random_input(&[t, i], 2.0, seed + 1, dtype, dev)?;
        let out = harness::host_f32(&silu_mul(&gate, &up)?)?;
        Ok(harness::compare(
            &out,
            &reference(&g, &u),
            harness::tolerance(dtype),
        ))
    }
    fn bench(&self, dev: &Device, dtype: DType, shape: &[usize]) -> Result<BenchCase> {
        let [t, i] = harness::dims::<2>(shape, self.shape_names())?;
        let (gate, _) = harness::random_input(&[t, i], 4.0, 1, dtype, dev)?;
        let (up, _) = harness::random_input(&[t, i], 2.0, 2, dtype, dev)?;
        let bytes = 3 * t * i * dtype.size_in_bytes();
        Ok(BenchCase {
            run: Box::new(move || silu_mul(&gate, &up).map(|_| ())),
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
    fn rejects_mismatched_inputs() -> anyhow::Result<()> {
        let a = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
        let b = Tensor::zeros((3, 2), DType::F32, &Device::Cpu)?;
        let err = silu_mul(&a, &b).unwrap_err().to_string();
        assert!(err.contains("differ in shape"), "{err}");
        let c = Tensor::zeros((2, 3), DType::BF16, &Device::Cpu)?;
        assert!(silu_mul(&a, &c).is_err());
        Ok(())
    }

    #[test]
    #[ignore = "requires a CUDA device"]
    fn cuda_matches_reference_in_every_dtype() -> anyhow::Result<()> {
        Ok(harness::check_all_shapes(&Spec, &Device::new_cuda(0)?)?)
    }
}
