//! GGUF files: the decoder config from metadata, and tensors renamed to Hugging Face names.
//!
//! Tensors are dequantized to f32 one at a time as the decoder asks for them (keeping
//! them quantized is a later step). llama.cpp's converter permutes the rows of llama
//! `attn_q`/`attn_k` so that adjacent pairs rotate together (interleaved rope); our
//! decoder uses the half-split convention, so those two are un-permuted here:
//!
//! ```text
//!  GGUF row  h*d + 2*i + p   (head h, pair i, member p in {0,1})
//!  HF   row  h*d + p*d/2 + i
//! ```
//! qwen2 GGUFs are not permuted (llama.cpp rotates them half-split already).

use crate::config::{Architecture, DecoderConfig};
use crate::weights::check_shape;
use crate::{ModelError, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// An open GGUF file.
pub struct GgufWeights {
    path: PathBuf,
    file: File,
    content: Content,
    unpermute_qk: bool,
    num_heads: usize,
    num_kv_heads: usize,
}

/// Open and check a GGUF file: header, metadata, and that every tensor lies inside it.
pub fn open(path: &Path) -> Result<(GgufWeights, DecoderConfig)> {
    let mut file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let content = Content::read(&mut file)
        .map_err(|e| ModelError::weights(path, format!("not a valid GGUF file: {e}")))?;
    let file_len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
    for (name, info) in &content.tensor_infos {
        let elems = info.shape.elem_count();
        let bytes = (elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()) as u64;
        let end = content.tensor_data_offset + info.offset + bytes;
        if end > file_len {
            return Err(ModelError::weights(
                path,
                format!(
                    "truncated: tensor `{name}` ends at byte {end} but the file has {file_len}"
                ),
            ));
        }
    }
    let cfg = config_from_metadata(&content.metadata, &content, &path.display().to_string())?;
    let weights = GgufWeights {
        path: path.to_path_buf(),
        file,
        unpermute_qk: cfg.architecture == Architecture::Llama,
        num_heads: cfg.num_attention_heads,
        num_kv_heads: cfg.num_key_value_heads,
        content,
    };
    Ok((weights, cfg))
}

impl GgufWeights {
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, hf_name: &str) -> bool {
        gguf_name(hf_name).is_some_and(|n| self.content.tensor_infos.contains_key(&n))
    }

    /// Read, dequantize (f32) and, for llama q/k, un-permute the tensor `hf_name`.
    pub fn get(&mut self, hf_name: &str, shape: &[usize]) -> Result<Tensor> {
        let name = gguf_name(hf_name).ok_or_else(|| {
            ModelError::weights(&self.path, format!("no GGUF name for tensor `{hf_name}`"))
        })?;
        let q = self
            .content
            .tensor(&mut self.file, &name, &Device::Cpu)
            .map_err(|e| ModelError::weights(&self.path, format!("tensor `{name}`: {e}")))?;
        let t = q.dequantize(&Device::Cpu)?;
        check_shape(&t, &name, shape, &self.path)?;
        let heads = if name.ends_with("attn_q.weight") {
            Some(self.num_heads)
        } else if name.ends_with("attn_k.weight") {
            Some(self.num_kv_heads)
        } else {
            None
        };
        match heads {
            Some(h) if self.unpermute_qk => unpermute_rows(&t, h),
            _ => Ok(t),
        }
    }
}

/// Undo llama.cpp's q/k row permutation: [h, d/2, 2, in] -> [h, 2, d/2, in].
pub fn unpermute_rows(t: &Tensor, num_heads: usize) -> Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    let d = rows / num_heads;
    Ok(t.reshape((num_heads, d / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// Map a Hugging Face tensor name to its GGUF name.
fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Some(n.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

fn md_u64(md: &HashMap<String, Value>, key: &str, src: &str) -> Result<u64> {
    let v = md
        .get(key)
        .ok_or_else(|| ModelError::config(src, format!("missing GGUF metadata `{key}`")))?;
    v.to_u64()
        .or_else(|_| v.to_u32().map(u64::from))
        .or_else(|_| v.to_i32().map(|x| x.max(0) as u64))
        .map_err(|e| ModelError::config(src, format!("GGUF metadata `{key}`: {e}")))
}

fn md_f64(md: &HashMap<String, Value>, key: &str) -> Option<f64> {
    let v = md.get(key)?;
    v.to_f32().map(f64::from).or_else(|_| v.to_f64()).ok()
}

/// Build the decoder config from `{arch}.*` metadata keys.
fn config_from_metadata(
    md: &HashMap<String, Value>,
    content: &Content,
    src: &str,
) -> Result<DecoderConfig> {
    let arch_name = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .ok_or_else(|| ModelError::config(src, "missing GGUF metadata `general.architecture`"))?
        .clone();
    let architecture = Architecture::parse(&arch_name, src)?;
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        return Err(ModelError::config(
            src,
            "rope_freqs.weight (llama3 rope scaling in GGUF) is not supported yet",
        ));
    }
    let key = |k: &str| format!("{arch_name}.{k}");
    let get = |k: &str| md_u64(md, &key(k), src).map(|v| v as usize);
    let heads = get("attention.head_count")?;
    let hidden = get("embedding_length")?;
    let vocab_size = match content.tensor_infos.get("token_embd.weight") {
        Some(info) => info.shape.dims()[0],
        None => {
            return Err(ModelError::config(
                src,
                "missing tensor `token_embd.weight`",
            ))
        }
    };
    let int_md = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
    let cfg = DecoderConfig {
        architecture,
        vocab_size,
        hidden_size: hidden,
        intermediate_size: get("feed_forward_length")?,
        num_hidden_layers: get("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: get("attention.head_count_kv").unwrap_or(heads),
        head_dim: get("attention.key_length")
            .or_else(|_| get("rope.dimension_count"))
            .unwrap_or(hidden / heads.max(1)),
        rms_norm_eps: md_f64(md, &key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        rope_theta: md_f64(md, &key("rope.freq_base")).unwrap_or(10_000.0),
        rope_scaling: None,
        max_position_embeddings: get("context_length")?,
        sliding_window: None,
        qkv_bias: content.tensor_infos.contains_key("blk.0.attn_q.bias"),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        bos_token_id: int_md("tokenizer.ggml.bos_token_id"),
        eos_token_ids: int_md("tokenizer.ggml.eos_token_id").into_iter().collect(),
    };
    cfg.validate(src)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_gguf() {
        assert_eq!(
            gguf_name("model.layers.3.self_attn.q_proj.weight").as_deref(),
            Some("blk.3.attn_q.weight")
        );
        assert_eq!(
            gguf_name("model.layers.0.self_attn.k_proj.bias").as_deref(),
            Some("blk.0.attn_k.bias")
        );
        assert_eq!(
            gguf_name("model.norm.weight").as_deref(),
            Some("output_norm.weight")
        );
        assert_eq!(gguf_name("model.layers.1.mlp.weird.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() -> Result<()> {
        // llama.cpp: w.reshape(h, 2, d/2, in).swapaxes(1, 2). Build it by index.
        let (h, d, cols) = (3usize, 8usize, 2usize);
        let hf: Vec<f32> = (0..h * d * cols).map(|x| x as f32).collect();
        let mut permuted = vec![0f32; hf.len()];
        for head in 0..h {
            for i in 0..d / 2 {
                for p in 0..2 {
                    let src = head * d + p * d / 2 + i;
                    let dst = head * d + 2 * i + p;
                    for c in 0..cols {
                        permuted[dst * cols + c] = hf[src * cols + c];
                    }
                }
            }
        }
        let t = Tensor::from_vec(permuted, (h * d, cols), &Device::Cpu)?;
        let back = unpermute_rows(&t, h)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(back, hf);
        Ok(())
    }
}
