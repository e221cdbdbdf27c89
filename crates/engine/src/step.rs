//! `Engine::step`: one iteration of the hot path, and its `StepRecord`.
//!
//! ```text
//!  launch:   schedule -> prepare (one hop to the batch, or to a decode graph's buffers;
//!            the sampling rows' params ride along; pending tokens fed on the device)
//!            -> forward -> sample: ONE launch of the sample op for every sampling row
//!            -> the copy of ids + logprobs to the host starts
//!  complete: wait for the ids + logprobs -> detokenize, find stop strings
//!            -> Scheduler::update_from_output (the one place a request finishes)
//! ```
//! Without overlap a step is launched and completed in the same call. With overlap (the
//! default on CUDA) a call launches step n+1 and then completes step n, so the host's
//! scheduling and preparing of n+1 runs while the device still computes n, and n+1's
//! decode rows read the tokens n sampled straight from the device. The cost: a request
//! that stops at step n (EOS, a stop string) has had step n+1 computed for nothing;
//! max_tokens is known ahead and never overshoots.

use crate::engine::{Engine, FinalOutput, RequestOutput};
use crate::error::Result;
use crate::records::StepRecord;
use crate::runner::{Fed, Launched, Prepared};
use crate::sampler::row_params;
use engine_kernels::sample::{RowParams, Sampled};
use engine_scheduler::{FinishReason, NewToken, SchedulerOutput, SeqId};

/// The step's sampling rows, in logits-row order: each sequence, its index in the
/// step's `SchedulerOutput::scheduled`, and its op params.
struct Rows {
    seqs: Vec<SeqId>,
    scheduled: Vec<usize>,
    params: Vec<RowParams>,
}

/// A launched step, until its results are read.
pub(crate) struct InFlight {
    out: SchedulerOutput,
    rows: Rows,
    launched: Launched,
    graph_bucket: usize,
    /// Start, and the ends of scheduling, preparing and launching (engine seconds).
    times: [f64; 4],
}

impl Engine {
    /// Run one step: schedule, forward, sample, update. Returns each scheduled request's
    /// news (new tokens, text delta, finish reason). Empty when nothing is runnable;
    /// with overlap, the news is that of the step launched by the previous call (the
    /// first call of a run returns none, and a call with nothing left to launch returns
    /// the last step's).
    pub fn step(&mut self) -> Result<Vec<RequestOutput>> {
        let launched = self.launch()?;
        let done = match self.overlap {
            true => std::mem::replace(&mut self.in_flight, launched),
            false => launched,
        };
        match done {
            Some(step) => self.complete(step),
            None => Ok(Vec::new()),
        }
    }

    /// Schedule, prepare and launch a step; `None` when nothing is runnable.
    fn launch(&mut self) -> Result<Option<InFlight>> {
        let start = self.now_s();
        let out = self.scheduler.schedule();
        let t_sched = self.now_s();
        if out.is_empty() {
            return Ok(None);
        }
        for s in &out.scheduled {
            if let Some(st) = self.states.get_mut(&s.seq_id) {
                st.timeline.first_scheduled_s.get_or_insert(start);
            }
        }
        let rows = self.rows(&out);
        let prev = self.in_flight.as_ref().and_then(|f| {
            f.launched.sampled().map(|sampled| Fed {
                sampled,
                seqs: &f.rows.seqs,
            })
        });
        let prepared = self
            .runner
            .prepare(&out, &self.scheduler, &rows.params, prev)?;
        let t_prep = self.now_s();
        let launched = self.runner.launch(&prepared, &rows.params)?;
        let graph_bucket = match prepared {
            Prepared::Graph { bucket_size, .. } => bucket_size,
            Prepared::Eager { .. } => 0,
        };
        Ok(Some(InFlight {
            out,
            rows,
            launched,
            graph_bucket,
            times: [start, t_sched, t_prep, self.now_s()],
        }))
    }

    /// Read a launched step's results and apply them.
    fn complete(&mut self, step: InFlight) -> Result<Vec<RequestOutput>> {
        let InFlight {
            out,
            rows,
            launched,
            graph_bucket,
            times,
        } = step;
        let t_wait = self.now_s();
        let finished = self.runner.finish(launched, &rows.params)?;
        let token_time = self.now_s();
        let tokens = self.take_tokens(&out, &rows, finished.sampled);
        let (news, deltas) = self.detokenize(&tokens)?;
        let done = self.scheduler.update_from_output(&out, &news);
        let outputs = self.emit(&news, deltas, &done, token_time);
        let mut rec = self.record(&out, times, self.now_s(), graph_bucket);
        // Overlapped steps' records tile the timeline: each starts where the previous
        // one ended, so durations add up to the wall time.
        rec.start_s = rec.start_s.max(self.last_step_end_s);
        self.last_step_end_s = rec.end_s;
        rec.forward_s = finished.forward_s;
        rec.sample_s = finished.sample_s;
        rec.wait_s = token_time - t_wait;
        rec.postprocess_s = rec.end_s - token_time;
        rec.overlapped = self.overlap;
        self.records.push(rec);
        self.collect_finished();
        Ok(outputs)
    }

    /// The sampling rows' op params: each request's own knobs, its seed, and the output
    /// position of the token it is about to generate (unchanged by batching, by overlap
    /// and by preemption, which recomputes the same tokens). The scheduler has already
    /// counted that token as pending.
    fn rows(&self, out: &SchedulerOutput) -> Rows {
        let mut rows = Rows {
            seqs: Vec::new(),
            scheduled: Vec::new(),
            params: Vec::new(),
        };
        for (k, x) in out.scheduled.iter().enumerate().filter(|(_, x)| x.samples) {
            let Some(s) = self.scheduler.seq(x.seq_id) else {
                continue;
            };
            let seed = self.states.get(&s.id).map_or(0, |st| st.seed);
            let position = s.num_output_tokens() + s.num_pending.saturating_sub(1);
            rows.seqs.push(s.id);
            rows.scheduled.push(k);
            rows.params.push(row_params(&s.params, seed, position));
        }
        rows
    }

    /// One token per sampling row from the sample op's results, for the rows the
    /// scheduler still takes (not finished, aborted or preempted since the launch); a
    /// row's logprobs are kept when its request asked for them.
    fn take_tokens(
        &mut self,
        out: &SchedulerOutput,
        rows: &Rows,
        sampled: Vec<Sampled>,
    ) -> Vec<(SeqId, u32)> {
        let mut tokens = Vec::with_capacity(sampled.len());
        for ((&id, &k), s) in rows.seqs.iter().zip(&rows.scheduled).zip(sampled) {
            let current = self.scheduler.takes_result(&out.scheduled[k]);
            let Some(st) = self.states.get_mut(&id).filter(|_| current) else {
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

    /// The step's record; `times` as in [`InFlight`], `end` when its results are applied.
    fn record(
        &mut self,
        out: &SchedulerOutput,
        times: [f64; 4],
        end: f64,
        graph_bucket: usize,
    ) -> StepRecord {
        let [start, t_sched, t_prep, t_launch] = times;
        let mut rec = StepRecord {
            step: self.step_index,
            start_s: start,
            end_s: end,
            schedule_s: t_sched - start,
            prepare_s: t_prep - t_sched,
            launch_s: t_launch - t_prep,
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
        rec
    }
}

#[allow(dead_code)]
fn _assert_final_output_is_send(o: FinalOutput) -> impl Send {
    o
}
