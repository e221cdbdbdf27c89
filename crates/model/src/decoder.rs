//! The one Llama-family decoder (Llama 2/3/3.1, Mistral, Qwen2/2.5), driven by a
//! [`DecoderConfig`], reading and writing a paged [`KvCache`].
//!
//! The batch is flat: `T` tokens from any number of sequences, each sequence a contiguous
//! run of rows (see [`ForwardInputs`]). Per layer:
//!
//! ```text
//!  x [T, hidden] -> rms_norm -> q [T, heads, d], k/v [T, kv_heads, d] (+bias for Qwen2)
//!    -> rope(q, k at positions) -> write k/v to slots -> attention per sequence
//!    -> o_proj -> + residual -> rms_norm -> down(silu(gate) * up) -> + residual
//! ```
//! Logits are computed only for the rows in `logits_indices`.
//!
//! Two implementations of the same layer: plain candle ops (below) and engine-kernels'
//! fused ops (`fused.rs`: residual add + norm in one pass, rope and cache writes in
//! place, paged attention without gathers). [`Decoder::set_kernels`] picks one.

use crate::attention::paged_attention;
use crate::config::DecoderConfig;
use crate::inputs::{AttnInputs, BatchLayout, CandleAttn, ForwardInputs, SeqInput};
use crate::kv_cache::KvCache;
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
}

/// Attention geometry of a layer: (heads, kv_heads, head_dim).
pub(crate) type Heads = (usize, usize, usize);

#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) input_layernorm: Tensor,
    pub(crate) post_attention_layernorm: Tensor,
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) o_proj: Linear,
    pub(crate) gate_proj: Linear,
    pub(crate) up_proj: Linear,
    pub(crate) down_proj: Linear,
}

impl Layer {
    /// q [T, heads, d], k and v [T, kv_heads, d] of the normed hidden states `hs`.
    pub(crate) fn qkv(&self, hs: &Tensor, (heads, kv_heads, d): Heads) -> Result<[Tensor; 3]> {
        let t = hs.dim(0)?;
        Ok([
            self.q_proj.forward(hs)?.reshape((t, heads, d))?,
            self.k_proj.forward(hs)?.reshape((t, kv_heads, d))?,
            self.v_proj.forward(hs)?.reshape((t, kv_heads, d))?,
        ])
    }
}

/// The decoder's weights and precomputed rope table.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub(crate) cfg: DecoderConfig,
    pub(crate) embed_tokens: Tensor, // [vocab, hidden]
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: Tensor,    // [hidden]
    pub(crate) lm_head: Tensor, // [vocab, hidden] (the embedding when tied)
    pub(crate) rope: RopeTable,
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
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            layers.push(load_layer(
                cfg,
                src,
                &format!("model.layers.{i}"),
                dtype,
                device,
            )?);
        }
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

    /// Use plain candle ops or the fused kernels (`Auto`: fused on CUDA, candle on the
    /// CPU, where the fused ops run their CPU ports).
    pub fn set_kernels(&mut self, kernels: KernelChoice) {
        self.kernels = kernels.resolve(&self.device);
    }

    /// The kernel set in use: `Candle` or `Fused`.
    pub fn kernels(&self) -> KernelChoice {
        self.kernels
    }

    /// (heads, kv_heads, head_dim).
    pub(crate) fn heads(&self) -> Heads {
        let c = &self.cfg;
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim)
    }

    /// Flatten sequences into this decoder's forward inputs for a cache of `block_size`.
    pub fn inputs(&self, seqs: &[SeqInput], block_size: usize) -> Result<ForwardInputs> {
        let layout = BatchLayout {
            block_size,
            kv_width: self.cfg.num_key_value_heads * self.cfg.head_dim,
            sliding_window: self.cfg.sliding_window,
            kernels: self.kernels,
        };
        ForwardInputs::build(seqs, layout, &self.device)
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

    /// Bytes held by the weights (tied embeddings counted once).
    pub fn weight_bytes(&self) -> u64 {
        self.cfg.num_parameters() * self.dtype.size_in_bytes() as u64
    }

    /// Run the batch; returns f32 logits [num_logits_rows, vocab].
    pub fn forward(&self, inputs: &ForwardInputs, kv: &mut KvCache) -> Result<Tensor> {
        let x = match &inputs.attn {
            AttnInputs::Candle(attn) => self.layers_candle(inputs, attn, kv)?,
            AttnInputs::Fused(attn) => self.layers_fused(inputs, attn, kv)?,
        };
        let Some(last) = x else {
            // Nothing to sample (a prefill chunk): only the KV writes mattered. The empty
            // result lives on the host: no zero-size device allocation.
            return Ok(Tensor::zeros(
                (0, self.cfg.vocab_size),
                DType::F32,
                &Device::Cpu,
            )?);
        };
        Ok(last.matmul(&self.lm_head.t()?)?.to_dtype(DType::F32)?)
    }

    /// The candle layers; returns the final-normed hidden states of the logits rows
    /// ([S, hidden]), or None when there are none.
    fn layers_candle(
        &self,
        inputs: &ForwardInputs,
        attn: &CandleAttn,
        kv: &mut KvCache,
    ) -> Result<Option<Tensor>> {
        let cfg = &self.cfg;
        let eps = cfg.rms_norm_eps as f32;
        let mut x = self.embed_tokens.index_select(&inputs.input_ids, 0)?; // [T, hidden]
        for (l, layer) in self.layers.iter().enumerate() {
            let residual = &x;
            let hs = candle_nn::ops::rms_norm(&x, &layer.input_layernorm, eps)?;
            let [q, k, v] = layer.qkv(&hs, self.heads())?;
            let q = self.rope.apply(&q, &inputs.positions)?;
            let k = self.rope.apply(&k, &inputs.positions)?;
            let out = paged_attention(l, &q, &k, &v, kv, attn, cfg.sliding_window)?;
            x = (layer.o_proj.forward(&out)? + residual)?; // [T, hidden]
            let hs = candle_nn::ops::rms_norm(&x, &layer.post_attention_layernorm, eps)?;
            let mlp = (candle_nn::ops::silu(&layer.gate_proj.forward(&hs)?)?
                * layer.up_proj.forward(&hs)?)?;
            x = (layer.down_proj.forward(&mlp)? + &x)?;
        }
        if inputs.logits_indices.dim(0)? == 0 {
            return Ok(None);
        }
        let last = x.index_select(&inputs.logits_indices, 0)?; // [S, hidden]
        Ok(Some(candle_nn::ops::rms_norm(&last, &self.norm, eps)?))
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
    let q_proj = linear("self_attn.q_proj", q_out, h, b)?;
    let k_proj = linear("self_attn.k_proj", kv_out, h, b)?;
    let v_proj = linear("self_attn.v_proj", kv_out, h, b)?;
    let o_proj = linear("self_attn.o_proj", h, q_out, false)?;
    let gate_proj = linear("mlp.gate_proj", i, h, false)?;
    let up_proj = linear("mlp.up_proj", i, h, false)?;
    let down_proj = linear("mlp.down_proj", h, i, false)?;
    Ok(Layer {
        input_layernorm: src.get(&format!("{p}.input_layernorm.weight"), &[h], dtype, dev)?,
        post_attention_layernorm: src.get(
            &format!("{p}.post_attention_layernorm.weight"),
            &[h],
            dtype,
            dev,
        )?,
        q_proj,
        k_proj,
        v_proj,
        o_proj,
        gate_proj,
        up_proj,
        down_proj,
    })
}
