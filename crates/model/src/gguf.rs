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

//!
//! The header is read by `engine_formats::gguf` from a memory map of the file, which
//! checks every count, type, dimension and offset against the file before anything is
//! read; [`GgufWeights::raw`] gives a tensor's checked info and raw bytes (for kernels
//! that keep weights quantized).

use crate::config::{Architecture, DecoderConfig};
use crate::{ModelError, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::{Device, Tensor};
use engine_formats::gguf::{Gguf, Metadata, TensorInfo};
use memmap2::Mmap;
use std::path::{Path, PathBuf};

/// An open GGUF file.
pub struct GgufWeights {
    path: PathBuf,
    map: Mmap,
    header: Gguf,
    unpermute_qk: bool,
    num_heads: usize,
    num_kv_heads: usize,
}

/// Memory-map and check a GGUF file's header (no tensor data is read).
pub fn read_header(path: &Path) -> Result<(Mmap, Gguf)> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the file is mapped read-only and we never write through the map; a file
    // changed by another process while mapped is outside what we support (as in every
    // mmap loader, candle's included).
    let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    let header = Gguf::parse(&map).map_err(|e| ModelError::weights(path, e.to_string()))?;
    Ok((map, header))
}

/// Open and check a GGUF file: header, metadata, that every tensor lies inside it, and
/// the decoder config its metadata describes.
pub fn open(path: &Path) -> Result<(GgufWeights, DecoderConfig)> {
    let (map, header) = read_header(path)?;
    let cfg = crate::config::gguf::config_from_gguf(&header, &path.display().to_string())?;
    let weights = GgufWeights {
        path: path.to_path_buf(),
        map,
        header,
        unpermute_qk: cfg.architecture == Architecture::Llama,
        num_heads: cfg.num_attention_heads,
        num_kv_heads: cfg.num_key_value_heads,
    };
    Ok((weights, cfg))
}

impl GgufWeights {
    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    pub fn header(&self) -> &Gguf {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, hf_name: &str) -> bool {
        gguf_name(hf_name).is_some_and(|n| self.header.tensor(&n).is_some())
    }

    /// The checked info and raw bytes of the tensor of this GGUF name.
    pub fn raw(&self, gguf_name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self.header.tensor(gguf_name).ok_or_else(|| {
            ModelError::weights(&self.path, format!("missing tensor `{gguf_name}`"))
        })?;
        let bytes = self
            .header
            .tensor_bytes(&self.map, info)
            .map_err(|e| ModelError::weights(&self.path, e.to_string()))?;
        Ok((info, bytes))
    }

    /// Read, dequantize (f32) and, for llama q/k, un-permute the tensor `hf_name`.
    pub fn get(&self, hf_name: &str, shape: &[usize]) -> Result<Tensor> {
        let name = gguf_name(hf_name).ok_or_else(|| {
            ModelError::weights(&self.path, format!("no GGUF name for tensor `{hf_name}`"))
        })?;
        let (info, bytes) = self.raw(&name)?;
        if info.shape() != shape {
            return Err(ModelError::weights(
                &self.path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    info.shape()
                ),
            ));
        }
        let t = dequantize(info, bytes).map_err(|e| ModelError::weights(&self.path, e))?;
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

/// candle's dtype for a ggml type id, for the types candle can dequantize.
fn candle_dtype(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// Dequantize checked raw bytes to an f32 tensor of the tensor's shape.
fn dequantize(info: &TensorInfo, bytes: &[u8]) -> std::result::Result<Tensor, String> {
    let ty = info.ggml_type;
    let dtype = candle_dtype(ty.id).ok_or_else(|| {
        format!(
            "tensor `{}` has type {}, which this engine cannot load yet (supported: f32, f16, \
             bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q8_1, q2_K to q8_K)",
            info.name, ty.name
        )
    })?;
    // candle reads blocks in place: give it 16-byte aligned bytes.
    let mut copy = Vec::new();
    let bytes = if (bytes.as_ptr() as usize).is_multiple_of(16) {
        bytes
    } else {
        copy.resize(bytes.len() + 16, 0u8);
        let off = copy.as_ptr().align_offset(16);
        copy[off..off + bytes.len()].copy_from_slice(bytes);
        &copy[off..off + bytes.len()]
    };
    let err = |e: candle_core::Error| format!("tensor `{}`: {e}", info.name);
    let q = qtensor_from_ggml(dtype, bytes, info.shape(), &Device::Cpu).map_err(err)?;
    q.dequantize(&Device::Cpu).map_err(err)
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
