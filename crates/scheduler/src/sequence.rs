//! A request's state as the scheduler sees it: tokens, progress, status.
//!
//! vLLM's vocabulary: `num_computed_tokens` counts tokens whose K/V are in the cache;
//! `num_tokens() - num_computed_tokens` is what the request still has to catch up on,
//! whether it is a prompt (prefill), the rest of a chunked prompt, a recompute after
//! preemption, or the one new token of a decode step. The scheduler has no phases.

use crate::SamplingParams;

pub type SeqId = u64;

/// Why a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS, a stop token or a stop string.
    Stop,
    /// `max_tokens` reached, or the model's context is full.
    Length,
    /// Aborted by the caller.
    Abort,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    Waiting,
    Running,
    Finished(FinishReason),
}

/// A step's new token for one sequence, as the engine hands it back to the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewToken {
    pub seq_id: SeqId,
    pub token: u32,
    /// The engine found one of the request's stop strings in the text so far.
    pub stop_string: bool,
}

impl NewToken {
    /// A token with no stop string seen.
    pub fn new(seq_id: SeqId, token: u32) -> Self {
        Self {
            seq_id,
            token,
            stop_string: false,
        }
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct Sequence {
    pub id: SeqId,
    /// Prompt then output tokens.
    pub tokens: Vec<u32>,
    pub num_prompt_tokens: usize,
    /// Tokens whose K/V are in the cache or being computed by a launched step (vLLM
    /// v1's meaning: advanced when a step is scheduled, not when it finishes).
    pub num_computed_tokens: usize,
    /// Tokens sampled by launched steps whose ids are not back yet (0, or 1-2 when the
    /// engine overlaps steps): they follow `tokens`, and a step that decodes one reads
    /// it from the device.
    pub num_pending: usize,
    pub status: SeqStatus,
    pub params: SamplingParams,
    /// Token ids that end the request unless `params.ignore_eos`.
    pub eos_token_ids: Vec<u32>,
    /// Prompt tokens found in the prefix cache when first admitted.
    pub num_cached_tokens: Option<usize>,
    pub num_preemptions: usize,
}

impl Sequence {
    pub fn new(
        id: SeqId,
        prompt: Vec<u32>,
        params: SamplingParams,
        eos_token_ids: Vec<u32>,
    ) -> Self {
        Self {
            id,
            num_prompt_tokens: prompt.len(),
            tokens: prompt,
            num_computed_tokens: 0,
            num_pending: 0,
            status: SeqStatus::Waiting,
            params,
            eos_token_ids,
            num_cached_tokens: None,
            num_preemptions: 0,
        }
    }

    /// Known tokens (prompt and output ids that are back).
    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Known and pending tokens: what the scheduler plans with.
    pub fn num_planned_tokens(&self) -> usize {
        self.tokens.len() + self.num_pending
    }

    /// Whether the pending tokens alone reach `max_tokens` or the context: the request
    /// ends when they are back, so it needs no further step.
    pub fn ends_when_pending_back(&self, max_model_len: usize) -> bool {
        self.num_pending > 0
            && (self.num_output_tokens() + self.num_pending >= self.params.max_tokens
                || self.num_planned_tokens() >= max_model_len)
    }

    pub fn output_tokens(&self) -> &[u32] {
        &self.tokens[self.num_prompt_tokens..]
    }

    pub fn num_output_tokens(&self) -> usize {
        self.tokens.len() - self.num_prompt_tokens
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.status, SeqStatus::Finished(_))
    }

    /// Whether `token` ends the request by itself: an EOS token (unless
    /// `params.ignore_eos`) or one of `params.stop_token_ids`. Such a token's text is
    /// never part of the output.
    pub fn is_stop_token(&self, token: u32) -> bool {
        (!self.params.ignore_eos && self.eos_token_ids.contains(&token))
            || self.params.stop_token_ids.contains(&token)
    }

    /// The stop condition met by the last appended token, if any: `Stop` for a stop
    /// token or when the caller found a stop string in the text (`stop_string`),
    /// else `Length` at `max_tokens` or the model's context.
    pub fn check_stop(&self, max_model_len: usize, stop_string: bool) -> Option<FinishReason> {
        let last = *self.tokens.last()?;
        if self.num_output_tokens() == 0 {
            return None;
        }
        if stop_string || self.is_stop_token(last) {
            return Some(FinishReason::Stop);
        }
        if self.num_output_tokens() >= self.params.max_tokens || self.num_tokens() >= max_model_len
        {
            return Some(FinishReason::Length);
        }
        None
    }
}
