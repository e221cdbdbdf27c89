//! Decode steps as CUDA graphs: the decode-only step of B sequences runs a graph captured
//! at start-up for the smallest batch-size bucket >= B (1, 2, 4, ..., 256), so the host
//! issues one launch per step instead of a few hundred.
//!
//! ```text
//!  bucket S:  meta [S * 5 + S * max_blocks + S * 8] u32, persistent (the graph reads it there):
//!             ids | positions | slots | rows (0..S) | context_lens | block tables [S, max_blocks]
//!             | sample params [S, 8] (engine_kernels::sample's, read by the sample launch)
//!  step:      fill meta from the host in ONE copy (padded rows: slot SKIP, context 0:
//!             they write nowhere and attend to nothing), launch the graph (the forward,
//!             its logits copied into the shared logits buffer), then the sample op on the
//!             first S rows of that buffer and the params in meta: one more launch.
//! ```
//! The sample op runs after the graph rather than inside it so that a step's sampling
//! time is measured apart from its forward (by device events); its params still come
//! with the step's one upload. When steps overlap, a row's pending token is written into
//! the ids column on the device, from the previous step's sample output.
//! A step qualifies when every scheduled sequence decodes one token, wants logits, and its
//! context fits the graphs' block tables (`max_context`); other steps (prefill, mixed,
//! long contexts) run eagerly. Only the fused op set is graph-safe: the candle path
//! uploads per-step masks. On the CPU there is nothing to capture: the same buffers,
//! padding and refill run eagerly ("replay"), which is how the tests check this path.

use crate::error::Result;
use candle_core::{DType, Device, Tensor};
use engine_kernels::paged_decode::DecodeMeta;
use engine_kernels::reshape_and_cache::SKIP_SLOT;
use engine_kernels::sample::{RowParams, PARAM_WORDS};
use engine_model::{Decoder, KvCache, SeqInput, StepBatch};

/// The batch-size buckets a graph is captured for.
pub const BUCKETS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// What the graphs cost and how they run (recorded by `engine bench`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GraphReport {
    /// "captured" (CUDA graphs) or "replayed eagerly" (the CPU).
    pub mode: String,
    pub buckets: Vec<usize>,
    /// Longest context a graph step takes (longer ones run eagerly).
    pub max_context: usize,
    pub capture_s: f64,
    /// Device memory the captures took (free memory before minus after), CUDA only.
    pub capture_bytes: u64,
    /// Buckets whose capture failed (they run eagerly), with why.
    pub failed: Vec<String>,
}

/// One bucket's persistent inputs and (on CUDA) its graph.
struct Bucket {
    size: usize,
    meta: Tensor, // [size * (5 + max_blocks + 8)] u32
    batch: StepBatch,
    #[cfg(feature = "cuda")]
    graph: Option<candle_core::cuda::cudarc::driver::CudaGraph>,
    /// Page-locked copies of `meta`'s words, used in turn (CUDA): a refill never waits
    /// for the device unless the copy from the same buffer two refills ago is pending.
    #[cfg(feature = "cuda")]
    staging: Vec<candle_core::cuda::cudarc::driver::PinnedHostSlice<u32>>,
    #[cfg(feature = "cuda")]
    turn: usize,
}

/// The decode graphs of one engine.
pub struct DecodeGraphs {
    buckets: Vec<Bucket>,
    block_size: usize,
    max_blocks: usize,
    /// [max bucket, vocab] f32: every graph copies its logits here (the first S rows).
    logits_out: Tensor,
    report: GraphReport,
    /// Host staging for one refill.
    host: Vec<u32>,
}

impl DecodeGraphs {
    /// Buffers for every bucket up to `max_num_seqs` (its own bucket on top when it is not
    /// a power of two), block tables for `max_context` tokens.
    pub fn new(
        decoder: &Decoder,
        block_size: usize,
        max_num_seqs: usize,
        max_context: usize,
    ) -> Result<Self> {
        let dev = decoder.device();
        let max_blocks = max_context.div_ceil(block_size).max(1);
        let sizes = bucket_sizes(max_num_seqs);
        let largest = sizes.last().copied().unwrap_or(1);
        let vocab = decoder.config().vocab_size;
        let target_blocks = 2 * engine_kernels::device_sm_count(dev)?;
        let buckets = sizes
            .iter()
            .map(|&s| bucket(s, max_blocks, block_size, decoder, target_blocks))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            buckets,
            block_size,
            max_blocks,
            logits_out: Tensor::zeros((largest, vocab), DType::F32, dev)?,
            report: GraphReport {
                mode: "replayed eagerly".into(),
                buckets: sizes,
                max_context: max_blocks * block_size,
                ..Default::default()
            },
            host: Vec::new(),
        })
    }

    pub fn report(&self) -> &GraphReport {
        &self.report
    }

    /// Rows of bucket `b` (real and padding).
    pub fn bucket_size(&self, b: usize) -> usize {
        self.buckets[b].size
    }

    /// The bucket for a step of `seqs`, if it qualifies (see the module doc).
    pub fn bucket_for(&self, seqs: &[SeqInput]) -> Option<usize> {
        let cap = self.max_blocks * self.block_size;
        let fits = seqs
            .iter()
            .all(|s| s.tokens.len() == 1 && s.want_logits && s.num_computed_tokens < cap);
        if !fits || seqs.is_empty() {
            return None;
        }
        self.buckets.iter().position(|b| b.size >= seqs.len())
    }

    /// Write `seqs` and the sample params of their `rows` (the sampling rows, in order)
    /// into bucket `b`'s buffers in one copy; rows past them are padding.
    pub fn fill(&mut self, b: usize, seqs: &[SeqInput], rows: &[RowParams]) -> Result<()> {
        let (bs, m) = (self.block_size, self.max_blocks);
        let size = self.buckets[b].size;
        if rows.len() != seqs.len() || seqs.len() > size {
            return Err(crate::EngineError::Internal(format!(
                "decode graph bucket {size}: {} sequences, {} sampling rows",
                seqs.len(),
                rows.len()
            )));
        }
        let h = &mut self.host;
        h.clear();
        h.resize(size * (5 + m), 0);
        let n_top = crate::sampler::n_top(rows);
        engine_kernels::sample::push_params(rows, n_top, h)?;
        h.resize(size * (5 + m + PARAM_WORDS), 0);
        let h = &mut h[..size * (5 + m)];
        let (cols, tables) = h.split_at_mut(5 * size);
        for (i, s) in seqs.iter().enumerate() {
            let pos = s.num_computed_tokens;
            cols[i] = s.tokens[0];
            cols[size + i] = pos as u32;
            cols[2 * size + i] = engine_kernels::paged::slot(s.block_table, bs, pos) as u32;
            cols[4 * size + i] = (pos + 1) as u32;
            let n = (pos + 1).div_ceil(bs);
            tables[i * m..i * m + n].copy_from_slice(&s.block_table[..n]);
        }
        for i in 0..size {
            cols[3 * size + i] = i as u32;
        }
        cols[2 * size + seqs.len()..3 * size].fill(SKIP_SLOT);
        self.upload(b)
    }

    /// The staged words into bucket `b`'s buffer, in one copy.
    fn upload(&mut self, b: usize) -> Result<()> {
        let bucket = &mut self.buckets[b];
        #[cfg(feature = "cuda")]
        if !bucket.staging.is_empty() {
            bucket.turn = (bucket.turn + 1) % bucket.staging.len();
            let buf = &mut bucket.staging[bucket.turn];
            buf.as_mut_slice()
                .map_err(|e| cuda_err("staging", e))?
                .copy_from_slice(&self.host);
            engine_kernels::upload::upload_u32_pinned(&bucket.meta, buf)?;
            return Ok(());
        }
        engine_kernels::upload::upload_u32(&bucket.meta, &self.host)?;
        Ok(())
    }

    /// Bucket `b`'s input buffer: its first `size` words are the step's token ids (row i
    /// at index i), where a pending token is written on the device after [`Self::fill`].
    pub fn ids(&self, b: usize) -> &Tensor {
        &self.buckets[b].meta
    }

    /// Run bucket `b`: its graph on CUDA once captured, else the same work eagerly.
    pub fn run(&mut self, b: usize, decoder: &Decoder, kv: &mut KvCache) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.buckets[b].graph {
            return g.launch().map_err(|e| cuda_err("graph launch", e));
        }
        forward_into(&self.buckets[b].batch, decoder, kv, &self.logits_out)
    }

    /// The logits of the first `n` rows of the last run: [n, vocab] f32 (a view).
    pub fn logits(&self, n: usize) -> Result<Tensor> {
        Ok(self.logits_out.narrow(0, 0, n)?)
    }

    /// Bucket `b`'s sample params of its first `n` rows, as last filled: [n, 8] u32.
    pub fn params(&self, b: usize, n: usize) -> Result<Tensor> {
        let bucket = &self.buckets[b];
        let start = bucket.size * (5 + self.max_blocks);
        Ok(bucket
            .meta
            .narrow(0, start, n * PARAM_WORDS)?
            .reshape((n, PARAM_WORDS))?)
    }

    /// Capture every bucket's graph (CUDA; a no-op on the CPU): warm up eagerly on an
    /// all-padding batch, which also fills candle's cache of kernel parameters, then
    /// record the same work. A failed capture leaves that bucket eager and says so in
    /// the report.
    pub fn capture(&mut self, decoder: &Decoder, kv: &mut KvCache) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(dev) = decoder.device() {
            self.report.failed = self.capture_cuda(dev, decoder, kv)?;
        }
        let _ = (decoder, kv);
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn capture_cuda(
        &mut self,
        dev: &candle_core::CudaDevice,
        decoder: &Decoder,
        kv: &mut KvCache,
    ) -> Result<Vec<String>> {
        use candle_core::cuda::cudarc::driver::sys;
        let t0 = std::time::Instant::now();
        let free = |d: &candle_core::CudaDevice| {
            d.cuda_stream()
                .context()
                .mem_get_info()
                .map(|m| m.0 as u64)
                .unwrap_or(0)
        };
        let before = free(dev);
        let _cache = dev.enable_cuda_graph_htod_cache();
        let stream = dev.cuda_stream();
        let mut failed = Vec::new();
        for b in 0..self.buckets.len() {
            self.fill(b, &[], &[])?;
            forward_into(&self.buckets[b].batch, decoder, kv, &self.logits_out)?;
            stream.synchronize().map_err(|e| cuda_err("sync", e))?;
            let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
            stream
                .begin_capture(mode)
                .map_err(|e| cuda_err("begin capture", e))?;
            let ran = forward_into(&self.buckets[b].batch, decoder, kv, &self.logits_out);
            let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
            match (ran, graph) {
                (Ok(()), Ok(Some(g))) => self.buckets[b].graph = Some(g),
                (ran, graph) => failed.push(format!(
                    "bucket {}: capture failed ({:?} / {:?}); it runs eagerly",
                    self.buckets[b].size,
                    ran.err(),
                    graph.err()
                )),
            }
        }
        stream.synchronize().map_err(|e| cuda_err("sync", e))?;
        self.report.mode = "captured".into();
        self.report.capture_s = t0.elapsed().as_secs_f64();
        self.report.capture_bytes = before.saturating_sub(free(dev));
        Ok(failed)
    }
}

/// The buckets for `max_num_seqs`: the powers of two below it, and it (at most 256) on
/// top; larger batches run eagerly.
pub fn bucket_sizes(max_num_seqs: usize) -> Vec<usize> {
    let top = max_num_seqs.clamp(1, BUCKETS[BUCKETS.len() - 1]);
    let mut sizes: Vec<usize> = BUCKETS.into_iter().filter(|&b| b < top).collect();
    sizes.push(top);
    sizes
}

/// The step's forward, as captured: its logits copied into the shared output buffer (so
/// the graph allocates and frees only temporaries of its own).
fn forward_into(
    batch: &StepBatch,
    decoder: &Decoder,
    kv: &mut KvCache,
    logits_out: &Tensor,
) -> Result<()> {
    let logits = decoder.forward(batch, kv)?; // [S, vocab] f32
    logits_out.slice_set(&logits, 0, 0)?;
    Ok(())
}

/// A bucket's buffer and the step batch of views into it.
fn bucket(
    size: usize,
    max_blocks: usize,
    block_size: usize,
    decoder: &Decoder,
    target_blocks: usize,
) -> Result<Bucket> {
    let dev: &Device = decoder.device();
    let meta = Tensor::zeros(size * (5 + max_blocks + PARAM_WORDS), DType::U32, dev)?;
    let col = |i: usize| meta.narrow(0, i * size, size);
    let rows = col(3)?;
    let decode = DecodeMeta {
        rows: rows.clone(),
        block_tables: meta
            .narrow(0, 5 * size, size * max_blocks)?
            .reshape((size, max_blocks))?,
        context_lens: col(4)?,
        max_context_len: max_blocks * block_size,
        block_size,
        sliding_window: decoder.config().sliding_window,
        partition_size: None,
        target_blocks,
    };
    let batch = StepBatch {
        input_ids: col(0)?,
        positions: col(1)?,
        slots: col(2)?,
        logits_indices: rows,
        decode: Some(decode),
        prefill: None,
        num_tokens: size,
        num_logits: size,
        decode_rows: (0..size as u32).collect(),
        decode_context_lens: vec![0; size],
        chunks: Vec::new(),
        block_size,
        sliding_window: decoder.config().sliding_window,
    };
    Ok(Bucket {
        size,
        #[cfg(feature = "cuda")]
        staging: pinned_pair(dev, meta.elem_count())?,
        #[cfg(feature = "cuda")]
        turn: 0,
        meta,
        batch,
        #[cfg(feature = "cuda")]
        graph: None,
    })
}

/// Two page-locked buffers of `len` words on CUDA (write-combined: the host only writes
/// them), none on the CPU.
#[cfg(feature = "cuda")]
fn pinned_pair(
    dev: &Device,
    len: usize,
) -> Result<Vec<candle_core::cuda::cudarc::driver::PinnedHostSlice<u32>>> {
    let Device::Cuda(d) = dev else {
        return Ok(Vec::new());
    };
    let ctx = d.cuda_stream().context().clone();
    (0..2)
        // SAFETY: a buffer is written whole (`fill`) before each copy reads it.
        .map(|_| unsafe { ctx.alloc_pinned::<u32>(len) }.map_err(|e| cuda_err("pinned alloc", e)))
        .collect()
}

#[cfg(feature = "cuda")]
fn cuda_err(
    what: &str,
    e: candle_core::cuda::cudarc::driver::DriverError,
) -> crate::error::EngineError {
    crate::error::EngineError::Internal(format!("CUDA graph {what}: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_capped_by_max_num_seqs_and_256() {
        assert_eq!(bucket_sizes(12), vec![1, 2, 4, 8, 12]);
        assert_eq!(bucket_sizes(256), BUCKETS.to_vec());
        assert_eq!(bucket_sizes(1000), BUCKETS.to_vec());
        assert_eq!(bucket_sizes(64), vec![1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(bucket_sizes(1), vec![1]);
        assert_eq!(bucket_sizes(0), vec![1]);
    }
}
