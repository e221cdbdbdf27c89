//! The stepping loop shared by every driver: call `Engine::step`, collect finished
//! requests and step records into a [`RunRecord`], and time the profiler's own work
//! between consecutive steps (reported as `overhead_s`).
//!
//! Timing comes from the engine's records, whose step end is read after the step's
//! logits reached the host (a device synchronization). The profiler reads no other
//! clock inside a run except to measure its own overhead.

use crate::error::Result;
use crate::result::{RequestRecord, RunRecord};
use crate::run_plan::PlannedRequest;
use crate::static_batch::RequestShape;
use crate::workload::Workload;
use engine_core::{Engine, Prompt, RequestId};
use std::time::Instant;

/// One run in progress.
pub struct RunDriver {
    pub record: RunRecord,
    /// Requests added and not yet finished.
    pub in_flight: Vec<RequestId>,
    /// The use case of each tagged request, copied into its record.
    use_cases: Vec<(RequestId, String)>,
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
            use_cases: Vec::new(),
            last_return: None,
        }
    }

    /// Add one planned request (its prompt drawn with the run seed); a refusal is
    /// counted in `rejected`. Returns its id when accepted.
    pub fn add(
        &mut self,
        engine: &mut Engine,
        workload: &Workload,
        run_seed: u64,
        r: &PlannedRequest,
        shape: &RequestShape,
    ) -> Option<RequestId> {
        let prompt = workload.prompt(run_seed, r.index as u64, r.input_len);
        let params = shape.params(r.output_len, r.sampling_seed(run_seed));
        match engine.add_request(Prompt::Tokens(prompt), params) {
            Ok(id) => {
                self.in_flight.push(id);
                if let Some(u) = &r.use_case {
                    self.use_cases.push((id, u.clone()));
                }
                Some(id)
            }
            Err(_) => {
                self.record.rejected += 1;
                None
            }
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
            let use_case = self
                .use_cases
                .iter()
                .find(|(id, _)| *id == f.id)
                .map(|(_, u)| u.clone());
            self.record.requests.push(RequestRecord {
                id: f.id,
                finish_reason: f.finish_reason.as_str().to_string(),
                timeline: f.timeline,
                use_case,
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
