//! The hot-path ops on engine-kernels (`--kernels fused`): CUDA kernels on a GPU, their
//! CPU ports on the host. They read the step's [`StepBatch`] metadata as it is: nothing
//! to prepare per step. q, k and v stay in the fused projection's rows: one
//! `rope_and_cache` launch rotates q and k there in place and stores the rotated k and
//! the v at the rows' cache slots, and the attention kernels read q from there, so the
//! split costs no copy and no launch.

use super::{Heads, HotOps};
use crate::batch::StepBatch;
use crate::kv_cache::KvCache;
use crate::rope::RopeTable;
use crate::Result;
use candle_core::Tensor;
use engine_kernels::paged::QueryRows;
use engine_kernels::Kernels;

pub(crate) struct FusedOps<'a> {
    batch: &'a StepBatch,
    rope: &'a RopeTable,
    geo: Heads,
    /// The decoder's kernel functions, loaded once.
    kernels: &'a Kernels,
}

impl<'a> FusedOps<'a> {
    pub(crate) fn prepare(
        batch: &'a StepBatch,
        rope: &'a RopeTable,
        geo: Heads,
        kernels: &'a Kernels,
    ) -> Self {
        Self {
            batch,
            rope,
            geo,
            kernels,
        }
    }

    fn queries<'q>(&self, qkv: &'q Tensor) -> QueryRows<'q> {
        QueryRows {
            rows: qkv,
            heads: self.geo.heads,
            head_dim: self.geo.head_dim,
        }
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
        Ok(self.kernels.add_rms_norm(x, residual, w, eps)?)
    }

    fn rope_and_cache(&self, qkv: &Tensor, kv: &mut KvCache, layer: usize) -> Result<Tensor> {
        // A fresh GEMM output: safe to rotate in place.
        let (k_cache, v_cache) = kv.layer_mut(layer);
        let (pos, slots) = (&self.batch.positions, &self.batch.slots);
        self.rope
            .rotate_and_cache(self.kernels, qkv, self.geo, pos, (k_cache, v_cache), slots)?;
        Ok(qkv.clone())
    }

    fn attention(&self, qkv: &Tensor, kv: &KvCache, layer: usize) -> Result<Tensor> {
        let t = qkv.dim(0)?;
        let width = self.geo.heads * self.geo.head_dim;
        // Every row is written by exactly one of the two kernels.
        let out =
            engine_kernels::output(&[t, width], qkv.dtype(), qkv.device(), Default::default())?;
        let (k_cache, v_cache) = kv.layer(layer);
        if let Some(meta) = &self.batch.decode {
            let q = self.queries(qkv);
            self.kernels
                .paged_decode_rows(&out, q, k_cache, v_cache, meta)?;
        }
        if let Some(meta) = &self.batch.prefill {
            let q = self.queries(qkv);
            self.kernels
                .paged_prefill_rows(&out, q, k_cache, v_cache, meta)?;
        }
        Ok(out)
    }

    fn silu_mul(&self, gate_up: &Tensor) -> Result<Tensor> {
        Ok(self.kernels.silu_mul(gate_up)?)
    }
}
