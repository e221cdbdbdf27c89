//! The decoder's hot-path ops, in two implementations that share one call site (the
//! layer function in decoder.rs):
//!
//! | op                | [`CandleOps`] (`--kernels candle`, the reference) | [`FusedOps`] (`--kernels fused`) |
//! |-------------------|--------------------------------------|-----------------------------------|
//! | `add_rms_norm`    | `x + residual`, then `rms_norm`       | engine-kernels `add_rms_norm`, one pass |
//! | `rope_and_cache`  | split qkv (copies), `rope_thd`, `scatter_set` | engine-kernels `rope_and_cache`: q and k rotated in place in the qkv rows, the rotated k and the v stored at the slots, one launch (no copies) |
//! | `attention`       | gathers + `matmul`/`softmax` per chunk, decode rows together | `paged_decode` + `paged_prefill`, q read from the qkv rows |
//! | `silu_mul`        | `silu(gate) * up` on views            | `silu_mul` on `[gate \| up]` rows |
//!
//! Both read the same [`StepBatch`]; each prepares what it derives from it (the candle
//! path's masks, cos/sin rows and slot index) once per step, in `prepare`, never per
//! layer.

mod candle;
mod fused;

pub(crate) use candle::CandleOps;
pub(crate) use fused::FusedOps;

use crate::kv_cache::KvCache;
use crate::Result;
use candle_core::Tensor;

/// Attention geometry: query heads, kv heads, head size (the layout of the fused qkv
/// rows, `[q heads | k heads | v heads]`).
pub(crate) type Heads = engine_kernels::rope_and_cache::QkvHeads;

/// One step's hot-path ops (see the module doc). Shapes: `T` rows, `heads` query heads,
/// `kv_heads`, head size `d`.
pub(crate) trait HotOps {
    /// `rms_norm(x) * w` over the last dimension.
    fn rms_norm(&self, x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(x, w, eps)?)
    }

    /// `(rms_norm(x + residual) * w, x + residual)`; x, residual: [T, hidden].
    fn add_rms_norm(
        &self,
        x: &Tensor,
        residual: &Tensor,
        w: &Tensor,
        eps: f32,
    ) -> Result<(Tensor, Tensor)>;

    /// Rotate q and k of the fused projection's rows `qkv` [T, (heads + 2 kv_heads) * d]
    /// at the step's positions and store k and v at the step's slots of layer `layer`.
    /// Returns the rotated queries in the layout this op set's `attention` reads.
    fn rope_and_cache(&self, qkv: &Tensor, kv: &mut KvCache, layer: usize) -> Result<Tensor>;

    /// Attention of the step's queries (from `rope_and_cache`) over layer `layer`'s paged
    /// cache, the new K/V already stored -> [T, heads * d].
    fn attention(&self, q: &Tensor, kv: &KvCache, layer: usize) -> Result<Tensor>;

    /// `silu(gate) * up` of gate_up [T, 2 * inter] (rows `[gate | up]`) -> [T, inter].
    fn silu_mul(&self, gate_up: &Tensor) -> Result<Tensor>;
}
