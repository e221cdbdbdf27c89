//! The paged KV cache: K and V of every layer live in fixed-size blocks.
//!
//! ```text
//!  slot = block_id * block_size + offset_in_block
//!
//!  layer l:  k[l]: [num_blocks * block_size, num_kv_heads * head_dim]
//!            v[l]: same
//!
//!  sequence s, block_table = [7, 2, 9]      (block_size 4, context_len 10)
//!    positions 0..4  -> block 7, slots 28..32
//!    positions 4..8  -> block 2, slots  8..12
//!    positions 8..10 -> block 9, slots 36..38
//! ```
//!
//! Writes scatter new tokens' K/V to their slots (`slot_mapping`); reads gather a
//! sequence's blocks through its `block_table`. Nothing here knows which block belongs to
//! whom: that is the block pool's job (scheduler crate).

use crate::config::DecoderConfig;
use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};

/// K and V tensors for every layer, addressed by slot.
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    num_blocks: usize,
    block_size: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl KvCache {
    /// Allocate `num_blocks` blocks of `block_size` tokens for every layer.
    pub fn new(
        cfg: &DecoderConfig,
        num_blocks: usize,
        block_size: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if num_blocks == 0 || block_size == 0 {
            return Err(ModelError::Input(format!(
                "KV cache needs num_blocks > 0 and block_size > 0 (got {num_blocks}, {block_size})"
            )));
        }
        let width = cfg.num_key_value_heads * cfg.head_dim;
        let shape = (num_blocks * block_size, width);
        let mut k = Vec::with_capacity(cfg.num_hidden_layers);
        let mut v = Vec::with_capacity(cfg.num_hidden_layers);
        for _ in 0..cfg.num_hidden_layers {
            k.push(Tensor::zeros(shape, dtype, device)?);
            v.push(Tensor::zeros(shape, dtype, device)?);
        }
        Ok(Self {
            k,
            v,
            num_blocks,
            block_size,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
        })
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Bytes held by all layers' K and V.
    pub fn size_bytes(&self) -> u64 {
        self.k
            .iter()
            .chain(self.v.iter())
            .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
            .sum()
    }

    /// Store new tokens' K and V of one layer at their slots.
    /// `k`, `v`: [num_tokens, num_kv_heads, head_dim]; `slot_index`: [num_tokens, kv_width]
    /// u32 (each token's slot repeated across the row, see `ForwardInputs`).
    pub fn write(&self, layer: usize, k: &Tensor, v: &Tensor, slot_index: &Tensor) -> Result<()> {
        let (n, _, _) = k.dims3()?;
        let width = self.num_kv_heads * self.head_dim;
        let k = k.reshape((n, width))?.contiguous()?;
        let v = v.reshape((n, width))?.contiguous()?;
        self.k[layer].scatter_set(slot_index, &k, 0)?;
        self.v[layer].scatter_set(slot_index, &v, 0)?;
        Ok(())
    }

    /// Store new tokens' K and V of one layer at their slots with the fused
    /// `reshape_and_cache` kernel. `k`, `v`: [num_tokens, num_kv_heads, head_dim];
    /// `slots`: [num_tokens] u32.
    pub fn write_slots(&self, layer: usize, k: &Tensor, v: &Tensor, slots: &Tensor) -> Result<()> {
        engine_kernels::reshape_and_cache::reshape_and_cache(&self.k[layer], k, slots)?;
        engine_kernels::reshape_and_cache::reshape_and_cache(&self.v[layer], v, slots)?;
        Ok(())
    }

    /// One layer's K and V caches: [num_slots, num_kv_heads * head_dim] each.
    pub fn layer(&self, layer: usize) -> (&Tensor, &Tensor) {
        (&self.k[layer], &self.v[layer])
    }

    /// Gather a padded batch of sequences' K and V of one layer.
    /// `block_tables`: [B, max_blocks] u32 (padding entries may name any block).
    /// Returns K and V as [B, max_blocks * block_size, num_kv_heads, head_dim].
    pub fn gather_batch(&self, layer: usize, block_tables: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, max_blocks) = block_tables.dims2()?;
        let width = self.num_kv_heads * self.head_dim;
        let flat = block_tables.flatten_all()?;
        let gather = |cache: &Tensor| -> Result<Tensor> {
            let blocks = cache.reshape((self.num_blocks, self.block_size * width))?;
            Ok(blocks
                .index_select(&flat, 0)? // [B * max_blocks, block_size * width]
                .reshape((
                    b,
                    max_blocks * self.block_size,
                    self.num_kv_heads,
                    self.head_dim,
                ))?)
        };
        Ok((gather(&self.k[layer])?, gather(&self.v[layer])?))
    }

    /// Gather one sequence's first `context_len` tokens of one layer.
    /// `block_table`: [num_blocks_of_seq] u32. Returns K and V as
    /// [context_len, num_kv_heads, head_dim].
    pub fn gather(
        &self,
        layer: usize,
        block_table: &Tensor,
        context_len: usize,
    ) -> Result<(Tensor, Tensor)> {
        let nb = block_table.dim(0)?;
        if nb * self.block_size < context_len {
            return Err(ModelError::Input(format!(
                "block table of {nb} blocks cannot hold {context_len} tokens"
            )));
        }
        let width = self.num_kv_heads * self.head_dim;
        let gather = |cache: &Tensor| -> Result<Tensor> {
            let blocks = cache.reshape((self.num_blocks, self.block_size * width))?;
            let t = blocks
                .index_select(block_table, 0)? // [nb, block_size * width]
                .reshape((nb * self.block_size, self.num_kv_heads, self.head_dim))?
                .narrow(0, 0, context_len)?;
            Ok(t)
        };
        Ok((gather(&self.k[layer])?, gather(&self.v[layer])?))
    }
}
