//! `engine info`: what a `--model` resolves to, and what it costs.

use crate::args::{EngineArgs, ModelArgs};
use anyhow::Context;
use clap::Args;
use engine_model::open_model;

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Context lengths for the concurrency table (default: powers of 2 up to the model's).
    #[arg(long, value_delimiter = ',', value_parser = crate::validate::token_count)]
    pub context_len: Vec<usize>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A float at its meaningful precision: configs store f32 values (rms eps 1e-5) that
/// reach us widened to f64 (9.999999747378752e-6); print the shortest decimal that
/// reads back as the same f32 when the value is one.
fn float(v: f64) -> String {
    let narrow = v as f32;
    let exact_f32 = f64::from(narrow) == v;
    let a = v.abs();
    match (exact_f32, a != 0.0 && !(1e-3..1e7).contains(&a)) {
        (true, true) => format!("{narrow:e}"),
        (true, false) => format!("{narrow}"),
        (false, true) => format!("{v:e}"),
        (false, false) => format!("{v}"),
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

pub fn run(a: InfoArgs) -> anyhow::Result<()> {
    let device = crate::parse_device(&a.model.device)?;
    let dtype = crate::parse_dtype(a.model.dtype.as_deref(), &device)?;
    let opened = open_model(&a.model.model, a.model.seed, &crate::say)
        .with_context(|| format!("model {}", a.model.model))?;
    let cfg = &opened.config;
    let params = cfg.num_parameters();
    let weight_bytes = params * dtype.size_in_bytes() as u64;
    let kv_per_token = cfg.kv_bytes_per_token(dtype);
    let per_block = kv_per_token * a.model.block_size as u64;
    let num_blocks = kv_cache_blocks(&a, &device, weight_bytes, cfg, dtype);
    let contexts = if a.context_len.is_empty() {
        let mut v: Vec<usize> = (10..=20)
            .map(|p| 1usize << p)
            .filter(|&c| c < cfg.max_position_embeddings)
            .collect();
        v.push(cfg.max_position_embeddings);
        v
    } else {
        a.context_len.clone()
    };
    let cliff: Vec<(usize, usize)> = contexts
        .iter()
        .map(|&c| (c, num_blocks / c.div_ceil(a.model.block_size).max(1)))
        .collect();
    if a.json {
        let v = serde_json::json!({
            "model": a.model.model, "source": opened.source, "config": cfg,
            "dtype": format!("{dtype:?}").to_lowercase(), "parameters": params,
            "weight_bytes": weight_bytes, "kv_cache_bytes_per_token": kv_per_token,
            "block_size": a.model.block_size, "num_blocks": num_blocks,
            "max_concurrency": cliff.iter().map(|(c, n)| serde_json::json!({"context_len": c, "max_seqs": n})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model:               {}", a.model.model);
    println!("source:              {}", opened.source);
    println!("architecture:        {}", cfg.architecture.as_str());
    println!("layers:              {}", cfg.num_hidden_layers);
    println!(
        "hidden / ffn:        {} / {}",
        cfg.hidden_size, cfg.intermediate_size
    );
    println!(
        "heads (q / kv) x dim: {} / {} x {}",
        cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    );
    println!("vocab:               {}", cfg.vocab_size);
    println!("context:             {}", cfg.max_position_embeddings);
    println!(
        "rope theta:          {}{}",
        float(cfg.rope_theta),
        if cfg.rope_scaling.is_some() {
            " (llama3 scaling)"
        } else {
            ""
        }
    );
    println!(
        "sliding window:      {}",
        cfg.sliding_window
            .map_or("none".to_string(), |w| w.to_string())
    );
    println!(
        "qkv bias / tied emb: {} / {}",
        cfg.qkv_bias, cfg.tie_word_embeddings
    );
    println!("rms norm eps:        {}", float(cfg.rms_norm_eps));
    println!(
        "parameters:          {params} ({:.3} B)",
        params as f64 / 1e9
    );
    println!(
        "dtype:               {}",
        format!("{dtype:?}").to_lowercase()
    );
    println!(
        "weight bytes:        {weight_bytes} ({})",
        gib(weight_bytes)
    );
    println!(
        "KV cache per token:  {kv_per_token} bytes ({:.1} KiB)",
        kv_per_token as f64 / 1024.0
    );
    println!(
        "KV cache:            {num_blocks} blocks of {} tokens ({}, {} tokens)",
        a.model.block_size,
        gib(num_blocks as u64 * per_block),
        num_blocks * a.model.block_size
    );
    println!("max concurrent sequences by context length (the KV cliff):");
    for (c, n) in &cliff {
        println!("  {c:>8} tokens: {n}");
    }
    Ok(())
}

/// The blocks the engine would allocate: its own sizing function, given the device's
/// memory figure less the weights it would load (CUDA), or none (CPU).
fn kv_cache_blocks(
    a: &InfoArgs,
    device: &candle_core::Device,
    weight_bytes: u64,
    cfg: &engine_model::DecoderConfig,
    dtype: candle_core::DType,
) -> usize {
    let memory = engine_profiler::plan::device_figure(device, weight_bytes);
    let engine = a.engine.engine_config(a.model.block_size, a.model.seed);
    engine_core::kv_sizing::kv_cache_size(&engine, cfg, dtype, dtype, memory).num_blocks
}

#[cfg(test)]
mod tests {
    use super::float;

    #[test]
    fn floats_print_at_their_precision() {
        assert_eq!(float(f64::from(1e-5f32)), "1e-5");
        assert_eq!(float(1e-6), "1e-6");
        assert_eq!(float(f64::from(100_000f32)), "100000");
        assert_eq!(float(500_000.0), "500000");
        assert_eq!(float(0.1), "0.1");
        assert_eq!(float(f64::from(0.1f32)), "0.1");
        assert_eq!(float(1e-5 + 1e-12), "1.0000001e-5");
    }
}
