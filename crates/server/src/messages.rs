//! What the HTTP handlers and the engine thread say to each other: a [`Submission`]
//! (the request, its reply channel and its event channel), the [`Admitted`] reply, and
//! the request's [`Event`]s (one [`Delta`] per engine step, or a failure).

use crate::error::ApiError;
use engine_core::sampler::SampledToken;
use engine_core::{FinishReason, Prompt, RequestId};
use engine_scheduler::SamplingParams;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// A request handed to the engine thread.
pub struct Submission {
    pub prompt: Prompt,
    pub params: SamplingParams,
    /// `None`: what the context leaves after the prompt.
    pub max_tokens: Option<usize>,
    /// When the server received it (latencies and the deadline count from here).
    pub received: Instant,
    pub events: mpsc::UnboundedSender<Event>,
    pub reply: oneshot::Sender<Result<Admitted, ApiError>>,
}

/// The engine accepted the request.
#[derive(Debug, Clone, Copy)]
pub struct Admitted {
    pub id: RequestId,
    pub prompt_tokens: usize,
}

/// What a handler hears about its request.
#[derive(Debug)]
pub enum Event {
    Delta(Delta),
    /// Aborted (timeout) or failed (engine error); no more events follow.
    Failed(ApiError),
}

/// One step's output for one request; the last one has `finish`.
#[derive(Debug, Default)]
pub struct Delta {
    pub text: String,
    pub num_tokens: usize,
    pub logprobs: Vec<TokenLogprob>,
    pub finish: Option<FinishReason>,
}

/// A generated token's log-probability, and the top alternatives, as text.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

impl TokenLogprob {
    /// A sampled token with at most `top` alternatives, `text` naming each token.
    pub fn new(t: &SampledToken, top: usize, text: &dyn Fn(u32) -> String) -> Self {
        Self {
            token: text(t.token),
            logprob: t.logprob,
            top: t
                .top_logprobs
                .iter()
                .take(top)
                .map(|&(id, lp)| (text(id), lp))
                .collect(),
        }
    }
}
