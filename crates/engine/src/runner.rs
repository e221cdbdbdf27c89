//! ModelRunner: turns a [`SchedulerOutput`] into the step's batch in one hop, launches
//! the forward pass over the paged KV cache and then the sample op for every sampling
//! row in one launch (engine_kernels::sample), and starts copying back only the ids and
//! logprobs: no logits ever go to the host, and nothing waits for the device until
//! [`ModelRunner::finish`].
//!
//! Building the batch touches only the scheduled sequences' new tokens and block
//! tables, so its cost grows with the batch, not with the cache. A decode row whose
//! token is still pending (the engine overlaps steps) gets it on the device, from the
//! previous step's sample output.

use crate::error::Result;
use crate::graphs::DecodeGraphs;
use crate::inflight::{HostBuffers, Marks, Readback};
use candle_core::Tensor;
use engine_kernels::sample::{RowParams, Sampled};
use engine_model::{Decoder, KvCache, SeqInput, StepBatch};
use engine_scheduler::{Scheduler, SchedulerOutput, SeqId};

/// The decoder, the KV cache tensors it reads and writes, and the decode graphs.
pub struct ModelRunner {
    decoder: Decoder,
    kv: KvCache,
    graphs: Option<DecodeGraphs>,
    host: HostBuffers,
}

/// The previous launched step's sample output and whose rows it holds: where pending
/// tokens are read from.
pub struct Fed<'a> {
    /// [rows, 2 + 2 n_top] u32 on the device.
    pub sampled: &'a Tensor,
    pub seqs: &'a [SeqId],
}

/// A launched step: its sample output on the device, on its way to the host.
pub struct Launched {
    sampled: Option<Tensor>, // [sampling rows, 2 + 2 n_top] u32; None: no row samples
    readback: Option<Readback>,
    marks: Marks,
}

/// A finished step's tokens and its device times.
pub struct Finished {
    pub sampled: Vec<Sampled>,
    /// The forward pass and the sample op, as the device ran them (CUDA events; host
    /// times on the CPU).
    pub forward_s: f64,
    pub sample_s: f64,
}

impl Launched {
    /// The sample output (for the next step's pending tokens).
    pub fn sampled(&self) -> Option<&Tensor> {
        self.sampled.as_ref()
    }
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
            host: HostBuffers::default(),
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
    /// scheduled sequence that samples, in batch order. A pending token (one the launched
    /// step `prev` sampled) is written into the inputs on the device.
    pub fn prepare(
        &mut self,
        out: &SchedulerOutput,
        sched: &Scheduler,
        rows: &[RowParams],
        prev: Option<Fed<'_>>,
    ) -> Result<Prepared> {
        const PENDING: [u32; 1] = [0]; // placeholder, overwritten on the device
        let mut seqs = Vec::with_capacity(out.scheduled.len());
        let mut feed: Vec<(u32, u32)> = Vec::new(); // (input row, row of prev's output)
        let (mut row, mut hint) = (0, 0);
        for s in &out.scheduled {
            let Some(seq) = sched.seq(s.seq_id) else {
                continue;
            };
            let (start, n) = (s.num_computed_tokens, s.num_scheduled_tokens);
            let tokens = match seq.tokens.get(start..start + n) {
                Some(t) => t,
                None => {
                    let src = prev
                        .as_ref()
                        .filter(|_| n == 1 && start == seq.tokens.len())
                        .and_then(|p| find_from(p.seqs, s.seq_id, hint));
                    let Some(src) = src else {
                        return Err(crate::EngineError::Internal(format!(
                            "sequence {}: tokens {start}..{} scheduled, {} known, none pending",
                            s.seq_id,
                            start + n,
                            seq.tokens.len()
                        )));
                    };
                    hint = src + 1;
                    feed.push((row as u32, src as u32));
                    &PENDING[..]
                }
            };
            row += n;
            seqs.push(SeqInput {
                tokens,
                num_computed_tokens: start,
                block_table: sched.block_table(s.seq_id),
                want_logits: s.samples,
            });
        }
        let prev = prev.map(|p| p.sampled);
        if let Some(g) = &mut self.graphs {
            if let Some(bucket) = g.bucket_for(&seqs) {
                g.fill(bucket, &seqs, rows)?;
                feed_pending(g.ids(bucket), &feed, prev)?;
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
        let batch = batch.finish(dev)?;
        feed_pending(&batch.input_ids, &feed, prev)?;
        Ok(Prepared::Eager {
            batch: Box::new(batch),
            params,
        })
    }

    /// Launch the step: the forward pass (a graph launch for a graph step), then every
    /// sampling row's token (+ logprobs) in ONE launch of the sample op, then the copy
    /// of `[S, 2 + 2 n_top]` words to the host (at batch 128 and no logprobs, 1 KB, not
    /// the 64 MB of a 128k vocabulary's logits). Waits for nothing on CUDA.
    pub fn launch(&mut self, step: &Prepared, rows: &[RowParams]) -> Result<Launched> {
        let dev = self.decoder.device().clone();
        let mut marks = Marks::default();
        marks.mark(&dev)?;
        let logits = self.forward(step)?; // [S, vocab] f32, or None
        marks.mark(&dev)?;
        let sampled = match logits {
            Some(l) => Some(self.sample(step, &l, rows)?),
            None => None,
        };
        marks.mark(&dev)?;
        let readback = match &sampled {
            Some(t) => Some(Readback::start(t, &mut self.host)?),
            None => None,
        };
        Ok(Launched {
            sampled,
            readback,
            marks,
        })
    }

    /// Wait for a launched step's results: its tokens (+ logprobs) per row of `rows`
    /// (as given to [`Self::launch`]) and its device times.
    pub fn finish(&mut self, step: Launched, rows: &[RowParams]) -> Result<Finished> {
        let sampled = match (step.readback, &step.sampled) {
            (Some(r), Some(t)) => {
                let words = r.finish(&mut self.host)?;
                engine_kernels::sample::unpack_words(&words, t.dim(1)?, rows)?
            }
            _ => Vec::new(),
        };
        let spans = step.marks.spans()?;
        Ok(Finished {
            sampled,
            forward_s: spans.first().copied().unwrap_or(0.0),
            sample_s: spans.get(1).copied().unwrap_or(0.0),
        })
    }

    /// The forward pass's logits of the sampling rows: [S, vocab] f32 on the device.
    fn forward(&mut self, step: &Prepared) -> Result<Option<Tensor>> {
        Ok(match step {
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
        })
    }

    /// The sample op over `logits` with the step's params: [S, 2 + 2 n_top] u32.
    fn sample(&self, step: &Prepared, logits: &Tensor, rows: &[RowParams]) -> Result<Tensor> {
        let n_top = crate::sampler::n_top(rows);
        let params = match step {
            Prepared::Eager { params, .. } => params.clone(),
            Prepared::Graph { bucket, .. } => match &self.graphs {
                Some(g) => g.params(*bucket, rows.len())?,
                None => return Err(crate::EngineError::Internal("no decode graphs".into())),
            },
        };
        let functions = self.decoder.kernel_functions(); // loaded once (CUDA)
        Ok(functions.sample(logits, &params, n_top)?)
    }
}

/// The index of `id` in `seqs`, looked for from `hint` on, then before it: the running
/// sequences keep their order from step to step, so a step's lookups cost one pass.
fn find_from(seqs: &[SeqId], id: SeqId, hint: usize) -> Option<usize> {
    let hint = hint.min(seqs.len());
    let after = seqs[hint..].iter().position(|&s| s == id).map(|i| hint + i);
    after.or_else(|| seqs[..hint].iter().position(|&s| s == id))
}

/// Write pending tokens into a step's input ids on the device: `ids[row] =
/// prev[src, 0]` for each `(row, src)` of `feed` (column 0 of the sample output is the
/// token). Two small uploads and two launches, only when some row is pending.
fn feed_pending(ids: &Tensor, feed: &[(u32, u32)], prev: Option<&Tensor>) -> Result<()> {
    let Some(prev) = prev.filter(|_| !feed.is_empty()) else {
        return Ok(());
    };
    let dev = ids.device();
    let (rows, srcs): (Vec<u32>, Vec<u32>) = feed.iter().copied().unzip();
    let srcs = Tensor::new(srcs, dev)?;
    let tokens = prev
        .narrow(1, 0, 1)?
        .squeeze(1)?
        .contiguous()?
        .index_select(&srcs, 0)?; // [k] u32
    ids.scatter_set(&Tensor::new(rows, dev)?, &tokens, 0)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::find_from;

    #[test]
    fn find_from_looks_after_the_hint_then_before() {
        let seqs = [4, 9, 2, 7];
        assert_eq!(find_from(&seqs, 2, 0), Some(2));
        assert_eq!(find_from(&seqs, 9, 3), Some(1));
        assert_eq!(find_from(&seqs, 7, 4), Some(3));
        assert_eq!(find_from(&seqs, 7, 99), Some(3));
        assert_eq!(find_from(&seqs, 5, 1), None);
        assert_eq!(find_from(&[], 5, 0), None);
    }
}
