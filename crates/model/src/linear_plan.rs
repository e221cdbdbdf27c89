//! What `--quant` makes of each weight matrix, and the bytes it takes: [`weight_plan`]
//! counts them from the tensor headers alone (`engine info`, `engine plan`, the memory
//! check at load), [`WeightStats`] is what the loader actually built.

use super::QuantMode;
use crate::config::DecoderConfig;
use crate::weights::WeightSource;
use crate::{ModelError, Result};
use candle_core::DType;
use engine_quant::GgmlType;
use serde::Serialize;
use std::collections::BTreeMap;

/// Tensors and bytes held in one storage type.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TypeBytes {
    pub tensors: usize,
    pub bytes: u64,
}

/// What the weights take, by storage type (GGUF layout bytes for block types).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WeightStats {
    /// Per type name (`f32`, `bf16`, `q4_1`, ...).
    pub by_type: BTreeMap<String, TypeBytes>,
    /// Bytes a decode step reads at least once: every matrix the layers and the LM head
    /// multiply by, biases and norms; not the embedding table (only the batch's rows).
    pub read_per_step: u64,
}

impl WeightStats {
    /// Bytes held, all types.
    pub fn total_bytes(&self) -> u64 {
        self.by_type.values().map(|t| t.bytes).sum()
    }

    pub(super) fn add(&mut self, ty: &str, bytes: u64, read: bool) {
        let e = self.by_type.entry(ty.to_string()).or_default();
        e.tensors += 1;
        e.bytes += bytes;
        if read {
            self.read_per_step += bytes;
        }
    }

    /// `q4_1 90.2 MB (210), f32 ...`: one line for reports.
    pub fn summary(&self) -> String {
        let mut v: Vec<_> = self.by_type.iter().collect();
        v.sort_by_key(|(_, t)| std::cmp::Reverse(t.bytes));
        v.iter()
            .map(|(n, t)| format!("{n} {:.1} MB ({})", t.bytes as f64 / 1e6, t.tensors))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where a matrix's values end up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Storage {
    Dense,
    /// The file's own blocks.
    File(GgmlType),
    /// Quantized at load.
    Quantize(GgmlType),
}

pub(super) fn storage(
    src: &WeightSource,
    name: &str,
    cols: usize,
    mode: QuantMode,
) -> Result<Storage> {
    let in_file = match src {
        WeightSource::Gguf(g) => g.block_type(name),
        _ => None,
    };
    Ok(match (mode, in_file) {
        (QuantMode::None, _) | (QuantMode::Native, None) => Storage::Dense,
        (QuantMode::Native, Some(t)) => Storage::File(t),
        (QuantMode::To(t), file) => match t.for_row_len(cols) {
            Some(t) if file == Some(t) => Storage::File(t),
            Some(t) => Storage::Quantize(t),
            None => {
                return Err(ModelError::Input(format!(
                    "--quant {t}: `{name}` has rows of {cols} values, which fit no block type"
                )))
            }
        },
    })
}

pub(super) fn bytes_of(s: Storage, rows: usize, cols: usize, dtype: DType) -> (String, u64) {
    match s {
        Storage::Dense => (
            dtype_name(dtype),
            (rows * cols * dtype.size_in_bytes()) as u64,
        ),
        Storage::File(t) | Storage::Quantize(t) => {
            (t.to_string(), (rows * t.bytes_for(cols)) as u64)
        }
    }
}

pub(super) fn dtype_name(dtype: DType) -> String {
    format!("{dtype:?}").to_lowercase()
}

/// The stats the decoder will have once loaded with `mode` (no tensor data is read):
/// for `engine info` and memory checks. Mirrors `Decoder::load` and is tested against it.
pub fn weight_plan(
    cfg: &DecoderConfig,
    src: &WeightSource,
    mode: QuantMode,
    dtype: DType,
) -> Result<WeightStats> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
    );
    let mut st = WeightStats::default();
    let matrix = |st: &mut WeightStats, name: &str, rows, cols| -> Result<Storage> {
        let s = storage(src, name, cols, mode)?;
        let (ty, bytes) = bytes_of(s, rows, cols, dtype);
        st.add(&ty, bytes, true);
        Ok(s)
    };
    let dense = |st: &mut WeightStats, n: usize, read| {
        st.add(&dtype_name(dtype), (n * dtype.size_in_bytes()) as u64, read)
    };
    dense(&mut st, v * h, false);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (name, rows, cols) in [
            ("self_attn.q_proj", q, h),
            ("self_attn.k_proj", kv, h),
            ("self_attn.v_proj", kv, h),
            ("self_attn.o_proj", h, q),
            ("mlp.gate_proj", i, h),
            ("mlp.up_proj", i, h),
            ("mlp.down_proj", h, i),
        ] {
            matrix(&mut st, &format!("{p}.{name}.weight"), rows, cols)?;
        }
        if cfg.qkv_bias {
            for n in [q, kv, kv] {
                dense(&mut st, n, true);
            }
        }
        dense(&mut st, h, true);
        dense(&mut st, h, true);
    }
    dense(&mut st, h, true);
    if cfg.tie_word_embeddings && !src.contains("lm_head.weight") {
        let s = storage(src, "model.embed_tokens.weight", h, mode)?;
        if s == Storage::Dense {
            st.read_per_step += (v * h * dtype.size_in_bytes()) as u64;
        } else {
            matrix(&mut st, "model.embed_tokens.weight", v, h)?;
        }
    } else {
        matrix(&mut st, "lm_head.weight", v, h)?;
    }
    Ok(st)
}
