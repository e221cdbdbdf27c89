//! Shared helpers for the decoder's integration tests: seeded random weights written as a
//! Hugging Face model directory, a small driver of our paged decoder (block allocation,
//! per-position prefill, greedy decode) and logit comparison statistics.

#![allow(dead_code)]

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use engine_model::{Decoder, DecoderConfig, KvCache, SeqInput};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The prompts the SmolLM2 tests decode from (prose, code, a chat turn).
pub const PROMPTS: [&str; 5] = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
    "Water boils at a temperature of",
    "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n",
];

/// A seeded normal generator (splitmix64 + Box-Muller): no dependency, same on every host.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }

    /// `mean + std * N(0, 1)` of the given shape.
    pub fn tensor(&mut self, shape: &[usize], mean: f32, std: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| mean + std * self.normal()).collect();
        Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
    }

    pub fn tokens(&mut self, n: usize, vocab: usize) -> Vec<u32> {
        (0..n).map(|_| self.below(vocab) as u32).collect()
    }
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("engine-model-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {dir:?}"))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Random weights in Hugging Face names and shapes for `cfg`. Linear weights and biases
/// are N(0, `std`), the embedding N(0, 0.1) and norms N(1, 0.1) (near 1, not exactly 1,
/// so a norm weight that is skipped or misapplied shows). `lm_head.weight` is written
/// unless the embeddings are tied.
pub fn random_weights(cfg: &DecoderConfig, seed: u64, std: f32) -> Result<Vec<(String, Tensor)>> {
    let mut rng = Rng::new(seed);
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let q = cfg.num_attention_heads * cfg.head_dim;
    let kv = cfg.num_key_value_heads * cfg.head_dim;
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        rng.tensor(&[v, h], 0.0, 0.1)?,
    )];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let mut push = |name: &str, shape: &[usize], mean: f32, s: f32| -> Result<()> {
            out.push((format!("{p}.{name}"), rng.tensor(shape, mean, s)?));
            Ok(())
        };
        push("input_layernorm.weight", &[h], 1.0, 0.1)?;
        push("post_attention_layernorm.weight", &[h], 1.0, 0.1)?;
        push("self_attn.q_proj.weight", &[q, h], 0.0, std)?;
        push("self_attn.k_proj.weight", &[kv, h], 0.0, std)?;
        push("self_attn.v_proj.weight", &[kv, h], 0.0, std)?;
        if cfg.qkv_bias {
            push("self_attn.q_proj.bias", &[q], 0.0, std)?;
            push("self_attn.k_proj.bias", &[kv], 0.0, std)?;
            push("self_attn.v_proj.bias", &[kv], 0.0, std)?;
        }
        push("self_attn.o_proj.weight", &[h, q], 0.0, std)?;
        push("mlp.gate_proj.weight", &[i, h], 0.0, std)?;
        push("mlp.up_proj.weight", &[i, h], 0.0, std)?;
        push("mlp.down_proj.weight", &[h, i], 0.0, std)?;
    }
    out.push(("model.norm.weight".to_string(), rng.tensor(&[h], 1.0, 0.1)?));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), rng.tensor(&[v, h], 0.0, 0.1)?));
    }
    Ok(out)
}

/// Write `config.json` and `model.safetensors` into `dir`.
pub fn write_model_dir(
    dir: &Path,
    config: &serde_json::Value,
    tensors: Vec<(String, Tensor)>,
) -> Result<()> {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config)?,
    )?;
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, dir.join("model.safetensors"))?;
    Ok(())
}

/// A tiny random model directory for `config` (a Hugging Face config.json value).
pub fn tiny_model_dir(tag: &str, config: &serde_json::Value, seed: u64) -> Result<TempDir> {
    let cfg = DecoderConfig::from_hf_json(&config.to_string(), tag)?;
    let dir = TempDir::new(tag)?;
    write_model_dir(dir.path(), config, random_weights(&cfg, seed, 0.1)?)?;
    Ok(dir)
}

/// Load our decoder (f32, CPU) from a Hugging Face model directory through `open_model`.
pub fn load_ours(dir: &Path) -> Result<Decoder> {
    let spec = dir.to_str().context("non-UTF-8 temp path")?;
    let mut opened = engine_model::open_model(spec, 0, &|_| {})?;
    Ok(Decoder::load(
        &opened.config,
        &mut opened.weights,
        DType::F32,
        &Device::Cpu,
    )?)
}

/// Our decoder with a paged cache and a trivial block allocator.
pub struct Ours {
    pub dec: Decoder,
    pub kv: KvCache,
    pub block_size: usize,
    free: Vec<u32>,
}

impl Ours {
    pub fn new(dec: Decoder, num_blocks: usize, block_size: usize) -> Result<Self> {
        let kv = KvCache::new(
            dec.config(),
            num_blocks,
            block_size,
            DType::F32,
            &Device::Cpu,
        )?;
        Ok(Self {
            dec,
            kv,
            block_size,
            free: (0..num_blocks as u32).collect(),
        })
    }

    /// Hand out free blocks in a shuffled order instead of 0, 1, 2, ...
    pub fn shuffle_free_blocks(&mut self, seed: u64) {
        Rng::new(seed).shuffle(&mut self.free);
    }

    /// Make every block free again (their stale contents must never be read).
    pub fn reset(&mut self) {
        self.free = (0..self.kv.num_blocks() as u32).collect();
    }

    /// Blocks for `tokens` tokens, taken from the front of the free list.
    pub fn alloc(&mut self, tokens: usize) -> Result<Vec<u32>> {
        let n = tokens.div_ceil(self.block_size);
        ensure!(n <= self.free.len(), "KV cache exhausted");
        Ok(self.free.drain(..n).collect())
    }

    /// One forward pass; the logits rows (one per sequence that wants them), in order.
    pub fn forward(&mut self, seqs: &[SeqInput]) -> Result<Vec<Vec<f32>>> {
        let inputs = self.dec.inputs(seqs, self.block_size)?;
        let logits = self.dec.forward(&inputs, &mut self.kv)?;
        Ok(logits.to_vec2::<f32>()?)
    }

    /// Logits at every position of `prompt` in ONE forward pass (a batch of its prefixes,
    /// each a multi-token prefill), then `steps` greedy decode steps (one token each)
    /// continuing the full prompt. Returns all tokens fed (prompt + `steps` generated) and
    /// the logits after each of them (`prompt.len() + steps` rows).
    pub fn greedy(&mut self, prompt: &[u32], steps: usize) -> Result<(Vec<u32>, Vec<Vec<f32>>)> {
        let n = prompt.len();
        let main = self.alloc(n + steps)?;
        let prefix_blocks: Vec<Vec<u32>> =
            (1..n).map(|len| self.alloc(len)).collect::<Result<_>>()?;
        let mut seqs: Vec<SeqInput> = prefix_blocks
            .iter()
            .enumerate()
            .map(|(t, blocks)| SeqInput {
                tokens: &prompt[..=t],
                num_computed_tokens: 0,
                block_table: blocks,
                want_logits: true,
            })
            .collect();
        seqs.push(SeqInput {
            tokens: prompt,
            num_computed_tokens: 0,
            block_table: &main,
            want_logits: true,
        });
        let mut logits = self.forward(&seqs)?;
        let mut tokens = prompt.to_vec();
        for _ in 0..steps {
            let next = argmax(logits.last().context("no logits")?);
            let pos = tokens.len();
            tokens.push(next);
            let out = self.forward(&[SeqInput {
                tokens: &[next],
                num_computed_tokens: pos,
                block_table: &main,
                want_logits: true,
            }])?;
            logits.extend(out);
        }
        Ok((tokens, logits))
    }
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Difference between the largest and second largest logit.
pub fn top2_margin(v: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in v {
        if x > a {
            b = a;
            a = x;
        } else if x > b {
            b = x;
        }
    }
    a - b
}

pub fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Worst disagreement seen between two sets of logits.
/// Relative error of one row = max |ours - ref| / max |ref|.
#[derive(Debug, Default, Clone)]
pub struct ErrStats {
    pub max_rel: f32,
    pub max_abs: f32,
    pub worst: String,
    pub rows: usize,
}

impl ErrStats {
    pub fn add(&mut self, label: impl FnOnce() -> String, ours: &[f32], reference: &[f32]) {
        assert_eq!(ours.len(), reference.len(), "logit row lengths differ");
        let abs = ours
            .iter()
            .zip(reference)
            .map(|(a, b)| (a - b).abs())
            .fold(
                0f32,
                |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
            );
        let scale = reference.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
        let rel = abs / scale;
        self.rows += 1;
        self.max_abs = self.max_abs.max(abs);
        if rel > self.max_rel || self.worst.is_empty() {
            self.max_rel = self.max_rel.max(rel);
            self.worst = format!("{} (abs {abs:.3e}, max|ref| {scale:.3})", label());
        }
    }

    pub fn check(&self, what: &str, tol: f32) {
        eprintln!(
            "{what}: {} rows, max rel err {:.3e}, max abs err {:.3e}, worst at {}",
            self.rows, self.max_rel, self.max_abs, self.worst
        );
        assert!(
            self.max_rel <= tol,
            "{what}: max relative logit error {:.3e} > {tol:.0e}, worst at {}",
            self.max_rel,
            self.worst
        );
    }
}
