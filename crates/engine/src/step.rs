//! `Engine::step`: one iteration of the hot path, and its `StepRecord`.

use crate::engine::{Engine, FinalOutput, RequestOutput};
use crate::error::Result;
use crate::records::StepRecord;
use crate::runner::StepLogits;
use crate::sampler::sample;
use engine_scheduler::{FinishReason, SchedulerOutput, SeqId};

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
        let inputs = self.runner.prepare_inputs(&out, &self.scheduler)?;
        let t_prep = self.now_s();
        let all_greedy = out.scheduled.iter().filter(|s| s.samples).all(|s| {
            self.scheduler
                .seq(s.seq_id)
                .is_some_and(|q| q.params.is_greedy() && q.params.logprobs.is_none())
        });
        let logits = self.runner.execute(&inputs, all_greedy)?;
        let t_fwd = self.now_s();
        let sampled = self.sample_all(&out, &logits);
        let token_time = self.now_s();
        let finished = self.scheduler.update_from_output(&out, &sampled);
        let outputs = self.emit(&sampled, &finished, token_time)?;
        let t_end = self.now_s();
        self.record(&out, start, [t_sched, t_prep, t_fwd, t_end]);
        self.collect_finished();
        Ok(outputs)
    }

    /// One token per sampling sequence, each with its own RNG.
    fn sample_all(&mut self, out: &SchedulerOutput, logits: &StepLogits) -> Vec<(SeqId, u32)> {
        let logits = match logits {
            StepLogits::Rows(rows) => rows,
            StepLogits::Greedy(ids) => {
                let sampling = out.scheduled.iter().filter(|s| s.samples);
                return sampling.zip(ids).map(|(s, &t)| (s.seq_id, t)).collect();
            }
        };
        let mut rows = logits.iter();
        let mut sampled = Vec::new();
        for s in out.scheduled.iter().filter(|s| s.samples) {
            let (Some(row), Some(seq)) = (rows.next(), self.scheduler.seq(s.seq_id)) else {
                continue;
            };
            let Some(st) = self.states.get_mut(&s.seq_id) else {
                continue;
            };
            let tok = sample(row, &seq.params, &mut st.rng);
            if st.want_logprobs {
                st.logprobs.push(tok.clone());
            }
            sampled.push((s.seq_id, tok.token));
        }
        sampled
    }

    /// Detokenize new tokens, apply stop strings, and build the step's outputs.
    fn emit(
        &mut self,
        sampled: &[(SeqId, u32)],
        finished: &[(SeqId, FinishReason)],
        now: f64,
    ) -> Result<Vec<RequestOutput>> {
        let mut outputs = Vec::with_capacity(sampled.len());
        for &(id, token) in sampled {
            let Some(st) = self.states.get_mut(&id) else {
                continue;
            };
            st.timeline.token_times_s.push(now);
            let mut finish = finished.iter().find(|(f, _)| *f == id).map(|&(_, r)| r);
            let mut delta = String::new();
            if finish != Some(FinishReason::Stop) {
                let piece = st.stream.push(&self.tokenizer, token)?;
                let (emit, stopped) = st.stop.push(&piece);
                delta = emit;
                if stopped {
                    self.scheduler.finish(id, FinishReason::Stop);
                    finish = Some(FinishReason::Stop);
                }
            }
            if finish.is_some() {
                delta.push_str(&st.stop.flush());
            }
            outputs.push(RequestOutput {
                id,
                new_token_ids: vec![token],
                text_delta: delta,
                finish_reason: finish,
            });
        }
        Ok(outputs)
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

    fn record(&mut self, out: &SchedulerOutput, start: f64, t: [f64; 4]) {
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
