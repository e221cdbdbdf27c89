//! Command-line arguments shared by the subcommands.

use clap::Args;
use std::path::PathBuf;

/// Which model to load and how.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model: `smollm2-135m` (default, fetched on first use), a local Hugging Face
    /// directory or .gguf file, `hf:ORG/NAME[@REV]`, or `dummy:NAME` (a manifest in models/
    /// with seeded weights: llama-3.1-8b, llama-2-7b, mistral-7b-v0.3, qwen2.5-7b,
    /// qwen2.5-0.5b, smollm2-135m).
    #[arg(long, default_value = engine_model::DEFAULT_MODEL)]
    pub model: String,
    /// Weight and activation dtype: f32, f16 or bf16 (default: f32 on CPU).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Device: cpu, cuda or cuda:N (a `cuda` build), or auto: cuda:0 when this build has
    /// CUDA and a GPU is present, else cpu.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Seed for dummy weights and for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokenizer to use instead of the model's (tokenizer.json or a .gguf); dummy models
    /// without one use the byte-level fallback.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
}

/// Engine limits and KV-cache size (shared by generate, bench and run).
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// KV-cache blocks (overrides --kv-cache-memory).
    #[arg(long)]
    pub num_blocks: Option<usize>,
    /// Bytes for the KV cache, e.g. 1073741824 (default 1 GiB).
    #[arg(long)]
    pub kv_cache_memory: Option<u64>,
    /// Most sequences in one batch.
    #[arg(long, default_value_t = 256)]
    pub max_num_seqs: usize,
    /// Token budget of one step (prompts longer than this are prefilled in chunks).
    #[arg(long, default_value_t = 2048)]
    pub max_num_batched_tokens: usize,
    /// Turn off prefix caching.
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// On CUDA, the fraction of GPU memory to use; the KV cache gets what weights and
    /// activations leave (unless --num-blocks or --kv-cache-memory is given).
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
}

impl EngineArgs {
    pub fn engine_config(&self, block_size: usize, seed: u64) -> engine_core::EngineConfig {
        engine_core::EngineConfig {
            block_size,
            num_blocks: self.num_blocks,
            kv_cache_memory_bytes: self.kv_cache_memory,
            max_num_seqs: self.max_num_seqs,
            max_num_batched_tokens: self.max_num_batched_tokens,
            enable_prefix_caching: !self.no_prefix_caching,
            gpu_memory_utilization: self.gpu_memory_utilization,
            seed,
        }
    }
}
