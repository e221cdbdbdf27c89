//! The stepping loop shared by every driver: call `Engine::step`, collect finished
//! requests and step records into a [`RunRecord`], and time the profiler's own work
//! between consecutive steps (reported as `overhead_s`).
//!
//! Timing comes from the engine's records, whose step end is read after the step's
//! logits reached the host (a device synchronization). The profiler reads no other
//! clock inside a run except to measure its own overhead.

use crate::error::Result;
use crate::result::{RequestRecord, RunRecord};
use engine_core::{Engine, RequestId};
use std::time::Instant;

/// One run in progress.
pub struct RunDriver {
    pub record: RunRecord,
    /// Requests added and not yet finished.
    pub in_flight: Vec<RequestId>,
    last_return: Option<Instant>,
}

impl RunDriver {
    pub fn new(index: usize, engine: &Engine) -> Self {
        Self {
            record: RunRecord {
                index,
                start_s: engine.now_s(),
                ..Default::default()
            },
            in_flight: Vec::new(),
            last_return: None,
        }
    }

    /// Step once; returns the number of output tokens produced.
    pub fn step(&mut self, engine: &mut Engine) -> Result<usize> {
        let call = Instant::now();
        if let Some(prev) = self.last_return {
            self.record.overhead_s.push((call - prev).as_secs_f64());
        }
        let outputs = engine.step()?;
        self.last_return = Some(Instant::now());
        self.collect(engine);
        Ok(outputs.iter().map(|o| o.new_token_ids.len()).sum())
    }

    /// Move finished requests into the record.
    pub fn collect(&mut self, engine: &mut Engine) {
        for f in engine.take_finished() {
            self.in_flight.retain(|&id| id != f.id);
            self.record.requests.push(RequestRecord {
                id: f.id,
                finish_reason: f.finish_reason.as_str().to_string(),
                timeline: f.timeline,
            });
        }
    }

    /// Close the run: its end is the last step's end (or now), and its step records.
    pub fn finish(mut self, engine: &mut Engine) -> RunRecord {
        self.collect(engine);
        self.record.steps = engine.take_step_records();
        self.record.end_s = self
            .record
            .steps
            .last()
            .map_or_else(|| engine.now_s(), |s| s.end_s);
        self.record.requests.sort_by_key(|r| r.id);
        self.record
    }

    /// After a failure: abort what is in flight and drop the engine's leftovers.
    pub fn abandon(self, engine: &mut Engine) {
        for id in &self.in_flight {
            engine.abort(*id);
        }
        engine.take_finished();
        engine.take_step_records();
    }
}
