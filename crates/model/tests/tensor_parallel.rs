//! Tensor parallelism, simulated on the CPU: a tiny model's weights are split across R
//! ranks exactly as docs/scaling.md lays out (Megatron-style), each rank runs every layer
//! on its own shards and its own part of the KV cache, and the partial outputs are summed
//! where the all-reduces would go. The logits must equal the unsplit decoder's (through its
//! public forward path) within f32 rounding, for R = 1, 2 and 4 on Llama (GQA, llama3
//! rope), Mistral (sliding window) and Qwen2 (q/k/v biases, tied embeddings) configs.
//!
//! Per rank r of R (`hq` = heads / R query heads, `g` = heads / kv_heads per KV head):
//! - embedding: vocabulary rows [r V/R, (r+1) V/R); a token outside gives zeros; the
//!   ranks' rows are summed (all-reduce 0, once per forward);
//! - q_proj: column-parallel (its output rows for query heads [r hq, (r+1) hq));
//!   k_proj, v_proj: the KV heads those query heads read, [r hq / g, ...): kv_heads / R
//!   of them, or one head shared by R / kv_heads ranks (replicated) when kv_heads < R;
//!   biases split like their rows;
//! - attention: on the rank's heads and its KV cache only (no communication);
//! - o_proj: row-parallel (input columns of the rank's heads) -> partial [T, hidden];
//!   all-reduce 1;
//! - gate_proj, up_proj: column-parallel (intermediate rows [r I/R, ...)); down_proj:
//!   row-parallel -> partial [T, hidden]; all-reduce 2;
//! - norms: replicated (every rank holds the full residual stream after an all-reduce);
//! - lm_head: vocabulary rows [r V/R, ...) -> logits slice; all-gather.
//!
//! Tolerance: 1e-5 relative per logit row (max |tp - ref| / max |ref|), since only the
//! order of the float sums differs. Measured on x86-64 CPU: 5.7e-7 to 9.6e-7 for every
//! model and rank count (printed with --nocapture). Leaving one rank out of the
//! all-reduces gives errors of order 1, so the comparison can fail.

mod common;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use common::{tiny_model_dir, ErrStats, Ours, Rng};
use engine_model::DecoderConfig;
use serde_json::json;
use std::collections::HashMap;

const PROMPT_LEN: usize = 12;
const DECODE_STEPS: usize = 20;
const TOL: f32 = 1e-5;

/// The collectives, simulated: the sum (or concatenation) of every rank's tensor, which
/// NCCL would leave on each rank. Counts the bytes each rank contributes to all-reduces.
#[derive(Default)]
struct Comm {
    all_reduce_bytes: u64,
    all_reduces: u64,
    /// Test of the test: leave this rank out of every all-reduce.
    drop_rank: Option<usize>,
}

impl Comm {
    fn all_reduce(&mut self, parts: Vec<Tensor>) -> Result<Tensor> {
        self.all_reduces += 1;
        self.all_reduce_bytes += (parts[0].elem_count() * parts[0].dtype().size_in_bytes()) as u64;
        let mut kept = parts
            .into_iter()
            .enumerate()
            .filter(|(r, _)| Some(*r) != self.drop_rank)
            .map(|(_, t)| t);
        let first = kept.next().context("no ranks")?;
        kept.try_fold(first, |acc, t| Ok(acc.add(&t)?))
    }

    fn all_gather(&mut self, parts: Vec<Tensor>) -> Result<Tensor> {
        Ok(Tensor::cat(&parts, D::Minus1)?)
    }
}

/// One rank's shards of one layer.
struct RankLayer {
    input_norm: Tensor, // [hidden] (replicated)
    post_norm: Tensor,  // [hidden] (replicated)
    q: Tensor,          // [hq * d, hidden]
    k: Tensor,          // [kvl * d, hidden]
    v: Tensor,          // [kvl * d, hidden]
    qkv_bias: Option<[Tensor; 3]>,
    o: Tensor,               // [hidden, hq * d]
    gate: Tensor,            // [I / R, hidden]
    up: Tensor,              // [I / R, hidden]
    down: Tensor,            // [hidden, I / R]
    k_cache: Option<Tensor>, // [kvl, S, d]
    v_cache: Option<Tensor>, // [kvl, S, d]
}

/// One simulated GPU.
struct Rank {
    cfg: DecoderConfig,
    inv_freq: Vec<f32>,
    vocab_start: usize,
    embed: Tensor,   // [V / R, hidden]
    lm_head: Tensor, // [V / R, hidden]
    norm: Tensor,    // [hidden]
    layers: Vec<RankLayer>,
    heads: usize,    // hq
    kv_heads: usize, // kvl
}

/// Rows [start, start + len) of a weight.
fn rows(w: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    Ok(w.narrow(0, start, len)?.contiguous()?)
}

/// Columns [start, start + len) of a weight.
fn cols(w: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    Ok(w.narrow(1, start, len)?.contiguous()?)
}

/// Split the weights of `cfg` for rank `r` of `ranks`.
fn shard(w: &HashMap<String, Tensor>, cfg: &DecoderConfig, r: usize, ranks: usize) -> Result<Rank> {
    let (nh, nkv, d) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    let (inter, vocab) = (cfg.intermediate_size, cfg.vocab_size);
    ensure!([nh, inter, vocab].iter().all(|n| n.is_multiple_of(ranks)));
    ensure!(
        nkv.is_multiple_of(ranks) || ranks.is_multiple_of(nkv),
        "{nkv} KV heads, {ranks} ranks"
    );
    let get = |name: &str| w.get(name).with_context(|| format!("no {name}"));
    let (hq, g, i_len, v_len) = (nh / ranks, nh / nkv, inter / ranks, vocab / ranks);
    // (start, len) of the rank's q rows, k/v rows (its query heads' KV heads) and MLP rows.
    let (q, kv, mlp) = (
        (r * hq * d, hq * d),
        (r * hq / g * d, (hq / g).max(1) * d),
        (r * i_len, i_len),
    );
    let mut layers = Vec::new();
    for l in 0..cfg.num_hidden_layers {
        let at = |n: &str| get(&format!("model.layers.{l}.{n}"));
        let split = |n: &str, (start, len): (usize, usize)| rows(at(n)?, start, len);
        let qkv_bias = cfg.qkv_bias.then(|| -> Result<[Tensor; 3]> {
            let b = |n: &str, span| split(&format!("self_attn.{n}_proj.bias"), span);
            Ok([b("q", q)?, b("k", kv)?, b("v", kv)?])
        });
        layers.push(RankLayer {
            input_norm: at("input_layernorm.weight")?.clone(),
            post_norm: at("post_attention_layernorm.weight")?.clone(),
            q: split("self_attn.q_proj.weight", q)?,
            k: split("self_attn.k_proj.weight", kv)?,
            v: split("self_attn.v_proj.weight", kv)?,
            qkv_bias: qkv_bias.transpose()?,
            o: cols(at("self_attn.o_proj.weight")?, q.0, q.1)?,
            gate: split("mlp.gate_proj.weight", mlp)?,
            up: split("mlp.up_proj.weight", mlp)?,
            down: cols(at("mlp.down_proj.weight")?, mlp.0, mlp.1)?,
            k_cache: None,
            v_cache: None,
        });
    }
    let embed = get("model.embed_tokens.weight")?;
    let head = if cfg.tie_word_embeddings {
        embed
    } else {
        get("lm_head.weight")?
    };
    Ok(Rank {
        cfg: cfg.clone(),
        inv_freq: engine_model::rope::inv_freq(cfg),
        vocab_start: r * v_len,
        embed: rows(embed, r * v_len, v_len)?,
        lm_head: rows(head, r * v_len, v_len)?,
        norm: get("model.norm.weight")?.clone(),
        layers,
        heads: hq,
        kv_heads: kv.1 / d,
    })
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    Ok(x.broadcast_div(&rms)?.broadcast_mul(w)?)
}

/// Half-split rotary embedding of `x` [T, heads, d] at `positions`.
fn rope(x: &Tensor, positions: &[usize], inv_freq: &[f32]) -> Result<Tensor> {
    let (t, half) = (positions.len(), inv_freq.len());
    let angles: Vec<f32> = positions
        .iter()
        .flat_map(|&p| inv_freq.iter().map(move |f| p as f32 * f))
        .collect();
    let angles = Tensor::from_vec(angles, (t, 1, half), x.device())?;
    let (cos, sin) = (angles.cos()?, angles.sin()?);
    let (x1, x2) = (
        x.narrow(D::Minus1, 0, half)?,
        x.narrow(D::Minus1, half, half)?,
    );
    let a = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
    let b = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
    Ok(Tensor::cat(&[a, b], D::Minus1)?)
}

/// Additive mask [T, S] for queries at `positions` over keys 0..S.
fn mask(positions: &[usize], s: usize, window: Option<usize>) -> Result<Tensor> {
    let m: Vec<f32> = positions
        .iter()
        .flat_map(|&p| {
            (0..s).map(move |j| {
                let seen = j <= p && window.is_none_or(|w| p - j < w);
                if seen {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(m, (positions.len(), s), &Device::Cpu)?)
}

impl Rank {
    /// This rank's share of the embedding of `ids`: [T, hidden], zero rows for tokens
    /// outside its vocabulary slice.
    fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let v_len = self.embed.dim(0)?;
        let local = |&i: &u32| {
            (i as usize)
                .checked_sub(self.vocab_start)
                .filter(|&k| k < v_len)
        };
        let idx: Vec<u32> = ids.iter().map(|i| local(i).unwrap_or(0) as u32).collect();
        let keep: Vec<f32> = ids
            .iter()
            .map(|i| f32::from(u8::from(local(i).is_some())))
            .collect();
        let rows = self
            .embed
            .index_select(&Tensor::new(idx, &Device::Cpu)?, 0)?;
        Ok(rows.broadcast_mul(&Tensor::from_vec(keep, (ids.len(), 1), &Device::Cpu)?)?)
    }

    /// Attention of layer `l` on this rank's heads: the partial o_proj output [T, hidden].
    fn attention(&mut self, l: usize, x: &Tensor, pos: &[usize]) -> Result<Tensor> {
        let (cfg, inv) = (&self.cfg, &self.inv_freq);
        let (t, d, hq, kvl) = (pos.len(), cfg.head_dim, self.heads, self.kv_heads);
        let layer = &mut self.layers[l];
        let h = rms_norm(x, &layer.input_norm, cfg.rms_norm_eps)?;
        let mut qkv = [
            h.matmul(&layer.q.t()?)?,
            h.matmul(&layer.k.t()?)?,
            h.matmul(&layer.v.t()?)?,
        ];
        if let Some(bias) = &layer.qkv_bias {
            for (y, b) in qkv.iter_mut().zip(bias) {
                *y = y.broadcast_add(b)?;
            }
        }
        let [q, k, v] = qkv;
        let q = rope(&q.reshape((t, hq, d))?, pos, inv)?.transpose(0, 1)?; // [hq, T, d]
        let k = rope(&k.reshape((t, kvl, d))?, pos, inv)?.transpose(0, 1)?; // [kvl, T, d]
        let v = v.reshape((t, kvl, d))?.transpose(0, 1)?; // [kvl, T, d]
        let append = |cache: &Option<Tensor>, new: Tensor| -> Result<Tensor> {
            Ok(match cache {
                Some(c) => Tensor::cat(&[c, &new], 1)?,
                None => new,
            }
            .contiguous()?)
        };
        layer.k_cache = Some(append(&layer.k_cache, k)?);
        layer.v_cache = Some(append(&layer.v_cache, v)?);
        let (kc, vc) = (
            layer.k_cache.as_ref().context("k")?,
            layer.v_cache.as_ref().context("v")?,
        );
        let s = kc.dim(1)?;
        let m = mask(pos, s, cfg.sliding_window)?;
        let g = cfg.num_attention_heads / cfg.num_key_value_heads;
        let mut heads = Vec::with_capacity(hq);
        for j in 0..hq {
            let (qj, kv) = (q.get(j)?.contiguous()?, j / g); // local query head -> local KV head
            let scores = (qj.matmul(&kc.get(kv)?.t()?)? / (d as f64).sqrt())?.add(&m)?; // [T, S]
            let p = candle_nn::ops::softmax_last_dim(&scores)?;
            heads.push(p.matmul(&vc.get(kv)?.contiguous()?)?); // [T, d]
        }
        let out = Tensor::cat(&heads, D::Minus1)?; // [T, hq * d]
        Ok(out.matmul(&layer.o.t()?)?)
    }

    /// The MLP of layer `l` on this rank's intermediate slice: partial [T, hidden].
    fn mlp(&self, l: usize, x: &Tensor) -> Result<Tensor> {
        let layer = &self.layers[l];
        let h = rms_norm(x, &layer.post_norm, self.cfg.rms_norm_eps)?;
        let act =
            candle_nn::ops::silu(&h.matmul(&layer.gate.t()?)?)?.mul(&h.matmul(&layer.up.t()?)?)?;
        Ok(act.matmul(&layer.down.t()?)?)
    }

    /// Bytes of K and V this rank holds.
    fn kv_cache_bytes(&self) -> usize {
        let bytes = |c: &Option<Tensor>| c.as_ref().map_or(0, |t| t.elem_count() * 4);
        self.layers
            .iter()
            .map(|l| bytes(&l.k_cache) + bytes(&l.v_cache))
            .sum()
    }
}

/// A forward over new tokens `ids` at `pos` on every rank: logits [T, vocab].
fn forward(ranks: &mut [Rank], comm: &mut Comm, ids: &[u32], pos: &[usize]) -> Result<Tensor> {
    let eps = ranks[0].cfg.rms_norm_eps;
    let mut x = comm.all_reduce(ranks.iter().map(|r| r.embed(ids)).collect::<Result<_>>()?)?;
    for l in 0..ranks[0].layers.len() {
        let parts = ranks.iter_mut().map(|r| r.attention(l, &x, pos));
        x = (&x + comm.all_reduce(parts.collect::<Result<_>>()?)?)?;
        let parts = ranks.iter().map(|r| r.mlp(l, &x));
        x = (&x + comm.all_reduce(parts.collect::<Result<_>>()?)?)?;
    }
    let logits = ranks
        .iter()
        .map(|r| Ok(rms_norm(&x, &r.norm, eps)?.matmul(&r.lm_head.t()?)?));
    comm.all_gather(logits.collect::<Result<_>>()?)
}

/// Run the split model on `tokens` (a prefill of the prompt, then one decode step per
/// token): its logits rows, the collectives' counts, and the KV bytes of each rank.
fn run_split(
    dir: &std::path::Path,
    cfg: &DecoderConfig,
    ranks: usize,
    tokens: &[u32],
    drop_rank: Option<usize>,
) -> Result<(Vec<Vec<f32>>, Comm, Vec<usize>)> {
    let w = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
    let mut rs: Vec<Rank> = (0..ranks)
        .map(|r| shard(&w, cfg, r, ranks))
        .collect::<Result<_>>()?;
    let mut comm = Comm {
        drop_rank,
        ..Comm::default()
    };
    let steps = std::iter::once(0..PROMPT_LEN).chain((PROMPT_LEN..tokens.len()).map(|p| p..p + 1));
    let mut rows = Vec::new();
    for span in steps {
        let pos: Vec<usize> = span.clone().collect();
        let logits = forward(&mut rs, &mut comm, &tokens[span], &pos)?;
        rows.extend(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?);
    }
    Ok((rows, comm, rs.iter().map(Rank::kv_cache_bytes).collect()))
}

fn check(name: &str, config: serde_json::Value, seed: u64) -> Result<()> {
    let cfg = DecoderConfig::from_hf_json(&config.to_string(), name)?;
    let dir = tiny_model_dir(name, &config, seed)?;
    // The unsplit decoder: a random prompt, its greedy continuation, logits after each.
    let mut unsplit = Ours::new(common::load_ours(dir.path())?, 64, 4)?;
    let prompt = Rng::new(seed + 100).tokens(PROMPT_LEN, cfg.vocab_size);
    let (tokens, reference) = unsplit.greedy(&prompt, DECODE_STEPS)?;
    let (hidden, layers, n) = (
        cfg.hidden_size as u64,
        cfg.num_hidden_layers as u64,
        tokens.len(),
    );
    for ranks in [1, 2, 4] {
        let (ours, comm, kv) = run_split(dir.path(), &cfg, ranks, &tokens, None)?;
        let mut stats = ErrStats::default();
        for (p, (o, r)) in ours.iter().zip(&reference).enumerate() {
            stats.add(|| format!("position {p}"), o, r);
        }
        assert_eq!(ours.len(), reference.len());
        stats.check(&format!("{name} on {ranks} rank(s)"), TOL);
        // Two all-reduces per layer and one for the embedding, of [T, hidden] f32 each.
        let forwards = 1 + (n - PROMPT_LEN) as u64;
        assert_eq!(comm.all_reduces, forwards * (2 * layers + 1));
        assert_eq!(
            comm.all_reduce_bytes,
            n as u64 * (2 * layers + 1) * hidden * 4
        );
        // Each rank caches max(1, kv_heads / R) heads: 1/R of the cache, or a replica of
        // one KV head when there are fewer KV heads than ranks.
        let whole = n * layers as usize * 2 * cfg.num_key_value_heads * cfg.head_dim * 4;
        let per_rank = whole / cfg.num_key_value_heads * (cfg.num_key_value_heads / ranks).max(1);
        assert!(
            kv.iter().all(|&b| b == per_rank),
            "{name} R={ranks}: KV bytes {kv:?}, want {per_rank}"
        );
    }
    // The comparison has teeth: a rank missing from the all-reduces is far off.
    let (broken, _, _) = run_split(dir.path(), &cfg, 2, &tokens, Some(1))?;
    let mut stats = ErrStats::default();
    for (o, r) in broken.iter().zip(&reference) {
        stats.add(String::new, o, r);
    }
    assert!(
        stats.max_rel > 100.0 * TOL,
        "{name}: dropping a rank went unnoticed ({})",
        stats.max_rel
    );
    Ok(())
}

#[test]
fn llama_gqa_splits_over_2_and_4_ranks() -> Result<()> {
    // 4 query heads on 2 KV heads: on 4 ranks each KV head is replicated on 2 ranks.
    let config = json!({
        "model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 128,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        "tie_word_embeddings": false
    });
    check("llama", config, 21)
}

#[test]
fn mistral_sliding_window_splits_over_2_and_4_ranks() -> Result<()> {
    // A window of 5 over 32 tokens; head_dim 16 with hidden 48.
    let config = json!({
        "model_type": "mistral", "vocab_size": 256, "hidden_size": 48, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 128, "sliding_window": 5, "tie_word_embeddings": false
    });
    check("mistral", config, 22)
}

#[test]
fn qwen2_biases_and_tied_embeddings_split_over_2_and_4_ranks() -> Result<()> {
    // 8 query heads on 4 KV heads: 2 KV heads per rank on 2 ranks, 1 on 4.
    let config = json!({
        "model_type": "qwen2", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 128,
        "sliding_window": 128, "max_window_layers": 2, "use_sliding_window": false,
        "tie_word_embeddings": true
    });
    check("qwen2", config, 23)
}
