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
//! This is storage: the op sets write new tokens' K/V at their slots (`slot_mapping`,
//! through [`KvCache::layer_mut`]) and read them through block tables (the fused
//! kernels directly; the candle path gathers blocks with [`KvCache::gather_blocks`]).
//! Nothing here knows which block belongs to whom: that is the block pool's job
//! (scheduler crate).

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

    /// One layer's K and V caches: [num_slots, num_kv_heads * head_dim] each.
    pub fn layer(&self, layer: usize) -> (&Tensor, &Tensor) {
        (&self.k[layer], &self.v[layer])
    }

    /// One layer's K and V caches, to write new tokens into (in place).
    pub fn layer_mut(&mut self, layer: usize) -> (&mut Tensor, &mut Tensor) {
        (&mut self.k[layer], &mut self.v[layer])
    }

    /// Gather a padded batch of sequences' K and V of one layer.
    /// `block_tables`: [B, max_blocks] u32 (padding entries may name any block).
    /// Returns K and V as [B, max_blocks * block_size, num_kv_heads, head_dim].
    pub fn gather_padded(&self, layer: usize, block_tables: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, max_blocks) = block_tables.dims2()?;
        let (k, v) = self.gather_blocks(layer, &block_tables.flatten_all()?)?;
        let shape = (
            b,
            max_blocks * self.block_size,
            self.num_kv_heads,
            self.head_dim,
        );
        Ok((k.reshape(shape)?, v.reshape(shape)?))
    }

    /// K and V of the listed blocks of one layer, in order: `blocks` [n] u32 ->
    /// [n * block_size, num_kv_heads, head_dim] each.
    pub fn gather_blocks(&self, layer: usize, blocks: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = blocks.dim(0)?;
        let width = self.num_kv_heads * self.head_dim;
        let gather = |cache: &Tensor| -> Result<Tensor> {
            let by_block = cache.reshape((self.num_blocks, self.block_size * width))?;
            Ok(by_block
                .index_select(blocks, 0)? // [n, block_size * width]
                .reshape((n * self.block_size, self.num_kv_heads, self.head_dim))?)
        };
        Ok((gather(&self.k[layer])?, gather(&self.v[layer])?))
    }
}
