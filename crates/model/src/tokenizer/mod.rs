//! Tokenizers: Hugging Face `tokenizer.json`, built from GGUF metadata, or byte-level.

pub mod gguf;
