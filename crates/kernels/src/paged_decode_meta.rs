//! The metadata of a paged-decode call ([`DecodeMeta`], checked once when built), the
//! choice of split-K partition size from the batch ([`auto_partition_size`]), and the
//! per-call checks of the tensors' shapes against it (no data read).

use super::{MIN_PARTITION_SIZE, PARTITION_SIZE};
use crate::error::{input_err, same_device, shares_storage, Result};
use candle_core::{DType, Device, Tensor};

/// The decoding sequences of a batch: one query row each.
#[derive(Debug, Clone)]
pub struct DecodeMeta {
    /// [B] u32: each sequence's query row in q / out.
    pub rows: Tensor,
    /// [B, max_blocks] u32 (entries past a sequence's blocks are padding, never read).
    pub block_tables: Tensor,
    /// [B] u32: tokens in the cache for this sequence, >= 1 (includes the current token,
    /// already written to the cache).
    pub context_lens: Tensor,
    /// Host copy of max(context_lens): sizes the split.
    pub max_context_len: usize,
    pub block_size: usize,
    /// Key j is visible from query position p = ctx - 1 iff p - j < W (Hugging Face).
    pub sliding_window: Option<usize>,
    /// Tokens per split-K partition (any >= 1); `None`: chosen per launch by
    /// [`auto_partition_size`] so that the grid fills the device.
    pub partition_size: Option<usize>,
    /// Thread blocks that fill the device (2 per SM on CUDA, 0 on the CPU, where the
    /// partition stays [`PARTITION_SIZE`]).
    pub target_blocks: usize,
}

impl DecodeMeta {
    /// Build the tensors from host data (tables padded with block 0, never read).
    /// Checks: same lengths, distinct rows, every context in 1..=its table's capacity,
    /// block_size >= 1, window >= 1.
    pub fn new<B: AsRef<[u32]>>(
        rows: &[u32],
        context_lens: &[u32],
        block_tables: &[B],
        block_size: usize,
        sliding_window: Option<usize>,
        device: &Device,
    ) -> Result<Self> {
        let b = rows.len();
        if context_lens.len() != b || block_tables.len() != b {
            input_err!(
                "paged_decode: {b} rows but {} context_lens and {} block_tables",
                context_lens.len(),
                block_tables.len()
            );
        }
        if block_size == 0 {
            input_err!("paged_decode: block_size must be >= 1");
        }
        if sliding_window == Some(0) {
            input_err!("paged_decode: sliding_window must be >= 1 (None for no window)");
        }
        let mut sorted = rows.to_vec();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            input_err!("paged_decode: row {} appears twice in rows", w[0]);
        }
        for (i, (&ctx, table)) in context_lens.iter().zip(block_tables).enumerate() {
            let table = table.as_ref();
            let cap = table.len() * block_size;
            if ctx == 0 || ctx as usize > cap {
                input_err!(
                    "paged_decode: context_lens[{i}] = {ctx}: must be in 1..={cap} (its block \
                     table has {} blocks of {block_size})",
                    table.len()
                );
            }
        }
        let (tables, max_blocks) = crate::paged::pad_tables(block_tables);
        Ok(Self {
            rows: Tensor::from_slice(rows, b, device)?,
            block_tables: Tensor::from_vec(tables, (b, max_blocks), device)?,
            context_lens: Tensor::from_slice(context_lens, b, device)?,
            max_context_len: context_lens.iter().copied().max().unwrap_or(0) as usize,
            block_size,
            sliding_window,
            partition_size: None,
            target_blocks: crate::device_sm_count(device)? * 2,
        })
    }
}

/// Tokens per partition so that the grid holds about `target_blocks` thread blocks:
/// batch 1 and 8 split their contexts finer than large batches, which fill the device
/// with sequences alone. `blocks_per_part`: blocks one partition of every sequence takes
/// (batch x kv heads x head tiles). A multiple of 32 in
/// [`MIN_PARTITION_SIZE`]..=[`PARTITION_SIZE`]; `PARTITION_SIZE` when `target_blocks`
/// is 0 (the CPU).
pub fn auto_partition_size(
    blocks_per_part: usize,
    max_context_len: usize,
    target_blocks: usize,
) -> usize {
    if target_blocks == 0 || blocks_per_part == 0 {
        return PARTITION_SIZE;
    }
    let parts = target_blocks.div_ceil(blocks_per_part).max(1);
    let size = max_context_len.div_ceil(parts).div_ceil(32) * 32;
    size.clamp(MIN_PARTITION_SIZE, PARTITION_SIZE)
}

/// Sizes read off the tensors of one call.
pub(super) struct Shapes {
    pub(super) num_tokens: usize,
    pub(super) q_stride: usize,
    pub(super) num_slots: usize,
    pub(super) kv_heads: usize,
    pub(super) b: usize,
    pub(super) max_blocks: usize,
}

/// The tensors' dtypes, shapes, devices and layouts (no data is read).
pub(super) fn check_shapes(
    out: &Tensor,
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    meta: &DecodeMeta,
    heads: usize,
    d: usize,
) -> Result<Shapes> {
    let dtype = q.dtype();
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        input_err!("paged_decode: q is {dtype:?}; expected f32, f16 or bf16");
    }
    for (name, t) in [("out", out), ("k_cache", k_cache), ("v_cache", v_cache)] {
        if t.dtype() != dtype {
            input_err!("paged_decode: q is {dtype:?} but {name} is {:?}", t.dtype());
        }
    }
    let (num_tokens, q_stride) = match q.dims() {
        &[t, w] if w >= heads * d && heads > 0 => (t, w),
        s => input_err!(
            "paged_decode: q rows {s:?} must be [tokens, width] with width >= {heads} heads x {d}"
        ),
    };
    if !d.is_multiple_of(8) || d == 0 || d > 256 {
        input_err!("paged_decode: head_dim {d} must be a multiple of 8 in 8..=256");
    }
    if !matches!(out.dims(), &[t, w] if t == num_tokens && w == heads * d)
        && out.dims() != [num_tokens, heads, d]
    {
        input_err!(
            "paged_decode: out has shape {:?}; expected [{num_tokens}, {}] or [{num_tokens}, {heads}, {d}]",
            out.dims(),
            heads * d,
        );
    }
    let (num_slots, width) = match k_cache.dims() {
        &[s, w] => (s, w),
        s => input_err!(
            "paged_decode: k_cache has shape {s:?}; expected [num_slots, kv_heads * head_dim]"
        ),
    };
    if v_cache.dims() != k_cache.dims() {
        input_err!(
            "paged_decode: k_cache {:?} and v_cache {:?} differ",
            k_cache.dims(),
            v_cache.dims()
        );
    }
    if width % d != 0 || width == 0 || !heads.is_multiple_of(width / d) {
        input_err!(
            "paged_decode: cache width {width} is not kv_heads * {d} with kv_heads dividing {heads} heads"
        );
    }
    let kv_heads = width / d;
    let (b, max_blocks) = match (
        meta.rows.dims(),
        meta.context_lens.dims(),
        meta.block_tables.dims(),
    ) {
        (&[b], &[c], &[n, m]) if c == b && n == b => (b, m),
        (r, c, t) => input_err!(
            "paged_decode: rows {r:?}, context_lens {c:?}, block_tables {t:?}: expected [B], [B], \
             [B, max_blocks]"
        ),
    };
    let named = [("out", out), ("k_cache", k_cache), ("v_cache", v_cache)];
    let metas = [
        ("rows", &meta.rows),
        ("block_tables", &meta.block_tables),
        ("context_lens", &meta.context_lens),
    ];
    let [n0, n1, n2] = named;
    let [m0, m1, m2] = metas;
    same_device("paged_decode", ("q", q), &[n0, n1, n2, m0, m1, m2])?;
    for (name, t) in metas {
        if t.dtype() != DType::U32 {
            input_err!("paged_decode: {name} is {:?}; expected u32", t.dtype());
        }
    }
    for (name, t) in named {
        if !t.is_contiguous() {
            input_err!("paged_decode: {name} must be contiguous");
        }
    }
    if shares_storage(out, v_cache) {
        input_err!("paged_decode: out shares storage with v_cache");
    }
    Ok(Shapes {
        num_tokens,
        q_stride,
        num_slots,
        kv_heads,
        b,
        max_blocks,
    })
}
