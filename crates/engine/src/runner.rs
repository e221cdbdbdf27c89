//! ModelRunner: turns a [`SchedulerOutput`] into the step's batch in one hop, runs the
//! forward pass over the paged KV cache, and hands back what sampling needs: every
//! sampling row's greedy token (taken on the device) and the host logits of only the
//! rows that sample or want logprobs.
//!
//! Building the batch touches only the scheduled sequences' new tokens and block
//! tables, so its cost grows with the batch, not with the cache.

use crate::error::Result;
use crate::graphs::DecodeGraphs;
use candle_core::Tensor;
use engine_model::{Decoder, KvCache, SeqInput, StepBatch};
use engine_scheduler::{Scheduler, SchedulerOutput};

/// The decoder, the KV cache tensors it reads and writes, and the decode graphs.
pub struct ModelRunner {
    decoder: Decoder,
    kv: KvCache,
    graphs: Option<DecodeGraphs>,
}

/// A step ready to run: an eager batch, or a decode graph bucket already filled.
pub enum Prepared {
    Eager(Box<StepBatch>),
    Graph {
        bucket: usize,
        /// Real (unpadded) rows.
        num_seqs: usize,
        bucket_size: usize,
    },
}

/// What a step's forward pass hands to sampling, for the sampling rows in batch order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepLogits {
    /// Each sampling row's greedy token (engine_kernels::argmax's rule).
    pub greedy: Vec<u32>,
    /// The f32 logits of the rows asked for in [`ModelRunner::execute`]'s `host_rows`,
    /// in that order.
    pub host: Vec<Vec<f32>>,
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
        Ok(Self {
            decoder,
            kv,
            graphs: None,
        })
    }

    /// Set up decode graphs for up to `max_num_seqs` sequences and `max_context` tokens
    /// (captured on CUDA, replayed eagerly on the CPU; see [`DecodeGraphs`]).
    pub fn enable_graphs(&mut self, max_num_seqs: usize, max_context: usize) -> Result<()> {
        let bs = self.kv.block_size();
        let mut g = DecodeGraphs::new(&self.decoder, bs, max_num_seqs, max_context)?;
        g.capture(&self.decoder, &mut self.kv)?;
        self.graphs = Some(g);
        Ok(())
    }

    pub fn graphs(&self) -> Option<&DecodeGraphs> {
        self.graphs.as_ref()
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    pub fn kv_cache(&self) -> &KvCache {
        &self.kv
    }

    /// Flatten the scheduled sequences into the step's inputs, checked once: a decode
    /// graph's buffers (one copy) when the step qualifies, else an eager batch.
    pub fn prepare(&mut self, out: &SchedulerOutput, sched: &Scheduler) -> Result<Prepared> {
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
        if let Some(g) = &mut self.graphs {
            if let Some(bucket) = g.bucket_for(&seqs) {
                g.fill(bucket, &seqs)?;
                return Ok(Prepared::Graph {
                    bucket,
                    num_seqs: seqs.len(),
                    bucket_size: g.bucket_size(bucket),
                });
            }
        }
        let mut batch = self
            .decoder
            .batch(self.kv.block_size(), out.num_batched_tokens);
        for s in seqs {
            batch.push(s)?;
        }
        Ok(Prepared::Eager(Box::new(
            batch.finish(self.decoder.device())?,
        )))
    }

    /// Forward pass, then the greedy token of every logits row on the device and the
    /// host logits of `host_rows` (indices into the logits rows) only: at batch 128 and
    /// a 128k vocabulary a greedy batch copies 512 bytes to the host, not 64 MB. The
    /// copies to the host synchronize the device, so step timings are complete.
    pub fn execute(&mut self, step: &Prepared, host_rows: &[u32]) -> Result<StepLogits> {
        let batch = match step {
            Prepared::Eager(batch) => batch,
            Prepared::Graph {
                bucket, num_seqs, ..
            } => {
                let Some(g) = &mut self.graphs else {
                    return Err(crate::EngineError::Internal("no decode graphs".into()));
                };
                g.run(*bucket, &self.decoder, &mut self.kv)?;
                return g.outputs(*num_seqs, host_rows);
            }
        };
        let logits = self.decoder.forward(batch, &mut self.kv)?; // [S, vocab] f32
        if logits.dim(0)? == 0 {
            self.decoder.device().synchronize()?;
            return Ok(StepLogits::default());
        }
        let greedy = engine_kernels::argmax::argmax(&logits)?; // [S] u32, launched first
        let host = match host_rows.len() {
            0 => Vec::new(),
            n => {
                let rows = Tensor::from_slice(host_rows, n, logits.device())?;
                logits.index_select(&rows, 0)?.to_vec2::<f32>()?
            }
        };
        let greedy = greedy.to_vec1::<u32>()?;
        Ok(StepLogits { greedy, host })
    }
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
        let batch = decoder.inputs(&[seq], block_size)?;
        rows.push(
            decoder
                .forward(&batch, &mut kv)?
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
