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
        let cfg = self.decoder.config();
        let width = cfg.num_key_value_heads * cfg.head_dim;
        Ok(ForwardInputs::build(
            &seqs,
            self.kv.block_size(),
            width,
            self.decoder.device(),
        )?)
    }

    /// Forward pass; returns one host row of f32 logits per sampling sequence, in the
    /// order they appear in the batch. Copying to the host synchronizes the device.
    pub fn execute(&mut self, inputs: &ForwardInputs) -> Result<Vec<Vec<f32>>> {
        let logits = self.decoder.forward(inputs, &mut self.kv)?;
        if logits.dim(0)? == 0 {
            // No copy to the host to wait on: synchronize so step timings are complete.
            self.decoder.device().synchronize()?;
            return Ok(Vec::new());
        }
        Ok(logits.to_vec2::<f32>()?)
    }
}
