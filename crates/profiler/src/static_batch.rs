//! Static batches (like SGLang's `bench_one_batch` or llama.cpp's `batched-bench`): add
//! all `B` requests of a [`RunPlan`] at once, then step until every one has finished.
//! Requests generate exactly their planned output length unless EOS is respected.
//!
//! A batch that the KV cache cannot hold at full length, that exceeds the scheduler's
//! `max_num_seqs`, or whose sequences exceed the model's context is reported as
//! "does not fit" and not run (see [`RunPlan::fits`]).

use crate::driver::RunDriver;
use crate::error::Result;
use crate::result::RunRecord;
use crate::run_plan::{Capacity, RunPlan};
use crate::workload::Workload;
use engine_core::{Engine, SamplingParams};

/// Sampling for benchmark requests (lengths come from the plan).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestShape {
    pub temperature: f32,
    pub top_p: f32,
    pub respect_eos: bool,
}

impl RequestShape {
    pub fn params(&self, output_len: usize, seed: u64) -> SamplingParams {
        SamplingParams {
            max_tokens: output_len,
            temperature: self.temperature,
            top_p: self.top_p,
            ignore_eos: !self.respect_eos,
            seed: Some(seed),
            ..SamplingParams::default()
        }
    }
}

/// The engine's limits, for [`RunPlan::fits`].
pub fn capacity(engine: &Engine) -> Capacity {
    Capacity {
        context: engine.decoder().config().max_position_embeddings,
        max_num_seqs: engine.config().max_num_seqs,
        block_size: engine.block_size(),
        num_blocks: engine.num_blocks(),
    }
}

/// Run one static batch: every request of `plan`; `on_tokens` receives the output
/// tokens produced by each step.
pub fn run_batch(
    engine: &mut Engine,
    workload: &Workload,
    run_index: usize,
    plan: &RunPlan,
    shape: &RequestShape,
    on_tokens: &mut dyn FnMut(usize),
) -> Result<RunRecord> {
    let mut d = RunDriver::new(run_index, engine);
    let result = (|| {
        for r in &plan.requests {
            d.add(engine, workload, plan.run_seed, r, shape);
        }
        while engine.has_unfinished() {
            let n = d.step(engine)?;
            on_tokens(n);
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(d.finish(engine)),
        Err(e) => {
            d.abandon(engine);
            Err(e)
        }
    }
}
