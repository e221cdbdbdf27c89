//! Attention over the paged KV cache with candle ops: the math of the `--kernels
//! candle` path (ops/candle.rs; the fused path is engine-kernels' paged_decode /
//! paged_prefill).
//!
//! For each sequence the new tokens are the last `query_len` of its `context_len`
//! positions; they attend to the sequence's cached context plus themselves (causal),
//! read through its block table, optionally restricted to a sliding window (the rule is
//! engine_kernels::paged's, shared with the kernels). Decode rows are attended to
//! together over a padded gather of their blocks; prefill chunks one at a time.

use crate::kv_cache::KvCache;
use crate::Result;
use candle_core::{DType, Device, Tensor};
use engine_kernels::paged;

/// Additive mask for decode rows over their padded gathered contexts:
/// [B, 1, 1, width] f32, 0 where row b's query (at position ctx_b - 1) sees the key,
/// -inf for keys outside its window and for padding.
pub fn decode_mask(
    context_lens: &[u32],
    width: usize,
    sliding_window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let b = context_lens.len();
    let mut mask = vec![f32::NEG_INFINITY; b * width];
    for (row, &ctx) in mask.chunks_mut(width.max(1)).zip(context_lens) {
        let ctx = (ctx as usize).min(width);
        let first = paged::first_visible(ctx.saturating_sub(1), sliding_window);
        row[first..ctx].fill(0.0);
    }
    Ok(Tensor::from_vec(mask, (b, 1, 1, width), device)?)
}

/// Gather one sequence's first `context_len` tokens of one layer through its block
/// table ([num_blocks] u32). Returns K and V as [context_len, kv_heads, head_dim].
pub fn gather(
    kv: &KvCache,
    layer: usize,
    block_table: &Tensor,
    context_len: usize,
) -> Result<(Tensor, Tensor)> {
    let nb = block_table.dim(0)?;
    let (k, v) = kv.gather_blocks(layer, block_table)?; // [nb * block_size, kv_heads, d]
    let (k, v) = (k.narrow(0, 0, context_len)?, v.narrow(0, 0, context_len)?);
    debug_assert!(nb * kv.block_size() >= context_len);
    Ok((k, v))
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

/// Additive mask [query_len, context_len] (row-major): 0 where allowed, -inf elsewhere.
/// Query `i` sits at absolute position `context_len - query_len + i`; key `j` is allowed
/// when [`paged::visible`]. `None` when nothing is hidden (a lone query with its whole
/// context in the window).
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
    for (i, row) in mask.chunks_mut(context_len).enumerate() {
        for (j, m) in row.iter_mut().enumerate() {
            if !paged::visible(first + i, j, sliding_window) {
                *m = f32::NEG_INFINITY;
            }
        }
    }
    Some(mask)
}

/// Scaled dot-product attention of one sequence's new tokens against its context.
/// `q`: [query_len, num_heads, head_dim]; `k`, `v`: [context_len, num_kv_heads, head_dim].
/// Returns [query_len, num_heads * head_dim].
/// `mask`: [query_len, context_len] f32 from [`attention_mask`], on the device.
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
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
            let mask = mask.reshape((len, ctx))?;
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
