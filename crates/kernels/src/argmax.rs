//! The greedy token of each logits row, by the engine's one rule (kernels/argmax.cu):
//! NaN is never chosen (it counts as `-inf`), among equal maxima the lowest id wins,
//! and a row with nothing above `-inf` gives id 0. [`argmax_row`] is that rule on the
//! host: the CPU port runs it, and the engine's host sampler calls it for greedy rows,
//! so a greedy token is the same whichever path took it.

use crate::error::{input_err, Result};
use crate::harness::{self, BenchCase, Check, KernelSpec};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

/// The rule on one row (see the module doc). O(V), one pass.
pub fn argmax_row(row: &[f32]) -> u32 {
    let mut best = (f32::NEG_INFINITY, 0u32);
    for (i, &v) in row.iter().enumerate() {
        if v > best.0 {
            // NaN compares false: never taken. Strict `>`: the lowest id keeps a tie.
            best = (v, i as u32);
        }
    }
    best.1
}

/// The reference, written the obvious way: sort ids by (value desc, id asc) with NaN
/// as `-inf`, take the first.
pub fn reference(logits: &[f32], vocab: usize) -> Vec<u32> {
    logits
        .chunks(vocab)
        .map(|row| {
            let key = |i: usize| match row[i].is_nan() {
                true => f32::NEG_INFINITY,
                false => row[i],
            };
            let mut ids: Vec<usize> = (0..row.len()).collect();
            ids.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
            ids.first().map_or(0, |&i| i as u32)
        })
        .collect()
}

/// Greedy ids of `logits` `[rows, vocab]` (f32): `[rows]` u32 on the same device.
pub fn argmax(logits: &Tensor) -> Result<Tensor> {
    let (_, vocab) = match logits.dims() {
        &[r, v] => (r, v),
        s => input_err!("argmax: logits {s:?} must be [rows, vocab]"),
    };
    if logits.dtype() != DType::F32 {
        input_err!("argmax: logits are {:?}, expected f32", logits.dtype());
    }
    if vocab == 0 || vocab > u32::MAX as usize {
        input_err!("argmax: vocab {vocab} must be in 1..=u32::MAX");
    }
    Ok(logits.contiguous()?.apply_op1_no_bwd(&Argmax)?)
}

struct Argmax;

impl CustomOp1 for Argmax {
    fn name(&self) -> &'static str {
        "argmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, vocab) = l.shape().dims2()?;
        let x = crate::cpu::slice::<f32>(s, l)?;
        let ids: Vec<u32> = x.chunks(vocab).map(argmax_row).collect();
        Ok((CpuStorage::U32(ids), Shape::from(rows)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda;
        use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
        let (rows, vocab) = l.shape().dims2()?;
        let dev = &s.device;
        let ids = cuda::alloc::<u32>(dev, rows, crate::Fill::Uninit)?;
        let out = candle_core::CudaStorage::wrap_cuda_slice(ids, dev.clone());
        if rows == 0 {
            return Ok((out, Shape::from(rows)));
        }
        let (x, o) = (
            cuda::ptr(s, l)?,
            cuda::ptr(&out, &Layout::contiguous(rows))?,
        );
        let f = cuda::func(dev, "argmax", "argmax_f32")?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = f.builder();
        candle_core::builder_arg!(b, x, o, vocab as i64);
        // SAFETY: x addresses rows * vocab f32 (contiguous, checked by the wrapper), o the
        // `rows` fresh u32; one block per row; the signature is (const float*, uint32*,
        // int64).
        unsafe { b.launch(cfg) }.map_err(|e| candle_core::Error::Msg(format!("argmax: {e:?}")))?;
        Ok((out, Shape::from(rows)))
    }
}

/// Seeded rows with the hard cases planted: NaN everywhere in some rows, ties of the
/// maximum, `+inf` ties, all `-inf` / NaN rows.
fn planted_logits(rows: usize, vocab: usize, seed: u64) -> Vec<f32> {
    let mut x = harness::random(rows * vocab, 4.0, seed);
    for (r, row) in x.chunks_mut(vocab).enumerate() {
        let at = |k: usize| (k * 7919 + r * 31) % vocab;
        match r % 5 {
            1 => {
                let m = row.iter().copied().fold(f32::MIN, f32::max) + 1.0;
                row[at(3)] = m;
                row[at(1)] = m; // a tie: the lower of the two ids wins
                row[at(2)] = f32::NAN;
            }
            2 => {
                row[at(5)] = f32::INFINITY;
                row[at(4)] = f32::INFINITY;
            }
            3 => row.iter_mut().for_each(|v| *v = f32::NAN),
            4 => {
                row.iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
                row[at(6)] = f32::NAN;
            }
            _ => row[at(0)] = f32::NAN,
        }
    }
    x
}

/// `engine kernels test|bench argmax`.
pub struct Spec;

impl KernelSpec for Spec {
    fn name(&self) -> &'static str {
        "argmax"
    }
    fn about(&self) -> &'static str {
        "greedy id per logits row: NaN never chosen, lowest id among equal maxima"
    }
    fn shape_names(&self) -> &'static str {
        "rows,vocab"
    }
    fn test_shapes(&self) -> Vec<Vec<usize>> {
        vec![
            vec![1, 1],
            vec![5, 7],
            vec![10, 300],
            vec![7, 32000],
            vec![3, 128256],
        ]
    }
    fn bench_shapes(&self) -> Vec<Vec<usize>> {
        vec![vec![1, 128256], vec![32, 128256], vec![128, 128256]]
    }
    fn check(&self, dev: &Device, _dtype: DType, shape: &[usize], seed: u64) -> Result<Check> {
        let [rows, vocab] = harness::dims::<2>(shape, self.shape_names())?;
        let x = planted_logits(rows, vocab, seed);
        let ids = argmax(&Tensor::from_slice(&x, (rows, vocab), dev)?)?
            .to_device(&Device::Cpu)?
            .to_vec1::<u32>()?;
        let want = reference(&x, vocab);
        let as_f32 = |v: &[u32]| v.iter().map(|&i| i as f32).collect::<Vec<_>>();
        // Ids must match exactly.
        Ok(harness::compare(&as_f32(&ids), &as_f32(&want), 0.0))
    }
    fn bench(&self, dev: &Device, _dtype: DType, shape: &[usize]) -> Result<BenchCase> {
        let [rows, vocab] = harness::dims::<2>(shape, self.shape_names())?;
        let x = Tensor::from_vec(harness::random(rows * vocab, 4.0, 1), (rows, vocab), dev)?;
        Ok(BenchCase {
            run: Box::new(move || argmax(&x).map(|_| ())),
            bytes: (rows * vocab * 4 + rows * 4) as u64,
            flops: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_port_matches_reference() -> anyhow::Result<()> {
        Ok(harness::check_all_shapes(&Spec, &Device::Cpu)?)
    }

    #[test]
    fn the_rule_on_hand_made_rows() {
        let nan = f32::NAN;
        assert_eq!(argmax_row(&[nan, 1.0, 3.0, 3.0]), 2, "tie: lowest id");
        assert_eq!(argmax_row(&[nan, nan]), 0, "nothing valid: id 0");
        assert_eq!(argmax_row(&[f32::NEG_INFINITY, nan, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax_row(&[1.0, f32::INFINITY, f32::INFINITY]), 1);
        assert_eq!(argmax_row(&[-5.0, nan, -4.0]), 2, "NaN is never chosen");
        assert_eq!(argmax_row(&[]), 0);
        let x = [nan, 1.0, 3.0, 3.0, f32::NEG_INFINITY, 2.0];
        assert_eq!(reference(&x, 6), vec![argmax_row(&x)]);
    }

    #[test]
    fn rejects_bad_inputs() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        assert!(argmax(&Tensor::zeros(4, DType::F32, &dev)?).is_err());
        assert!(argmax(&Tensor::zeros((2, 4), DType::BF16, &dev)?).is_err());
        assert!(argmax(&Tensor::zeros((2, 0), DType::F32, &dev)?).is_err());
        Ok(())
    }

    #[test]
    #[ignore = "requires a CUDA device"]
    fn cuda_matches_reference() -> anyhow::Result<()> {
        Ok(harness::check_all_shapes(&Spec, &Device::new_cuda(0)?)?)
    }
}
