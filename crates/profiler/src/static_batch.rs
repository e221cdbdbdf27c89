//! Static batches (like SGLang's `bench_one_batch` or llama.cpp's `batched-bench`): add
//! all `B` requests at once, then step until every one has finished. Requests generate
//! exactly `output_len` tokens unless EOS is respected.
//!
//! A batch that the KV cache cannot hold at full length, that exceeds the scheduler's
//! `max_num_seqs`, or whose sequences exceed the model's context is reported as
//! "does not fit" and not run (see [`fits`]).

use crate::driver::RunDriver;
use crate::error::Result;
use crate::result::RunRecord;
use crate::workload::Workload;
use engine_core::{Engine, Prompt, SamplingParams};
use engine_scheduler::blocks_for;

/// Sampling for one benchmark request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestShape {
    pub input_len: usize,
    pub output_len: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub respect_eos: bool,
}

impl RequestShape {
    pub fn params(&self, seed: u64) -> SamplingParams {
        SamplingParams {
            max_tokens: self.output_len,
            temperature: self.temperature,
            top_p: self.top_p,
            ignore_eos: !self.respect_eos,
            seed: Some(seed),
            ..SamplingParams::default()
        }
    }
}

/// `Ok` when `batch` sequences of `input_len + output_len` tokens fit at once, else why not.
pub fn fits(
    engine: &Engine,
    batch: usize,
    input_len: usize,
    output_len: usize,
) -> std::result::Result<(), String> {
    let len = input_len + output_len;
    let max_len = engine.decoder().config().max_position_embeddings;
    if input_len == 0 || output_len == 0 {
        return Err("input and output lengths must be at least 1".into());
    }
    if len > max_len {
        return Err(format!(
            "{len} tokens per sequence exceed the model's context of {max_len}"
        ));
    }
    let max_seqs = engine.config().max_num_seqs;
    if batch > max_seqs {
        return Err(format!("batch {batch} exceeds max_num_seqs {max_seqs}"));
    }
    let needed = batch * blocks_for(len, engine.block_size());
    let have = engine.num_blocks();
    if needed > have {
        return Err(format!(
            "needs {needed} KV blocks ({batch} x {len} tokens, block size {}), the cache has {have}",
            engine.block_size()
        ));
    }
    Ok(())
}

/// Run one static batch; `on_tokens` receives the output tokens produced by each step.
pub fn run_batch(
    engine: &mut Engine,
    workload: &Workload,
    run_index: usize,
    run_seed: u64,
    batch: usize,
    shape: &RequestShape,
    on_tokens: &mut dyn FnMut(usize),
) -> Result<RunRecord> {
    let mut d = RunDriver::new(run_index, engine);
    let result = (|| {
        for i in 0..batch {
            let prompt = workload.prompt(run_seed, i as u64, shape.input_len);
            match engine.add_request(Prompt::Tokens(prompt), shape.params(run_seed ^ i as u64)) {
                Ok(id) => d.in_flight.push(id),
                Err(_) => d.record.rejected += 1,
            }
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
