//! The engine thread: the one owner of the [`Engine`].
//!
//! ```text
//!  handlers --Submission (bounded mpsc)--> engine thread --Event (per request)--> handler
//!             reply: Admitted | ApiError        loop:
//!                                                 idle? block on the command channel
//!                                                 admit every queued submission
//!                                                 reap: client gone -> abort; deadline -> abort
//!                                                 step -> route deltas; finished -> metrics
//! ```
//! Admission happens here, where the queue depths are known: the prompt is tokenized,
//! checked against the context (400), then against `--max-waiting` (429), then handed
//! to `Engine::add_request` (whose errors are 400s). A request whose event receiver is
//! gone (client disconnected, handler dropped) is aborted at the next pass, which frees
//! its KV blocks. Nothing here blocks on a client: events go through unbounded channels.

use crate::error::ApiError;
use crate::messages::{Admitted, Delta, Event, Submission, TokenLogprob};
use crate::metrics::{Metrics, Outcome};
use engine_core::{Engine, FinalOutput, FinishReason, Prompt, RequestId, RequestOutput};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The engine thread's limits.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub max_waiting: usize,
    pub request_timeout: Option<Duration>,
}

/// Facts the handlers need, read once the engine is built.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    pub max_model_len: usize,
    pub num_blocks: usize,
}

struct Live {
    events: mpsc::UnboundedSender<Event>,
    deadline: Option<Instant>,
    /// `received` on the engine's clock (seconds since its epoch).
    received_s: f64,
    logprobs: Option<usize>,
    logprobs_sent: usize,
    finish_sent: bool,
}

/// Build the engine on its own thread and run the loop there. Returns once the engine
/// is built (or failed to build).
pub fn spawn<F>(
    build: F,
    cfg: LoopConfig,
    metrics: Arc<Metrics>,
    rx: mpsc::Receiver<Submission>,
) -> Result<(EngineInfo, std::thread::JoinHandle<()>), String>
where
    F: FnOnce() -> Result<Engine, String> + Send + 'static,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let engine = match build() {
                Ok(e) => e,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let info = EngineInfo {
                max_model_len: engine.decoder().config().max_position_embeddings,
                num_blocks: engine.num_blocks(),
            };
            metrics.num_blocks.store(info.num_blocks as u64, Relaxed);
            let _ = ready_tx.send(Ok(info));
            EngineLoop {
                engine,
                cfg,
                metrics,
                rx,
                live: HashMap::new(),
            }
            .run();
        })
        .map_err(|e| format!("cannot start the engine thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(info)) => Ok((info, handle)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the engine thread stopped while building the engine".into()),
    }
}

/// The loop's state: the engine and the requests it is serving.
pub struct EngineLoop {
    pub engine: Engine,
    pub cfg: LoopConfig,
    pub metrics: Arc<Metrics>,
    pub rx: mpsc::Receiver<Submission>,
    live: HashMap<RequestId, Live>,
}

impl EngineLoop {
    pub fn new(
        engine: Engine,
        cfg: LoopConfig,
        metrics: Arc<Metrics>,
        rx: mpsc::Receiver<Submission>,
    ) -> Self {
        metrics
            .num_blocks
            .store(engine.num_blocks() as u64, Relaxed);
        Self {
            engine,
            cfg,
            metrics,
            rx,
            live: HashMap::new(),
        }
    }

    /// Serve until the command channel is closed and every request has finished.
    pub fn run(mut self) {
        loop {
            if !self.engine.has_unfinished() {
                match self.rx.blocking_recv() {
                    Some(s) => self.admit(s),
                    None => return,
                }
            }
            self.turn();
        }
    }

    /// One pass: admit what is queued, reap, step once, publish the gauges.
    pub fn turn(&mut self) {
        while let Ok(s) = self.rx.try_recv() {
            self.admit(s);
        }
        self.reap();
        if self.engine.has_unfinished() {
            self.step();
        }
        self.publish();
    }

    fn admit(&mut self, s: Submission) {
        if s.events.is_closed() {
            self.metrics.count(Outcome::Aborted);
            return;
        }
        let received_s = self.engine.now_s() - s.received.elapsed().as_secs_f64();
        let logprobs = s.params.logprobs;
        match self.try_admit(&s) {
            Ok(admitted) => {
                self.metrics
                    .prompt_tokens
                    .fetch_add(admitted.prompt_tokens as u64, Relaxed);
                self.live.insert(
                    admitted.id,
                    Live {
                        events: s.events,
                        deadline: self.cfg.request_timeout.map(|t| s.received + t),
                        received_s,
                        logprobs,
                        logprobs_sent: 0,
                        finish_sent: false,
                    },
                );
                let _ = s.reply.send(Ok(admitted));
            }
            Err(e) => {
                let outcome = if e.status == 429 {
                    Outcome::Rejected
                } else {
                    Outcome::Invalid
                };
                self.metrics.count(outcome);
                let _ = s.reply.send(Err(e));
            }
        }
    }

    fn try_admit(&mut self, s: &Submission) -> Result<Admitted, ApiError> {
        let ids = self
            .engine
            .tokenize(&s.prompt)
            .map_err(|e| ApiError::from_engine(&e))?;
        let ctx = self.engine.decoder().config().max_position_embeddings;
        let p = ids.len();
        if p == 0 {
            return Err(ApiError::invalid_param(
                "prompt",
                "the prompt is empty (no tokens)",
            ));
        }
        if p >= ctx {
            return Err(ApiError::context_length(format!(
                "this model's context is {ctx} tokens; the prompt has {p}, which leaves no room for output"
            )));
        }
        let m = s.max_tokens.unwrap_or(ctx - p);
        if p + m > ctx {
            return Err(ApiError::context_length(format!(
                "this model's context is {ctx} tokens; the prompt has {p} and max_tokens asks for {m}"
            )));
        }
        let waiting = self.engine.scheduler().num_waiting();
        if waiting >= self.cfg.max_waiting {
            return Err(ApiError::overloaded(format!(
                "the server is overloaded: {waiting} requests are waiting (--max-waiting {}); retry later",
                self.cfg.max_waiting
            )));
        }
        let mut params = s.params.clone();
        params.max_tokens = m;
        let id = self
            .engine
            .add_request(Prompt::Tokens(ids), params)
            .map_err(|e| ApiError::from_engine(&e))?;
        Ok(Admitted {
            id,
            prompt_tokens: p,
        })
    }

    /// Abort requests whose client is gone or whose deadline passed.
    fn reap(&mut self) {
        let now = Instant::now();
        let ended: Vec<(RequestId, Outcome)> = self
            .live
            .iter()
            .filter_map(|(&id, l)| {
                if l.events.is_closed() {
                    Some((id, Outcome::Aborted))
                } else {
                    l.deadline
                        .filter(|&d| now >= d)
                        .map(|_| (id, Outcome::Timeout))
                }
            })
            .collect();
        if ended.is_empty() {
            return;
        }
        let mut timed_out = Vec::new();
        for &(id, outcome) in &ended {
            self.engine.abort(id);
            self.metrics.count(outcome);
            if let Some(l) = self.live.remove(&id) {
                if outcome == Outcome::Timeout {
                    timed_out.push(l);
                }
            }
        }
        // Counted and freed before any client hears: /metrics read after the answer
        // already shows it.
        self.publish();
        let after = self.cfg.request_timeout.unwrap_or_default().as_secs_f64();
        for l in timed_out {
            let _ = l.events.send(Event::Failed(ApiError::timeout(format!(
                "the request ran past the server's --request-timeout of {after}s and was aborted"
            ))));
        }
    }

    fn step(&mut self) {
        let outputs = match self.engine.step() {
            Ok(o) => o,
            Err(e) => return self.fail_all(&e.to_string()),
        };
        let finals: HashMap<RequestId, FinalOutput> = self
            .engine
            .take_finished()
            .into_iter()
            .map(|f| (f.id, f))
            .collect();
        let preempted: usize = self
            .engine
            .take_step_records()
            .iter()
            .map(|r| r.num_preempted)
            .sum();
        self.metrics
            .preemptions
            .fetch_add(preempted as u64, Relaxed);
        // Finished requests are counted, observed and their blocks shown free before
        // any client hears of its end: /metrics read after an answer includes it.
        let mut ending = 0;
        for f in finals.values() {
            if let Some(l) = self.live.get(&f.id) {
                self.observe(l, f);
                ending += 1;
            }
        }
        let tokens: usize = outputs.iter().map(|o| o.new_token_ids.len()).sum();
        self.metrics
            .generation_tokens
            .fetch_add(tokens as u64, Relaxed);
        self.publish_with(ending);
        for o in outputs {
            self.route(o, &finals);
        }
        for (id, f) in finals {
            let Some(mut l) = self.live.remove(&id) else {
                continue;
            };
            if !l.finish_sent {
                let delta = Delta {
                    finish: Some(f.finish_reason),
                    ..Delta::default()
                };
                let _ = l.events.send(Event::Delta(delta));
                l.finish_sent = true;
            }
        }
    }

    fn route(&mut self, o: RequestOutput, finals: &HashMap<RequestId, FinalOutput>) {
        let Some(l) = self.live.get_mut(&o.id) else {
            return;
        };
        let mut logprobs = Vec::new();
        if let Some(top) = l.logprobs {
            let all = finals
                .get(&o.id)
                .map(|f| f.logprobs.as_slice())
                .or_else(|| self.engine.request_logprobs(o.id))
                .unwrap_or(&[]);
            let end = (l.logprobs_sent + o.new_token_ids.len()).min(all.len());
            let tok = self.engine.tokenizer();
            logprobs = all[l.logprobs_sent.min(end)..end]
                .iter()
                .map(|t| {
                    TokenLogprob::new(t, top, &|id| tok.decode(&[id], false).unwrap_or_default())
                })
                .collect();
            l.logprobs_sent = end;
        }
        l.finish_sent |= o.finish_reason.is_some();
        let delta = Delta {
            text: o.text_delta,
            num_tokens: o.new_token_ids.len(),
            logprobs,
            finish: o.finish_reason,
        };
        let _ = l.events.send(Event::Delta(delta));
    }

    /// Latencies of a finished request, from the server's receipt.
    fn observe(&self, l: &Live, f: &FinalOutput) {
        let m = &self.metrics;
        m.count(if f.finish_reason == FinishReason::Abort {
            Outcome::Aborted
        } else {
            Outcome::Ok
        });
        let t = &f.timeline;
        if let Some(first) = t.token_times_s.first() {
            m.ttft.observe(first - l.received_s);
        }
        if let Some(last) = t.token_times_s.last() {
            m.e2e.observe(last - l.received_s);
        }
        if let Some(s) = t.first_scheduled_s {
            m.queue.observe(s - l.received_s);
        }
        for gap in t.itl_s() {
            m.itl.observe(gap);
        }
    }

    /// The engine failed a step: every in-flight request fails with it; serving goes on.
    fn fail_all(&mut self, error: &str) {
        let failed = std::mem::take(&mut self.live);
        for &id in failed.keys() {
            self.engine.abort(id);
            self.metrics.count(Outcome::Error);
        }
        self.engine.take_finished();
        self.engine.take_step_records();
        self.publish();
        let msg = format!("the engine failed while running this request: {error}");
        for l in failed.into_values() {
            let _ = l
                .events
                .send(Event::Failed(ApiError::internal(msg.clone())));
        }
    }

    fn publish(&self) {
        self.publish_with(0);
    }

    /// The gauges, with `ending` of the live requests finished but not yet removed.
    fn publish_with(&self, ending: usize) {
        let m = &self.metrics;
        let s = self.engine.scheduler();
        m.waiting.store(s.num_waiting() as u64, Relaxed);
        m.running.store(s.num_running() as u64, Relaxed);
        let in_flight = self.live.len().saturating_sub(ending);
        m.in_flight.store(in_flight as u64, Relaxed);
        m.blocks_in_use
            .store(s.kv().num_blocks_in_use() as u64, Relaxed);
    }
}

#[cfg(test)]
#[path = "engine_loop_tests.rs"]
mod tests;
