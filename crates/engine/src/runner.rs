//! ModelRunner: turns a [`SchedulerOutput`] into the step's batch in one hop, runs the
//! forward pass over the paged KV cache, then samples every sampling row in one launch of
//! the device sample op (engine_kernels::sample) and copies back only the ids and
//! logprobs: no logits ever go to the host.
//!
//! Building the batch touches only the scheduled sequences' new tokens and block
//! tables, so its cost grows with the batch, not with the cache.

use crate::error::Result;
use crate::graphs::DecodeGraphs;
use candle_core::Tensor;
use engine_kernels::sample::{RowParams, Sampled};
use engine_model::{Decoder, KvCache, SeqInput, StepBatch};
use engine_scheduler::{Scheduler, SchedulerOutput};

/// The decoder, the KV cache tensors it reads and writes, and the decode graphs.
pub struct ModelRunner {
    decoder: Decoder,
    kv: KvCache,
    graphs: Option<DecodeGraphs>,
}

/// A step ready to run: an eager batch and its sampling rows' params tensor, or a decode
/// graph bucket already filled (params included).
pub enum Prepared {
    Eager {
        batch: Box<StepBatch>,
        /// [sampling rows, 8] u32 (engine_kernels::sample::params_tensor).
        params: Tensor,
    },
    Graph {
        bucket: usize,
        /// Real (unpadded) rows.
        num_seqs: usize,
        bucket_size: usize,
    },
}

/// A forward pass's logits, ready on the device (the forward has finished).
pub struct StepLogits(Option<Tensor>); // [sampling rows, vocab] f32; None: no row samples

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
    /// graph's buffers (one copy, the sampling rows' `rows` params included) when the step
    /// qualifies, else an eager batch and a params tensor. `rows` holds one entry per
    /// scheduled sequence that samples, in batch order.
    pub fn prepare(
        &mut self,
        out: &SchedulerOutput,
        sched: &Scheduler,
        rows: &[RowParams],
    ) -> Result<Prepared> {
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
                g.fill(bucket, &seqs, rows)?;
                return Ok(Prepared::Graph {
                    bucket,
                    num_seqs: seqs.len(),
                    bucket_size: g.bucket_size(bucket),
                });
            }
        }
        let n_top = crate::sampler::n_top(rows);
        let dev = self.decoder.device();
        let params = engine_kernels::sample::params_tensor(rows, n_top, dev)?;
        let mut batch = self
            .decoder
            .batch(self.kv.block_size(), out.num_batched_tokens);
        for s in seqs {
            batch.push(s)?;
        }
        Ok(Prepared::Eager {
            batch: Box::new(batch.finish(dev)?),
            params,
        })
    }

    /// The forward pass (a graph launch for a graph step), finished on the device before
    /// it returns, so that a step's forward and sampling times are apart.
    pub fn forward(&mut self, step: &Prepared) -> Result<StepLogits> {
        let logits = match step {
            Prepared::Eager { batch, .. } => {
                let logits = self.decoder.forward(batch, &mut self.kv)?; // [S, vocab] f32
                (logits.dim(0)? > 0).then_some(logits)
            }
            Prepared::Graph {
                bucket, num_seqs, ..
            } => {
                let Some(g) = &mut self.graphs else {
                    return Err(crate::EngineError::Internal("no decode graphs".into()));
                };
                g.run(*bucket, &self.decoder, &mut self.kv)?;
                Some(g.logits(*num_seqs)?)
            }
        };
        self.decoder.device().synchronize()?;
        Ok(StepLogits(logits))
    }

    /// Every sampling row's token (+ logprobs) in ONE launch of the sample op, and one
    /// copy of `[S, 2 + 2 n_top]` words to the host: at batch 128 and no logprobs, 1 KB,
    /// not the 64 MB of a 128k vocabulary's logits. `rows` as given to [`Self::prepare`].
    pub fn sample(
        &self,
        step: &Prepared,
        logits: StepLogits,
        rows: &[RowParams],
    ) -> Result<Vec<Sampled>> {
        let Some(logits) = logits.0 else {
            return Ok(Vec::new());
        };
        let n_top = crate::sampler::n_top(rows);
        let params = match step {
            Prepared::Eager { params, .. } => params.clone(),
            Prepared::Graph { bucket, .. } => match &self.graphs {
                Some(g) => g.params(*bucket, rows.len())?,
                None => return Err(crate::EngineError::Internal("no decode graphs".into())),
            },
        };
        let out = engine_kernels::sample::sample(&logits, &params, n_top)?; // [S, 2 + 2 n_top]
        Ok(engine_kernels::sample::unpack(&out, rows)?)
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
