//! Attention over the paged KV cache with candle ops (the `--kernels candle` path; the
//! fused path is engine-kernels' paged_decode / paged_prefill).
//!
//! The batch is flattened: every scheduled token of every sequence is one row. For each
//! sequence the new tokens are the last `query_len` of its `context_len` positions; they
//! attend to the sequence's cached context plus themselves (causal), read through its
//! block table, optionally restricted to a sliding window. Prefill, chunked prefill and
//! decode are the same computation with different `query_len`.

use crate::inputs::CandleAttn;
use crate::kv_cache::KvCache;
use crate::Result;
use candle_core::{DType, Tensor};

/// Host-side description of one sequence in a forward batch.
#[derive(Debug, Clone)]
pub struct SeqSlice {
    /// First row of this sequence's tokens in the flattened batch.
    pub query_start: usize,
    /// Number of new tokens this step.
    pub query_len: usize,
    /// Tokens in the cache after this step (cached + new).
    pub context_len: usize,
    /// The sequence's blocks, in order: [num_blocks] u32.
    pub block_table: Tensor,
}

/// The decoding sequences of a batch (one new token each), attended to together over a
/// padded gather of their blocks: a handful of kernels however many sequences decode.
#[derive(Debug, Clone)]
pub struct DecodeBatch {
    /// Rows of these sequences' tokens in the flattened batch: [B] u32.
    pub rows: Tensor,
    /// Block tables padded to the longest: [B, max_blocks] u32.
    pub block_tables: Tensor,
    /// Additive mask over the padded context: [B, 1, 1, max_blocks * block_size] f32
    /// (0 for positions the query may see, -inf for padding and outside the window).
    pub mask: Tensor,
}

impl DecodeBatch {
    /// Build from host data: each entry is (row, context_len, block_table).
    pub fn build(
        entries: &[(u32, usize, &[u32])],
        block_size: usize,
        sliding_window: Option<usize>,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let b = entries.len();
        let max_blocks = entries.iter().map(|e| e.2.len()).max().unwrap_or(1).max(1);
        let width = max_blocks * block_size;
        let mut tables = vec![0u32; b * max_blocks];
        let mut mask = vec![f32::NEG_INFINITY; b * width];
        for (i, (_, ctx, table)) in entries.iter().enumerate() {
            tables[i * max_blocks..i * max_blocks + table.len()].copy_from_slice(table);
            let first = sliding_window.map_or(0, |w| ctx.saturating_sub(w));
            mask[i * width + first..i * width + ctx].fill(0.0);
        }
        let rows: Vec<u32> = entries.iter().map(|e| e.0).collect();
        Ok(Self {
            rows: Tensor::from_vec(rows, b, device)?,
            block_tables: Tensor::from_vec(tables, (b, max_blocks), device)?,
            mask: Tensor::from_vec(mask, (b, 1, 1, width), device)?,
        })
    }
}

/// Attention of B decoding queries over their padded contexts.
/// `q`: [B, heads, d]; `k`, `v`: [B, ctx, kv_heads, d]. Returns [B, heads * d].
pub fn decode_sdpa(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, heads, d) = q.dims3()?;
    let kv_heads = k.dim(2)?;
    let group = heads / kv_heads;
    let dtype = q.dtype();
    let q = q.reshape((b, kv_heads, group, d))?;
    let k = k.transpose(1, 2)?.contiguous()?; // [B, kv_heads, ctx, d]
    let v = v.transpose(1, 2)?.contiguous()?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.matmul(&k.transpose(2, 3)?)? * scale)?.to_dtype(DType::F32)?; // [B, kv_heads, group, ctx]
    let scores = scores.broadcast_add(mask)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
    Ok(probs.matmul(&v)?.reshape((b, heads * d))?) // [B, kv_heads, group, d] -> [B, heads*d]
}

/// Additive mask [query_len, context_len]: 0 where allowed, -inf elsewhere.
/// Query `i` sits at absolute position `context_len - query_len + i`; key `j` is allowed
/// when `j <= pos` and, with a window `w`, `pos - j < w` (the Hugging Face convention:
/// a window of `w` positions including the query's own).
pub fn attention_mask(
    query_len: usize,
    context_len: usize,
    sliding_window: Option<usize>,
) -> Option<Vec<f32>> {
    let first = context_len - query_len;
    let window_hides = sliding_window.is_some_and(|w| context_len > w);
    if query_len == 1 && !window_hides {
        return None;
    }
    let mut mask = vec![0f32; query_len * context_len];
    for i in 0..query_len {
        let pos = first + i;
        for j in 0..context_len {
            let in_window = sliding_window.is_none_or(|w| pos - j.min(pos) < w);
            if j > pos || !in_window {
                mask[i * context_len + j] = f32::NEG_INFINITY;
            }
        }
    }
    Some(mask)
}

/// Scaled dot-product attention of one sequence's new tokens against its context.
/// `q`: [query_len, num_heads, head_dim]; `k`, `v`: [context_len, num_kv_heads, head_dim].
/// Returns [query_len, num_heads * head_dim].
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&[f32]>) -> Result<Tensor> {
    let (len, heads, d) = q.dims3()?;
    let (ctx, kv_heads, _) = k.dims3()?;
    let group = heads / kv_heads;
    let dtype = q.dtype();
    // Heads h = kv * group + g share kv head `kv`: fold the group into the query rows.
    let q = q
        .transpose(0, 1)? // [heads, len, d]
        .reshape((kv_heads, group * len, d))?
        .contiguous()?;
    let k = k.transpose(0, 1)?.contiguous()?; // [kv_heads, ctx, d]
    let v = v.transpose(0, 1)?.contiguous()?; // [kv_heads, ctx, d]
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?; // [kv_heads, group*len, ctx]
    let scores = match mask {
        None => scores,
        Some(mask) => {
            let mask = Tensor::from_slice(mask, (len, ctx), scores.device())?;
            scores
                .reshape((kv_heads, group, len, ctx))?
                .broadcast_add(&mask)?
                .reshape((kv_heads, group * len, ctx))?
        }
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
    let out = probs.matmul(&v)?; // [kv_heads, group*len, d]
    let out = out
        .reshape((heads, len, d))?
        .transpose(0, 1)? // [len, heads, d]
        .reshape((len, heads * d))?;
    Ok(out)
}

/// Attention for a whole flattened batch: store the new K/V, then attend. Decoding
/// sequences go together; the others (prefill chunks) one by one.
/// `q`: [num_tokens, heads, d]; `k`, `v`: [num_tokens, kv_heads, d].
pub fn paged_attention(
    layer: usize,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv: &KvCache,
    attn: &CandleAttn,
    sliding_window: Option<usize>,
) -> Result<Tensor> {
    kv.write(layer, k, v, &attn.slot_index)?;
    let mut outs = Vec::with_capacity(attn.seqs.len() + 1);
    if let Some(db) = &attn.decode {
        let q_d = q.index_select(&db.rows, 0)?; // [B, heads, d]
        let (k_d, v_d) = kv.gather_batch(layer, &db.block_tables)?;
        outs.push(decode_sdpa(&q_d, &k_d, &v_d, &db.mask)?);
    }
    for s in &attn.seqs {
        let q_s = q.narrow(0, s.query_start, s.query_len)?;
        let (k_s, v_s) = kv.gather(layer, &s.block_table, s.context_len)?;
        let mask = attention_mask(s.query_len, s.context_len, sliding_window);
        outs.push(sdpa(&q_s, &k_s, &v_s, mask.as_deref())?);
    }
    let out = Tensor::cat(&outs, 0)?; // decode rows first, then the others
    Ok(match &attn.row_order {
        Some(order) => out.index_select(order, 0)?,
        None => out,
    })
}

/// `x.max(D::Minus1)` shaped helper kept for tests of masks.
#[cfg(test)]
fn row_is_masked(mask: &[f32], ctx: usize, i: usize, j: usize) -> bool {
    mask[i * ctx + j] == f32::NEG_INFINITY
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::D;

    #[test]
    fn causal_mask_for_a_chunk_after_cached_context() {
        // 3 new tokens at positions 2, 3, 4 of a 5-token context.
        let m = attention_mask(3, 5, None).unwrap();
        for (i, pos) in [2usize, 3, 4].iter().enumerate() {
            for j in 0..5 {
                assert_eq!(row_is_masked(&m, 5, i, j), j > *pos, "i={i} j={j}");
            }
        }
    }

    #[test]
    fn sliding_window_keeps_w_positions_including_self() {
        let m = attention_mask(1, 10, Some(4)).unwrap();
        let allowed: Vec<usize> = (0..10).filter(|&j| !row_is_masked(&m, 10, 0, j)).collect();
        assert_eq!(allowed, vec![6, 7, 8, 9]);
        assert!(attention_mask(1, 4, Some(4)).is_none());
    }

    #[test]
    fn sdpa_single_key_returns_its_value() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 4, 8), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (1, 2, 8), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (1, 2, 8), &dev)?;
        let out = sdpa(&q, &k, &v, None)?.reshape((4, 8))?;
        // heads 0,1 use kv head 0; heads 2,3 use kv head 1.
        let v = v.reshape((2, 8))?;
        let expect = Tensor::cat(&[&v.get(0)?, &v.get(0)?, &v.get(1)?, &v.get(1)?], 0)?;
        let diff = (out.flatten_all()? - expect)?.abs()?.max(D::Minus1)?;
        assert!(diff.to_scalar::<f32>()? < 1e-6);
        Ok(())
    }
}
