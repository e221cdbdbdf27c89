//! `rope`'s cos/sin table for tests and benches and its [`KernelSpec`] (declared from
//! rope.rs).

use super::{reference, rope_inplace};
use crate::error::Result;
use crate::harness::{self, BenchCase, Check, KernelSpec};
use candle_core::{DType, Device, Tensor};

/// `cos_sin` `[max_pos, d]` for `theta = 10000` as f32 on the host (before rounding).
pub fn cos_sin_table(max_pos: usize, d: usize) -> Vec<f32> {
    let half = d / 2;
    let mut out = vec![0f32; max_pos * d];
    for p in 0..max_pos {
        for i in 0..half {
            let a = p as f64 * 10000f64.powf(-2.0 * i as f64 / d as f64);
            out[p * d + i] = a.cos() as f32;
            out[p * d + half + i] = a.sin() as f32;
        }
    }
    out
}

/// `t` seeded random positions in `0..max_pos`.
pub(crate) fn random_positions(t: usize, max_pos: usize, seed: u64) -> Vec<u32> {
    harness::random(t, 1.0, seed)
        .iter()
        .map(|u| (((u + 1.0) / 2.0 * max_pos as f32) as u32).min(max_pos as u32 - 1))
        .collect()
}

/// `engine kernels test|bench rope`: shape `tokens,heads,head_dim,neox` (neox 1 =
/// half-split, 0 = interleaved). Positions are random in `0..2 * tokens + 7`.
pub struct Spec;

impl Spec {
    /// x, cos_sin, positions on `dev`, and their host f32 values (rounded to `dtype`).
    #[allow(clippy::type_complexity)]
    fn inputs(
        &self,
        dev: &Device,
        dtype: DType,
        shape: &[usize],
        seed: u64,
    ) -> Result<(
        (Tensor, Tensor, Tensor),
        (Vec<f32>, Vec<f32>, Vec<u32>),
        bool,
    )> {
        let [t, heads, d, neox] = harness::dims::<4>(shape, self.shape_names())?;
        let max_pos = 2 * t + 7;
        let (x, xh) = harness::random_input(&[t, heads, d], 2.0, seed, dtype, dev)?;
        let cs = Tensor::from_vec(cos_sin_table(max_pos, d), (max_pos, d), &Device::Cpu)?
            .to_dtype(dtype)?;
        let csh = harness::host_f32(&cs)?;
        let pos = random_positions(t, max_pos, seed + 1);
        let p = Tensor::from_vec(pos.clone(), t, dev)?;
        Ok(((x, cs.to_device(dev)?, p), (xh, csh, pos), neox != 0))
    }
}

impl KernelSpec for Spec {
    fn name(&self) -> &'static str {
        "rope"
    }
    fn about(&self) -> &'static str {
        "rotary embedding in place (neox half-split or interleaved), cos/sin by position"
    }
    fn shape_names(&self) -> &'static str {
        "tokens,heads,head_dim,neox"
    }
    fn test_shapes(&self) -> Vec<Vec<usize>> {
        let mut shapes = Vec::new();
        for neox in [1, 0] {
            for (t, h, d) in [
                (1, 1, 2),
                (3, 4, 128),
                (5, 2, 80),
                (7, 3, 64),
                (4, 3, 36),
                (33, 8, 128),
                (65, 1, 6),
            ] {
                shapes.push(vec![t, h, d, neox]);
            }
        }
        shapes
    }
    fn bench_shapes(&self) -> Vec<Vec<usize>> {
        [1, 32, 256, 4096]
            .iter()
            .map(|&t| vec![t, 32, 128, 1])
            .collect()
    }
    fn check(&self, dev: &Device, dtype: DType, shape: &[usize], seed: u64) -> Result<Check> {
        let [_, heads, d, _] = harness::dims::<4>(shape, self.shape_names())?;
        let ((x, cs, p), (xh, csh, pos), neox) = self.inputs(dev, dtype, shape, seed)?;
        rope_inplace(&x, &cs, &p, neox)?;
        let want = reference(&xh, &csh, &pos, heads, d, neox);
        Ok(harness::compare(
            &harness::host_f32(&x)?,
            &want,
            harness::tolerance(dtype),
        ))
    }
    fn bench(&self, dev: &Device, dtype: DType, shape: &[usize]) -> Result<BenchCase> {
        let [t, heads, d, _] = harness::dims::<4>(shape, self.shape_names())?;
        let ((x, cs, p), _, neox) = self.inputs(dev, dtype, shape, 1)?;
        // x read and written, one cos/sin row per token, the positions.
        let bytes = (2 * t * heads * d + t * d) * dtype.size_in_bytes() + 4 * t;
        Ok(BenchCase {
            run: Box::new(move || rope_inplace(&x, &cs, &p, neox)),
            bytes: bytes as u64,
            flops: (3 * t * heads * d) as u64,
        })
    }
}
