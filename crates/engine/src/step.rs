//! `Engine::step`: one iteration of the hot path, and its `StepRecord`.
//!
//! ```text
//!  schedule -> prepare (one hop to the batch, or to a decode graph's buffers; the
//!             sampling rows' params ride along)
//!    -> forward on the device (a graph launch for a decode-only step), synchronized
//!    -> sample: ONE launch of the sample op for every sampling row (greedy, sampled,
//!       logprobs alike), ids + logprobs copied back -> detokenize, find stop strings
//!    -> Scheduler::update_from_output (the one place a request finishes) -> outputs
//! ```

use crate::engine::{Engine, FinalOutput, RequestOutput};
use crate::error::Result;
use crate::records::StepRecord;
use crate::runner::Prepared;
use crate::sampler::row_params;
use engine_kernels::sample::{RowParams, Sampled};
use engine_scheduler::{FinishReason, NewToken, SchedulerOutput, SeqId};

/// The step's sampling rows, in logits-row order: each sequence and its op params.
struct Rows {
    seqs: Vec<SeqId>,
    params: Vec<RowParams>,
}

impl Engine {
    /// Run one step: schedule, forward, sample, update. Returns each scheduled request's
    /// news (new tokens, text delta, finish reason). Empty when nothing is runnable.
    pub fn step(&mut self) -> Result<Vec<RequestOutput>> {
        let start = self.now_s();
        let out = self.scheduler.schedule();
        let t_sched = self.now_s();
        if out.is_empty() {
            return Ok(Vec::new());
        }
        for s in &out.scheduled {
            if let Some(st) = self.states.get_mut(&s.seq_id) {
                st.timeline.first_scheduled_s.get_or_insert(start);
            }
        }
        let rows = self.rows(&out);
        let prepared = self.runner.prepare(&out, &self.scheduler, &rows.params)?;
        let t_prep = self.now_s();
        let logits = self.runner.forward(&prepared)?;
        let t_fwd = self.now_s();
        let sampled = self.runner.sample(&prepared, logits, &rows.params)?;
        let tokens = self.take_tokens(&rows, sampled);
        let token_time = self.now_s();
        let (news, deltas) = self.detokenize(&tokens)?;
        let finished = self.scheduler.update_from_output(&out, &news);
        let outputs = self.emit(&news, deltas, &finished, token_time);
        let t_end = self.now_s();
        let graph_bucket = match prepared {
            Prepared::Graph { bucket_size, .. } => bucket_size,
            Prepared::Eager { .. } => 0,
        };
        let t = [t_sched, t_prep, t_fwd, token_time, t_end];
        self.record(&out, start, t, graph_bucket);
        self.collect_finished();
        Ok(outputs)
    }

    /// The sampling rows' op params: each request's own knobs, its seed, and the output
    /// position of the token it is about to generate (unchanged by batching and by
    /// preemption, which recomputes the same tokens).
    fn rows(&self, out: &SchedulerOutput) -> Rows {
        let mut rows = Rows {
            seqs: Vec::new(),
            params: Vec::new(),
        };
        let sampling = out.scheduled.iter().filter(|s| s.samples);
        for s in sampling.filter_map(|s| self.scheduler.seq(s.seq_id)) {
            let seed = self.states.get(&s.id).map_or(0, |st| st.seed);
            rows.seqs.push(s.id);
            rows.params
                .push(row_params(&s.params, seed, s.num_output_tokens()));
        }
        rows
    }

    /// One token per sampling row from the sample op's results; a row's logprobs are kept
    /// when its request asked for them.
    fn take_tokens(&mut self, rows: &Rows, sampled: Vec<Sampled>) -> Vec<(SeqId, u32)> {
        let mut tokens = Vec::with_capacity(sampled.len());
        for (&id, s) in rows.seqs.iter().zip(sampled) {
            let Some(st) = self.states.get_mut(&id) else {
                continue;
            };
            tokens.push((id, s.token));
            if st.want_logprobs {
                st.logprobs.push(s.into());
            }
        }
        tokens
    }

    /// Detokenize each new token and look for stop strings. A stop token's text is
    /// never part of the output. Returns the tokens for the scheduler (with whether a
    /// stop string was found) and each one's text delta, held back as stop strings
    /// require.
    fn detokenize(&mut self, tokens: &[(SeqId, u32)]) -> Result<(Vec<NewToken>, Vec<String>)> {
        let mut news = Vec::with_capacity(tokens.len());
        let mut deltas = Vec::with_capacity(tokens.len());
        for &(id, token) in tokens {
            let (Some(seq), Some(st)) = (self.scheduler.seq(id), self.states.get_mut(&id)) else {
                continue;
            };
            let mut new = NewToken::new(id, token);
            let mut delta = String::new();
            if !seq.is_stop_token(token) {
                let piece = st.stream.push(&self.tokenizer, token)?;
                (delta, new.stop_string) = st.stop.push(&piece);
            }
            news.push(new);
            deltas.push(delta);
        }
        Ok((news, deltas))
    }

    /// The step's outputs; a finished request's held-back text is flushed.
    fn emit(
        &mut self,
        news: &[NewToken],
        deltas: Vec<String>,
        finished: &[(SeqId, FinishReason)],
        now: f64,
    ) -> Vec<RequestOutput> {
        let mut outputs = Vec::with_capacity(news.len());
        for (new, mut delta) in news.iter().zip(deltas) {
            let Some(st) = self.states.get_mut(&new.seq_id) else {
                continue;
            };
            st.timeline.token_times_s.push(now);
            let finish = finished
                .iter()
                .find(|(f, _)| *f == new.seq_id)
                .map(|&(_, r)| r);
            if finish.is_some() {
                delta.push_str(&st.stop.flush());
            }
            outputs.push(RequestOutput {
                id: new.seq_id,
                new_token_ids: vec![new.token],
                text_delta: delta,
                finish_reason: finish,
            });
        }
        outputs
    }

    /// Move finished sequences' results to the finished list.
    pub(crate) fn collect_finished(&mut self) {
        for seq in self.scheduler.take_finished() {
            let Some(mut st) = self.states.remove(&seq.id) else {
                continue;
            };
            let reason = match seq.status {
                engine_scheduler::SeqStatus::Finished(r) => r,
                _ => FinishReason::Abort,
            };
            st.timeline.finished_s = Some(self.now_s());
            st.timeline.cached_prompt_tokens = seq.num_cached_tokens.unwrap_or(0);
            st.timeline.num_preemptions = seq.num_preemptions;
            self.finished.push(FinalOutput {
                id: seq.id,
                prompt_token_ids: seq.tokens[..seq.num_prompt_tokens].to_vec(),
                token_ids: seq.output_tokens().to_vec(),
                text: st.stop.text().to_string(),
                finish_reason: reason,
                logprobs: st.logprobs,
                timeline: st.timeline,
            });
        }
    }

    fn record(&mut self, out: &SchedulerOutput, start: f64, t: [f64; 5], graph_bucket: usize) {
        let mut rec = StepRecord {
            step: self.step_index,
            start_s: start,
            end_s: t[4],
            schedule_s: t[0] - start,
            prepare_s: t[1] - t[0],
            forward_s: t[2] - t[1],
            sample_s: t[3] - t[2],
            postprocess_s: t[4] - t[3],
            num_seqs: out.scheduled.len(),
            num_batched_tokens: out.num_batched_tokens,
            blocks_in_use: self.scheduler.kv().num_blocks_in_use(),
            num_blocks: self.num_blocks(),
            cached_prefix_tokens: out.cached_prefix_tokens,
            num_preempted: out.preempted.len(),
            num_waiting: self.scheduler.num_waiting(),
            graph_bucket,
            ..Default::default()
        };
        for s in &out.scheduled {
            let decode = s.samples
                && s.num_scheduled_tokens == 1
                && s.num_computed_tokens > 0
                && self
                    .scheduler
                    .seq(s.seq_id)
                    .is_none_or(|q| s.num_computed_tokens >= q.num_prompt_tokens);
            if decode {
                rec.num_decode_seqs += 1;
            } else {
                rec.num_prefill_tokens += s.num_scheduled_tokens;
            }
            rec.num_context_tokens += s.num_computed_tokens + s.num_scheduled_tokens;
        }
        self.step_index += 1;
        self.records.push(rec);
    }
}

#[allow(dead_code)]
fn _assert_final_output_is_send(o: FinalOutput) -> impl Send {
    o
}
