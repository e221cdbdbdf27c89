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
use crate::linear::{Linear, Loader, QuantMode, WeightStats};
use crate::ops::{CandleOps, FusedOps, Heads, HotOps};
use crate::rope::RopeTable;
use crate::weights::WeightSource;
use crate::Result;
use candle_core::{DType, Device, Tensor};
use engine_kernels::{KernelChoice, Kernels};

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
    lm_head: Linear, // [vocab, hidden] (the embedding when tied)
    weights: WeightStats,
    rope: RopeTable,
    dtype: DType,
    device: Device,
    /// Resolved: `Candle` or `Fused`.
    kernels: KernelChoice,
    /// `auto` on the CPU: decode-only steps on the fused ops' CPU ports (vectorized and
    /// threaded: 2x llama.cpp at 16 sequences), steps with prompt tokens on candle's ops
    /// (its GEMM attention prefills faster than the paged_prefill port).
    fused_decode: bool,
    /// The fused ops' CUDA functions, loaded once when they are chosen (empty otherwise
    /// and on the CPU).
    functions: Kernels,
}

impl Decoder {
    /// Load every tensor the config calls for from `src`, dense in `dtype` (`--quant
    /// none`: the reference path).
    pub fn load(
        cfg: &DecoderConfig,
        src: &mut WeightSource,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::load_quant(cfg, src, QuantMode::None, dtype, device)
    }

    /// Load every tensor the config calls for from `src`, the matrices stored as `quant`
    /// says (see [`crate::linear`]).
    pub fn load_quant(
        cfg: &DecoderConfig,
        src: &mut WeightSource,
        quant: QuantMode,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let mut ld = Loader::new(src, quant, dtype, device);
        let embed_tokens = ld.dense("model.embed_tokens.weight", &[v, h], false)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| load_layer(cfg, &mut ld, &format!("model.layers.{i}")))
            .collect::<Result<Vec<_>>>()?;
        let norm = ld.dense("model.norm.weight", &[h], true)?;
        let lm_head = ld.lm_head(cfg, &embed_tokens)?;
        let mut decoder = Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            weights: ld.stats,
            rope: RopeTable::new(cfg, dtype, device)?,
            dtype,
            device: device.clone(),
            kernels: KernelChoice::Candle,
            fused_decode: false,
            functions: Kernels::default(),
        };
        decoder.set_kernels(KernelChoice::Auto)?;
        Ok(decoder)
    }

    /// Use plain candle ops or the fused kernels (see [`KernelChoice::resolve`] for
    /// what `Auto` picks). Choosing the fused kernels on CUDA loads their functions
    /// (once; the error if the device cannot load them).
    pub fn set_kernels(&mut self, kernels: KernelChoice) -> Result<()> {
        self.kernels = kernels.resolve(&self.device);
        self.fused_decode = kernels == KernelChoice::Auto && !self.device.is_cuda();
        if self.kernels == KernelChoice::Fused && self.functions.is_empty() {
            self.functions = Kernels::load(&self.device)?;
        }
        Ok(())
    }

    /// The kernel functions loaded for the fused ops (the sampler can launch from them).
    pub fn kernel_functions(&self) -> &Kernels {
        &self.functions
    }

    /// The kernel set in use: `Candle` or `Fused`.
    pub fn kernels(&self) -> KernelChoice {
        self.kernels
    }

    /// What runs, in words: `fused`, `candle`, or on the CPU with `auto` both, by step.
    pub fn kernels_label(&self) -> &'static str {
        match self.fused_decode {
            true => "auto: fused decode steps, candle prefill steps",
            false => self.kernels.as_str(),
        }
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

    /// Bytes held by the weights (tied embeddings counted once when both are dense).
    pub fn weight_bytes(&self) -> u64 {
        self.weights.total_bytes()
    }

    /// Bytes per storage type, and the bytes a decode step reads.
    pub fn weight_stats(&self) -> &WeightStats {
        &self.weights
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
        let fused =
            self.kernels == KernelChoice::Fused || (self.fused_decode && batch.prefill.is_none());
        let hidden = match fused {
            true => self.layers(
                &FusedOps::prepare(batch, &self.rope, geo, &self.functions),
                batch,
                kv,
            )?,
            false => self.layers(&CandleOps::prepare(batch, &self.rope, geo)?, batch, kv)?,
        };
        match hidden {
            Some(h) => Ok(self.lm_head.forward(&h)?.to_dtype(DType::F32)?),
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

fn load_layer(cfg: &DecoderConfig, ld: &mut Loader, p: &str) -> Result<Layer> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let q_out = cfg.num_attention_heads * cfg.head_dim;
    let kv_out = cfg.num_key_value_heads * cfg.head_dim;
    let name = |n: &str| format!("{p}.{n}");
    let (q, k, v) = (
        name("self_attn.q_proj"),
        name("self_attn.k_proj"),
        name("self_attn.v_proj"),
    );
    let qkv = [
        (q.as_str(), q_out),
        (k.as_str(), kv_out),
        (v.as_str(), kv_out),
    ];
    let qkv_proj = ld.linear(&qkv, h, cfg.qkv_bias)?;
    let o_proj = ld.linear(&[(&name("self_attn.o_proj"), h)], q_out, false)?;
    let (gate, up) = (name("mlp.gate_proj"), name("mlp.up_proj"));
    let gate_up_proj = ld.linear(&[(gate.as_str(), i), (up.as_str(), i)], h, false)?;
    let down_proj = ld.linear(&[(&name("mlp.down_proj"), h)], i, false)?;
    Ok(Layer {
        input_layernorm: ld.dense(&name("input_layernorm.weight"), &[h], true)?,
        post_attention_layernorm: ld.dense(&name("post_attention_layernorm.weight"), &[h], true)?,
        qkv_proj,
        o_proj,
        gate_up_proj,
        down_proj,
    })
}
