//! Tools for checking the decoder against independent references on any device:
//! `engine export-dummy` writes a dummy model as a Hugging Face directory (so PyTorch /
//! transformers can load the very same weights), and `engine logits` dumps the logits of
//! a prefill and greedy decode steps, and checks that batching does not change greedy
//! tokens.

use crate::args::{EngineArgs, ModelArgs};
use anyhow::Context;
use candle_core::DType;
use clap::Args;
use engine_core::{Engine, Prompt};
use engine_model::{source::manifest_config, weights::dummy_tensor};
use engine_scheduler::SamplingParams;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Manifest name (as in `dummy:NAME`) or path.
    #[arg(long)]
    pub manifest: String,
    /// Keep only this many layers (faster checks of big shapes).
    #[arg(long)]
    pub num_layers: Option<usize>,
    /// Set a sliding window (mistral), to exercise windowed attention on short prompts.
    #[arg(long)]
    pub sliding_window: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// Output directory (config.json + model.safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

/// Write the dummy weights of a manifest as a Hugging Face model directory.
pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    let mut cfg = manifest_config(&a.manifest)?;
    if let Some(n) = a.num_layers {
        cfg.num_hidden_layers = n;
    }
    if a.sliding_window.is_some() {
        cfg.sliding_window = a.sliding_window;
    }
    let dtype = crate::parse_dtype(Some(&a.dtype), &candle_core::Device::Cpu)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut tensors: HashMap<String, candle_core::Tensor> = HashMap::new();
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
    );
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![v, h]),
        ("model.norm.weight".into(), vec![h]),
    ];
    if !cfg.tie_word_embeddings {
        shapes.push(("lm_head.weight".into(), vec![v, h]));
    }
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
            ("self_attn.q_proj.weight", vec![q, h]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.o_proj.weight", vec![h, q]),
            ("mlp.gate_proj.weight", vec![i, h]),
            ("mlp.up_proj.weight", vec![i, h]),
            ("mlp.down_proj.weight", vec![h, i]),
        ] {
            shapes.push((format!("{p}.{n}"), s));
        }
        if cfg.qkv_bias {
            for (n, s) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                shapes.push((format!("{p}.self_attn.{n}.bias"), vec![s]));
            }
        }
    }
    for (name, shape) in shapes {
        let t = dummy_tensor(a.seed, &name, &shape)?.to_dtype(dtype)?;
        tensors.insert(name, t);
    }
    candle_core::safetensors::save(&tensors, a.out.join("model.safetensors"))?;
    std::fs::write(a.out.join("config.json"), hf_config_json(&cfg, dtype))?;
    crate::say(&format!(
        "wrote {} ({} layers, seed {})",
        a.out.display(),
        cfg.num_hidden_layers,
        a.seed
    ));
    Ok(())
}

/// A config.json that both our loader and transformers read.
fn hf_config_json(cfg: &engine_model::DecoderConfig, dtype: DType) -> String {
    let arch = cfg.architecture.as_str();
    let class = match arch {
        "llama" => "LlamaForCausalLM",
        "mistral" => "MistralForCausalLM",
        _ => "Qwen2ForCausalLM",
    };
    let rope_scaling = cfg.rope_scaling.map(|r| {
        serde_json::json!({"rope_type": "llama3", "factor": r.factor, "low_freq_factor": r.low_freq_factor,
            "high_freq_factor": r.high_freq_factor, "original_max_position_embeddings": r.original_max_position_embeddings})
    });
    let torch_dtype = match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    };
    let v = serde_json::json!({
        "architectures": [class], "model_type": arch, "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta, "rope_scaling": rope_scaling,
        "max_position_embeddings": cfg.max_position_embeddings, "sliding_window": cfg.sliding_window,
        "use_sliding_window": cfg.sliding_window.is_some(), "attention_bias": cfg.qkv_bias,
        "tie_word_embeddings": cfg.tie_word_embeddings, "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_ids, "torch_dtype": torch_dtype, "hidden_act": "silu",
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

#[derive(Debug, Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Prompt length in tokens (random ids drawn from --prompt-seed).
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 1)]
    pub prompt_seed: u64,
    /// Greedy decode steps after the prefill.
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// Also run this many prompts together and alone, and compare greedy tokens.
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
    /// Follow the prompt and tokens of an earlier dump (PATH.json) instead of greedy
    /// decoding here, so rows stay comparable after a near-tie flips a token.
    #[arg(long)]
    pub follow: Option<PathBuf>,
    /// Output: PATH.json (tokens, shape) and PATH.f32 (logits, row-major f32 LE).
    #[arg(long)]
    pub out: PathBuf,
}

fn random_prompt(seed: u64, len: usize, vocab: usize) -> Vec<u32> {
    let mut rng = engine_core::rng::SeqRng::new(seed);
    (0..len)
        .map(|_| (rng.next_u64() % vocab.min(32000) as u64) as u32)
        .collect()
}

/// Greedy-decode a random prompt and dump the logits of every generated position.
pub fn logits(a: LogitsArgs) -> anyhow::Result<()> {
    let device = crate::parse_device(&a.model.device)?;
    let dtype = crate::parse_dtype(a.model.dtype.as_deref(), &device)?;
    let opts = a.model.load_options(device, dtype);
    let load = || engine_model::load_model(&a.model.model, &opts, &crate::say);
    let model = load()?;
    let vocab = model.decoder.config().vocab_size;
    let engine_cfg = a.engine.engine_config(a.model.block_size, a.model.seed);
    let mut engine = Engine::new(model, engine_cfg.clone())?;
    let (prompt, generated) = match &a.follow {
        Some(path) => followed_tokens(path)?,
        None => {
            let prompt = random_prompt(a.prompt_seed, a.prompt_len, vocab);
            let params = SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(a.steps + 1)
            };
            let out = engine
                .generate(vec![(Prompt::Tokens(prompt.clone()), params)])?
                .remove(0)?;
            (prompt, out.token_ids)
        }
    };
    let out = FollowedOut {
        token_ids: generated,
    };
    // Re-run position by position to collect full logit rows (greedy path is fixed now).
    let rows = engine_core::runner::full_logits(&engine, &prompt, &out.token_ids)?;
    let flat: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(a.out.with_extension("f32"), flat)?;
    let meta = serde_json::json!({"prompt": prompt, "generated": out.token_ids, "shape": [rows.len(), vocab],
        "dtype": format!("{dtype:?}").to_lowercase(), "device": a.model.device});
    std::fs::write(a.out.with_extension("json"), serde_json::to_string(&meta)?)?;
    crate::say(&format!(
        "wrote {} rows of logits to {}",
        rows.len(),
        a.out.with_extension("f32").display()
    ));
    if a.batch > 0 {
        let reqs: Vec<(Prompt, SamplingParams)> = (0..a.batch)
            .map(|i| {
                (
                    Prompt::Tokens(random_prompt(100 + i as u64, 8 + 13 * i % 97, vocab)),
                    SamplingParams {
                        ignore_eos: true,
                        logprobs: Some(2),
                        ..SamplingParams::greedy(a.steps)
                    },
                )
            })
            .collect();
        let together = engine.generate(reqs.clone())?;
        let mut same = 0;
        for (i, r) in reqs.into_iter().enumerate() {
            let alone = engine.generate(vec![r])?.remove(0)?;
            let t = together[i].as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
            match first_difference(&alone, t) {
                None => same += 1,
                Some((pos, margin_alone, margin_together)) => println!(
                    "  sequence {i}: first differs at output token {pos}; top-2 logprob margin there: alone {margin_alone:.4}, together {margin_together:.4}"
                ),
            }
        }
        println!(
            "batch invariance: {same}/{} sequences give the same greedy tokens together as alone",
            a.batch
        );
    }
    Ok(())
}

struct FollowedOut {
    token_ids: Vec<u32>,
}

/// Prompt and generated tokens of an earlier `engine logits` dump.
fn followed_tokens(path: &std::path::Path) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--follow {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("--follow {}", path.display()))?;
    let ids = |key: &str| -> anyhow::Result<Vec<u32>> {
        v.get(key)
            .and_then(|x| x.as_array())
            .with_context(|| format!("--follow {}: no `{key}` array", path.display()))?
            .iter()
            .map(|t| {
                t.as_u64()
                    .map(|t| t as u32)
                    .context("token ids must be integers")
            })
            .collect()
    };
    Ok((ids("prompt")?, ids("generated")?))
}

/// First output position where two greedy runs differ, with each run's top-2 logprob
/// margin there (a margin near 0 means a near-tie that rounding may flip).
fn first_difference(
    a: &engine_core::FinalOutput,
    b: &engine_core::FinalOutput,
) -> Option<(usize, f32, f32)> {
    let pos = a
        .token_ids
        .iter()
        .zip(&b.token_ids)
        .position(|(x, y)| x != y)?;
    let margin = |o: &engine_core::FinalOutput| {
        o.logprobs
            .get(pos)
            .map_or(f32::NAN, |s| match s.top_logprobs.as_slice() {
                [first, second, ..] => first.1 - second.1,
                _ => f32::NAN,
            })
    };
    Some((pos, margin(a), margin(b)))
}
