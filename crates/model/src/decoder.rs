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

use crate::attention::{paged_attention, DecodeBatch, SeqSlice};
use crate::config::DecoderConfig;
use crate::kv_cache::KvCache;
use crate::rope::RopeTable;
use crate::weights::WeightSource;
use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};

/// A dense layer `y = x W^T + b`.
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,       // [out, in]
    bias: Option<Tensor>, // [out]
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?; // [T, out]
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

#[derive(Debug, Clone)]
struct Layer {
    input_layernorm: Tensor,
    post_attention_layernorm: Tensor,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

/// One forward step's inputs, already on the device.
#[derive(Debug)]
pub struct ForwardInputs {
    pub input_ids: Tensor,   // [T] u32
    pub positions: Tensor,   // [T] u32
    pub slot_index: Tensor,  // [T, kv_heads * head_dim] u32: each row's slot, repeated
    pub seqs: Vec<SeqSlice>, // sequences computing several tokens (prefill chunks)
    /// Sequences computing one token (decodes): `(row, context_len, block_table)`.
    pub decode: Vec<(u32, usize, Vec<u32>)>,
    /// Row r of the attention output sits at `row_order[r]` of [decode rows, seqs' rows].
    pub row_order: Option<Tensor>,
    pub block_size: usize,
    pub logits_indices: Tensor, // [S] u32: rows whose logits are returned
}

/// One sequence's share of a step, as the model runner sees it.
#[derive(Debug, Clone, Copy)]
pub struct SeqInput<'a> {
    /// Tokens to compute this step.
    pub tokens: &'a [u32],
    /// Tokens of this sequence already in the cache (the first new token's position).
    pub num_computed_tokens: usize,
    /// The sequence's blocks, enough for `num_computed_tokens + tokens.len()`.
    pub block_table: &'a [u32],
    /// Return logits for this sequence's last new token.
    pub want_logits: bool,
}

impl ForwardInputs {
    /// Flatten sequences into one batch: ids, positions, slot mapping, block tables.
    pub fn build(
        seqs: &[SeqInput],
        block_size: usize,
        kv_width: usize,
        device: &Device,
    ) -> Result<Self> {
        let total: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        let (mut ids, mut positions, mut slots) = (
            Vec::with_capacity(total),
            Vec::with_capacity(total),
            Vec::with_capacity(total),
        );
        let mut slices = Vec::with_capacity(seqs.len());
        let mut decode = Vec::new();
        let mut logits_rows = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            if s.tokens.is_empty() {
                return Err(ModelError::Input(format!(
                    "sequence {i} has no tokens to compute"
                )));
            }
            let context_len = s.num_computed_tokens + s.tokens.len();
            if s.block_table.len() * block_size < context_len {
                return Err(ModelError::Input(format!(
                    "sequence {i}: {} blocks of {block_size} cannot hold {context_len} tokens",
                    s.block_table.len()
                )));
            }
            let query_start = ids.len();
            for (j, &t) in s.tokens.iter().enumerate() {
                let pos = s.num_computed_tokens + j;
                ids.push(t);
                positions.push(pos as u32);
                slots.push(
                    s.block_table[pos / block_size] * block_size as u32 + (pos % block_size) as u32,
                );
            }
            if s.want_logits {
                logits_rows.push((ids.len() - 1) as u32);
            }
            if s.tokens.len() == 1 {
                decode.push((query_start as u32, context_len, s.block_table.to_vec()));
            } else {
                slices.push(SeqSlice {
                    query_start,
                    query_len: s.tokens.len(),
                    context_len,
                    block_table: Tensor::new(s.block_table, device)?,
                });
            }
        }
        // Attention emits decode rows first, then each prefill sequence's rows.
        let mut order = vec![0u32; total];
        let emitted = decode.iter().map(|d| d.0 as usize).chain(
            slices
                .iter()
                .flat_map(|s| s.query_start..s.query_start + s.query_len),
        );
        for (pos, row) in emitted.enumerate() {
            order[row] = pos as u32;
        }
        let identity = order.iter().enumerate().all(|(i, &p)| i as u32 == p);
        let row_order = match identity {
            true => None,
            false => Some(Tensor::from_vec(order, total, device)?),
        };
        let slot_index = Tensor::new(slots.as_slice(), device)?
            .reshape((total, 1))?
            .broadcast_as((total, kv_width))?
            .contiguous()?;
        let n_logits = logits_rows.len();
        Ok(Self {
            input_ids: Tensor::new(ids.as_slice(), device)?,
            positions: Tensor::new(positions.as_slice(), device)?,
            slot_index,
            seqs: slices,
            decode,
            row_order,
            block_size,
            logits_indices: Tensor::from_vec(logits_rows, n_logits, device)?,
        })
    }
}

/// The decoder's weights and precomputed rope table.
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
        })
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
        let cfg = &self.cfg;
        let t = inputs.input_ids.dim(0)?;
        let (heads, kv_heads, d) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let eps = cfg.rms_norm_eps as f32;
        let decode = match inputs.decode.is_empty() {
            true => None,
            false => Some(DecodeBatch::build(
                &inputs.decode,
                inputs.block_size,
                cfg.sliding_window,
                &self.device,
            )?),
        };
        let mut x = self.embed_tokens.index_select(&inputs.input_ids, 0)?; // [T, hidden]
        for (l, layer) in self.layers.iter().enumerate() {
            let residual = &x;
            let hs = candle_nn::ops::rms_norm(&x, &layer.input_layernorm, eps)?;
            let q = layer.q_proj.forward(&hs)?.reshape((t, heads, d))?;
            let k = layer.k_proj.forward(&hs)?.reshape((t, kv_heads, d))?;
            let v = layer.v_proj.forward(&hs)?.reshape((t, kv_heads, d))?;
            let q = self.rope.apply(&q, &inputs.positions)?;
            let k = self.rope.apply(&k, &inputs.positions)?;
            let attn = paged_attention(
                l,
                &q,
                &k,
                &v,
                kv,
                &inputs.slot_index,
                &inputs.seqs,
                decode.as_ref(),
                inputs.row_order.as_ref(),
                cfg.sliding_window,
            )?;
            x = (layer.o_proj.forward(&attn)? + residual)?; // [T, hidden]
            let hs = candle_nn::ops::rms_norm(&x, &layer.post_attention_layernorm, eps)?;
            let mlp = (candle_nn::ops::silu(&layer.gate_proj.forward(&hs)?)?
                * layer.up_proj.forward(&hs)?)?;
            x = (layer.down_proj.forward(&mlp)? + &x)?;
        }
        if inputs.logits_indices.dim(0)? == 0 {
            // Nothing to sample (a prefill chunk): only the KV writes mattered. The empty
            // result lives on the host: no zero-size device allocation.
            return Ok(Tensor::zeros(
                (0, cfg.vocab_size),
                DType::F32,
                &Device::Cpu,
            )?);
        }
        let last = x.index_select(&inputs.logits_indices, 0)?; // [S, hidden]
        let last = candle_nn::ops::rms_norm(&last, &self.norm, eps)?;
        Ok(last.matmul(&self.lm_head.t()?)?.to_dtype(DType::F32)?)
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
