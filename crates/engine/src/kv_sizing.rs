//! KV-cache sizing as a pure function: settings and memory figures in, blocks out.
//!
//! [`Engine::new`](crate::Engine::new) calls [`kv_cache_size`] with the figure its device
//! reports (`(free, total)` on CUDA, none on the CPU); the capacity planner
//! (`engine plan`) calls the same function with a figure for a GPU it may not have. One
//! code path, so the planner's block count is the engine's.
//!
//! ```text
//!  num_blocks given            -> that many blocks (at least one)
//!  kv_cache_memory_bytes given -> bytes / bytes_per_block
//!  device figure (CUDA)        -> (total x gpu_memory_utilization
//!                                  - (total - free) - activation reserve) / bytes_per_block
//!  neither (CPU)               -> 1 GiB / bytes_per_block
//!  bytes_per_block = kv_bytes_per_token(kv dtype) x block_size
//! ```
//! `total - free` is what is already resident when the cache is sized: the weights
//! (the engine sizes the cache after loading them) and anything else on the device.

use crate::engine::EngineConfig;
use candle_core::DType;
use engine_model::DecoderConfig;
use serde::Serialize;

/// The KV cache's size when neither the configuration nor the device gives one.
pub const DEFAULT_KV_CACHE_BYTES: u64 = 1 << 30;

/// A device's memory, in bytes, at the moment the cache is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeviceMemory {
    pub free: u64,
    pub total: u64,
}

/// Which rule decided the cache's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SizedBy {
    /// `num_blocks` was configured.
    NumBlocks,
    /// `kv_cache_memory_bytes` was configured.
    KvCacheMemory,
    /// The device's memory figure and `gpu_memory_utilization`.
    DeviceMemory,
    /// No figure at all: [`DEFAULT_KV_CACHE_BYTES`].
    Default,
}

/// The cache the engine allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KvCacheSize {
    pub num_blocks: usize,
    pub bytes_per_block: u64,
    /// The byte budget the blocks were cut from (`num_blocks x bytes_per_block` when
    /// the block count was configured).
    pub budget_bytes: u64,
    /// The activation reserve subtracted (device sizing only, else 0).
    pub reserve_bytes: u64,
    pub sized_by: SizedBy,
}

impl KvCacheSize {
    /// Bytes the blocks occupy.
    pub fn bytes(&self) -> u64 {
        self.num_blocks as u64 * self.bytes_per_block
    }

    /// Tokens the blocks hold.
    pub fn tokens(&self, block_size: usize) -> usize {
        self.num_blocks * block_size
    }
}

/// The cache for `cfg`, a model of `model`'s shape whose activations are `dtype` and
/// whose KV cache is stored as `kv_dtype`, given the device's memory figure (`None`:
/// no figure, as on the CPU).
pub fn kv_cache_size(
    cfg: &EngineConfig,
    model: &DecoderConfig,
    dtype: DType,
    kv_dtype: DType,
    memory: Option<DeviceMemory>,
) -> KvCacheSize {
    let bytes_per_block = (model.kv_bytes_per_token(kv_dtype) * cfg.block_size as u64).max(1);
    let blocks_of = |bytes: u64| ((bytes / bytes_per_block) as usize).max(1);
    if let Some(n) = cfg.num_blocks {
        let n = n.max(1);
        return KvCacheSize {
            num_blocks: n,
            bytes_per_block,
            budget_bytes: n as u64 * bytes_per_block,
            reserve_bytes: 0,
            sized_by: SizedBy::NumBlocks,
        };
    }
    let (budget_bytes, reserve_bytes, sized_by) = match (cfg.kv_cache_memory_bytes, memory) {
        (Some(b), _) => (b, 0, SizedBy::KvCacheMemory),
        (None, Some(m)) => {
            let reserve = crate::device::activation_reserve_bytes(
                model,
                dtype.size_in_bytes() as u64,
                cfg.max_num_batched_tokens,
                cfg.max_num_seqs,
            );
            let used = m.total.saturating_sub(m.free);
            let allowed = (m.total as f64 * cfg.gpu_memory_utilization) as u64;
            (
                allowed.saturating_sub(used + reserve),
                reserve,
                SizedBy::DeviceMemory,
            )
        }
        (None, None) => (DEFAULT_KV_CACHE_BYTES, 0, SizedBy::Default),
    };
    KvCacheSize {
        num_blocks: blocks_of(budget_bytes),
        bytes_per_block,
        budget_bytes,
        reserve_bytes,
        sized_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama8b() -> DecoderConfig {
        let json = r#"{"model_type":"llama","vocab_size":128256,"hidden_size":4096,
          "intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,
          "num_key_value_heads":8,"rms_norm_eps":1e-5,"max_position_embeddings":131072}"#;
        DecoderConfig::from_hf_json(json, "llama8b.json").expect("config")
    }

    #[test]
    fn configured_sizes_win_and_cpu_defaults_to_one_gib() {
        let m = llama8b();
        let per_block = 2 * 32 * 8 * 128 * 2 * 16; // bf16, block 16: 2 MiB
        let mut cfg = EngineConfig {
            num_blocks: Some(7),
            kv_cache_memory_bytes: Some(1 << 40),
            ..Default::default()
        };
        let s = kv_cache_size(&cfg, &m, DType::BF16, DType::BF16, None);
        assert_eq!((s.num_blocks, s.sized_by), (7, SizedBy::NumBlocks));
        cfg.num_blocks = None;
        let s = kv_cache_size(&cfg, &m, DType::BF16, DType::BF16, None);
        assert_eq!(s.num_blocks as u64, (1u64 << 40) / per_block);
        cfg.kv_cache_memory_bytes = None;
        let s = kv_cache_size(&cfg, &m, DType::BF16, DType::BF16, None);
        assert_eq!((s.num_blocks, s.sized_by), (512, SizedBy::Default));
        // f32 halves the blocks, fp8 doubles them.
        assert_eq!(
            kv_cache_size(&cfg, &m, DType::F32, DType::F32, None).num_blocks,
            256
        );
        assert_eq!(
            kv_cache_size(&cfg, &m, DType::BF16, DType::F8E4M3, None).num_blocks,
            1024
        );
    }

    #[test]
    fn device_sizing_subtracts_what_is_resident_and_the_reserve() {
        let m = llama8b();
        let cfg = EngineConfig::default(); // utilization 0.9, 2048 tokens, 256 seqs
        let gib = 1u64 << 30;
        let (total, weights) = (80 * gib, 16 * gib);
        let mem = DeviceMemory {
            free: total - weights,
            total,
        };
        let s = kv_cache_size(&cfg, &m, DType::BF16, DType::BF16, Some(mem));
        // Reserve by hand: 2048 x (6 x 4096 + 3 x 14336) x 2 + 256 x 128256 x 8 + 1 GiB.
        let reserve = 2048 * (6 * 4096 + 3 * 14336) * 2 + 256 * 128_256 * 8 + gib;
        assert_eq!(s.reserve_bytes, reserve);
        let budget = (80.0 * gib as f64 * 0.9) as u64 - weights - reserve;
        assert_eq!(s.budget_bytes, budget);
        assert_eq!(s.num_blocks as u64, budget / (2 << 20));
        assert_eq!(s.sized_by, SizedBy::DeviceMemory);
        // A device already full leaves one block, never zero or an underflow.
        let full = DeviceMemory { free: 0, total };
        assert_eq!(
            kv_cache_size(&cfg, &m, DType::BF16, DType::BF16, Some(full)).num_blocks,
            1
        );
    }
}
