//! The decoder's linear layers, dense or quantized, and how `--quant` picks between them.
//!
//! | `--quant`        | a GGUF's block-type matrices        | float / safetensors / dummy matrices |
//! |------------------|-------------------------------------|--------------------------------------|
//! | `native`          | kept in the file's type (engine-quant) | dense in `--dtype`                |
//! | `none`           | dequantized to `--dtype` (the reference path) | dense in `--dtype`           |
//! | `q8_0`, `q4_k`, ... | kept if already that type, else re-quantized | quantized at load           |
//!
//! A type whose blocks do not fit a row (a K-quant on SmolLM2's 576-wide rows) falls back
//! as llama.cpp's quantizer does ([`GgmlType::for_row_len`]). Only the matrices the layers
//! multiply by (q/k/v/o, gate/up/down, the LM head) are quantized; the embedding table and
//! the norms stay dense (a tied LM head is then a quantized copy of the embedding).
//!
//! Layers reading the same input (q/k/v, gate/up) are fused into one matmul at load: dense
//! matrices by concatenating their rows, quantized ones by concatenating their GGUF bytes
//! when all parts have the same block type (rows are independent blocks); parts of
//! different types (a Q4_K_M file's Q6_K `attn_v`) stay separate matmuls
//! ([`Linear::Split`]) whose outputs are concatenated.

use crate::config::DecoderConfig;
use crate::weights::WeightSource;
use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor, D};
use engine_quant::{matrix::quantize_ggml_on, CpuContext, GgmlType, QuantLinear};
use std::sync::Arc;

#[path = "linear_plan.rs"]
mod plan;
use plan::{bytes_of, dtype_name, storage, Storage};
pub use plan::{weight_plan, TypeBytes, WeightStats};

/// How weight matrices are stored (`--quant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuantMode {
    /// A GGUF's block-type matrices stay in their type; everything else is dense.
    #[default]
    Native,
    /// Every matrix dense in the run dtype.
    None,
    /// Every matrix in this block type (or its fallback for the row length).
    To(GgmlType),
}

impl std::str::FromStr for QuantMode {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "native" => Ok(QuantMode::Native),
            "none" => Ok(QuantMode::None),
            _ => s
                .parse::<GgmlType>()
                .ok()
                .filter(|t| t.is_quantized())
                .map(QuantMode::To)
                .ok_or_else(|| {
                    ModelError::Input(format!(
                        "--quant `{s}`: expected native, none, or a block type (q4_0, q4_1, \
                         q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k); float types go in --dtype"
                    ))
                }),
        }
    }
}

impl std::fmt::Display for QuantMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuantMode::Native => f.write_str("native"),
            QuantMode::None => f.write_str("none"),
            QuantMode::To(t) => write!(f, "{t}"),
        }
    }
}

/// A matrix as loaded, before fusing.
enum Matrix {
    /// `[rows, cols]` in the run dtype on the run device.
    Dense(Tensor),
    /// GGUF bytes of `rows` rows of `cols` values, on the host.
    Quant {
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    },
}

/// A linear layer `y = x W^T + b`, dense or quantized.
#[derive(Debug, Clone)]
pub(crate) enum Linear {
    Dense {
        weight: Tensor,       // [out, in]
        bias: Option<Tensor>, // [out]
    },
    Quant {
        weight: Arc<QuantLinear>, // [out, in] in a block type
        bias: Option<Tensor>,     // [out]
    },
    /// Parts of different storage types reading the same input; outputs side by side.
    Split(Vec<Linear>),
}

impl Linear {
    /// `x [T, in]` -> `[T, out]` in `x`'s dtype.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (y, bias) = match self {
            Linear::Dense { weight, bias } => (x.matmul(&weight.t()?)?, bias),
            Linear::Quant { weight, bias } => (weight.forward(x)?, bias),
            Linear::Split(parts) => {
                let ys = parts
                    .iter()
                    .map(|p| p.forward(x))
                    .collect::<Result<Vec<_>>>()?;
                return Ok(Tensor::cat(&ys, D::Minus1)?);
            }
        };
        Ok(match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Loads the decoder's tensors from a source under a `--quant` mode, keeping count of
/// what they take.
pub(crate) struct Loader<'a> {
    src: &'a mut WeightSource,
    mode: QuantMode,
    dtype: DType,
    device: Device,
    /// The CPU matmuls' threads, made at the first quantized matrix.
    cpu: Option<Arc<CpuContext>>,
    pub(crate) stats: WeightStats,
}

impl<'a> Loader<'a> {
    pub(crate) fn new(
        src: &'a mut WeightSource,
        mode: QuantMode,
        dtype: DType,
        dev: &Device,
    ) -> Self {
        Loader {
            src,
            mode,
            dtype,
            device: dev.clone(),
            cpu: None,
            stats: WeightStats::default(),
        }
    }

    /// A dense tensor (embedding, norm, bias); `read`: whether a decode step reads all of it.
    pub(crate) fn dense(&mut self, name: &str, shape: &[usize], read: bool) -> Result<Tensor> {
        let t = self.src.get(name, shape, self.dtype, &self.device)?;
        let bytes = (t.elem_count() * self.dtype.size_in_bytes()) as u64;
        self.stats.add(&dtype_name(self.dtype), bytes, read);
        Ok(t)
    }

    /// The layers `{prefix}.weight` (`[out, inp]` each, with `{prefix}.bias` when `bias`)
    /// fused into one whose outputs sit side by side.
    pub(crate) fn linear(
        &mut self,
        parts: &[(&str, usize)],
        inp: usize,
        bias: bool,
    ) -> Result<Linear> {
        let mut loaded = Vec::with_capacity(parts.len());
        for &(prefix, out) in parts {
            let m = self.matrix(&format!("{prefix}.weight"), out, inp)?;
            let b = match bias {
                true => Some(self.dense(&format!("{prefix}.bias"), &[out], true)?),
                false => None,
            };
            loaded.push((m, b));
        }
        self.fuse(loaded)
    }

    /// The LM head: `lm_head.weight`, or the embedding (`embed`, dense) when tied.
    pub(crate) fn lm_head(&mut self, cfg: &DecoderConfig, embed: &Tensor) -> Result<Linear> {
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let name = match cfg.tie_word_embeddings && !self.src.contains("lm_head.weight") {
            true => "model.embed_tokens.weight",
            false => "lm_head.weight",
        };
        if name != "lm_head.weight" && storage(self.src, name, h, self.mode)? == Storage::Dense {
            self.stats.read_per_step += (embed.elem_count() * self.dtype.size_in_bytes()) as u64;
            return Ok(Linear::Dense {
                weight: embed.clone(),
                bias: None,
            });
        }
        let m = self.matrix(name, v, h)?;
        self.fuse(vec![(m, None)])
    }

    fn cpu(&mut self) -> Result<Arc<CpuContext>> {
        if let Some(c) = &self.cpu {
            return Ok(c.clone());
        }
        // On CUDA the context only packs nothing and runs nothing: one thread.
        let threads = match self.device.is_cpu() {
            true => cpu_threads(),
            false => 1,
        };
        let c = Arc::new(CpuContext::new(threads)?);
        self.cpu = Some(c.clone());
        Ok(c)
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let s = storage(self.src, name, cols, self.mode)?;
        let (ty_name, bytes) = bytes_of(s, rows, cols, self.dtype);
        self.stats.add(&ty_name, bytes, true);
        let shape = [rows, cols];
        Ok(match s {
            Storage::Dense => {
                Matrix::Dense(self.src.get(name, &shape, self.dtype, &self.device)?)
            }
            Storage::File(ty) => {
                let WeightSource::Gguf(g) = &*self.src else {
                    return Err(ModelError::Input(format!("`{name}`: not from a GGUF file")));
                };
                let (file_ty, bytes) = g.quantized(name, &shape)?;
                debug_assert_eq!(file_ty, ty);
                Matrix::Quant {
                    ty,
                    rows,
                    cols,
                    bytes,
                }
            }
            Storage::Quantize(ty) => {
                let x = self.src.get(name, &shape, DType::F32, &Device::Cpu)?;
                let x = x.flatten_all()?.to_vec1::<f32>()?;
                let cpu = self.cpu()?;
                let bytes = quantize_ggml_on(ty, rows, cols, &x, Some(&cpu))
                    .map_err(|e| ModelError::Input(format!("quantizing `{name}`: {e}")))?;
                Matrix::Quant {
                    ty,
                    rows,
                    cols,
                    bytes,
                }
            }
        })
    }

    /// One layer from parts reading the same input (see the module docs).
    fn fuse(&mut self, mut parts: Vec<(Matrix, Option<Tensor>)>) -> Result<Linear> {
        let biases: Option<Vec<Tensor>> = parts.iter().map(|p| p.1.clone()).collect();
        let bias = biases.map(|b| Tensor::cat(&b, 0)).transpose()?;
        let first_ty = match &parts[0].0 {
            Matrix::Quant { ty, .. } => Some(*ty),
            Matrix::Dense(_) => None,
        };
        let same = parts.iter().all(|(m, _)| match m {
            Matrix::Quant { ty, .. } => Some(*ty) == first_ty,
            Matrix::Dense(_) => first_ty.is_none(),
        });
        if !same {
            let split = parts
                .drain(..)
                .map(|p| self.fuse(vec![p]))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Linear::Split(split));
        }
        let Some(ty) = first_ty else {
            let ws: Vec<Tensor> = parts
                .into_iter()
                .filter_map(|(m, _)| match m {
                    Matrix::Dense(t) => Some(t),
                    Matrix::Quant { .. } => None,
                })
                .collect();
            return Ok(Linear::Dense {
                weight: Tensor::cat(&ws, 0)?,
                bias,
            });
        };
        let (mut rows, mut cols, mut all) = (0, 0, Vec::new());
        for (m, _) in parts {
            if let Matrix::Quant {
                rows: r,
                cols: c,
                bytes,
                ..
            } = m
            {
                (rows, cols) = (rows + r, c);
                all.extend_from_slice(&bytes);
            }
        }
        let cpu = self.cpu()?;
        let weight = QuantLinear::from_ggml(ty, rows, cols, &all, &self.device, &cpu)?;
        Ok(Linear::Quant {
            weight: Arc::new(weight),
            bias,
        })
    }
}

/// Threads of the CPU matmuls: `RAYON_NUM_THREADS` when set (the same knob as candle's
/// own CPU ops), else every core.
fn cpu_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quant_modes_parse_and_print() {
        for s in ["native", "none", "q8_0", "q4_k", "q6_k", "q4_1"] {
            assert_eq!(s.parse::<QuantMode>().unwrap().to_string(), s);
        }
        assert_eq!(
            "Q4K".parse::<QuantMode>().unwrap(),
            QuantMode::To(GgmlType::Q4K)
        );
        let err = "f16".parse::<QuantMode>().unwrap_err().to_string();
        assert!(
            err.contains("--quant `f16`") && err.contains("--dtype"),
            "{err}"
        );
        let err = "q9".parse::<QuantMode>().unwrap_err().to_string();
        assert!(
            err.contains("--quant `q9`") && err.contains("native, none"),
            "{err}"
        );
    }

    /// Parts of different types stay separate matmuls; same-type parts become one; both
    /// match the dense product of the dequantized weights.
    #[test]
    fn fuse_concatenates_same_types_and_splits_mixed_ones() -> Result<()> {
        let (cols, dev) = (64, Device::Cpu);
        let values = |seed: u64, rows: usize| -> Result<Vec<f32>> {
            let t = crate::weights::dummy_tensor(seed, "w", &[rows, cols])?;
            Ok(t.flatten_all()?.to_vec1::<f32>()?)
        };
        let quant = |ty: GgmlType, x: &[f32]| -> Result<(Matrix, Vec<f32>)> {
            let bytes = engine_quant::quantize::quantize(ty, x)?;
            let deq = engine_quant::dequant::dequantize(ty, &bytes)?;
            let rows = x.len() / cols;
            Ok((
                Matrix::Quant {
                    ty,
                    rows,
                    cols,
                    bytes,
                },
                deq,
            ))
        };
        let (a, b, c) = (values(1, 16)?, values(2, 8)?, values(3, 8)?);
        let mut src = WeightSource::Dummy { seed: 0 };
        let mut ld = Loader::new(&mut src, QuantMode::Native, DType::F32, &dev);
        let x = Tensor::from_vec(values(4, 3)?, (3, cols), &dev)?.affine(20.0, 0.0)?;
        let check = |layer: &Linear, dense: Vec<f32>, tol: f32| -> Result<()> {
            let w = Tensor::from_vec(dense, (32, cols), &dev)?;
            let want = x.matmul(&w.t()?)?.flatten_all()?.to_vec1::<f32>()?;
            let got = layer.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= tol * scale, "{g} vs {w} (max {scale})");
            }
            Ok(())
        };
        // Mixed: q8_0, q4_0, dense.
        let ((qa, da), (qb, db)) = (quant(GgmlType::Q8_0, &a)?, quant(GgmlType::Q4_0, &b)?);
        let dc = Tensor::from_vec(c.clone(), (8, cols), &dev)?;
        let mixed = ld.fuse(vec![(qa, None), (qb, None), (Matrix::Dense(dc), None)])?;
        assert!(
            matches!(&mixed, Linear::Split(p) if p.len() == 3),
            "{mixed:?}"
        );
        check(&mixed, [da.clone(), db, c].concat(), 2e-2)?;
        // Same type: one quantized matmul over the rows of both.
        let ((qa, da), (qb, db)) = (
            quant(GgmlType::Q8_0, &a)?,
            quant(GgmlType::Q8_0, &[b.clone(), values(3, 8)?].concat())?,
        );
        let same = ld.fuse(vec![(qa, None), (qb, None)])?;
        match &same {
            Linear::Quant { weight, .. } => {
                assert_eq!((weight.rows(), weight.ty()), (32, GgmlType::Q8_0))
            }
            other => panic!("expected one quantized layer, got {other:?}"),
        }
        check(&same, [da, db].concat(), 2e-2)?;
        Ok(())
    }
}
