//! Iteration-level (continuous) batching under a token budget.
//!
//! ```text
//!  schedule():  budget = max_num_batched_tokens
//!   1. running, in admission order: each gets min(tokens left to compute, budget)
//!      tokens (1 when decoding, a chunk when its prompt is long). If its blocks do not
//!      fit, preempt the most recently admitted running request (free its blocks,
//!      recompute it later), and retry.
//!   2. if nothing was preempted: waiting, first come first served, while budget and
//!      max_num_seqs allow; prefix-cache hits count as computed; a prompt longer than
//!      the budget is chunked across steps.
//!   A scheduled sequence's num_computed_tokens advances at once (vLLM v1), and one
//!   that samples gets a pending token: its id comes back with the step's results.
//!  update_from_output(): append the sampled tokens in place of the pending ones, stop
//!      checks, free the finished, register full blocks in the prefix cache.
//! ```
//! Overlap: the engine may schedule step n+1 before step n's tokens are back. A pending
//! token is then the one input of its sequence's decode row (read on the device from
//! step n's sample output); a sequence whose pending tokens reach max_tokens is not
//! scheduled again; preemption drops pending tokens (the recompute samples them again
//! with the same seed and position, so the output is the same); a step's results for a
//! sequence preempted or finished since it was scheduled are ignored.

use crate::block_pool::blocks_for;
use crate::kv_cache_manager::KvCacheManager;
use crate::sequence::{FinishReason, NewToken, SeqId, SeqStatus, Sequence};
use std::collections::{HashMap, VecDeque};

/// Limits the scheduler works under; validated once.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub max_model_len: usize,
    pub block_size: usize,
    pub num_blocks: usize,
    pub enable_prefix_caching: bool,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdmissionError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the model's context of {max_model_len} tokens")]
    TooLongForContext {
        prompt_tokens: usize,
        max_tokens: usize,
        max_model_len: usize,
    },
    #[error("prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) needs {needed} KV blocks but the whole cache has {num_blocks}")]
    TooLongForCache {
        prompt_tokens: usize,
        max_tokens: usize,
        needed: usize,
        num_blocks: usize,
    },
    #[error("request id {0} is already in use")]
    DuplicateId(SeqId),
}

/// One sequence's share of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledSeq {
    pub seq_id: SeqId,
    /// Tokens already in the cache before this step.
    pub num_computed_tokens: usize,
    /// Tokens computed this step.
    pub num_scheduled_tokens: usize,
    /// This step reaches the sequence's last token: sample the next one.
    pub samples: bool,
    /// The sequence's preemption count when scheduled: results of a step scheduled
    /// before a preemption are stale.
    pub incarnation: usize,
}

/// What to run this step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerOutput {
    pub scheduled: Vec<ScheduledSeq>,
    pub num_batched_tokens: usize,
    /// Preempted this step (blocks freed; they will recompute).
    pub preempted: Vec<SeqId>,
    /// Admitted from the waiting queue this step.
    pub admitted: Vec<SeqId>,
    /// Prompt tokens served from the prefix cache for the admitted.
    pub cached_prefix_tokens: usize,
}

impl SchedulerOutput {
    pub fn is_empty(&self) -> bool {
        self.scheduled.is_empty()
    }
}

/// The scheduler: queues, sequences and their KV blocks.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    kv: KvCacheManager,
    seqs: HashMap<SeqId, Sequence>,
    waiting: VecDeque<SeqId>,
    running: Vec<SeqId>,
    finished: Vec<SeqId>,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig) -> Self {
        let kv = KvCacheManager::new(cfg.num_blocks, cfg.block_size, cfg.enable_prefix_caching);
        Self {
            cfg,
            kv,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            finished: Vec::new(),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    pub fn kv(&self) -> &KvCacheManager {
        &self.kv
    }

    pub fn seq(&self, id: SeqId) -> Option<&Sequence> {
        self.seqs.get(&id)
    }

    pub fn block_table(&self, id: SeqId) -> &[u32] {
        self.kv.block_table(id)
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn has_unfinished(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    /// Queue a request, or reject it alone if it can never run.
    pub fn add(&mut self, seq: Sequence) -> Result<(), AdmissionError> {
        let (p, m) = (seq.num_prompt_tokens, seq.params.max_tokens);
        if p == 0 {
            return Err(AdmissionError::EmptyPrompt);
        }
        if p.checked_add(m)
            .is_none_or(|total| total > self.cfg.max_model_len)
        {
            return Err(AdmissionError::TooLongForContext {
                prompt_tokens: p,
                max_tokens: m,
                max_model_len: self.cfg.max_model_len,
            });
        }
        let needed = blocks_for(p + m, self.cfg.block_size);
        if needed > self.cfg.num_blocks {
            return Err(AdmissionError::TooLongForCache {
                prompt_tokens: p,
                max_tokens: m,
                needed,
                num_blocks: self.cfg.num_blocks,
            });
        }
        if self.seqs.contains_key(&seq.id) {
            return Err(AdmissionError::DuplicateId(seq.id));
        }
        self.waiting.push_back(seq.id);
        self.seqs.insert(seq.id, seq);
        Ok(())
    }

    /// Decide this step's batch.
    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut out = SchedulerOutput::default();
        let mut budget = self.cfg.max_num_batched_tokens;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let seq = &self.seqs[&id];
            let n = (seq.num_planned_tokens() - seq.num_computed_tokens).min(budget);
            if n == 0 || seq.ends_when_pending_back(self.cfg.max_model_len) {
                i += 1;
                continue;
            }
            let total = seq.num_computed_tokens + n;
            loop {
                if self.kv.allocate_slots(id, total, &[]).is_some() {
                    self.push_scheduled(&mut out, id, n);
                    budget -= n;
                    i += 1;
                    break;
                }
                // Preempt the most recently admitted; possibly `id` itself.
                let victim = self.running.pop().expect("running is non-empty here");
                self.preempt(victim);
                out.preempted.push(victim);
                if victim == id {
                    break;
                }
            }
        }
        if out.preempted.is_empty() {
            self.admit_waiting(&mut out, budget);
        }
        out
    }

    fn admit_waiting(&mut self, out: &mut SchedulerOutput, mut budget: usize) {
        while budget > 0 && self.running.len() < self.cfg.max_num_seqs {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let seq = &self.seqs[&id];
            let (hits, cached) = self.kv.get_computed_blocks(&seq.tokens);
            let n = (seq.num_tokens() - cached).min(budget);
            if self.kv.allocate_slots(id, cached + n, &hits).is_none() {
                break;
            }
            self.waiting.pop_front();
            let seq = self.seqs.get_mut(&id).expect("waiting ids are live");
            seq.num_computed_tokens = cached;
            seq.status = SeqStatus::Running;
            if seq.num_cached_tokens.is_none() {
                seq.num_cached_tokens = Some(cached);
            }
            self.running.push(id);
            out.admitted.push(id);
            out.cached_prefix_tokens += cached;
            self.push_scheduled(out, id, n);
            budget -= n;
        }
    }

    /// Schedule `n` tokens of `id`: its computed count advances now, and a sampling step
    /// adds a pending token.
    fn push_scheduled(&mut self, out: &mut SchedulerOutput, id: SeqId, n: usize) {
        let Some(seq) = self.seqs.get_mut(&id) else {
            return;
        };
        let samples = seq.num_computed_tokens + n == seq.num_planned_tokens();
        out.scheduled.push(ScheduledSeq {
            seq_id: id,
            num_computed_tokens: seq.num_computed_tokens,
            num_scheduled_tokens: n,
            samples,
            incarnation: seq.num_preemptions,
        });
        seq.num_computed_tokens += n;
        seq.num_pending += usize::from(samples);
        out.num_batched_tokens += n;
    }

    fn preempt(&mut self, id: SeqId) {
        let freed = self.kv.free(id);
        debug_assert!(freed.is_ok(), "{freed:?}");
        if let Some(seq) = self.seqs.get_mut(&id) {
            seq.num_computed_tokens = 0;
            seq.num_pending = 0;
            seq.status = SeqStatus::Waiting;
            seq.num_preemptions += 1;
        }
        self.waiting.push_front(id);
    }

    /// Apply a step's results: `sampled` holds the new token of every sequence whose
    /// `samples` flag was set, and whether the engine found a stop string in its text.
    /// This is the one place a request finishes on its own (stop token, stop string,
    /// max_tokens, context); [`Scheduler::finish`] is for aborts. Returns the sequences
    /// that finished, with why.
    pub fn update_from_output(
        &mut self,
        out: &SchedulerOutput,
        sampled: &[NewToken],
    ) -> Vec<(SeqId, FinishReason)> {
        let news: HashMap<SeqId, &NewToken> = sampled.iter().map(|n| (n.seq_id, n)).collect();
        let mut done = Vec::new();
        for s in &out.scheduled {
            if !self.takes_result(s) {
                continue;
            }
            let Some(seq) = self.seqs.get_mut(&s.seq_id) else {
                continue;
            };
            let new = news.get(&s.seq_id).filter(|_| s.samples);
            if let Some(n) = new {
                seq.tokens.push(n.token);
                seq.num_pending -= 1;
            }
            // Blocks of known tokens only; their K/V are written by this step or by one
            // already launched after it (the device runs steps in order).
            let known = seq.num_computed_tokens.min(seq.num_tokens());
            let stop = new.and_then(|n| seq.check_stop(self.cfg.max_model_len, n.stop_string));
            self.kv
                .cache_full_blocks(s.seq_id, &self.seqs[&s.seq_id].tokens, known);
            if let Some(reason) = stop {
                self.finish(s.seq_id, reason);
                done.push((s.seq_id, reason));
            }
        }
        done
    }

    /// Whether a step's result for `s` still applies: the sequence runs, was not
    /// preempted since `s` was scheduled, and waits for the token `s` sampled.
    pub fn takes_result(&self, s: &ScheduledSeq) -> bool {
        self.seqs.get(&s.seq_id).is_some_and(|q| {
            q.status == SeqStatus::Running
                && q.num_preemptions == s.incarnation
                && (!s.samples || q.num_pending > 0)
        })
    }

    /// End a request now (stop string, abort): free its blocks, drop it from the queues.
    pub fn finish(&mut self, id: SeqId, reason: FinishReason) {
        let Some(seq) = self.seqs.get_mut(&id) else {
            return;
        };
        if seq.is_finished() {
            return;
        }
        seq.status = SeqStatus::Finished(reason);
        self.running.retain(|&r| r != id);
        self.waiting.retain(|&w| w != id);
        let freed = self.kv.free(id);
        debug_assert!(freed.is_ok(), "{freed:?}");
        self.finished.push(id);
    }

    /// Remove and return finished sequences.
    pub fn take_finished(&mut self) -> Vec<Sequence> {
        let ids = std::mem::take(&mut self.finished);
        ids.into_iter()
            .filter_map(|id| self.seqs.remove(&id))
            .collect()
    }

    /// Pool and table invariants (tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.kv.check_invariants()
    }
}
