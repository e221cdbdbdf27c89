//! `engine info`: what a `--model` resolves to, and what it costs.

use crate::args::ModelArgs;
use anyhow::Context;
use clap::Args;
use engine_model::open_model;

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
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
    if a.json {
        let v = serde_json::json!({
            "model": a.model.model, "source": opened.source, "config": cfg,
            "dtype": format!("{dtype:?}").to_lowercase(), "parameters": params,
            "weight_bytes": weight_bytes, "kv_cache_bytes_per_token": kv_per_token,
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
        cfg.rope_theta,
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
    println!("rms norm eps:        {:e}", cfg.rms_norm_eps);
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
    Ok(())
}
