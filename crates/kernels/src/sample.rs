//! Token sampling on the device (kernels/sample.cu): per row, temperature, then top-k ->
//! top-p -> min-p (vLLM's order), one draw, the chosen token's logprob and the top-n
//! logprobs, for every row of a batch in one launch. Greedy rows take the argmax.
//!
//! Semantics (those of the engine's host sampler, crates/engine/src/sampler.rs): NaN
//! logits count as -inf and are never chosen, +inf as f32::MAX (all +inf tokens share the
//! mass), ties go to the lowest id, top-p keeps the shortest most-likely-first prefix whose
//! mass reaches `top_p` of the top-k set's, min-p keeps tokens with `p >= min_p * p_max`;
//! a token whose weight `exp((x - max) / T)` underflows (`(x - max) / T <= -87`) is never
//! drawn, and a row whose logits are all -inf/NaN returns token 0 with logprob -inf. The
//! draw is an exponential race over the kept tokens (the largest `w / E`, `E ~ Exp(1)`),
//! with `E` from Philox keyed by the row's seed at (output position, token id): a row's
//! token depends only on its own logits and parameters, never on the batch or row order,
//! and the CPU port computes the same bits as the kernel (see sample_cpu.rs).
//!
//! Logprobs per row: [`LogprobMode::Raw`] is `log_softmax(logits)` before temperature and
//! filters (vLLM's default, the engine's documented semantics); `Processed` is the
//! log-probability under the distribution actually sampled (temperature-scaled and
//! filtered; -inf outside the kept set; greedy rows use temperature 1 and the filters).
//!
//! Penalties that need the token history (repetition, frequency, presence) are not part
//! of this op. Call: [`params_tensor`] (one small upload), [`sample`], then [`unpack`]
//! (one small download of `[S, 2 + 2 n_top]` words).

use crate::error::{input_err, same_device, Result};
#[cfg(feature = "cuda")]
use crate::functions::Func;
use crate::functions::Kernels;
use crate::Fill;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Tensor};

#[path = "sample_math.rs"]
mod math;
#[path = "sample_cpu.rs"]
mod port;
#[path = "sample_ref.rs"]
mod reference_impl;
#[path = "sample_stats.rs"]
mod stats;
pub use reference_impl::{reference, Expected, Spec};

/// The widest top-n the op returns (the engine's API allows 20).
pub const MAX_TOP: usize = 64;
/// u32 words per row of the params tensor.
pub const PARAM_WORDS: usize = 8;

/// Which log-probabilities a row returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogprobMode {
    /// `log_softmax(logits)`: temperature 1, before any filter.
    #[default]
    Raw,
    /// Of the distribution sampled from: `log(w_i / sum of kept w)`, -inf if not kept.
    Processed,
}

/// One row's sampling parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowParams {
    /// `<= 0` (or NaN) takes the argmax (greedy); else the softmax temperature.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 (or >= vocab) disables.
    pub top_k: u32,
    /// Nucleus mass in (0, 1]; 1 disables.
    pub top_p: f32,
    /// Keep tokens with `p >= min_p * p_max`, in [0, 1]; 0 disables.
    pub min_p: f32,
    /// The request's seed (Philox key).
    pub seed: u64,
    /// Index of the token being generated among the request's outputs (Philox counter):
    /// unchanged by batching and by preemption.
    pub position: u32,
    /// Top logprobs to return (at most the op's `n_top`).
    pub n_logprobs: u32,
    pub logprobs: LogprobMode,
}

impl Default for RowParams {
    fn default() -> Self {
        RowParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 0,
            position: 0,
            n_logprobs: 0,
            logprobs: LogprobMode::Raw,
        }
    }
}

const FLAG_PROCESSED: u32 = 1 << 16;
const FLAG_GREEDY: u32 = 1 << 17;

impl RowParams {
    /// Greedy decoding, no logprobs.
    pub fn greedy() -> Self {
        RowParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature.is_nan() || self.temperature <= 0.0
    }

    /// The row's words in the params tensor (layout in kernels/sample.cu).
    pub fn words(&self) -> [u32; PARAM_WORDS] {
        let mut flags = self.n_logprobs.min(0xffff);
        if self.logprobs == LogprobMode::Processed {
            flags |= FLAG_PROCESSED;
        }
        if self.is_greedy() {
            flags |= FLAG_GREEDY;
        }
        [
            self.temperature.to_bits(),
            self.top_k,
            self.top_p.to_bits(),
            self.min_p.to_bits(),
            self.seed as u32,
            (self.seed >> 32) as u32,
            self.position,
            flags,
        ]
    }

    pub(crate) fn from_words(w: &[u32]) -> Self {
        let flags = w[7];
        RowParams {
            temperature: match flags & FLAG_GREEDY {
                0 => f32::from_bits(w[0]),
                _ => 0.0,
            },
            top_k: w[1],
            top_p: f32::from_bits(w[2]),
            min_p: f32::from_bits(w[3]),
            seed: u64::from(w[4]) | (u64::from(w[5]) << 32),
            position: w[6],
            n_logprobs: flags & 0xffff,
            logprobs: match flags & FLAG_PROCESSED {
                0 => LogprobMode::Raw,
                _ => LogprobMode::Processed,
            },
        }
    }

    /// The engine's rules (SamplingParams::validate) plus the op's top-n width.
    fn validate(&self, row: usize, n_top: usize) -> Result<()> {
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            input_err!("sample: row {row}: temperature must be finite and >= 0, got {t}");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            input_err!(
                "sample: row {row}: top_p must be in (0, 1], got {}",
                self.top_p
            );
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            input_err!(
                "sample: row {row}: min_p must be in [0, 1], got {}",
                self.min_p
            );
        }
        if self.n_logprobs as usize > n_top {
            input_err!(
                "sample: row {row}: n_logprobs {} exceeds the op's n_top {n_top}",
                self.n_logprobs
            );
        }
        Ok(())
    }
}

/// One row's result on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprob: f32,
    /// Most likely first, ties by lowest id; `min(n_logprobs, vocab)` entries.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// The `[S, 8]` u32 params tensor of `rows` on `dev`, each row checked (an error names
/// the row and the field).
pub fn params_tensor(rows: &[RowParams], n_top: usize, dev: &Device) -> Result<Tensor> {
    let mut words = Vec::with_capacity(rows.len() * PARAM_WORDS);
    push_params(rows, n_top, &mut words)?;
    Ok(Tensor::from_vec(words, (rows.len(), PARAM_WORDS), dev)?)
}

/// Append the params words of `rows` (`S * 8`, row-major: the rows of [`params_tensor`])
/// to `words`, each row checked: for a caller that uploads them with other data in one
/// copy (the engine's decode graphs).
pub fn push_params(rows: &[RowParams], n_top: usize, words: &mut Vec<u32>) -> Result<()> {
    for (i, r) in rows.iter().enumerate() {
        r.validate(i, n_top)?;
        words.extend(r.words());
    }
    Ok(())
}

/// Sample every row of `logits` (`[S, V]`, f32/f16/bf16) with `params` (`[S, 8]` u32 from
/// [`params_tensor`]). Returns `[S, 2 + 2 n_top]` u32 on the logits' device: per row the
/// token, its logprob (f32 bits), `n_top` top ids, `n_top` top logprobs (f32 bits); entries
/// past a row's `min(n_logprobs, V)` are `(u32::MAX, -inf)`. [`unpack`] reads it.
pub fn sample(logits: &Tensor, params: &Tensor, n_top: usize) -> Result<Tensor> {
    sample_with(logits, params, n_top, Fill::Uninit)
}

/// [`sample`] with the output's initial fill ([`Fill::Poison`] in the harness).
pub fn sample_with(logits: &Tensor, params: &Tensor, n_top: usize, fill: Fill) -> Result<Tensor> {
    Kernels::NONE.sample_with(logits, params, n_top, fill)
}

impl Kernels {
    /// [`sample`] launched from this table.
    pub fn sample(&self, logits: &Tensor, params: &Tensor, n_top: usize) -> Result<Tensor> {
        self.sample_with(logits, params, n_top, Fill::Uninit)
    }

    /// [`sample_with`] launched from this table.
    pub fn sample_with(
        &self,
        logits: &Tensor,
        params: &Tensor,
        n_top: usize,
        fill: Fill,
    ) -> Result<Tensor> {
        let (rows, vocab) = match logits.dims() {
            &[s, v] => (s, v),
            d => input_err!("sample: logits must be [rows, vocab], got {d:?}"),
        };
        if vocab == 0 || vocab > i32::MAX as usize {
            input_err!("sample: vocab size {vocab} out of range (1..=2^31-1)");
        }
        if !matches!(logits.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            input_err!(
                "sample: logits dtype {:?} unsupported (f32, f16, bf16)",
                logits.dtype()
            );
        }
        if params.dims() != [rows, PARAM_WORDS] || params.dtype() != DType::U32 {
            input_err!(
                "sample: params must be [{rows}, {PARAM_WORDS}] u32 (params_tensor), got {:?} {:?}",
                params.dims(),
                params.dtype()
            );
        }
        if n_top > MAX_TOP {
            input_err!("sample: n_top {n_top} exceeds {MAX_TOP}");
        }
        same_device("sample", ("logits", logits), &[("params", params)])?;
        let (logits, params) = (logits.contiguous()?, params.contiguous()?);
        Ok(logits.apply_op2_no_bwd(
            &params,
            &SampleOp {
                n_top,
                fill,
                kernels: self,
            },
        )?)
    }
}

/// Read [`sample`]'s output on the host (one copy): one [`Sampled`] per row of `rows`.
pub fn unpack(out: &Tensor, rows: &[RowParams]) -> Result<Vec<Sampled>> {
    let width = out.dim(1)?;
    if out.dims() != [rows.len(), width] || width < 2 || width % 2 != 0 {
        input_err!(
            "unpack: expected [{}, 2 + 2 n_top], got {:?}",
            rows.len(),
            out.dims()
        );
    }
    let words = out
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<u32>()?;
    unpack_words(&words, width, rows)
}

/// [`unpack`] of the output's words already on the host (row-major, `width` per row).
pub fn unpack_words(words: &[u32], width: usize, rows: &[RowParams]) -> Result<Vec<Sampled>> {
    if width < 2 || !width.is_multiple_of(2) || words.len() != rows.len() * width {
        input_err!(
            "unpack: {} words for {} rows of width {width} (2 + 2 n_top)",
            words.len(),
            rows.len()
        );
    }
    let n_top = (width - 2) / 2;
    Ok(words
        .chunks(width)
        .zip(rows)
        .map(|(w, p)| Sampled {
            token: w[0],
            logprob: f32::from_bits(w[1]),
            top_logprobs: (0..(p.n_logprobs as usize).min(n_top))
                .map(|j| (w[2 + j], f32::from_bits(w[2 + n_top + j])))
                .take_while(|&(id, _)| id != u32::MAX)
                .collect(),
        })
        .collect())
}

/// A row's output words from the port's result.
fn pack(out: &port::RowOut, n_top: usize, dst: &mut [u32]) {
    dst[0] = out.token;
    dst[1] = out.logprob.to_bits();
    for j in 0..n_top {
        let (id, lp) = out
            .top
            .get(j)
            .copied()
            .unwrap_or((u32::MAX, f32::NEG_INFINITY));
        dst[2 + j] = id;
        dst[2 + n_top + j] = lp.to_bits();
    }
}

/// The CPU port of every row (what `cpu_fwd` runs): `logits` `[S, vocab]` as f32, `params`
/// `[S, 8]`; returns `[S, 2 + 2 n_top]` words.
pub(crate) fn sample_host(
    logits: &[f32],
    vocab: usize,
    params: &[u32],
    n_top: usize,
    fill: Fill,
) -> Vec<u32> {
    let width = 2 + 2 * n_top;
    let init = match fill {
        Fill::Uninit => 0,
        Fill::Poison => u32::MAX,
    };
    let mut out = vec![init; logits.len() / vocab * width];
    for ((x, w), dst) in logits
        .chunks(vocab)
        .zip(params.chunks(PARAM_WORDS))
        .zip(out.chunks_mut(width))
    {
        let row = port::sample_row(x, &RowParams::from_words(w), n_top, port::RADIX);
        pack(&row, n_top, dst);
    }
    out
}

struct SampleOp<'a> {
    n_top: usize,
    fill: Fill,
    /// The function table the launch uses ([`Kernels::NONE`]: looked up at the launch).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    kernels: &'a Kernels,
}

impl CustomOp2 for SampleOp<'_> {
    fn name(&self) -> &'static str {
        "sample"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, vocab) = l1.shape().dims2()?;
        let logits: Vec<f32> = crate::cpu::with_float!(s1.dtype(), T => {
            let x = crate::cpu::slice::<T>(s1, l1)?;
            Ok::<_, candle_core::Error>(x.iter().map(|&v| crate::cpu::Float::f(v)).collect())
        })?;
        let params = crate::cpu::slice::<u32>(s2, l2)?;
        let out = sample_host(&logits, vocab.max(1), params, self.n_top, self.fill);
        Ok((
            CpuStorage::U32(out),
            Shape::from((rows, 2 + 2 * self.n_top)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda;
        use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
        let dev = &s1.device;
        let (rows, vocab) = l1.shape().dims2()?;
        let width = 2 + 2 * self.n_top;
        let n = rows * width;
        // Poison: 0xFF bytes (u32::MAX ids, NaN logprobs) show any word left unwritten.
        let out = cuda::alloc::<u32>(dev, n, self.fill)?;
        let out = candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone());
        let shape = Shape::from((rows, width));
        if rows == 0 {
            return Ok((out, shape));
        }
        let (x, p, o) = (
            cuda::ptr(s1, l1)?,
            cuda::ptr(s2, l2)?,
            cuda::ptr(&out, &Layout::contiguous(n))?,
        );
        let f = self.kernels.get(dev, Func::Sample, s1.dtype())?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (port::THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = f.builder();
        let (vocab, n_top) = (vocab as i32, self.n_top as i32);
        candle_core::builder_arg!(b, x, p, o, vocab, n_top);
        // SAFETY: x is [rows, vocab] of the dtype, p [rows, 8] u32, o [rows, width] u32
        // (checked by the wrapper, contiguous); the signature is (T*, u32*, u32*, i32, i32);
        // grid.x = rows.
        unsafe { b.launch(cfg) }.map_err(|e| candle_core::Error::Msg(format!("sample: {e:?}")))?;
        Ok((out, shape))
    }
}

#[cfg(test)]
#[path = "sample_tests.rs"]
mod tests;
