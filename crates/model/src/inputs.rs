//! One forward step's inputs: the batch flattened to rows, with the attention metadata
//! the chosen kernel set needs, uploaded once per step.
//!
//! ```text
//!  seqs:  A (prefill chunk, 3 new tokens)   B (decode)   C (decode)
//!  rows:  0 1 2                              3            4
//!  slot:  A.table[p / bs] * bs + p % bs for each row's position p
//! ```
//! Candle path: a slot index for `scatter_set`, a padded block-table gather for the
//! decoding rows and one block table per prefilling sequence. Fused path: the slots
//! and the decode/prefill metadata of engine-kernels' paged attention.

use crate::attention::{DecodeBatch, SeqSlice};
use crate::{ModelError, Result};
use candle_core::{Device, Tensor};
use engine_kernels::paged_decode::DecodeMeta;
use engine_kernels::paged_prefill::PrefillMeta;
use engine_kernels::KernelChoice;

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

/// Attention inputs of the candle path.
#[derive(Debug)]
pub struct CandleAttn {
    /// [T, kv_heads * head_dim] u32: each row's slot, repeated (for `scatter_set`).
    pub slot_index: Tensor,
    /// Sequences computing several tokens (prefill chunks), attended one at a time.
    pub seqs: Vec<SeqSlice>,
    /// Sequences computing one token, attended together.
    pub decode: Option<DecodeBatch>,
    /// Row r of the attention output sits at `row_order[r]` of [decode rows, seqs' rows].
    pub row_order: Option<Tensor>,
}

/// Attention inputs of the fused path.
#[derive(Debug)]
pub struct FusedAttn {
    /// [T] u32: each row's slot (for `reshape_and_cache`).
    pub slots: Tensor,
    pub decode: Option<DecodeMeta>,
    pub prefill: Option<PrefillMeta>,
}

#[derive(Debug)]
pub enum AttnInputs {
    Candle(CandleAttn),
    Fused(FusedAttn),
}

/// One forward step's inputs, already on the device.
#[derive(Debug)]
pub struct ForwardInputs {
    pub input_ids: Tensor,      // [T] u32
    pub positions: Tensor,      // [T] u32
    pub logits_indices: Tensor, // [S] u32: rows whose logits are returned
    pub attn: AttnInputs,
}

/// Host-side layout of a batch before upload (block tables borrowed from the inputs).
struct HostBatch<'a> {
    ids: Vec<u32>,
    positions: Vec<u32>,
    slots: Vec<u32>,
    logits_rows: Vec<u32>,
    /// (row, context_len, block_table) of each decoding sequence.
    decode: Vec<(u32, usize, &'a [u32])>,
    prefill: Vec<PrefillSeq<'a>>,
}

/// A sequence computing several tokens this step.
struct PrefillSeq<'a> {
    query_start: usize,
    query_len: usize,
    context_len: usize,
    table: &'a [u32],
}

impl<'a> HostBatch<'a> {
    fn new(seqs: &[SeqInput<'a>], block_size: usize) -> Result<Self> {
        let total: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        let mut b = HostBatch {
            ids: Vec::with_capacity(total),
            positions: Vec::with_capacity(total),
            slots: Vec::with_capacity(total),
            logits_rows: Vec::new(),
            decode: Vec::new(),
            prefill: Vec::new(),
        };
        for (i, s) in seqs.iter().enumerate() {
            if s.tokens.is_empty() {
                return Err(ModelError::Input(format!(
                    "sequence {i} has no tokens to compute"
                )));
            }
            let context_len = s.num_computed_tokens + s.tokens.len();
            if s.block_table.len() * block_size < context_len {
                return Err(ModelError::Input(format!(
                    "sequence {i}: {} blocks of {block_size} cannot hold {context_len} tokens",
                    s.block_table.len()
                )));
            }
            let query_start = b.ids.len();
            for (j, &t) in s.tokens.iter().enumerate() {
                let pos = s.num_computed_tokens + j;
                b.ids.push(t);
                b.positions.push(pos as u32);
                b.slots.push(
                    s.block_table[pos / block_size] * block_size as u32 + (pos % block_size) as u32,
                );
            }
            if s.want_logits {
                b.logits_rows.push((b.ids.len() - 1) as u32);
            }
            let table = s.block_table;
            match s.tokens.len() {
                1 => b.decode.push((query_start as u32, context_len, table)),
                n => b.prefill.push(PrefillSeq {
                    query_start,
                    query_len: n,
                    context_len,
                    table,
                }),
            }
        }
        Ok(b)
    }

    fn candle(
        &self,
        block_size: usize,
        kv_width: usize,
        window: Option<usize>,
        device: &Device,
    ) -> Result<CandleAttn> {
        let total = self.ids.len();
        let seqs = self
            .prefill
            .iter()
            .map(|p| {
                Ok(SeqSlice {
                    query_start: p.query_start,
                    query_len: p.query_len,
                    context_len: p.context_len,
                    block_table: Tensor::new(p.table, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Attention emits decode rows first, then each prefill sequence's rows.
        let mut order = vec![0u32; total];
        let emitted = self.decode.iter().map(|d| d.0 as usize).chain(
            self.prefill
                .iter()
                .flat_map(|p| p.query_start..p.query_start + p.query_len),
        );
        for (pos, row) in emitted.enumerate() {
            order[row] = pos as u32;
        }
        let identity = order.iter().enumerate().all(|(i, &p)| i as u32 == p);
        let row_order = match identity {
            true => None,
            false => Some(Tensor::from_vec(order, total, device)?),
        };
        let slot_index = Tensor::new(self.slots.as_slice(), device)?
            .reshape((total, 1))?
            .broadcast_as((total, kv_width))?
            .contiguous()?;
        let decode = match self.decode.is_empty() {
            true => None,
            false => Some(DecodeBatch::build(
                &self.decode,
                block_size,
                window,
                device,
            )?),
        };
        Ok(CandleAttn {
            slot_index,
            seqs,
            decode,
            row_order,
        })
    }

    fn fused(
        &self,
        block_size: usize,
        window: Option<usize>,
        device: &Device,
    ) -> Result<FusedAttn> {
        let decode = match self.decode.is_empty() {
            true => None,
            false => {
                let rows: Vec<u32> = self.decode.iter().map(|d| d.0).collect();
                let ctx: Vec<u32> = self.decode.iter().map(|d| d.1 as u32).collect();
                let tables: Vec<&[u32]> = self.decode.iter().map(|d| d.2).collect();
                Some(DecodeMeta::new(
                    &rows, &ctx, &tables, block_size, window, device,
                )?)
            }
        };
        let prefill = match self.prefill.is_empty() {
            true => None,
            false => {
                let col = |f: fn(&PrefillSeq<'a>) -> usize| -> Vec<u32> {
                    self.prefill.iter().map(|p| f(p) as u32).collect()
                };
                let tables: Vec<&[u32]> = self.prefill.iter().map(|p| p.table).collect();
                Some(PrefillMeta::new(
                    &col(|p| p.query_start),
                    &col(|p| p.query_len),
                    &col(|p| p.context_len),
                    &tables,
                    block_size,
                    window,
                    device,
                )?)
            }
        };
        Ok(FusedAttn {
            slots: Tensor::new(self.slots.as_slice(), device)?,
            decode,
            prefill,
        })
    }
}

/// What [`ForwardInputs::build`] needs to know about the model.
#[derive(Debug, Clone, Copy)]
pub struct BatchLayout {
    pub block_size: usize,
    /// `num_kv_heads * head_dim`.
    pub kv_width: usize,
    pub sliding_window: Option<usize>,
    /// Resolved: `Candle` or `Fused`.
    pub kernels: KernelChoice,
}

impl ForwardInputs {
    /// Flatten sequences into one batch: ids, positions, slots, attention metadata.
    pub fn build(seqs: &[SeqInput], layout: BatchLayout, device: &Device) -> Result<Self> {
        let host = HostBatch::new(seqs, layout.block_size)?;
        let attn = match layout.kernels {
            KernelChoice::Fused => {
                AttnInputs::Fused(host.fused(layout.block_size, layout.sliding_window, device)?)
            }
            _ => AttnInputs::Candle(host.candle(
                layout.block_size,
                layout.kv_width,
                layout.sliding_window,
                device,
            )?),
        };
        let n_logits = host.logits_rows.len();
        Ok(Self {
            input_ids: Tensor::new(host.ids.as_slice(), device)?,
            positions: Tensor::new(host.positions.as_slice(), device)?,
            logits_indices: Tensor::from_vec(host.logits_rows, n_logits, device)?,
            attn,
        })
    }

    /// Rows (tokens) in the batch.
    pub fn num_tokens(&self) -> Result<usize> {
        Ok(self.input_ids.dim(0)?)
    }
}
