//! ModelRunner: turns a [`SchedulerOutput`] into the model's inputs, runs the forward
//! pass over the paged KV cache, and returns the logits of the rows to sample.
//!
//! Building the inputs touches only the scheduled sequences' new tokens and block
//! tables, so its cost grows with the batch, not with the cache.

use crate::error::Result;
use engine_model::{Decoder, ForwardInputs, KvCache, SeqInput};
use engine_scheduler::{Scheduler, SchedulerOutput};

/// The decoder and the KV cache tensors it reads and writes.
pub struct ModelRunner {
    decoder: Decoder,
    kv: KvCache,
}

impl ModelRunner {
    pub fn new(decoder: Decoder, num_blocks: usize, block_size: usize) -> Result<Self> {
        let kv = KvCache::new(
            decoder.config(),
            num_blocks,
            block_size,
            decoder.dtype(),
            decoder.device(),
        )?;
        Ok(Self { decoder, kv })
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    pub fn kv_cache(&self) -> &KvCache {
        &self.kv
    }

    /// Flatten the scheduled sequences into one batch.
    pub fn prepare_inputs(
        &self,
        out: &SchedulerOutput,
        sched: &Scheduler,
    ) -> Result<ForwardInputs> {
        let mut seqs = Vec::with_capacity(out.scheduled.len());
        for s in &out.scheduled {
            let Some(seq) = sched.seq(s.seq_id) else {
                continue;
            };
            let start = s.num_computed_tokens;
            seqs.push(SeqInput {
                tokens: &seq.tokens[start..start + s.num_scheduled_tokens],
                num_computed_tokens: start,
                block_table: sched.block_table(s.seq_id),
                want_logits: s.samples,
            });
        }
        Ok(self.decoder.inputs(&seqs, self.kv.block_size())?)
    }

    /// Forward pass. With `all_greedy`, the argmax of each sampling row is taken on the
    /// device and only the token ids are copied to the host (at batch 128 and a 128k
    /// vocabulary that is 512 bytes instead of 64 MB, and no host-side scan); otherwise
    /// one host row of f32 logits per sampling sequence, in batch order. Either copy to
    /// the host synchronizes the device.
    pub fn execute(&mut self, inputs: &ForwardInputs, all_greedy: bool) -> Result<StepLogits> {
        let logits = self.decoder.forward(inputs, &mut self.kv)?;
        if logits.dim(0)? == 0 {
            // No copy to the host to wait on: synchronize so step timings are complete.
            self.decoder.device().synchronize()?;
            return Ok(StepLogits::Rows(Vec::new()));
        }
        if all_greedy {
            let ids = logits.argmax(candle_core::D::Minus1)?; // [S] u32
            return Ok(StepLogits::Greedy(ids.to_vec1::<u32>()?));
        }
        Ok(StepLogits::Rows(logits.to_vec2::<f32>()?))
    }
}

/// What a step's forward pass hands to sampling.
#[derive(Debug, Clone, PartialEq)]
pub enum StepLogits {
    /// One row of logits per sampling sequence.
    Rows(Vec<Vec<f32>>),
    /// Each sampling sequence's argmax token (every one of them was greedy).
    Greedy(Vec<u32>),
}

/// Logits of a prompt's last position and of each of `generated` fed back one at a time
/// (`generated.len()` decode steps; the last generated token is not fed). Runs on a
/// private KV cache; for checking the decoder against references.
pub fn full_logits(
    engine: &crate::Engine,
    prompt: &[u32],
    generated: &[u32],
) -> Result<Vec<Vec<f32>>> {
    let decoder = engine.decoder();
    let cfg = decoder.config();
    let block_size = engine.block_size();
    let total = prompt.len() + generated.len();
    let num_blocks = engine_scheduler::blocks_for(total, block_size);
    let mut kv = KvCache::new(
        cfg,
        num_blocks,
        block_size,
        decoder.dtype(),
        decoder.device(),
    )?;
    let table: Vec<u32> = (0..num_blocks as u32).collect();
    let mut tokens = prompt.to_vec();
    let mut rows = Vec::with_capacity(generated.len());
    let mut computed = 0;
    for step in 0..=generated.len().saturating_sub(1) {
        let seq = SeqInput {
            tokens: &tokens[computed..],
            num_computed_tokens: computed,
            block_table: &table,
            want_logits: true,
        };
        let inputs = decoder.inputs(&[seq], block_size)?;
        rows.push(
            decoder
                .forward(&inputs, &mut kv)?
                .squeeze(0)?
                .to_vec1::<f32>()?,
        );
        computed = tokens.len();
        if let Some(&t) = generated.get(step) {
            tokens.push(t);
        }
    }
    Ok(rows)
}
