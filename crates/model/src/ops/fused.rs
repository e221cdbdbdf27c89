//! The hot-path ops on engine-kernels (`--kernels fused`): CUDA kernels on a GPU, their
//! CPU ports on the host. They read the step's [`StepBatch`] metadata as it is: nothing
//! to prepare per step.

use super::HotOps;
use crate::batch::StepBatch;
use crate::kv_cache::KvCache;
use crate::rope::RopeTable;
use crate::Result;
use candle_core::Tensor;
use engine_kernels::{add_rms_norm, paged_decode, paged_prefill, reshape_and_cache, silu_mul};

pub(crate) struct FusedOps<'a> {
    batch: &'a StepBatch,
    rope: &'a RopeTable,
}

impl<'a> FusedOps<'a> {
    pub(crate) fn prepare(batch: &'a StepBatch, rope: &'a RopeTable) -> Self {
        Self { batch, rope }
    }
}

impl HotOps for FusedOps<'_> {
    fn add_rms_norm(
        &self,
        x: &Tensor,
        residual: &Tensor,
        w: &Tensor,
        eps: f32,
    ) -> Result<(Tensor, Tensor)> {
        Ok(add_rms_norm::add_rms_norm(x, residual, w, eps)?)
    }

    fn rope_and_cache(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        kv: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor> {
        // q and k are fresh copies out of the qkv split: safe to rotate in place.
        let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
        self.rope.rotate_inplace(&q, &self.batch.positions)?;
        self.rope.rotate_inplace(&k, &self.batch.positions)?;
        let (k_cache, v_cache) = kv.layer_mut(layer);
        reshape_and_cache::reshape_and_cache(k_cache, &k, &self.batch.slots)?;
        reshape_and_cache::reshape_and_cache(v_cache, &v, &self.batch.slots)?;
        Ok(q)
    }

    fn attention(&self, q: &Tensor, kv: &KvCache, layer: usize) -> Result<Tensor> {
        let (t, heads, d) = q.dims3()?;
        // Every row is written by exactly one of the two kernels.
        let out =
            engine_kernels::output(&[t, heads * d], q.dtype(), q.device(), Default::default())?;
        let (k_cache, v_cache) = kv.layer(layer);
        if let Some(meta) = &self.batch.decode {
            paged_decode::paged_decode(&out, q, k_cache, v_cache, meta)?;
        }
        if let Some(meta) = &self.batch.prefill {
            paged_prefill::paged_prefill(&out, q, k_cache, v_cache, meta)?;
        }
        Ok(out)
    }

    fn silu_mul(&self, gate_up: &Tensor) -> Result<Tensor> {
        Ok(silu_mul::silu_mul(gate_up)?)
    }
}
