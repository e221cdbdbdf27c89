//! GGML block formats kept quantized: byte-exact GGUF layouts, a reference
//! dequantizer, quantizers, and matmul kernels on the CPU (SIMD chosen at run time)
//! and on CUDA.
//!
//! | module          | what                                                          |
//! |-----------------|---------------------------------------------------------------|
//! | [`types`]       | [`GgmlType`]: GGUF ids, block sizes, names (`q4_k`, ...)      |
//! | `block`         | GGML bit layouts <-> codes and scales (the only place that knows them) |
//! | [`dequant`]     | the reference decoder (GGUF bytes -> f32)                      |
//! | [`quantize`]    | f32 -> GGUF bytes (`--quant TYPE` of dense weights)            |
//! | [`act`]         | 8-bit activation blocks (Q8 per 32, Q8_K per 256)              |
//! | `pack`          | the CPU kernels' layout: 8 rows interleaved per block          |
//! | [`simd`]        | SIMD levels detected at run time; the vector vocabulary        |
//! | `kernels`       | tile kernels per type, written once over the vocabulary        |
//! | [`matrix`]      | [`QMatrix`]: packed weights, GGUF bytes in and out             |
//! | [`matmul`]      | the threaded matmul and its [`CpuContext`]                     |
//! | [`pool`]        | the matmuls' thread pool                                       |
//! | [`reference`]   | the f64 reference matmul and the kernels' tolerance            |
//! | [`linear`]      | [`QuantLinear`]: `forward(&Tensor)` on the CPU or CUDA          |
//! | `cuda`          | (feature `cuda`) the ops launching kernels/quant_*.cu           |
//!
//! The CPU path, end to end: `QMatrix::from_ggml(ty, rows, cols, gguf_bytes)` packs the
//! weights once; `w.matmul(x, m, y, &cpu)` quantizes the `m` activation rows and runs
//! the tile kernels of the CPU's best level on `cpu.threads()` threads.

pub mod act;
mod block;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dequant;
pub mod error;
mod kernels;
pub mod linear;
pub mod matmul;
pub mod matrix;
mod pack;
pub mod pool;
pub mod quantize;
mod quantize_k;
pub mod random;
pub mod reference;
pub mod simd;
pub mod types;

pub use error::{QuantError, Result};
pub use linear::QuantLinear;
pub use matmul::CpuContext;
pub use matrix::QMatrix;
pub use simd::Level;
pub use types::GgmlType;
