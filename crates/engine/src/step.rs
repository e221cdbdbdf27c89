//! `Engine::step`: one iteration of the hot path, and its `StepRecord`.
//!
//! ```text
//!  schedule -> prepare (one hop to the batch, or to a decode graph's buffers)
//!    -> forward + argmax on the device (a graph launch for a decode-only step)
//!    -> pick each row's token (greedy: the device's; sampled / logprobs: the host
//!       sampler on that row's logits alone) -> detokenize, find stop strings
//!    -> Scheduler::update_from_output (the one place a request finishes) -> outputs
//! ```

use crate::engine::{Engine, FinalOutput, RequestOutput};
use crate::error::Result;
use crate::records::StepRecord;
use crate::runner::{Prepared, StepLogits};
use crate::sampler::sample;
use engine_scheduler::{FinishReason, NewToken, SchedulerOutput, SeqId};

/// Which sampling rows need their logits on the host, decided per row.
struct Picks {
    /// The sampling sequences, in logits-row order.
    seqs: Vec<SeqId>,
    /// Per row: `Some(i)` = sampled on the host from `StepLogits::host[i]`; `None` =
    /// greedy without logprobs, the device's argmax.
    host: Vec<Option<usize>>,
    /// The logits rows to copy to the host.
    host_rows: Vec<u32>,
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
        let prepared = self.runner.prepare(&out, &self.scheduler)?;
        let picks = self.picks(&out);
        let t_prep = self.now_s();
        let logits = self.runner.execute(&prepared, &picks.host_rows)?;
        let t_fwd = self.now_s();
        let tokens = self.pick_tokens(&picks, &logits);
        let token_time = self.now_s();
        let (news, deltas) = self.detokenize(&tokens)?;
        let finished = self.scheduler.update_from_output(&out, &news);
        let outputs = self.emit(&news, deltas, &finished, token_time);
        let t_end = self.now_s();
        let graph_bucket = match prepared {
            Prepared::Graph { bucket_size, .. } => bucket_size,
            Prepared::Eager(_) => 0,
        };
        self.record(&out, start, [t_sched, t_prep, t_fwd, t_end], graph_bucket);
        self.collect_finished();
        Ok(outputs)
    }

    /// Decide per sampling row whether it needs its logits on the host: only rows that
    /// sample or want logprobs do. A greedy request's token then never depends on what
    /// the other requests in its batch asked for.
    fn picks(&self, out: &SchedulerOutput) -> Picks {
        let mut p = Picks {
            seqs: Vec::new(),
            host: Vec::new(),
            host_rows: Vec::new(),
        };
        let sampling = out.scheduled.iter().filter(|s| s.samples);
        for s in sampling.filter_map(|s| self.scheduler.seq(s.seq_id)) {
            let row = p.seqs.len() as u32;
            p.seqs.push(s.id);
            let on_host = !s.params.is_greedy() || s.params.logprobs.is_some();
            p.host.push(on_host.then_some(p.host_rows.len()));
            if on_host {
                p.host_rows.push(row);
            }
        }
        p
    }

    /// One token per sampling row: the device's argmax, or the host sampler with the
    /// request's own RNG (and its logprobs kept when asked).
    fn pick_tokens(&mut self, picks: &Picks, logits: &StepLogits) -> Vec<(SeqId, u32)> {
        let mut tokens = Vec::with_capacity(picks.seqs.len());
        for (row, (&id, host)) in picks.seqs.iter().zip(&picks.host).enumerate() {
            let (Some(seq), Some(st)) = (self.scheduler.seq(id), self.states.get_mut(&id)) else {
                continue;
            };
            let token = match host.and_then(|i| logits.host.get(i)) {
                Some(row) => {
                    let tok = sample(row, &seq.params, &mut st.rng);
                    let token = tok.token;
                    if st.want_logprobs {
                        st.logprobs.push(tok);
                    }
                    token
                }
                None => match logits.greedy.get(row) {
                    Some(&t) => t,
                    None => continue,
                },
            };
            tokens.push((id, token));
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

    fn record(&mut self, out: &SchedulerOutput, start: f64, t: [f64; 4], graph_bucket: usize) {
        let mut rec = StepRecord {
            step: self.step_index,
            start_s: start,
            end_s: t[3],
            schedule_s: t[0] - start,
            prepare_s: t[1] - t[0],
            forward_s: t[2] - t[1],
            sample_s: t[3] - t[2],
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
