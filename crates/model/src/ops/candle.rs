//! The hot-path ops with candle's plain ops (`--kernels candle`): the reference path the
//! fused kernels are checked against, and the path measured on GPUs so far.
//!
//! `prepare` derives, once per step, what these ops need beyond the shared
//! [`StepBatch`]: the cos/sin rows of the step's positions, the slot index
//! `scatter_set` wants, an additive mask for the decode rows (over their padded
//! gathered contexts) and one per prefill chunk, and the row order that puts the
//! attention outputs (decode rows first, then each chunk) back in batch order.

use super::{Heads, HotOps};
use crate::attention::{attention_mask, decode_mask, decode_sdpa, gather, sdpa};
use crate::batch::StepBatch;
use crate::kv_cache::KvCache;
use crate::rope::RopeTable;
use crate::Result;
use candle_core::Tensor;

/// A prefill chunk's rows, its block table (on the device) and its mask.
struct Chunk {
    query_start: usize,
    query_len: usize,
    context_len: usize,
    table: Tensor,        // [num_blocks] u32
    mask: Option<Tensor>, // [query_len, context_len] f32
}

pub(crate) struct CandleOps<'a> {
    batch: &'a StepBatch,
    geo: Heads,
    cos: Tensor,        // [T, d / 2]
    sin: Tensor,        // [T, d / 2]
    slot_index: Tensor, // [T, kv_heads * d] u32: each row's slot, repeated
    decode_mask: Option<Tensor>,
    chunks: Vec<Chunk>,
    row_order: Option<Tensor>, // [T] u32
}

impl<'a> CandleOps<'a> {
    pub(crate) fn prepare(batch: &'a StepBatch, rope: &RopeTable, geo: Heads) -> Result<Self> {
        let t = batch.num_tokens;
        let kv_width = geo.kv_heads * geo.head_dim;
        let dev = batch.input_ids.device();
        let (cos, sin) = rope.rows(&batch.positions)?;
        let slot_index = batch
            .slots
            .reshape((t, 1))?
            .broadcast_as((t, kv_width))?
            .contiguous()?;
        let decode_mask = match &batch.decode {
            Some(meta) => Some(decode_mask(
                &batch.decode_context_lens,
                meta.block_tables.dim(1)? * batch.block_size,
                batch.sliding_window,
                dev,
            )?),
            None => None,
        };
        let mut chunks = Vec::with_capacity(batch.chunks.len());
        if let Some(meta) = &batch.prefill {
            for (i, c) in batch.chunks.iter().enumerate() {
                let mask = attention_mask(c.query_len, c.context_len, batch.sliding_window)
                    .map(|m| Tensor::from_vec(m, (c.query_len, c.context_len), dev))
                    .transpose()?;
                chunks.push(Chunk {
                    query_start: c.query_start,
                    query_len: c.query_len,
                    context_len: c.context_len,
                    table: meta.block_tables.get(i)?.narrow(0, 0, c.num_blocks)?,
                    mask,
                });
            }
        }
        let row_order = row_order(batch, dev)?;
        Ok(Self {
            batch,
            geo,
            cos,
            sin,
            slot_index,
            decode_mask,
            chunks,
            row_order,
        })
    }

    fn rope(&self, x: &Tensor) -> Result<Tensor> {
        let x4 = x.unsqueeze(0)?.contiguous()?; // [1, T, heads, d]
        Ok(candle_nn::rotary_emb::rope_thd(&x4, &self.cos, &self.sin)?.squeeze(0)?)
    }
}

/// Attention emits the decode rows first, then each chunk's rows: where each batch row
/// sits in that order (`None` when it is the identity).
fn row_order(batch: &StepBatch, dev: &candle_core::Device) -> Result<Option<Tensor>> {
    let t = batch.num_tokens;
    let mut order = vec![0u32; t];
    let emitted = batch.decode_rows.iter().map(|&r| r as usize).chain(
        batch
            .chunks
            .iter()
            .flat_map(|c| c.query_start..c.query_start + c.query_len),
    );
    for (pos, row) in emitted.enumerate() {
        order[row] = pos as u32;
    }
    if order.iter().enumerate().all(|(i, &p)| i as u32 == p) {
        return Ok(None);
    }
    Ok(Some(Tensor::from_vec(order, t, dev)?))
}

impl HotOps for CandleOps<'_> {
    fn add_rms_norm(
        &self,
        x: &Tensor,
        residual: &Tensor,
        w: &Tensor,
        eps: f32,
    ) -> Result<(Tensor, Tensor)> {
        let sum = (x + residual)?;
        Ok((candle_nn::ops::rms_norm(&sum, w, eps)?, sum))
    }

    fn rope_and_cache(&self, qkv: &Tensor, kv: &mut KvCache, layer: usize) -> Result<Tensor> {
        let Heads {
            heads,
            kv_heads,
            head_dim: d,
        } = self.geo;
        let t = qkv.dim(0)?;
        let part = |from: usize, n: usize| -> Result<Tensor> {
            Ok(qkv.narrow(1, from * d, n * d)?.reshape((t, n, d))?)
        };
        let q = self.rope(&part(0, heads)?)?; // [T, heads, d]
        let k = self
            .rope(&part(heads, kv_heads)?)?
            .reshape((t, kv_heads * d))?;
        let v = part(heads + kv_heads, kv_heads)?.reshape((t, kv_heads * d))?;
        let (k_cache, v_cache) = kv.layer_mut(layer);
        k_cache.scatter_set(&self.slot_index, &k.contiguous()?, 0)?;
        v_cache.scatter_set(&self.slot_index, &v.contiguous()?, 0)?;
        Ok(q)
    }

    fn attention(&self, q: &Tensor, kv: &KvCache, layer: usize) -> Result<Tensor> {
        let mut outs = Vec::with_capacity(self.chunks.len() + 1);
        if let (Some(meta), Some(mask)) = (&self.batch.decode, &self.decode_mask) {
            let q_d = q.index_select(&meta.rows, 0)?; // [B, heads, d]
            let (k, v) = kv.gather_padded(layer, &meta.block_tables)?;
            outs.push(decode_sdpa(&q_d, &k, &v, mask)?);
        }
        for c in &self.chunks {
            let q_c = q.narrow(0, c.query_start, c.query_len)?;
            let (k, v) = gather(kv, layer, &c.table, c.context_len)?;
            outs.push(sdpa(&q_c, &k, &v, c.mask.as_ref())?);
        }
        let out = Tensor::cat(&outs, 0)?; // decode rows first, then the chunks
        Ok(match &self.row_order {
            Some(order) => out.index_select(order, 0)?,
            None => out,
        })
    }

    fn silu_mul(&self, gate_up: &Tensor) -> Result<Tensor> {
        let inter = gate_up.dim(1)? / 2;
        let gate = gate_up.narrow(1, 0, inter)?;
        let up = gate_up.narrow(1, inter, inter)?;
        Ok((candle_nn::ops::silu(&gate)? * up)?)
    }
}
