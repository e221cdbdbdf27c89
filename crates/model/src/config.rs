//! `DecoderConfig`: the one description every Llama-family model is reduced to.
//!
//! Llama 2/3/3.1, Mistral and Qwen2/2.5 differ only in a handful of switches (rope
//! scaling, sliding window, q/k/v bias, tied embeddings), so one decoder reads one config.
//! Configs come from a Hugging Face `config.json`, from GGUF metadata (see `gguf.rs`) or
//! from a manifest in `models/`; each is validated once ([`DecoderConfig::validate`], see
//! `config/validate.rs`) and then immutable. Every rejection names the source, the field
//! and the value.

pub(crate) mod gguf;
mod validate;

use crate::{ModelError, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};

/// The model families we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

impl Architecture {
    /// Parse a Hugging Face `model_type` or a GGUF `general.architecture`.
    pub fn parse(name: &str, source_name: &str) -> Result<Self> {
        match name {
            "llama" => Ok(Self::Llama),
            "mistral" => Ok(Self::Mistral),
            "qwen2" => Ok(Self::Qwen2),
            other => Err(ModelError::UnsupportedArchitecture {
                arch: other.to_string(),
                source_name: source_name.to_string(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
        }
    }
}

/// Llama 3.1's frequency-dependent rope scaling (`rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// The resolved, validated shape and switches of a decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    /// Attention sees at most this many most recent positions (itself included).
    pub sliding_window: Option<usize>,
    /// q/k/v projections carry a bias (Qwen2).
    pub qkv_bias: bool,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// The subset of a Hugging Face `config.json` that we read.
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: usize,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
}

/// Name the field and value of a number of the wrong kind (serde's message would not).
fn check_numbers(v: &serde_json::Value, src: &str) -> Result<()> {
    const SIZES: &[(&str, bool)] = &[
        ("vocab_size", false),
        ("hidden_size", false),
        ("intermediate_size", false),
        ("num_hidden_layers", false),
        ("num_attention_heads", false),
        ("num_key_value_heads", true),
        ("head_dim", true),
        ("max_position_embeddings", false),
        ("sliding_window", true),
    ];
    for &(field, nullable) in SIZES {
        match v.get(field) {
            Some(x) if !(x.is_u64() || nullable && x.is_null()) => {
                let reason = format!("`{field}` = {x} is not a non-negative integer");
                return Err(ModelError::config(src, reason));
            }
            _ => {}
        }
    }
    for field in ["rms_norm_eps", "rope_theta"] {
        match v.get(field) {
            Some(x) if !(x.is_number() || field == "rope_theta" && x.is_null()) => {
                return Err(ModelError::config(
                    src,
                    format!("`{field}` = {x} is not a number"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `bos_token_id` / `eos_token_id`: absent, null, an id, or a list of ids.
fn token_ids(value: Option<&serde_json::Value>, field: &str, src: &str) -> Result<Vec<u32>> {
    let one = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| ModelError::config(src, format!("`{field}` = {v} is not a token id")))
    };
    match value {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

fn parse_rope_scaling(
    value: Option<&serde_json::Value>,
    source_name: &str,
) -> Result<Option<Llama3RopeScaling>> {
    let Some(obj) = value.and_then(|v| v.as_object()) else {
        return Ok(None);
    };
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    match kind {
        "default" => Ok(None),
        "llama3" => serde_json::from_value(serde_json::Value::Object(obj.clone()))
            .map(Some)
            .map_err(|e| ModelError::config(source_name, format!("rope_scaling: {e}"))),
        other => Err(ModelError::config(
            source_name,
            format!("rope_scaling type `{other}` is not supported (supported: llama3)"),
        )),
    }
}

impl DecoderConfig {
    /// Parse and validate a Hugging Face `config.json`.
    pub fn from_hf_json(json: &str, source_name: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| ModelError::config(source_name, format!("invalid JSON: {e}")))?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ModelError::config(source_name, "missing `model_type`"))?;
        let architecture = Architecture::parse(model_type, source_name)?;
        check_numbers(&value, source_name)?;
        let hf: HfConfig = serde_json::from_value(value.clone())
            .map_err(|e| ModelError::config(source_name, e.to_string()))?;
        debug_assert!(hf.model_type.is_some());
        if hf.mlp_bias == Some(true) {
            return Err(ModelError::config(
                source_name,
                "mlp_bias = true is not supported",
            ));
        }
        let sliding_window = match architecture {
            Architecture::Mistral => hf.sliding_window,
            Architecture::Qwen2 if hf.use_sliding_window == Some(true) => hf.sliding_window,
            _ => None,
        };
        let cfg = Self {
            architecture,
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim: match hf.head_dim {
                Some(d) => d,
                None => {
                    gguf::derived_head_dim(hf.hidden_size, hf.num_attention_heads, source_name)?
                }
            },
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            rope_scaling: parse_rope_scaling(hf.rope_scaling.as_ref(), source_name)?,
            max_position_embeddings: hf.max_position_embeddings,
            sliding_window,
            qkv_bias: architecture == Architecture::Qwen2 || hf.attention_bias == Some(true),
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
            bos_token_id: token_ids(hf.bos_token_id.as_ref(), "bos_token_id", source_name)?
                .first()
                .copied(),
            eos_token_ids: token_ids(hf.eos_token_id.as_ref(), "eos_token_id", source_name)?,
        };
        cfg.validate(source_name)?;
        Ok(cfg)
    }

    /// Number of query heads per KV head (grouped-query attention).
    pub fn num_queries_per_kv(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Parameter count of the weights as stored (tied embeddings counted once).
    pub fn num_parameters(&self) -> u64 {
        let (h, i, v) = (
            self.hidden_size as u64,
            self.intermediate_size as u64,
            self.vocab_size as u64,
        );
        let q = (self.num_attention_heads * self.head_dim) as u64;
        let kv = (self.num_key_value_heads * self.head_dim) as u64;
        let bias = if self.qkv_bias { q + 2 * kv } else { 0 };
        let attn = h * q + 2 * h * kv + q * h + bias;
        let mlp = 3 * h * i;
        let layer = attn + mlp + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers as u64 * layer + h + head
    }

    /// Bytes of K and V stored per token across all layers.
    pub fn kv_bytes_per_token(&self, dtype: DType) -> u64 {
        (2 * self.num_hidden_layers
            * self.num_key_value_heads
            * self.head_dim
            * dtype.size_in_bytes()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA31: &str = r#"{"model_type":"llama","vocab_size":128256,"hidden_size":4096,
      "intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,
      "num_key_value_heads":8,"rms_norm_eps":1e-5,"rope_theta":500000.0,
      "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
      "original_max_position_embeddings":8192,"rope_type":"llama3"},
      "max_position_embeddings":131072,"bos_token_id":128000,"eos_token_id":[128001,128008,128009]}"#;

    #[test]
    fn llama31_parses_with_rope_scaling_and_counts_8b_parameters() {
        let cfg = DecoderConfig::from_hf_json(LLAMA31, "test").unwrap();
        assert_eq!(cfg.head_dim, 128);
        assert_eq!(cfg.eos_token_ids, vec![128001, 128008, 128009]);
        assert_eq!(
            cfg.rope_scaling.unwrap().original_max_position_embeddings,
            8192
        );
        // Llama 3.1 8B has 8,030,261,248 parameters.
        assert_eq!(cfg.num_parameters(), 8_030_261_248);
        assert_eq!(cfg.kv_bytes_per_token(DType::BF16), 2 * 32 * 8 * 128 * 2);
    }

    #[test]
    fn unsupported_architecture_is_named() {
        let json = LLAMA31.replace("\"llama\"", "\"gpt_neox\"");
        let err = DecoderConfig::from_hf_json(&json, "cfg.json").unwrap_err();
        assert!(err.to_string().contains("gpt_neox"), "{err}");
    }

    #[test]
    fn bad_gqa_ratio_is_rejected() {
        let json = LLAMA31.replace("\"num_key_value_heads\":8", "\"num_key_value_heads\":7");
        let err = DecoderConfig::from_hf_json(&json, "cfg.json").unwrap_err();
        assert!(err.to_string().contains("multiple"), "{err}");
    }

    #[test]
    fn unknown_rope_scaling_is_rejected() {
        let json = LLAMA31.replace("\"llama3\"", "\"yarn\"");
        let err = DecoderConfig::from_hf_json(&json, "cfg.json").unwrap_err();
        assert!(err.to_string().contains("yarn"), "{err}");
    }
}
