//! One Llama-family decoder over a paged KV cache, its weight loaders and tokenizers.

pub mod error;
pub mod paths;
pub mod tokenizer;

pub use error::{ModelError, Result};
