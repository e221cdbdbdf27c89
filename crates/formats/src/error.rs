//! The crate's error type: one variant per input kind, each message saying what is wrong
//! and where (key, tensor, byte offset). The caller adds the file name.

/// Why an input was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    /// A GGUF file whose header, metadata or tensor table is malformed or out of bounds.
    #[error("not a valid GGUF file: {0}")]
    Gguf(String),
    /// A GGUF metadata value of the wrong type or out of range.
    #[error("GGUF metadata `{key}`: {reason}")]
    Metadata { key: String, reason: String },
    /// A safetensors header that is malformed or out of bounds.
    #[error("not a valid safetensors file: {0}")]
    Safetensors(String),
    /// A vocabulary that cannot become a tokenizer.
    #[error("{0}")]
    Vocab(String),
    /// A chat template that does not parse, fails, or exceeds a limit.
    #[error("chat template: {0}")]
    Template(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, FormatError>;
