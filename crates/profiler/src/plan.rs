//! Capacity planning (`engine plan`): for a model, dtypes, a GPU's memory and the
//! engine's limits, the KV blocks that fit, the concurrent users at each context
//! length, and where the concurrency cliff sits.
//!
//! The block count comes from [`engine_core::kv_sizing::kv_cache_size`], the function
//! `Engine::new` calls: given a GPU of `total` bytes the planner passes the figure the
//! engine would read after loading the weights on an otherwise empty device,
//! `free = total - weight_bytes` (a real CUDA context takes a few hundred MiB more).
//!
//! ```text
//!  users(context)  = min(max_num_seqs, floor(num_blocks / ceil(context / block_size)))
//!  cliff           = floor(num_blocks / max_num_seqs) x block_size: the longest context
//!                    at which max_num_seqs sequences still fit; beyond it users fall
//!                    as 1 / context (the KV cache, not the scheduler, is the limit)
//!  longest context = min(num_blocks x block_size, the model's context)
//! ```
//! An FP8 KV cache (or any KV dtype other than the model's) is planning only: the
//! engine stores its cache in the model's dtype today.

use crate::error::{ProfilerError, Result};
use crate::report::svg::{Chart, Kind, Marker, Series};
use candle_core::DType;
use engine_core::kv_sizing::{kv_cache_size, DeviceMemory, KvCacheSize};
use engine_core::EngineConfig;
use engine_model::DecoderConfig;
use serde::Serialize;

/// `--kv-cache-dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCacheDtype {
    /// The model's dtype (what the engine stores).
    Auto,
    Bf16,
    F16,
    Fp8,
}

impl KvCacheDtype {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            "fp8" => Ok(Self::Fp8),
            other => Err(ProfilerError::Parse(format!(
                "--kv-cache-dtype {other}: expected auto, bf16, f16 or fp8"
            ))),
        }
    }

    /// The storage dtype for a model in `model_dtype`.
    pub fn dtype(self, model_dtype: DType) -> DType {
        match self {
            Self::Auto => model_dtype,
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
            Self::Fp8 => DType::F8E4M3,
        }
    }
}

/// The default context lengths: 1k to 128k, powers of two.
pub fn default_contexts() -> Vec<usize> {
    (10..=17).map(|p| 1usize << p).collect()
}

/// The memory figure the engine would read on an otherwise empty GPU of `total` bytes
/// after loading `weight_bytes` of weights.
pub fn gpu_figure(total: u64, weight_bytes: u64) -> DeviceMemory {
    DeviceMemory {
        free: total.saturating_sub(weight_bytes),
        total,
    }
}

/// The figure the engine would read on `device` after loading `weight_bytes` of
/// weights: its memory now, less the weights (CUDA); `None` on the CPU.
pub fn device_figure(device: &candle_core::Device, weight_bytes: u64) -> Option<DeviceMemory> {
    engine_core::device::memory_info(device)
        .map(|(free, total)| gpu_figure(total, total.saturating_sub(free) + weight_bytes))
}

/// What to plan for.
#[derive(Debug, Clone)]
pub struct PlanInputs {
    pub model: String,
    pub config: DecoderConfig,
    pub dtype: DType,
    pub kv_cache_dtype: KvCacheDtype,
    pub engine: EngineConfig,
    /// The device's memory figure (`None`: the CPU rules, no figure).
    pub memory: Option<DeviceMemory>,
    pub contexts: Vec<usize>,
}

/// Users at one context length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContextRow {
    pub context_len: usize,
    pub blocks_per_seq: usize,
    /// Sequences the KV cache holds at this length (ignoring `max_num_seqs`).
    pub kv_seqs: usize,
    /// Concurrent users: `min(kv_seqs, max_num_seqs)`; 0 beyond the model's context.
    pub users: usize,
    /// `kv_cache`, `max_num_seqs` or `model_context`.
    pub limited_by: &'static str,
}

/// The plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityPlan {
    pub model: String,
    pub dtype: String,
    pub kv_cache_dtype: String,
    /// Why these numbers are not what the engine would run today, if they are not.
    pub planning_only: Option<String>,
    pub weight_bytes: u64,
    pub kv_bytes_per_token: u64,
    pub block_size: usize,
    pub max_num_seqs: usize,
    pub gpu_memory_utilization: f64,
    pub memory: Option<DeviceMemory>,
    pub cache: KvCacheSize,
    pub kv_tokens: usize,
    pub model_context: usize,
    pub rows: Vec<ContextRow>,
    /// The longest context at which `max_num_seqs` sequences fit (0: none does).
    pub cliff_context: usize,
    /// The longest single sequence the cache and the model allow.
    pub longest_context: usize,
    pub warnings: Vec<String>,
}

fn dtype_name(d: DType) -> String {
    match d {
        DType::F8E4M3 => "fp8".into(),
        d => format!("{d:?}").to_lowercase(),
    }
}

/// Plan with the engine's sizing function.
pub fn plan(p: &PlanInputs) -> CapacityPlan {
    let kv_dtype = p.kv_cache_dtype.dtype(p.dtype);
    let cache = kv_cache_size(&p.engine, &p.config, p.dtype, kv_dtype, p.memory);
    let bs = p.engine.block_size.max(1);
    let max_seqs = p.engine.max_num_seqs;
    let model_context = p.config.max_position_embeddings;
    let rows = p
        .contexts
        .iter()
        .map(|&c| {
            let blocks_per_seq = c.div_ceil(bs).max(1);
            let kv_seqs = cache.num_blocks / blocks_per_seq;
            let (users, limited_by) = if c > model_context {
                (0, "model_context")
            } else if kv_seqs < max_seqs {
                (kv_seqs, "kv_cache")
            } else {
                (max_seqs, "max_num_seqs")
            };
            ContextRow {
                context_len: c,
                blocks_per_seq,
                kv_seqs,
                users,
                limited_by,
            }
        })
        .collect();
    let planning_only = (kv_dtype != p.dtype).then(|| {
        format!(
            "planning only: the engine stores its KV cache in the model's dtype ({}) today, not {}",
            dtype_name(p.dtype),
            dtype_name(kv_dtype)
        )
    });
    let mut warnings = Vec::new();
    if cache.budget_bytes < cache.bytes_per_block {
        warnings.push(format!(
            "no room for the KV cache: the budget is {} bytes (weights, the activation reserve of {} bytes and what is resident exceed gpu_memory_utilization); the engine would start with 1 block",
            cache.budget_bytes, cache.reserve_bytes
        ));
    }
    CapacityPlan {
        model: p.model.clone(),
        dtype: dtype_name(p.dtype),
        kv_cache_dtype: dtype_name(kv_dtype),
        planning_only,
        weight_bytes: p.config.num_parameters() * p.dtype.size_in_bytes() as u64,
        kv_bytes_per_token: p.config.kv_bytes_per_token(kv_dtype),
        block_size: bs,
        max_num_seqs: max_seqs,
        gpu_memory_utilization: p.engine.gpu_memory_utilization,
        memory: p.memory,
        kv_tokens: cache.tokens(bs),
        cache,
        model_context,
        rows,
        cliff_context: cache.num_blocks / max_seqs.max(1) * bs,
        longest_context: (cache.num_blocks * bs).min(model_context),
        warnings,
    }
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// The plan as terminal text: the figures, one row per context length, the cliff.
pub fn render_text(p: &CapacityPlan) -> String {
    let mut s = format!(
        "model {}: weights {} ({}), KV cache {} ({} bytes/token)\n",
        p.model,
        gib(p.weight_bytes),
        p.dtype,
        p.kv_cache_dtype,
        p.kv_bytes_per_token
    );
    if let Some(note) = &p.planning_only {
        s.push_str(&format!("{note}\n"));
    }
    let sized = match (p.cache.sized_by, p.memory) {
        (engine_core::kv_sizing::SizedBy::DeviceMemory, Some(m)) => format!(
            "GPU memory {} x utilization {} - resident {} - activation reserve {}",
            gib(m.total),
            p.gpu_memory_utilization,
            gib(m.total - m.free),
            gib(p.cache.reserve_bytes)
        ),
        (engine_core::kv_sizing::SizedBy::NumBlocks, _) => "--num-blocks".into(),
        (engine_core::kv_sizing::SizedBy::KvCacheMemory, _) => "--kv-cache-memory".into(),
        _ => "no device memory figure: the engine's 1 GiB default".into(),
    };
    s.push_str(&format!(
        "KV cache: {} blocks x {} tokens = {} tokens, {} (sized by: {sized})\n",
        p.cache.num_blocks,
        p.block_size,
        p.kv_tokens,
        gib(p.cache.bytes())
    ));
    s.push_str(&format!(
        "{:>12}  {:>14}  {:>16}  {:>10}  limited by\n",
        "context", "blocks/seq", "seqs in cache", "users"
    ));
    for r in &p.rows {
        s.push_str(&format!(
            "{:>12}  {:>14}  {:>16}  {:>10}  {}\n",
            r.context_len,
            r.blocks_per_seq,
            r.kv_seqs,
            if r.limited_by == "model_context" {
                "-".to_string()
            } else {
                r.users.to_string()
            },
            r.limited_by.replace('_', " ")
        ));
    }
    if p.cliff_context > 0 {
        s.push_str(&format!(
            "concurrency cliff: {} users (max_num_seqs) fit up to {} tokens each; longer contexts are KV-limited, users fall as 1/context\n",
            p.max_num_seqs, p.cliff_context
        ));
    } else {
        s.push_str(&format!(
            "concurrency cliff: below one block: the KV cache, not max_num_seqs ({}), limits users at every context\n",
            p.max_num_seqs
        ));
    }
    s.push_str(&format!(
        "longest single sequence: {} tokens (model context {})\n",
        p.longest_context, p.model_context
    ));
    for w in &p.warnings {
        s.push_str(&format!("warning: {w}\n"));
    }
    s
}

/// Concurrent users against context length (log-log), the cliff marked.
pub fn chart(p: &CapacityPlan) -> Chart {
    let within: Vec<&ContextRow> = p
        .rows
        .iter()
        .filter(|r| r.limited_by != "model_context")
        .collect();
    let mut users: Vec<(f64, f64)> = within
        .iter()
        .map(|r| (r.context_len as f64, r.users.max(1) as f64))
        .collect();
    if p.cliff_context > 0 && p.cliff_context <= p.model_context {
        // The bend itself: flat at max_num_seqs up to the cliff, KV-limited after it.
        users.push((p.cliff_context as f64, p.max_num_seqs as f64));
        users.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let kv = within
        .iter()
        .map(|r| (r.context_len as f64, r.kv_seqs.max(1) as f64))
        .collect();
    let mut markers = Vec::new();
    if p.cliff_context > 0 {
        markers.push(Marker {
            x: p.cliff_context as f64,
            y: p.max_num_seqs as f64,
            label: format!("cliff: {} tokens", p.cliff_context),
        });
    }
    Chart {
        title: format!(
            "Concurrent users vs context: {} ({} KV, {} blocks)",
            p.model, p.kv_cache_dtype, p.cache.num_blocks
        ),
        x_label: "context length (tokens, log scale)".into(),
        y_label: "concurrent users (log scale)".into(),
        x_log: true,
        y_log: true,
        kind: Kind::Lines,
        series: vec![
            Series::new(format!("users (max_num_seqs {})", p.max_num_seqs), users),
            Series {
                dash: Some("6 3"),
                ..Series::new("sequences the KV cache holds", kv)
            },
        ],
        markers,
        categories: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_core::Engine;
    use engine_model::{load_model, LoadOptions};

    const TINY: &str = r#"{"name":"tiny","config":{"model_type":"llama","vocab_size":300,"hidden_size":32,
      "intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
      "rms_norm_eps":1e-5,"max_position_embeddings":4096,"bos_token_id":256,"eos_token_id":257}}"#;

    fn tiny_engine(dtype: DType, cfg: EngineConfig) -> Engine {
        let dir = std::env::temp_dir().join(format!("engine-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // One file per test thread: tests run in parallel.
        let path = dir
            .join(format!("tiny-{:?}.json", std::thread::current().id()).replace(['(', ')'], ""));
        std::fs::write(&path, TINY).unwrap();
        let opts = LoadOptions {
            dtype,
            device: candle_core::Device::Cpu,
            seed: 0,
            tokenizer: None,
            kernels: Default::default(),
        };
        let model = load_model(&format!("dummy:{}", path.display()), &opts, &|_| {}).unwrap();
        Engine::new(model, cfg).unwrap()
    }

    fn inputs(engine: &Engine, dtype: DType, memory: Option<DeviceMemory>) -> PlanInputs {
        PlanInputs {
            model: "tiny".into(),
            config: engine.decoder().config().clone(),
            dtype,
            kv_cache_dtype: KvCacheDtype::Auto,
            engine: engine.config().clone(),
            memory,
            contexts: default_contexts(),
        }
    }

    #[test]
    fn planner_blocks_equal_the_engines_allocation() {
        for dtype in [DType::BF16, DType::F32] {
            // 2 layers x 2 KV heads x 8 dims x K and V = 64 values per token.
            let per_block = 64 * dtype.size_in_bytes() as u64 * 16;
            let cfg = EngineConfig {
                kv_cache_memory_bytes: Some(3 << 20),
                max_num_seqs: 8,
                ..Default::default()
            };
            let engine = tiny_engine(dtype, cfg.clone());
            let p = plan(&inputs(&engine, dtype, None));
            assert_eq!(p.cache.num_blocks, engine.num_blocks(), "{dtype:?}");
            assert_eq!(
                p.cache.num_blocks as u64,
                (3 << 20) / per_block,
                "{dtype:?}"
            );
            let fixed = tiny_engine(
                dtype,
                EngineConfig {
                    num_blocks: Some(37),
                    ..cfg
                },
            );
            assert_eq!(plan(&inputs(&fixed, dtype, None)).cache.num_blocks, 37);
        }
    }

    #[test]
    fn gpu_plan_is_the_engines_cuda_sizing_with_that_memory_figure() {
        for dtype in [DType::BF16, DType::F32] {
            let engine = tiny_engine(
                dtype,
                EngineConfig {
                    num_blocks: Some(1),
                    ..Default::default()
                },
            );
            let mut cfg = engine.config().clone();
            cfg.num_blocks = None;
            let total = 8u64 << 30;
            let weights = engine.decoder().weight_bytes();
            let figure = gpu_figure(total, weights);
            // What Engine::new computes on a CUDA device reporting this figure.
            let d = engine.decoder();
            let engine_blocks = kv_cache_size(&cfg, d.config(), d.dtype(), d.dtype(), Some(figure));
            let mut i = inputs(&engine, dtype, Some(figure));
            i.engine = cfg.clone();
            let p = plan(&i);
            assert_eq!(p.cache, engine_blocks, "{dtype:?}");
            // And by hand: 0.9 x 8 GiB - weights - reserve (2048 tokens x (6 x 32 + 3 x
            // 64) x dtype + 256 seqs x 300 vocab x 8 + 1 GiB), over the block's bytes.
            let b = dtype.size_in_bytes() as u64;
            let reserve = 2048 * (6 * 32 + 3 * 64) * b + 256 * 300 * 8 + (1 << 30);
            let budget = (total as f64 * 0.9) as u64 - weights - reserve;
            assert_eq!(
                p.cache.num_blocks as u64,
                budget / (64 * b * 16),
                "{dtype:?}"
            );
        }
    }

    #[test]
    fn users_cliff_and_fp8_follow_the_formulas() {
        let engine = tiny_engine(
            DType::F32,
            EngineConfig {
                num_blocks: Some(1000),
                max_num_seqs: 64,
                ..Default::default()
            },
        );
        let mut i = inputs(&engine, DType::F32, None);
        let p = plan(&i);
        assert_eq!(p.cliff_context, 1000 / 64 * 16); // 240 tokens
        let at = |p: &CapacityPlan, c: usize| p.rows.iter().find(|r| r.context_len == c).cloned();
        let r1k = at(&p, 1024).unwrap();
        assert_eq!(
            (r1k.kv_seqs, r1k.users, r1k.limited_by),
            (15, 15, "kv_cache")
        );
        assert_eq!(at(&p, 8192).unwrap().limited_by, "model_context");
        assert_eq!(p.longest_context, 4096);
        assert!(p.planning_only.is_none());
        i.engine.max_num_seqs = 4;
        let r = at(&plan(&i), 1024).unwrap();
        assert_eq!((r.users, r.limited_by), (4, "max_num_seqs"));
        // FP8 with a byte budget: four times the f32 blocks, and said to be planning only.
        i.engine.num_blocks = None;
        i.engine.kv_cache_memory_bytes = Some(1 << 20);
        let f32_blocks = plan(&i).cache.num_blocks;
        i.kv_cache_dtype = KvCacheDtype::Fp8;
        let fp8 = plan(&i);
        assert_eq!(fp8.cache.num_blocks, 4 * f32_blocks);
        assert!(fp8
            .planning_only
            .as_deref()
            .is_some_and(|n| n.contains("planning only")));
        let text = render_text(&fp8);
        assert!(
            text.contains("planning only") && text.contains("concurrency cliff"),
            "{text}"
        );
        assert!(chart(&fp8).render(640.0, 420.0).contains("<title>"));
    }
}
