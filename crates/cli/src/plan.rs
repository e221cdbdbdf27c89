//! `engine plan`: capacity planning without running anything. For a model, dtypes, a
//! GPU's memory and the engine's limits: the KV blocks the engine would allocate (its
//! own sizing function), the concurrent users at context lengths 1k-128k, and where the
//! concurrency cliff sits; a table, JSON, and a plot (see docs/metrics.md).

use crate::args::{parse_bytes, EngineArgs, ModelArgs};
use anyhow::Context;
use clap::Args;
use engine_model::open_model;
use engine_profiler::plan::{self, KvCacheDtype, PlanInputs};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// KV-cache storage: auto (the model's dtype: what the engine stores), bf16, f16, or
    /// fp8 (planning only: the engine has no FP8 cache yet).
    #[arg(long, default_value = "auto")]
    pub kv_cache_dtype: String,
    /// The GPU's memory, e.g. 80GiB or 141GB, planned as an otherwise empty GPU
    /// (default: the CUDA device's own figure; on the CPU, the CPU sizing rules).
    /// --dtype then defaults to bf16.
    #[arg(long, value_parser = parse_bytes)]
    pub gpu_memory: Option<u64>,
    /// Context lengths (default: 1k to 128k, powers of two, and the model's context).
    #[arg(long, value_delimiter = ',', value_parser = crate::validate::token_count)]
    pub context_len: Vec<usize>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write plan.json and plan.svg (users vs context length) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn contexts(a: &PlanArgs, model_context: usize) -> anyhow::Result<Vec<usize>> {
    if let Some(bad) = a.context_len.iter().find(|&&c| c == 0) {
        anyhow::bail!("--context-len {bad}: context lengths must be at least 1");
    }
    if !a.context_len.is_empty() {
        return Ok(a.context_len.clone());
    }
    let mut v = plan::default_contexts();
    if model_context <= *v.last().unwrap_or(&0) && !v.contains(&model_context) {
        v.push(model_context);
        v.sort_unstable();
    }
    Ok(v)
}

pub fn run(a: PlanArgs) -> anyhow::Result<()> {
    let u = a.engine.gpu_memory_utilization;
    if !(u > 0.0 && u <= 1.0) {
        anyhow::bail!("--gpu-memory-utilization {u}: expected a fraction in (0, 1]");
    }
    if a.model.block_size == 0 {
        anyhow::bail!("--block-size 0: expected at least 1 token per block");
    }
    let kv_cache_dtype = KvCacheDtype::parse(&a.kv_cache_dtype)?;
    let device = crate::parse_device(&a.model.device)?;
    let dtype = match (&a.model.dtype, a.gpu_memory) {
        (None, Some(_)) => candle_core::DType::BF16,
        (d, _) => crate::parse_dtype(d.as_deref(), &device)?,
    };
    let opened = open_model(&a.model.model, a.model.seed, &crate::say)
        .with_context(|| format!("model {}", a.model.model))?;
    let weight_bytes = opened.config.num_parameters() * dtype.size_in_bytes() as u64;
    let memory = match a.gpu_memory {
        Some(total) => Some(plan::gpu_figure(total, weight_bytes)),
        None => plan::device_figure(&device, weight_bytes),
    };
    let inputs = PlanInputs {
        model: a.model.model.clone(),
        contexts: contexts(&a, opened.config.max_position_embeddings)?,
        config: opened.config,
        dtype,
        kv_cache_dtype,
        engine: a.engine.engine_config(a.model.block_size, a.model.seed),
        memory,
    };
    let p = plan::plan(&inputs);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        print!("{}", plan::render_text(&p));
    }
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = dir.join("plan.json");
        std::fs::write(&json, serde_json::to_string_pretty(&p)?)
            .with_context(|| format!("writing {}", json.display()))?;
        let svg = dir.join("plan.svg");
        std::fs::write(&svg, plan::chart(&p).render(640.0, 420.0))
            .with_context(|| format!("writing {}", svg.display()))?;
        crate::say(&format!(
            "wrote plan.json and plan.svg to {}",
            dir.display()
        ));
    }
    Ok(())
}
