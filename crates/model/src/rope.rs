//! Rotary position embedding tables, including Llama 3.1's frequency scaling.
//!
//! We use the half-split ("NeoX", Hugging Face) convention: dimension `i` is rotated with
//! dimension `i + head_dim/2`. GGUF llama weights are permuted for the interleaved
//! convention and are converted at load (`gguf.rs`), so the decoder only knows one.

use crate::config::{DecoderConfig, Llama3RopeScaling};
use crate::Result;
use candle_core::{DType, Device, Tensor};

/// The inverse frequencies `theta^(-2i/d)` for `i in 0..d/2`, scaled as configured.
pub fn inv_freq(cfg: &DecoderConfig) -> Vec<f32> {
    let d = cfg.head_dim;
    let base: Vec<f32> = (0..d)
        .step_by(2)
        .map(|i| 1f32 / (cfg.rope_theta as f32).powf(i as f32 / d as f32))
        .collect();
    match &cfg.rope_scaling {
        None => base,
        Some(s) => base.into_iter().map(|f| llama3_scale(f, s)).collect(),
    }
}

/// Llama 3.1: long wavelengths are divided by `factor`, short ones kept, and the band
/// between is interpolated smoothly.
fn llama3_scale(freq: f32, s: &Llama3RopeScaling) -> f32 {
    let old_ctx = s.original_max_position_embeddings as f32;
    let low_freq_wavelen = old_ctx / s.low_freq_factor as f32;
    let high_freq_wavelen = old_ctx / s.high_freq_factor as f32;
    let wavelen = 2.0 * std::f32::consts::PI / freq;
    if wavelen < high_freq_wavelen {
        freq
    } else if wavelen > low_freq_wavelen {
        freq / s.factor as f32
    } else {
        let smooth = (old_ctx / wavelen - s.low_freq_factor as f32)
            / (s.high_freq_factor - s.low_freq_factor) as f32;
        (1.0 - smooth) * freq / s.factor as f32 + smooth * freq
    }
}

/// Precomputed cos/sin for every position up to the model's context, as one table
/// `[cos | sin]`: the fused rope kernel reads it whole; the candle path takes the rows
/// of a step's positions once per step ([`RopeTable::rows`]).
#[derive(Debug, Clone)]
pub struct RopeTable {
    cos_sin: Tensor, // [max_position_embeddings, head_dim]
    half: usize,
}

impl RopeTable {
    pub fn new(cfg: &DecoderConfig, dtype: DType, device: &Device) -> Result<Self> {
        let inv = inv_freq(cfg);
        let half = inv.len();
        let n = cfg.max_position_embeddings;
        let inv = Tensor::from_vec(inv, (1, half), device)?;
        let pos = Tensor::arange(0u32, n as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((n, 1))?;
        let angles = pos.matmul(&inv)?; // [n, half]
        let cos_sin = Tensor::cat(&[&angles.cos()?, &angles.sin()?], 1)?.to_dtype(dtype)?;
        Ok(Self { cos_sin, half })
    }

    /// cos and sin at `positions` ([T] u32): [T, head_dim / 2] each, contiguous.
    pub fn rows(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let cs = self.cos_sin.index_select(positions, 0)?; // [T, head_dim]
        Ok((
            cs.narrow(1, 0, self.half)?.contiguous()?,
            cs.narrow(1, self.half, self.half)?.contiguous()?,
        ))
    }

    /// Rotate q and k of the fused qkv rows `qkv` [num_tokens, width] in place at
    /// `positions` and store the rotated k and the v at `slots` of `caches` (k, v), with
    /// the fused kernel launched from `kernels` (half-split convention); `positions`,
    /// `slots`: [num_tokens] u32.
    pub fn rotate_and_cache(
        &self,
        kernels: &engine_kernels::Kernels,
        qkv: &Tensor,
        geo: engine_kernels::rope_and_cache::QkvHeads,
        positions: &Tensor,
        caches: (&Tensor, &Tensor),
        slots: &Tensor,
    ) -> Result<()> {
        let rotary = engine_kernels::rope_and_cache::Rotary {
            cos_sin: &self.cos_sin,
            neox: true,
        };
        Ok(kernels.rope_and_cache(qkv, geo, rotary, positions, caches, slots)?)
    }
}
