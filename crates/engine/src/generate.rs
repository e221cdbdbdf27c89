//! Generating one request through the paged decoder: prefill in chunks, then decode one
//! token per step, until a stop condition.
//!
//! ```text
//!  prompt ids ──prefill (chunks of max_num_batched_tokens)──► logits ─► sample ─► token
//!                                   ▲                                              │
//!                                   └──────────── decode: one token per step ◄─────┘
//! ```
//! Blocks come from a [`BlockPool`] as the sequence grows; the block table maps its
//! positions to cache slots. This single-request loop is the seed of the continuous-
//! batching engine; its timings feed `engine generate`'s timing line.

use crate::error::{EngineError, Result};
use crate::rng::SeqRng;
use crate::sampler::{sample, SampledToken};
use crate::stop::StopText;
use engine_model::{Decoder, ForwardInputs, KvCache, SeqInput, StreamDecoder, Tokenizer};
use engine_scheduler::{blocks_for, BlockPool, SamplingParams};
use std::time::Instant;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS, a stop token or a stop string.
    Stop,
    /// `max_tokens` reached, or the model's context is full.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// Wall-clock timings of one request, in seconds from its start.
#[derive(Debug, Clone, Default)]
pub struct GenerationTiming {
    /// Start -> first output token sampled and on the host.
    pub ttft_s: f64,
    /// Start -> last token.
    pub e2e_s: f64,
    /// Time of each output token since start.
    pub token_times_s: Vec<f64>,
}

impl GenerationTiming {
    /// Decode throughput: tokens after the first over the time after the first.
    pub fn decode_tok_per_s(&self) -> Option<f64> {
        let n = self.token_times_s.len();
        let dt = self.e2e_s - self.ttft_s;
        (n > 1 && dt > 0.0).then(|| (n - 1) as f64 / dt)
    }
}

/// The result of one request.
#[derive(Debug, Clone)]
pub struct GenerationOutput {
    pub prompt_tokens: usize,
    pub token_ids: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    /// Per output token, when `params.logprobs` is set.
    pub logprobs: Vec<SampledToken>,
    pub timing: GenerationTiming,
}

/// Runs requests one at a time over its own KV cache.
pub struct Generator<'a> {
    model: &'a Decoder,
    tokenizer: &'a Tokenizer,
    kv: KvCache,
    pool: BlockPool,
    max_num_batched_tokens: usize,
}

impl<'a> Generator<'a> {
    /// A generator whose cache holds one sequence of `max_tokens_cached` tokens.
    pub fn new(
        model: &'a Decoder,
        tokenizer: &'a Tokenizer,
        block_size: usize,
        max_tokens_cached: usize,
        max_num_batched_tokens: usize,
    ) -> Result<Self> {
        let num_blocks = blocks_for(max_tokens_cached.max(1), block_size.max(1));
        let kv = KvCache::new(
            model.config(),
            num_blocks,
            block_size,
            model.dtype(),
            model.device(),
        )?;
        Ok(Self {
            model,
            tokenizer,
            pool: BlockPool::new(kv.num_blocks()),
            kv,
            max_num_batched_tokens: max_num_batched_tokens.max(1),
        })
    }

    /// Generate a continuation of `prompt`; `on_text` receives text deltas as they are
    /// produced (stop strings never reach it).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &SamplingParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerationOutput> {
        params.validate()?;
        let cfg = self.model.config();
        let max_len = cfg.max_position_embeddings;
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt.len() >= max_len {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: prompt.len(),
                max_model_len: max_len,
            });
        }
        if let Some(&token) = prompt.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(EngineError::TokenOutOfRange {
                token,
                vocab_size: cfg.vocab_size,
            });
        }
        let mut blocks: Vec<u32> = Vec::new();
        let result = self.run(prompt, params, &mut blocks, on_text);
        // Blocks go back whatever happened; a double free here would be our bug.
        let freed = self.pool.free(&blocks);
        debug_assert!(freed.is_ok());
        result
    }

    fn run(
        &mut self,
        prompt: &[u32],
        params: &SamplingParams,
        blocks: &mut Vec<u32>,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerationOutput> {
        let start = Instant::now();
        let max_len = self.model.config().max_position_embeddings;
        let mut rng = SeqRng::new(params.seed.unwrap_or(0));
        let mut stream = StreamDecoder::new();
        let mut stop_text = StopText::new(&params.stop);
        let mut tokens: Vec<u32> = prompt.to_vec();
        let mut out = GenerationOutput {
            prompt_tokens: prompt.len(),
            token_ids: Vec::new(),
            text: String::new(),
            finish_reason: FinishReason::Length,
            logprobs: Vec::new(),
            timing: GenerationTiming::default(),
        };
        let mut computed = 0usize;
        loop {
            // Prefill chunks, then single decode tokens: whatever is not yet in the cache.
            let end = tokens.len().min(computed + self.max_num_batched_tokens);
            let logits = self.forward(
                &tokens[computed..end],
                computed,
                blocks,
                end == tokens.len(),
            )?;
            computed = end;
            let Some(logits) = logits else { continue };
            let s = sample(&logits, params, &mut rng);
            let now = start.elapsed().as_secs_f64();
            out.timing.token_times_s.push(now);
            if out.token_ids.is_empty() {
                out.timing.ttft_s = now;
            }
            out.token_ids.push(s.token);
            tokens.push(s.token);
            let is_eos = self.tokenizer.eos_token_ids.contains(&s.token) && !params.ignore_eos;
            if params.logprobs.is_some() {
                out.logprobs.push(s.clone());
            }
            if is_eos || params.stop_token_ids.contains(&s.token) {
                out.finish_reason = FinishReason::Stop;
                break;
            }
            let (emit, stopped) = stop_text.push(&stream.push(self.tokenizer, s.token)?);
            on_text(&emit);
            if stopped {
                out.finish_reason = FinishReason::Stop;
                break;
            }
            if out.token_ids.len() >= params.max_tokens || tokens.len() >= max_len {
                break;
            }
        }
        on_text(&stop_text.flush());
        out.text = stop_text.text().to_string();
        out.timing.e2e_s = start.elapsed().as_secs_f64();
        Ok(out)
    }

    /// One forward step over `new` tokens at positions `computed..`; returns the last
    /// token's logits when `want_logits`.
    fn forward(
        &mut self,
        new: &[u32],
        computed: usize,
        blocks: &mut Vec<u32>,
        want_logits: bool,
    ) -> Result<Option<Vec<f32>>> {
        let needed = blocks_for(computed + new.len(), self.kv.block_size());
        if needed > blocks.len() {
            let extra = needed - blocks.len();
            let got = self.pool.allocate(extra).ok_or(EngineError::KvCacheFull {
                needed: extra,
                free: self.pool.num_free(),
            })?;
            blocks.extend(got);
        }
        let cfg = self.model.config();
        let seq = SeqInput {
            tokens: new,
            num_computed_tokens: computed,
            block_table: blocks,
            want_logits,
        };
        let width = cfg.num_key_value_heads * cfg.head_dim;
        let inputs =
            ForwardInputs::build(&[seq], self.kv.block_size(), width, self.model.device())?;
        let logits = self.model.forward(&inputs, &mut self.kv)?;
        if !want_logits {
            return Ok(None);
        }
        Ok(Some(logits.squeeze(0)?.to_vec1::<f32>()?))
    }
}
