//! One Llama-family decoder over a paged KV cache, its weight loaders and tokenizers.
//!
//! - [`config`]: `DecoderConfig`, from `config.json`, GGUF metadata or a manifest.
//! - [`decoder`]: the forward pass over one step's flat batch of tokens ([`batch`]):
//!   ONE layer loop (`Decoder::layer`) over a small set of hot-path ops with two
//!   implementations (`ops`: candle's plain ops, `--kernels candle`, the reference;
//!   engine-kernels' fused ops, `--kernels fused`).
//! - [`kv_cache`] and [`attention`]: paged K/V storage, and the candle path's attention
//!   through block tables.
//! - [`weights`], [`gguf`]: where tensors come from (safetensors, GGUF, a seed); the file
//!   headers are read and checked by `engine_formats` before any tensor is touched.
//! - [`tokenizer`], [`chat`]: text in and out, chat templates (rendered under limits).
//! - [`source`]: resolving a `--model` value (alias, path, `hf:`, `dummy:`) to a loaded model.

pub mod attention;
pub mod batch;
pub mod chat;
pub mod config;
pub mod decoder;
pub mod error;
pub mod fetch;
pub mod gguf;
pub mod hub;
pub mod kv_cache;
mod ops;
pub mod paths;
pub mod rope;
pub mod source;
pub mod tokenizer;
pub mod weights;

pub use batch::{BatchBuilder, SeqInput, StepBatch};
pub use config::{Architecture, DecoderConfig};
pub use decoder::Decoder;
pub use engine_kernels::KernelChoice;
pub use error::{ModelError, Result};
pub use kv_cache::KvCache;
pub use source::{load_model, open_model, LoadOptions, LoadedModel, OpenedModel, DEFAULT_MODEL};
pub use tokenizer::{StreamDecoder, Tokenizer};
pub use weights::WeightSource;
