//! The decoder config a GGUF file's `{arch}.*` metadata and tensor table describe.
//!
//! Every number is read with its type checked (`engine_formats::gguf::Metadata`), and
//! the tensor table must agree with it: `token_embd.weight` is `[vocab, hidden]`, and
//! the `blk.N.*` tensors cover exactly layers `0..block_count`.

use super::{Architecture, DecoderConfig};
use crate::{ModelError, Result};
use engine_formats::gguf::Gguf;

/// Build and validate the decoder config of a parsed GGUF file; `src` names the file.
pub fn config_from_gguf(g: &Gguf, src: &str) -> Result<DecoderConfig> {
    let md = &g.metadata;
    let bad = |e: engine_formats::FormatError| ModelError::config(src, e.to_string());
    let arch_name = md
        .str("general.architecture")
        .map_err(bad)?
        .ok_or_else(|| ModelError::config(src, "missing GGUF metadata `general.architecture`"))?;
    let architecture = Architecture::parse(arch_name, src)?;
    if g.tensor("rope_freqs.weight").is_some() {
        return Err(ModelError::config(
            src,
            "rope_freqs.weight (llama3 rope scaling in GGUF) is not supported yet",
        ));
    }
    let key = |k: &str| format!("{arch_name}.{k}");
    let opt = |k: &str| -> Result<Option<usize>> {
        let v = md.uint(&key(k)).map_err(bad)?;
        v.map(|v| {
            usize::try_from(v)
                .map_err(|_| ModelError::config(src, format!("`{}` = {v} is too large", key(k))))
        })
        .transpose()
    };
    let get = |k: &str| {
        opt(k)?
            .ok_or_else(|| ModelError::config(src, format!("missing GGUF metadata `{}`", key(k))))
    };
    let float = |k: &str, default: f64| -> Result<f64> {
        Ok(md.float(&key(k)).map_err(bad)?.unwrap_or(default))
    };
    let heads = get("attention.head_count")?;
    let hidden = get("embedding_length")?;
    let head_dim = match opt("attention.key_length")? {
        Some(d) => d,
        None => match opt("rope.dimension_count")? {
            Some(d) => d,
            None => derived_head_dim(hidden, heads, src)?,
        },
    };
    let embd = g
        .tensor("token_embd.weight")
        .ok_or_else(|| ModelError::config(src, "missing tensor `token_embd.weight`"))?;
    let vocab_size = match embd.shape()[..] {
        [vocab, h] if h == hidden => vocab,
        _ => {
            return Err(ModelError::config(
                src,
                format!(
                    "tensor `token_embd.weight` has shape {:?}, expected [vocab, {hidden}] \
                     (`{}` = {hidden})",
                    embd.shape(),
                    key("embedding_length")
                ),
            ))
        }
    };
    let token_id = |k: &str| -> Result<Option<u32>> {
        md.uint(k)
            .map_err(bad)?
            .map(|v| {
                u32::try_from(v)
                    .map_err(|_| ModelError::config(src, format!("`{k}` = {v} is too large")))
            })
            .transpose()
    };
    let cfg = DecoderConfig {
        architecture,
        vocab_size,
        hidden_size: hidden,
        intermediate_size: get("feed_forward_length")?,
        num_hidden_layers: get("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: opt("attention.head_count_kv")?.unwrap_or(heads),
        head_dim,
        rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5)?,
        rope_theta: float("rope.freq_base", 10_000.0)?,
        rope_scaling: None,
        max_position_embeddings: get("context_length")?,
        sliding_window: None,
        qkv_bias: g.tensor("blk.0.attn_q.bias").is_some(),
        tie_word_embeddings: g.tensor("output.weight").is_none(),
        bos_token_id: token_id("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: token_id("tokenizer.ggml.eos_token_id")?
            .into_iter()
            .collect(),
    };
    cfg.validate(src)?;
    let layers = g
        .tensors
        .iter()
        .filter_map(|t| layer_index(&t.name, "blk."));
    cfg.check_layers(layers, src)?;
    Ok(cfg)
}

/// `hidden / heads` when it divides evenly.
pub(crate) fn derived_head_dim(hidden: usize, heads: usize, src: &str) -> Result<usize> {
    if heads == 0 {
        return Err(ModelError::config(
            src,
            "`num_attention_heads` = 0 must be positive",
        ));
    }
    if !hidden.is_multiple_of(heads) {
        return Err(ModelError::config(
            src,
            format!(
                "no head_dim given and hidden_size ({hidden}) is not a multiple of \
                 num_attention_heads ({heads})"
            ),
        ));
    }
    Ok(hidden / heads)
}

/// The layer number in `PREFIX{N}.…`, if the name has one.
pub(crate) fn layer_index(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.split('.').next()?.parse().ok()
}
