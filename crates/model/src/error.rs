//! The model crate's error type. Every variant names the input it is about.

use std::path::PathBuf;

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A weight file that cannot be read: truncated, corrupt, or missing a tensor.
    #[error("weights {path}: {reason}")]
    Weights { path: PathBuf, reason: String },
    /// A model config that is malformed or describes something we do not support.
    #[error("config {source_name}: {reason}")]
    Config { source_name: String, reason: String },
    /// An architecture we do not implement.
    #[error(
        "unsupported architecture `{arch}` in {source_name} (supported: llama, mistral, qwen2)"
    )]
    UnsupportedArchitecture { arch: String, source_name: String },
    /// A `--model` value that names nothing we know.
    #[error("unknown model `{spec}`: {reason}")]
    UnknownModel { spec: String, reason: String },
    /// Fetching a model (pip, Hugging Face hub) failed.
    #[error("fetching {what}: {reason}")]
    Fetch { what: String, reason: String },
    /// Building or running a tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Rendering a chat template failed.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// A chat template that failed or hit a limit (see `engine_formats::chat`).
    #[error(transparent)]
    Format(#[from] engine_formats::FormatError),
    /// A forward-pass input that does not match the model or the cache.
    #[error("invalid input: {0}")]
    Input(String),
    /// A fused kernel rejected its inputs or failed.
    #[error("kernel: {0}")]
    Kernel(#[from] engine_kernels::KernelError),
    /// An error from candle while computing.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(source_name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            source_name: source_name.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn weights(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Weights {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
