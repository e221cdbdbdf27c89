//! Command-line arguments shared by the subcommands; numeric flags are range-checked
//! by the value parsers in `validate.rs`.

use crate::validate;
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
    #[arg(long, default_value_t = 16, value_parser = validate::block_size)]
    pub block_size: usize,
    /// Hot-path ops: `fused` (engine-kernels: fused norm, rope + cache writes, paged
    /// attention), `candle` (plain candle ops, the baseline), or `auto`: candle on CUDA
    /// until a GPU run of the fused path is recorded; on the CPU the fused ops' ports for
    /// decode-only steps and candle's for steps with prompt tokens (each the faster).
    #[arg(long, default_value = "auto", value_parser = parse_kernels)]
    pub kernels: engine_model::KernelChoice,
    /// Weight matrices: `native` (a GGUF's quantized matrices stay in their type and run
    /// on engine-quant's kernels; other weights dense), `none` (everything dequantized to
    /// --dtype), or a block type to quantize to at load: q8_0, q4_0, q4_1, q5_0, q5_1,
    /// q2_k, q3_k, q4_k, q5_k, q6_k (K-quants fall back to a 32-block type on rows that
    /// are not a multiple of 256). `native` runs a GGUF's weights as llama.cpp does
    /// (activations rounded to 8 bits as its kernels round them). Default `none`, the
    /// exact path: with 8-bit activations a greedy output depends on which requests
    /// share its batch (the rounding turns 1-ulp differences into different codes), and
    /// the engine promises the same output at any load.
    #[arg(long, default_value = "none", value_parser = parse_quant)]
    pub quant: engine_model::QuantMode,
}

fn parse_quant(s: &str) -> Result<engine_model::QuantMode, String> {
    s.parse()
        .map_err(|e: engine_model::ModelError| e.to_string())
}

fn parse_kernels(s: &str) -> Result<engine_model::KernelChoice, String> {
    s.parse()
        .map_err(|e: engine_kernels::KernelError| e.to_string())
}

impl ModelArgs {
    /// How to load the model on `device` in `dtype`.
    pub fn load_options(
        &self,
        device: candle_core::Device,
        dtype: candle_core::DType,
    ) -> engine_model::LoadOptions {
        engine_model::LoadOptions {
            dtype,
            device,
            seed: self.seed,
            tokenizer: self.tokenizer.clone(),
            kernels: self.kernels,
            quant: self.quant,
        }
    }
}

/// Default `--max-num-seqs`.
pub const DEFAULT_MAX_NUM_SEQS: usize = 256;

/// Engine limits and KV-cache size (shared by every subcommand that runs the engine).
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// KV-cache blocks (default: from --kv-cache-memory, or the engine's default sizing).
    #[arg(long, value_parser = validate::num_blocks)]
    pub num_blocks: Option<usize>,
    /// KV-cache memory, e.g. 2GiB, 512MiB or a byte count.
    #[arg(long, value_parser = parse_bytes)]
    pub kv_cache_memory: Option<u64>,
    /// Most sequences per step (default 256; `bench` raises it to its largest load).
    #[arg(long, value_parser = validate::batch_size)]
    pub max_num_seqs: Option<usize>,
    /// Most tokens per step (prefill is chunked to fit).
    #[arg(long, default_value_t = 2048, value_parser = validate::token_count)]
    pub max_num_batched_tokens: usize,
    /// Disable prefix caching.
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// On CUDA, the fraction of device memory the engine may use.
    #[arg(long, default_value_t = 0.9, value_parser = validate::fraction)]
    pub gpu_memory_utilization: f64,
    /// Run every step eagerly: no CUDA graphs for decode steps (with --kernels fused on
    /// CUDA, decode steps otherwise replay graphs captured at start-up).
    #[arg(long)]
    pub enforce_eager: bool,
    /// Finish each step before scheduling the next. By default on CUDA the host
    /// schedules and launches step n+1 while the GPU computes step n (a request that
    /// stops at step n then costs one wasted row in step n+1).
    #[arg(long)]
    pub disable_overlap: bool,
}

/// Parse a size: `2GiB`, `512MiB`, `1.5GB` or a plain byte count.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let units = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("B", 1),
    ];
    let (num, scale) = units
        .iter()
        .find_map(|(u, m)| t.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or((t, 1));
    // At least one byte, at most 1 EiB (larger is a typo, and would overflow later).
    num.trim()
        .parse::<f64>()
        .ok()
        .map(|v| v * scale as f64)
        .filter(|&b| b.is_finite() && (1.0..=(1u64 << 60) as f64).contains(&b))
        .map(|b| b as u64)
        .ok_or_else(|| {
            format!("`{s}`: expected a size from 1 byte to 1EiB, like 2GiB, 512MiB or a byte count")
        })
}

impl EngineArgs {
    pub fn engine_config(&self, block_size: usize, seed: u64) -> engine_core::EngineConfig {
        engine_core::EngineConfig {
            block_size,
            num_blocks: self.num_blocks,
            kv_cache_memory_bytes: self.kv_cache_memory,
            max_num_seqs: self.max_num_seqs.unwrap_or(DEFAULT_MAX_NUM_SEQS),
            max_num_batched_tokens: self.max_num_batched_tokens,
            enable_prefix_caching: !self.no_prefix_caching,
            gpu_memory_utilization: self.gpu_memory_utilization,
            seed,
            enforce_eager: self.enforce_eager,
            disable_overlap: self.disable_overlap,
            ..Default::default()
        }
    }
}
