//! The Engine: requests in, streamed outputs and timing records out.
//!
//! ```text
//!  Engine::step                      (step.rs)
//!    Scheduler::schedule()          -> SchedulerOutput (who runs, how many tokens each)
//!    ModelRunner::prepare()         -> StepBatch: ids, positions, slot_mapping, attention
//!                                      metadata, built and checked once (one hop)
//!    ModelRunner::launch()          -> Decoder::forward (ONE layer loop), logits stay on
//!                                      the device; every sampling row (greedy, sampled,
//!                                      logprobs) in ONE launch of the sample op; the ids
//!                                      + logprobs copy back starts
//!    (overlap: the previous step's results are read here, while this one runs)
//!    ModelRunner::finish()          -> wait for the ids + logprobs
//!    detokenize, stop strings       -> text deltas, stop-string hits
//!    Scheduler::update_from_output()-> append tokens; the ONE place a request finishes
//!  -> Vec<RequestOutput>, one StepRecord
//! ```
//! One owner, `&mut self`, no locks. Each request's draws are keyed by its own seed and
//! output position (Philox, see [`crate::sampler`]), so preemption, batch composition
//! and the device do not change what it generates.

use crate::error::{EngineError, Result};
use crate::graphs::GraphReport;
use crate::kv_sizing::{kv_cache_size, DeviceMemory};
use crate::records::{RequestTimeline, StepRecord};
use crate::runner::ModelRunner;
use crate::sampler::SampledToken;
use crate::stop::StopText;
use engine_model::chat::ChatMessage;
use engine_model::{Decoder, KernelChoice, LoadedModel, StreamDecoder, Tokenizer};
use engine_scheduler::{FinishReason, SamplingParams, Scheduler, SchedulerConfig, SeqId, Sequence};
use std::collections::HashMap;
use std::time::Instant;

pub type RequestId = SeqId;

/// Engine limits and KV-cache size.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EngineConfig {
    pub block_size: usize,
    /// Blocks in the KV cache; when `None`, derived from `kv_cache_memory_bytes`.
    pub num_blocks: Option<usize>,
    /// Bytes for the KV cache when `num_blocks` is `None` (default 1 GiB).
    pub kv_cache_memory_bytes: Option<u64>,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub enable_prefix_caching: bool,
    /// On CUDA, the fraction of device memory the engine may use (weights, activations
    /// and KV cache); the KV cache gets what is left. Ignored on CPU.
    pub gpu_memory_utilization: f64,
    /// Seeds requests that do not bring their own.
    pub seed: u64,
    /// Run every step eagerly: no decode graphs (vLLM's `--enforce-eager`).
    pub enforce_eager: bool,
    /// Longest context a decode-graph step takes; longer steps run eagerly.
    pub graph_max_context: usize,
    /// Run the decode-graph path on the CPU too (eagerly, nothing to capture): tests of
    /// its bucketing, padding and refill without a GPU. Graphs are captured on CUDA.
    pub graphs_on_cpu: bool,
    /// Run every step to its end before scheduling the next (SGLang's
    /// `--disable-overlap-schedule`). By default on CUDA, step n+1 is scheduled and
    /// launched while step n runs.
    pub disable_overlap: bool,
    /// Overlap steps on the CPU too (where ops finish before they return, so it gains
    /// nothing): tests of the overlapped schedule without a GPU.
    pub overlap_on_cpu: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            block_size: 16,
            num_blocks: None,
            kv_cache_memory_bytes: None,
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            enable_prefix_caching: true,
            gpu_memory_utilization: 0.9,
            seed: 0,
            enforce_eager: false,
            graph_max_context: 8192,
            graphs_on_cpu: false,
            disable_overlap: false,
            overlap_on_cpu: false,
        }
    }
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Plain text, tokenized with the tokenizer's special tokens (BOS).
    Text(String),
    /// Chat messages, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Token ids as they are.
    Tokens(Vec<u32>),
}

/// One step's news about one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutput {
    pub id: RequestId,
    pub new_token_ids: Vec<u32>,
    pub text_delta: String,
    pub finish_reason: Option<FinishReason>,
}

/// A finished request.
#[derive(Debug, Clone)]
pub struct FinalOutput {
    pub id: RequestId,
    pub prompt_token_ids: Vec<u32>,
    pub token_ids: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    pub logprobs: Vec<SampledToken>,
    pub timeline: RequestTimeline,
}

pub(crate) struct ReqState {
    /// The request's seed: its own, or one derived at admission from the engine's seed
    /// and the request id (reproducible with the same engine seed and arrival order).
    pub(crate) seed: u64,
    pub(crate) stream: StreamDecoder,
    pub(crate) stop: StopText,
    pub(crate) logprobs: Vec<SampledToken>,
    pub(crate) timeline: RequestTimeline,
    pub(crate) want_logprobs: bool,
}

/// The continuous-batching engine.
pub struct Engine {
    pub(crate) cfg: EngineConfig,
    pub(crate) runner: ModelRunner,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) scheduler: Scheduler,
    pub(crate) states: HashMap<RequestId, ReqState>,
    pub(crate) finished: Vec<FinalOutput>,
    pub(crate) records: Vec<StepRecord>,
    pub(crate) next_id: RequestId,
    pub(crate) step_index: u64,
    pub(crate) epoch: Instant,
    /// Schedule step n+1 before step n's results are read (see [`crate::step`]).
    pub(crate) overlap: bool,
    /// The launched step whose results are not read yet (overlap only).
    pub(crate) in_flight: Option<crate::step::InFlight>,
    pub(crate) last_step_end_s: f64,
}

/// Blocks for the configured count or memory, at least one: [`kv_cache_size`] with
/// this decoder's shape and dtype and the memory figure its device reports (CUDA), the
/// same function the capacity planner calls with a given figure.
pub fn num_blocks_for(cfg: &EngineConfig, decoder: &Decoder) -> usize {
    let memory = crate::device::memory_info(decoder.device())
        .map(|(free, total)| DeviceMemory { free, total });
    let dtype = decoder.dtype();
    kv_cache_size(cfg, decoder.config(), dtype, dtype, memory).num_blocks
}

impl Engine {
    pub fn new(model: LoadedModel, cfg: EngineConfig) -> Result<Self> {
        if cfg.block_size == 0 || cfg.max_num_seqs == 0 || cfg.max_num_batched_tokens == 0 {
            return Err(EngineError::Config(
                "block_size, max_num_seqs and max_num_batched_tokens must be positive".into(),
            ));
        }
        let num_blocks = num_blocks_for(&cfg, &model.decoder);
        crate::admission::check_kv_cache(&cfg, &model.decoder, num_blocks)?;
        let sched_cfg = SchedulerConfig {
            max_num_seqs: cfg.max_num_seqs,
            max_num_batched_tokens: cfg.max_num_batched_tokens,
            max_model_len: model.decoder.config().max_position_embeddings,
            block_size: cfg.block_size,
            num_blocks,
            enable_prefix_caching: cfg.enable_prefix_caching,
        };
        let mut runner = ModelRunner::new(model.decoder, num_blocks, cfg.block_size)?;
        let dec = runner.decoder();
        let graphs = !cfg.enforce_eager
            && dec.kernels() == KernelChoice::Fused
            && (dec.device().is_cuda() || cfg.graphs_on_cpu);
        if graphs {
            let max_context = cfg.graph_max_context.min(sched_cfg.max_model_len);
            runner.enable_graphs(cfg.max_num_seqs, max_context)?;
        }
        let overlap =
            !cfg.disable_overlap && (runner.decoder().device().is_cuda() || cfg.overlap_on_cpu);
        Ok(Self {
            runner,
            tokenizer: model.tokenizer,
            scheduler: Scheduler::new(sched_cfg),
            cfg,
            states: HashMap::new(),
            finished: Vec::new(),
            records: Vec::new(),
            next_id: 0,
            step_index: 0,
            epoch: Instant::now(),
            overlap,
            in_flight: None,
            last_step_end_s: 0.0,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn decoder(&self) -> &Decoder {
        self.runner.decoder()
    }

    /// The decode graphs' buckets, capture time and memory; `None` when every step runs
    /// eagerly (`enforce_eager`, the candle op set, or the CPU).
    pub fn graph_report(&self) -> Option<&GraphReport> {
        self.runner.graphs().map(|g| g.report())
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn num_blocks(&self) -> usize {
        self.scheduler.config().num_blocks
    }

    pub fn block_size(&self) -> usize {
        self.cfg.block_size
    }

    /// Seconds since this engine was created (the epoch of all records).
    pub fn now_s(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// Requests not finished, or a launched step whose results are not read yet.
    pub fn has_unfinished(&self) -> bool {
        self.scheduler.has_unfinished() || self.in_flight.is_some()
    }

    /// Whether steps overlap (step n+1 scheduled and launched while step n runs).
    pub fn overlaps(&self) -> bool {
        self.overlap
    }

    /// Tokenize a prompt as `add_request` would.
    pub fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let ids = match prompt {
            Prompt::Text(t) => self.tokenizer.encode(t, true)?,
            Prompt::Chat(m) => self
                .tokenizer
                .encode(&self.tokenizer.apply_chat_template(m)?, false)?,
            Prompt::Tokens(t) => t.clone(),
        };
        let vocab = self.decoder().config().vocab_size;
        if let Some(&token) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(EngineError::TokenOutOfRange {
                token,
                vocab_size: vocab,
            });
        }
        Ok(ids)
    }

    /// Queue a request. An error rejects this request alone.
    pub fn add_request(&mut self, prompt: Prompt, params: SamplingParams) -> Result<RequestId> {
        params.validate()?;
        let ids = self.tokenize(&prompt)?;
        crate::admission::check_context(
            ids.len(),
            params.max_tokens,
            self.scheduler.config().max_model_len,
        )?;
        let id = self.next_id;
        let seed = params
            .seed
            .unwrap_or_else(|| self.cfg.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let state = ReqState {
            seed,
            stream: StreamDecoder::new(),
            stop: StopText::new(&params.stop),
            logprobs: Vec::new(),
            timeline: RequestTimeline {
                arrival_s: self.now_s(),
                prompt_tokens: ids.len(),
                ..Default::default()
            },
            want_logprobs: params.logprobs.is_some(),
        };
        let seq = Sequence::new(id, ids, params, self.tokenizer.eos_token_ids.clone());
        self.scheduler.add(seq)?;
        self.next_id += 1;
        self.states.insert(id, state);
        Ok(id)
    }

    /// Stop a request now; its output so far is kept with finish reason `abort`.
    pub fn abort(&mut self, id: RequestId) {
        if self.scheduler.seq(id).is_some_and(|s| !s.is_finished()) {
            self.scheduler.finish(id, FinishReason::Abort);
            self.collect_finished();
        }
    }

    /// Log-probabilities sampled so far for an unfinished request (empty unless it asked
    /// for them); `None` once it has finished (its [`FinalOutput`] has them all).
    pub fn request_logprobs(&self, id: RequestId) -> Option<&[SampledToken]> {
        self.states.get(&id).map(|s| s.logprobs.as_slice())
    }

    /// Finished requests' outputs since the last call.
    pub fn take_finished(&mut self) -> Vec<FinalOutput> {
        std::mem::take(&mut self.finished)
    }

    /// Step records since the last call.
    pub fn take_step_records(&mut self) -> Vec<StepRecord> {
        std::mem::take(&mut self.records)
    }

    /// Run requests to completion; results in input order (errors are per request).
    pub fn generate(
        &mut self,
        requests: Vec<(Prompt, SamplingParams)>,
    ) -> Result<Vec<Result<FinalOutput>>> {
        let mut ids: Vec<Result<RequestId>> = Vec::with_capacity(requests.len());
        for (prompt, params) in requests {
            ids.push(self.add_request(prompt, params));
        }
        let mut done: HashMap<RequestId, FinalOutput> = HashMap::new();
        while self.has_unfinished() {
            self.step()?;
            done.extend(self.take_finished().into_iter().map(|o| (o.id, o)));
        }
        done.extend(self.take_finished().into_iter().map(|o| (o.id, o)));
        Ok(ids
            .into_iter()
            .map(|r| {
                r.and_then(|id| {
                    done.remove(&id).ok_or(EngineError::Internal(format!(
                        "request {id} did not finish"
                    )))
                })
            })
            .collect())
    }
}
