//! The one Llama-family decoder (Llama 2/3/3.1, Mistral, Qwen2/2.5), driven by a
//! [`DecoderConfig`], reading and writing a paged [`KvCache`].
//!
//! The batch is flat: `T` tokens from any number of sequences (see [`StepBatch`]). The
//! layer loop is [`Decoder::layer`], run over one of two op sets (`ops`, candle or fused):
//!
//! ```text
//!  residual = embed(ids)                                     [T, hidden]
//!  per layer:
//!    hs, residual = add_rms_norm(pending, residual)          (layer 0: rms_norm)
//!    qkv = hs @ W_qkv^T (+ b_qkv)                            one GEMM; rows [q | k | v heads]
//!    q = rope_and_cache(qkv)                                 rope q, k; k, v -> cache slots
//!    attn = attention(q)                                     [T, heads * d]
//!    hs, residual = add_rms_norm(attn @ W_o^T, residual)
//!    pending = silu_mul(hs @ W_gate_up^T) @ W_down^T         one GEMM for gate and up
//!  logits = norm(residual + pending)[logits rows] @ lm_head^T
//! ```
//! q/k/v and gate/up are fused into one matrix each at load (with Qwen2's biases).

use crate::batch::{BatchBuilder, SeqInput, StepBatch};
use crate::config::DecoderConfig;
use crate::kv_cache::KvCache;
use crate::ops::{CandleOps, FusedOps, Heads, HotOps};
use crate::rope::RopeTable;
use crate::weights::WeightSource;
use crate::Result;
use candle_core::{DType, Device, Tensor};
use engine_kernels::KernelChoice;

/// A dense layer `y = x W^T + b`.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Tensor,       // [out, in]
    bias: Option<Tensor>, // [out]
}

impl Linear {
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?; // [T, out]
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// Stack layers that read the same input into one (their outputs side by side).
    fn fuse(parts: Vec<Linear>) -> Result<Linear> {
        let weights: Vec<&Tensor> = parts.iter().map(|p| &p.weight).collect();
        let biases: Option<Vec<&Tensor>> = parts.iter().map(|p| p.bias.as_ref()).collect();
        Ok(Linear {
            weight: Tensor::cat(&weights, 0)?,
            bias: biases.map(|b| Tensor::cat(&b, 0)).transpose()?,
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Layer {
    input_layernorm: Tensor,
    post_attention_layernorm: Tensor,
    qkv_proj: Linear, // [(heads + 2 kv_heads) * d, hidden]
    o_proj: Linear,
    gate_up_proj: Linear, // [2 * intermediate, hidden]
    down_proj: Linear,
}

/// The running residual stream and the last output not yet added to it (the add is
/// fused into the next norm).
struct Stream {
    residual: Tensor,        // [T, hidden]
    pending: Option<Tensor>, // [T, hidden]
}

impl Stream {
    /// `rms_norm(residual + pending) * w`, folding `pending` into the residual.
    fn norm(&mut self, ops: &impl HotOps, w: &Tensor, eps: f32) -> Result<Tensor> {
        match self.pending.take() {
            None => ops.rms_norm(&self.residual, w, eps),
            Some(x) => {
                let (normed, sum) = ops.add_rms_norm(&x, &self.residual, w, eps)?;
                self.residual = sum;
                Ok(normed)
            }
        }
    }
}

/// The decoder's weights and rope table.
#[derive(Debug, Clone)]
pub struct Decoder {
    cfg: DecoderConfig,
    embed_tokens: Tensor, // [vocab, hidden]
    layers: Vec<Layer>,
    norm: Tensor,    // [hidden]
    lm_head: Tensor, // [vocab, hidden] (the embedding when tied)
    rope: RopeTable,
    dtype: DType,
    device: Device,
    /// Resolved: `Candle` or `Fused`.
    kernels: KernelChoice,
}

impl Decoder {
    /// Load every tensor the config calls for from `src`.
    pub fn load(
        cfg: &DecoderConfig,
        src: &mut WeightSource,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let embed_tokens = src.get("model.embed_tokens.weight", &[v, h], dtype, device)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| load_layer(cfg, src, &format!("model.layers.{i}"), dtype, device))
            .collect::<Result<Vec<_>>>()?;
        let norm = src.get("model.norm.weight", &[h], dtype, device)?;
        let lm_head = if cfg.tie_word_embeddings && !src.contains("lm_head.weight") {
            embed_tokens.clone()
        } else {
            src.get("lm_head.weight", &[v, h], dtype, device)?
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope: RopeTable::new(cfg, dtype, device)?,
            dtype,
            device: device.clone(),
            kernels: KernelChoice::Auto.resolve(device),
        })
    }

    /// Use plain candle ops or the fused kernels (see [`KernelChoice::resolve`] for
    /// what `Auto` picks).
    pub fn set_kernels(&mut self, kernels: KernelChoice) {
        self.kernels = kernels.resolve(&self.device);
    }

    /// The kernel set in use: `Candle` or `Fused`.
    pub fn kernels(&self) -> KernelChoice {
        self.kernels
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn heads(&self) -> Heads {
        let c = &self.cfg;
        Heads {
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        }
    }

    /// Bytes held by the weights (tied embeddings counted once).
    pub fn weight_bytes(&self) -> u64 {
        self.cfg.num_parameters() * self.dtype.size_in_bytes() as u64
    }

    /// A builder for one step's batch over a cache of `block_size`-token blocks.
    pub fn batch(&self, block_size: usize, num_tokens: usize) -> BatchBuilder<'_> {
        BatchBuilder::new(block_size, self.cfg.sliding_window, num_tokens)
    }

    /// Flatten `seqs` into one step's batch (a convenience over [`Decoder::batch`]).
    pub fn inputs(&self, seqs: &[SeqInput], block_size: usize) -> Result<StepBatch> {
        let tokens = seqs.iter().map(|s| s.tokens.len()).sum();
        let mut b = BatchBuilder::new(block_size, self.cfg.sliding_window, tokens);
        for s in seqs {
            b.push(*s)?;
        }
        b.finish(&self.device)
    }

    /// Run the batch; returns f32 logits [num_logits, vocab] on the device (an empty
    /// host tensor when no row wants logits: a prefill chunk only writes the cache).
    pub fn forward(&self, batch: &StepBatch, kv: &mut KvCache) -> Result<Tensor> {
        let geo = self.heads();
        let hidden = match self.kernels {
            KernelChoice::Fused => {
                self.layers(&FusedOps::prepare(batch, &self.rope, geo), batch, kv)?
            }
            _ => self.layers(&CandleOps::prepare(batch, &self.rope, geo)?, batch, kv)?,
        };
        match hidden {
            Some(h) => Ok(h.matmul(&self.lm_head.t()?)?.to_dtype(DType::F32)?),
            None => Ok(Tensor::zeros(
                (0, self.cfg.vocab_size),
                DType::F32,
                &Device::Cpu,
            )?),
        }
    }

    /// Every layer, then the final norm of the logits rows ([S, hidden]; `None` when
    /// no row wants logits).
    fn layers(
        &self,
        ops: &impl HotOps,
        batch: &StepBatch,
        kv: &mut KvCache,
    ) -> Result<Option<Tensor>> {
        let eps = self.cfg.rms_norm_eps as f32;
        let mut stream = Stream {
            residual: self.embed_tokens.index_select(&batch.input_ids, 0)?,
            pending: None,
        };
        for l in 0..self.layers.len() {
            self.layer(ops, l, &mut stream, kv)?;
        }
        if batch.num_logits == 0 {
            return Ok(None);
        }
        let rows = &batch.logits_indices;
        let mut last = Stream {
            residual: stream.residual.index_select(rows, 0)?,
            pending: stream
                .pending
                .map(|p| p.index_select(rows, 0))
                .transpose()?,
        };
        Ok(Some(last.norm(ops, &self.norm, eps)?))
    }

    /// One decoder layer (see the module doc).
    fn layer(
        &self,
        ops: &impl HotOps,
        l: usize,
        stream: &mut Stream,
        kv: &mut KvCache,
    ) -> Result<()> {
        let layer = &self.layers[l];
        let eps = self.cfg.rms_norm_eps as f32;
        let hs = stream.norm(ops, &layer.input_layernorm, eps)?;
        let qkv = layer.qkv_proj.forward(&hs)?; // [T, (heads + 2 kv_heads) * d]
        let q = ops.rope_and_cache(&qkv, kv, l)?;
        let attn = ops.attention(&q, kv, l)?; // [T, heads * d]
        stream.pending = Some(layer.o_proj.forward(&attn)?);
        let hs = stream.norm(ops, &layer.post_attention_layernorm, eps)?;
        let act = ops.silu_mul(&layer.gate_up_proj.forward(&hs)?)?; // [T, intermediate]
        stream.pending = Some(layer.down_proj.forward(&act)?);
        Ok(())
    }
}

fn load_layer(
    cfg: &DecoderConfig,
    src: &mut WeightSource,
    p: &str,
    dtype: DType,
    dev: &Device,
) -> Result<Layer> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let q_out = cfg.num_attention_heads * cfg.head_dim;
    let kv_out = cfg.num_key_value_heads * cfg.head_dim;
    let mut linear = |name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
        let weight = src.get(&format!("{p}.{name}.weight"), &[out, inp], dtype, dev)?;
        let bias = match bias {
            true => Some(src.get(&format!("{p}.{name}.bias"), &[out], dtype, dev)?),
            false => None,
        };
        Ok(Linear { weight, bias })
    };
    let b = cfg.qkv_bias;
    let qkv_proj = Linear::fuse(vec![
        linear("self_attn.q_proj", q_out, h, b)?,
        linear("self_attn.k_proj", kv_out, h, b)?,
        linear("self_attn.v_proj", kv_out, h, b)?,
    ])?;
    let o_proj = linear("self_attn.o_proj", h, q_out, false)?;
    let gate_up_proj = Linear::fuse(vec![
        linear("mlp.gate_proj", i, h, false)?,
        linear("mlp.up_proj", i, h, false)?,
    ])?;
    let down_proj = linear("mlp.down_proj", h, i, false)?;
    let norm = |src: &mut WeightSource, name: &str| {
        src.get(&format!("{p}.{name}.weight"), &[h], dtype, dev)
    };
    Ok(Layer {
        input_layernorm: norm(src, "input_layernorm")?,
        post_attention_layernorm: norm(src, "post_attention_layernorm")?,
        qkv_proj,
        o_proj,
        gate_up_proj,
        down_proj,
    })
}
