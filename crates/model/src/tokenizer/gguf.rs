//! Build a `tokenizers::Tokenizer` from GGUF metadata (written by a helper).
