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

/// One request.
#[derive(Debug, Clone)]
pub struct Sequence {
    pub id: SeqId,
    /// Prompt then output tokens.
    pub tokens: Vec<u32>,
    pub num_prompt_tokens: usize,
    pub num_computed_tokens: usize,
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
            status: SeqStatus::Waiting,
            params,
            eos_token_ids,
            num_cached_tokens: None,
            num_preemptions: 0,
        }
    }

    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
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

    /// The stop condition met by the last appended token, if any.
    pub fn check_stop(&self, max_model_len: usize) -> Option<FinishReason> {
        let last = *self.tokens.last()?;
        if self.num_output_tokens() == 0 {
            return None;
        }
        if (!self.params.ignore_eos && self.eos_token_ids.contains(&last))
            || self.params.stop_token_ids.contains(&last)
        {
            return Some(FinishReason::Stop);
        }
        if self.num_output_tokens() >= self.params.max_tokens || self.num_tokens() >= max_model_len
        {
            return Some(FinishReason::Length);
        }
        None
    }
}
