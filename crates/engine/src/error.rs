//! The engine crate's error type.

use engine_model::ModelError;
use engine_scheduler::{AdmissionError, SamplingParamsError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("invalid sampling parameters")]
    InvalidParams(#[from] SamplingParamsError),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {prompt_tokens} tokens but the model's context is {max_model_len} (the prompt plus at least one generated token must fit)")]
    PromptTooLong {
        prompt_tokens: usize,
        max_model_len: usize,
    },
    /// The prompt plus `max_tokens` does not fit in the context (HTTP 400 when serving).
    #[error("this model's context is {max_model_len} tokens; the prompt has {prompt_tokens} and max_tokens asks for {max_tokens}")]
    ContextLength {
        max_model_len: usize,
        prompt_tokens: usize,
        max_tokens: usize,
    },
    #[error("token id {token} is outside the model's vocabulary ({vocab_size})")]
    TokenOutOfRange { token: u32, vocab_size: usize },
    #[error("the KV cache is full: {needed} blocks needed, {free} free")]
    KvCacheFull { needed: usize, free: usize },
    #[error("request rejected")]
    Rejected(#[from] AdmissionError),
    #[error("engine config: {0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Kernel(#[from] engine_kernels::KernelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, EngineError>;
