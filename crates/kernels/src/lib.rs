//! Fused kernels for the decoder's hot path, as candle ops.
//!
//! Each kernel has three implementations that must agree:
//! - the CUDA kernel in `kernels/NAME.cu` (compiled to PTX by build.rs under the `cuda`
//!   feature), run by the op's `cuda_fwd`;
//! - a CPU port of the same algorithm (same partitioning, same accumulation order where
//!   it matters), run by the op's `cpu_fwd`, so the CPU build exercises the kernel's
//!   indexing and the decoder's fused path without a GPU;
//! - a reference written the obvious way (plain loops or candle ops, f32), which the
//!   tests and `engine kernels test` compare both against.
//!
//! | kernel              | op                                                   |
//! |---------------------|------------------------------------------------------|
//! | `silu_mul`          | `out = silu(gate) * up` of rows `[gate \| up]`       |
//! | `add_rms_norm`      | `r = x + residual; out = rms_norm(r) * w` (both out) |
//! | `rope`              | rotary embedding in place, half-split or interleaved |
//! | `reshape_and_cache` | scatter new K or V rows into the paged cache by slot |
//! | `rope_and_cache`    | `rope` of q and k in the qkv rows + K and V cached by slot, one pass |
//! | `paged_decode`      | one query per sequence over its paged context, split-K |
//! | `paged_prefill`     | varlen causal attention over the paged cache (flash) |
//! | `argmax`            | greedy id per logits row (NaN never, lowest id on ties) |
//! | `sample`            | per row: temperature, top-k/p, min-p, draw, logprobs |
//!
//! [`paged`] holds the paged cache's slot formula and visibility rule, the one copy the
//! decoder's metadata, the candle attention path, the CPU ports and the references use.
//!
//! [`functions`] holds [`Kernels`], the CUDA functions of the decoder's and the sampler's
//! kernels looked up once (the decoder owns one; each op is also a method of it); the
//! plain op functions look their function up at each launch.
//!
//! [`harness`] holds the registry that `engine kernels test|bench` and the criterion
//! benches iterate: random inputs, poisoned outputs, error thresholds per dtype, timing
//! and bandwidth against the device's copy ceiling. docs/kernels.md is the guide.

pub mod add_rms_norm;
pub mod argmax;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod error;
pub mod functions;
pub mod harness;
pub mod paged;
pub mod paged_decode;
pub mod paged_prefill;
pub mod philox;
pub mod reshape_and_cache;
pub mod rope;
pub mod rope_and_cache;
pub mod sample;
pub mod silu_mul;
pub mod upload;

pub use error::{KernelError, Result};
pub use functions::Kernels;

/// Which implementation of the hot-path ops the decoder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelChoice {
    /// Plain candle ops (the baseline).
    Candle,
    /// The fused ops of this crate (CUDA kernels on a GPU, their CPU ports on the host).
    Fused,
    /// The measured choice for the device: candle everywhere for now (see
    /// [`KernelChoice::resolve`]).
    #[default]
    Auto,
}

/// Whether a GPU run of the fused path is recorded in benches/results/ (correctness
/// and speed against the candle path). Until it is, `auto` picks candle on CUDA too:
/// an unmeasured path is never the default. The commit that records the run flips this.
const FUSED_MEASURED_ON_CUDA: bool = false;

impl KernelChoice {
    /// Resolve `Auto` for a device: on CUDA `Fused` once its GPU run is recorded,
    /// `Candle` until then; `Candle` on the CPU, where the decoder still runs its
    /// decode-only steps on the fused ops' CPU ports (engine_model's Decoder: faster
    /// there) and its prefill steps on candle's.
    pub fn resolve(self, device: &candle_core::Device) -> KernelChoice {
        match (self, device.is_cuda()) {
            (KernelChoice::Auto, true) if FUSED_MEASURED_ON_CUDA => KernelChoice::Fused,
            (KernelChoice::Auto, _) => KernelChoice::Candle,
            (k, _) => k,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KernelChoice::Candle => "candle",
            KernelChoice::Fused => "fused",
            KernelChoice::Auto => "auto",
        }
    }
}

impl std::str::FromStr for KernelChoice {
    type Err = KernelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "candle" => Ok(KernelChoice::Candle),
            "fused" => Ok(KernelChoice::Fused),
            "auto" => Ok(KernelChoice::Auto),
            other => Err(KernelError::Input(format!(
                "unknown kernel set {other:?}: expected candle, fused or auto"
            ))),
        }
    }
}

/// Streaming multiprocessors of a CUDA device (what sizes a grid that fills it); 0 on
/// the CPU.
pub fn device_sm_count(device: &candle_core::Device) -> Result<usize> {
    match device {
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(dev) => cuda::sm_count(dev),
        _ => Ok(0),
    }
}

/// How an op fills the outputs it allocates before its kernel runs. The decoder asks
/// for [`Fill::Uninit`] (no memset); the test harness asks for [`Fill::Poison`] (NaN
/// bits, 0xFF bytes), so an element the kernel forgets to write shows up as NaN in a
/// comparison. A parameter, not a process-wide switch: two callers never see each
/// other's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fill {
    /// Uninitialized device memory on CUDA, zeros on the CPU.
    #[default]
    Uninit,
    /// Every byte 0xFF (NaN for every float type).
    Poison,
}

/// A tensor whose contents the caller will overwrite completely (an attention output
/// that the decode and prefill kernels fill between them): uninitialized device memory
/// on CUDA, zeros on the CPU; NaN everywhere with [`Fill::Poison`].
pub fn output(
    shape: &[usize],
    dtype: candle_core::DType,
    device: &candle_core::Device,
    fill: Fill,
) -> Result<candle_core::Tensor> {
    match device {
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(dev) => {
            let n = shape.iter().product();
            let storage = cuda::alloc_storage(dev, dtype, n, fill)?;
            Ok(candle_core::Tensor::from_storage(
                candle_core::Storage::Cuda(storage),
                shape,
                candle_core::op::BackpropOp::none(),
                false,
            ))
        }
        _ => {
            let value = match fill {
                Fill::Poison => f64::NAN,
                Fill::Uninit => 0.0,
            };
            Ok(candle_core::Tensor::full(value, shape, device)?.to_dtype(dtype)?)
        }
    }
}
