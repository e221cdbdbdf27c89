//! One Llama-family decoder over a paged KV cache, its weight loaders and tokenizers.
//!
//! - [`config`]: `DecoderConfig`, from `config.json`, GGUF metadata or a manifest.
//! - [`decoder`]: the forward pass over a flat batch of tokens ([`inputs`]), with candle
//!   ops or engine-kernels' fused ops (`--kernels candle|fused`).
//! - [`kv_cache`] and [`attention`]: paged K/V storage and attention through block tables.
//! - [`weights`], [`gguf`]: where tensors come from (safetensors, GGUF, a seed); the file
//!   headers are read and checked by `engine_formats` before any tensor is touched.
//! - [`tokenizer`], [`chat`]: text in and out, chat templates (rendered under limits).
//! - [`source`]: resolving a `--model` value (alias, path, `hf:`, `dummy:`) to a loaded model.

pub mod attention;
pub mod chat;
pub mod config;
pub mod decoder;
pub mod error;
pub mod fetch;
mod fused;
pub mod gguf;
pub mod hub;
pub mod inputs;
pub mod kv_cache;
pub mod paths;
pub mod rope;
pub mod source;
pub mod tokenizer;
pub mod weights;

pub use config::{Architecture, DecoderConfig};
pub use decoder::Decoder;
pub use engine_kernels::KernelChoice;
pub use error::{ModelError, Result};
pub use inputs::{ForwardInputs, SeqInput};
pub use kv_cache::KvCache;
pub use source::{load_model, open_model, LoadOptions, LoadedModel, OpenedModel, DEFAULT_MODEL};
pub use tokenizer::{StreamDecoder, Tokenizer};
pub use weights::WeightSource;
