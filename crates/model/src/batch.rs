//! One step's batch: the scheduled sequences flattened to rows in one hop, with the
//! attention metadata both op sets read, validated and uploaded once per step.
//!
//! ```text
//!  seqs:  A (prefill chunk, 3 new tokens)   B (decode)   C (decode)
//!  rows:  0 1 2                              3            4
//!  slot:  paged::slot(A.table, block_size, p) for each row's position p
//!  decode  = DecodeMeta  { rows [3, 4], context_lens, padded block tables }
//!  prefill = PrefillMeta { query_start [0], query_len [3], context_len, tables }
//! ```
//! A sequence computing one token is a decode row (its query is the last position of
//! its context), several tokens a prefill chunk: the same attention with a different
//! query length. The per-layer ops only check the shapes of their tensors; everything
//! that depends on the batch's contents (block table capacity, row overlap, contexts)
//! is checked here, once.

use crate::{ModelError, Result};
use candle_core::{Device, Tensor};
use engine_kernels::paged;
use engine_kernels::paged_decode::DecodeMeta;
use engine_kernels::paged_prefill::PrefillMeta;

/// One sequence's share of a step, as the model runner sees it.
#[derive(Debug, Clone, Copy)]
pub struct SeqInput<'a> {
    /// Tokens to compute this step.
    pub tokens: &'a [u32],
    /// Tokens of this sequence already in the cache (the first new token's position).
    pub num_computed_tokens: usize,
    /// The sequence's blocks, enough for `num_computed_tokens + tokens.len()`.
    pub block_table: &'a [u32],
    /// Return logits for this sequence's last new token.
    pub want_logits: bool,
}

/// A prefill chunk's place in the batch (host copy; the op sets read it without a
/// device round trip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpan {
    pub query_start: usize,
    pub query_len: usize,
    /// Tokens in the cache after this step (cached + new).
    pub context_len: usize,
    /// Blocks of its table that hold the context.
    pub num_blocks: usize,
}

/// One forward step's inputs, on the device, and the host summary of its layout.
#[derive(Debug)]
pub struct StepBatch {
    pub input_ids: Tensor, // [T] u32
    pub positions: Tensor, // [T] u32
    /// [T] u32: each row's cache slot (`slot_mapping`).
    pub slots: Tensor,
    /// [S] u32: the rows whose logits are returned, in batch order.
    pub logits_indices: Tensor,
    /// The sequences computing one token (`None` when there are none).
    pub decode: Option<DecodeMeta>,
    /// The sequences computing several tokens.
    pub prefill: Option<PrefillMeta>,
    pub num_tokens: usize,
    pub num_logits: usize,
    /// Host copies: each decode row's row and context length, each chunk's span.
    pub decode_rows: Vec<u32>,
    pub decode_context_lens: Vec<u32>,
    pub chunks: Vec<ChunkSpan>,
    pub block_size: usize,
    pub sliding_window: Option<usize>,
}

/// Builds a [`StepBatch`] one sequence at a time (the runner pushes straight from the
/// scheduler's output; tests push [`SeqInput`]s).
#[derive(Debug)]
pub struct BatchBuilder<'a> {
    block_size: usize,
    sliding_window: Option<usize>,
    ids: Vec<u32>,
    positions: Vec<u32>,
    slots: Vec<u32>,
    logits_rows: Vec<u32>,
    decode_rows: Vec<u32>,
    decode_ctx: Vec<u32>,
    decode_tables: Vec<&'a [u32]>,
    chunks: Vec<ChunkSpan>,
    chunk_tables: Vec<&'a [u32]>,
}

impl<'a> BatchBuilder<'a> {
    pub fn new(block_size: usize, sliding_window: Option<usize>, num_tokens: usize) -> Self {
        Self {
            block_size,
            sliding_window,
            ids: Vec::with_capacity(num_tokens),
            positions: Vec::with_capacity(num_tokens),
            slots: Vec::with_capacity(num_tokens),
            logits_rows: Vec::new(),
            decode_rows: Vec::new(),
            decode_ctx: Vec::new(),
            decode_tables: Vec::new(),
            chunks: Vec::new(),
            chunk_tables: Vec::new(),
        }
    }

    /// Append one sequence's rows. Fails (naming the sequence) on an empty chunk, a
    /// block table too small for its context, or sizes past the 32-bit metadata.
    pub fn push(&mut self, s: SeqInput<'a>) -> Result<()> {
        let i = self.decode_rows.len() + self.chunks.len();
        let n = s.tokens.len();
        let context_len = s.num_computed_tokens + n;
        let num_blocks = context_len.div_ceil(self.block_size.max(1));
        if n == 0 {
            return Err(ModelError::Input(format!(
                "sequence {i} has no tokens to compute"
            )));
        }
        if self.block_size == 0 || s.block_table.len() < num_blocks {
            return Err(ModelError::Input(format!(
                "sequence {i}: {} blocks of {} cannot hold {context_len} tokens",
                s.block_table.len(),
                self.block_size
            )));
        }
        if context_len > u32::MAX as usize || self.ids.len() + n > u32::MAX as usize {
            return Err(ModelError::Input(format!(
                "sequence {i}: context {context_len} past the 32-bit metadata"
            )));
        }
        let query_start = self.ids.len();
        for (j, &t) in s.tokens.iter().enumerate() {
            let pos = s.num_computed_tokens + j;
            self.ids.push(t);
            self.positions.push(pos as u32);
            let slot = paged::slot(s.block_table, self.block_size, pos);
            self.slots.push(
                u32::try_from(slot).map_err(|_| {
                    ModelError::Input(format!("sequence {i}: slot {slot} past u32"))
                })?,
            );
        }
        if s.want_logits {
            self.logits_rows.push((self.ids.len() - 1) as u32);
        }
        let table = &s.block_table[..num_blocks];
        if n == 1 {
            self.decode_rows.push(query_start as u32);
            self.decode_ctx.push(context_len as u32);
            self.decode_tables.push(table);
        } else {
            self.chunks.push(ChunkSpan {
                query_start,
                query_len: n,
                context_len,
                num_blocks,
            });
            self.chunk_tables.push(table);
        }
        Ok(())
    }

    /// Upload the batch: ids, positions, slots, logits rows and both metas.
    pub fn finish(self, device: &Device) -> Result<StepBatch> {
        let (bs, window) = (self.block_size, self.sliding_window);
        let decode = match self.decode_rows.is_empty() {
            true => None,
            false => Some(DecodeMeta::new(
                &self.decode_rows,
                &self.decode_ctx,
                &self.decode_tables,
                bs,
                window,
                device,
            )?),
        };
        let prefill = match self.chunks.is_empty() {
            true => None,
            false => {
                let col = |f: fn(&ChunkSpan) -> usize| -> Vec<u32> {
                    self.chunks.iter().map(|c| f(c) as u32).collect()
                };
                Some(PrefillMeta::new(
                    &col(|c| c.query_start),
                    &col(|c| c.query_len),
                    &col(|c| c.context_len),
                    &self.chunk_tables,
                    bs,
                    window,
                    device,
                )?)
            }
        };
        let (num_tokens, num_logits) = (self.ids.len(), self.logits_rows.len());
        Ok(StepBatch {
            input_ids: Tensor::from_vec(self.ids, num_tokens, device)?,
            positions: Tensor::from_vec(self.positions, num_tokens, device)?,
            slots: Tensor::from_vec(self.slots, num_tokens, device)?,
            logits_indices: Tensor::from_vec(self.logits_rows, num_logits, device)?,
            decode,
            prefill,
            num_tokens,
            num_logits,
            decode_rows: self.decode_rows,
            decode_context_lens: self.decode_ctx,
            chunks: self.chunks,
            block_size: bs,
            sliding_window: window,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq<'a>(tokens: &'a [u32], computed: usize, table: &'a [u32]) -> SeqInput<'a> {
        SeqInput {
            tokens,
            num_computed_tokens: computed,
            block_table: table,
            want_logits: true,
        }
    }

    #[test]
    fn rows_slots_and_metas_follow_the_sequences() -> Result<()> {
        let dev = Device::Cpu;
        let mut b = BatchBuilder::new(4, None, 5);
        b.push(seq(&[5, 6, 7], 2, &[7, 2]))?; // positions 2, 3, 4: slots 30, 31, 8
        b.push(seq(&[9], 9, &[1, 3, 0]))?; // position 9: block 0, slot 1
        let batch = b.finish(&dev)?;
        assert_eq!(batch.slots.to_vec1::<u32>()?, vec![30, 31, 8, 1]);
        assert_eq!(batch.positions.to_vec1::<u32>()?, vec![2, 3, 4, 9]);
        assert_eq!(batch.logits_indices.to_vec1::<u32>()?, vec![2, 3]);
        let d = batch.decode.as_ref().expect("one decode row");
        assert_eq!(d.rows.to_vec1::<u32>()?, vec![3]);
        assert_eq!(batch.decode_context_lens, vec![10]);
        assert_eq!(
            batch.chunks,
            vec![ChunkSpan {
                query_start: 0,
                query_len: 3,
                context_len: 5,
                num_blocks: 2
            }]
        );
        Ok(())
    }

    #[test]
    fn rejects_empty_chunks_and_short_tables() {
        let mut b = BatchBuilder::new(4, None, 4);
        let err = b.push(seq(&[], 0, &[0])).unwrap_err().to_string();
        assert!(err.contains("no tokens"), "{err}");
        let err = b.push(seq(&[1, 2], 4, &[0])).unwrap_err().to_string();
        assert!(err.contains("cannot hold 6 tokens"), "{err}");
    }
}
