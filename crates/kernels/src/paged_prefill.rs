//! Varlen causal prefill attention over the paged KV cache, flash-attention style
//! (kernels/paged_prefill.cu): tiles of 16 query rows loop over tiles of 32 keys with an
//! online softmax, so the `[query_len, context_len]` score matrix never exists and a chunk
//! after a cached prefix (chunked prefill) is the same computation.
//!
//! The CPU port (`paged_prefill_cpu.rs`) runs the same tiling, key-tile ranges, masking
//! and online softmax in f32; the reference is a full softmax per query row.
//! Tolerance: f32 2e-5 of the output's scale (the summation order differs from the
//! reference's, the scores are exp2 of log2(e)-prescaled values), f16/bf16
//! [`harness::tolerance`] (the kernel rounds once, on store).

use crate::cpu::{self, with_float};
use crate::error::{input_err, same_device, shares_storage, Result};
#[cfg(feature = "cuda")]
use crate::functions::Func;
use crate::functions::Kernels;
use crate::paged::QueryRows;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, InplaceOp3, Layout, Tensor};

#[path = "paged_prefill_cpu.rs"]
mod cpu_port;
#[path = "paged_prefill_spec.rs"]
mod spec;
pub use cpu_port::{reference, HostBatch};
pub use spec::Spec;

/// Query rows per tile (CUDA: one block; 4 warps of 4 rows).
const BM: usize = 16;
/// Keys per tile (CUDA: one per lane).
const BN: usize = 32;
const MAX_HEAD_DIM: usize = 256;

/// The prefilling sequences of a batch (one or more new tokens each, their K/V already
/// written to the cache).
#[derive(Debug, Clone)]
pub struct PrefillMeta {
    /// [S] u32: first row of each sequence's new tokens in q / out.
    pub query_start: Tensor,
    /// [S] u32: new tokens this step (>= 1).
    pub query_len: Tensor,
    /// [S] u32: tokens in the cache after this step (cached + new); new token i of a
    /// sequence sits at position context_len - query_len + i.
    pub context_len: Tensor,
    /// [S, max_blocks] u32 (padding entries never read).
    pub block_tables: Tensor,
    /// Host copy: sizes the grid.
    pub max_query_len: usize,
    pub block_size: usize,
    /// Key j visible from query position p iff j <= p and p - j < W (Hugging Face).
    pub sliding_window: Option<usize>,
    /// Host summaries [`paged_prefill`] checks against q / the cache: one past the last
    /// row of any sequence, one past the largest block id any sequence reads. (Build with
    /// [`PrefillMeta::new`]; changing the public fields afterwards voids these.)
    rows_end: usize,
    blocks_end: usize,
}

impl PrefillMeta {
    /// Build from host data (one entry per sequence), with the tensors on `device`.
    pub fn new<B: AsRef<[u32]>>(
        query_start: &[u32],
        query_len: &[u32],
        context_len: &[u32],
        block_tables: &[B],
        block_size: usize,
        sliding_window: Option<usize>,
        device: &Device,
    ) -> Result<Self> {
        let s = query_start.len();
        if query_len.len() != s || context_len.len() != s || block_tables.len() != s {
            input_err!(
                "paged_prefill: {s} query_start, {} query_len, {} context_len, {} block_tables: \
                 expected one of each per sequence",
                query_len.len(),
                context_len.len(),
                block_tables.len()
            );
        }
        if s > 65535 {
            input_err!("paged_prefill: {s} sequences, at most 65535 (grid y)");
        }
        if block_size == 0 || block_size > i32::MAX as usize {
            input_err!("paged_prefill: block_size {block_size} must be in 1..=i32::MAX");
        }
        if sliding_window == Some(0) {
            input_err!("paged_prefill: sliding_window must be > 0 (None for no window)");
        }
        let (mut rows_end, mut blocks_end) = (0usize, 0usize);
        let mut spans = Vec::with_capacity(s);
        for i in 0..s {
            let (start, n, ctx) = (
                query_start[i] as usize,
                query_len[i] as usize,
                context_len[i] as usize,
            );
            let table = block_tables[i].as_ref();
            if n == 0 {
                input_err!("paged_prefill: sequence {i} has query_len 0 (expected >= 1 new token)");
            }
            if n > ctx {
                input_err!("paged_prefill: sequence {i} has query_len {n} > context_len {ctx}");
            }
            if ctx > i32::MAX as usize || start + n > i32::MAX as usize {
                input_err!(
                    "paged_prefill: sequence {i}: context_len {ctx} / rows {start}+{n} exceed i32"
                );
            }
            let needed = ctx.div_ceil(block_size);
            if table.len() < needed {
                input_err!(
                    "paged_prefill: sequence {i}: context_len {ctx} needs {needed} blocks of \
                     {block_size}, its block table has {}",
                    table.len()
                );
            }
            if let Some(&b) = table[..needed].iter().max() {
                blocks_end = blocks_end.max(b as usize + 1);
            }
            rows_end = rows_end.max(start + n);
            spans.push((start, start + n, i));
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                input_err!(
                    "paged_prefill: the rows of sequences {} and {} overlap",
                    w[0].2,
                    w[1].2
                );
            }
        }
        let (tables, max_blocks) = crate::paged::pad_tables(block_tables);
        Ok(Self {
            query_start: Tensor::from_slice(query_start, s, device)?,
            query_len: Tensor::from_slice(query_len, s, device)?,
            context_len: Tensor::from_slice(context_len, s, device)?,
            block_tables: Tensor::from_vec(tables, (s, max_blocks), device)?,
            max_query_len: query_len.iter().map(|&n| n as usize).max().unwrap_or(0),
            block_size,
            sliding_window,
            rows_end,
            blocks_end,
        })
    }

    /// Number of sequences.
    pub fn num_seqs(&self) -> usize {
        self.query_start.elem_count()
    }
}

/// Write attention outputs of the prefilling rows into `out`.
/// `q`: [T, heads, d]; `out`: [T, heads * d] or [T, heads, d], contiguous, same dtype,
/// modified only at the sequences' rows; `k_cache`, `v_cache`: [num_slots, kv_heads * d]
/// (or [num_slots, kv_heads, d]), contiguous. d a multiple of 8, at most 256.
pub fn paged_prefill(
    out: &Tensor,
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    meta: &PrefillMeta,
) -> Result<()> {
    let (t, heads, head_dim) = match q.dims() {
        &[t, h, d] => (t, h, d),
        dims => input_err!("paged_prefill: q is {dims:?}, expected [tokens, heads, head_dim]"),
    };
    let rows = q.contiguous()?.reshape((t, heads * head_dim))?;
    let q = QueryRows {
        rows: &rows,
        heads,
        head_dim,
    };
    paged_prefill_rows(out, q, k_cache, v_cache, meta)
}

/// [`paged_prefill`] with the queries read in place from rows of a wider matrix (the
/// fused qkv output): `q.rows` [T, width] with `q.heads` heads of `q.head_dim` first.
pub fn paged_prefill_rows(
    out: &Tensor,
    q: QueryRows,
    k_cache: &Tensor,
    v_cache: &Tensor,
    meta: &PrefillMeta,
) -> Result<()> {
    Kernels::NONE.paged_prefill_rows(out, q, k_cache, v_cache, meta)
}

impl Kernels {
    /// [`paged_prefill_rows`] launched from this table.
    pub fn paged_prefill_rows(
        &self,
        out: &Tensor,
        q: QueryRows,
        k_cache: &Tensor,
        v_cache: &Tensor,
        meta: &PrefillMeta,
    ) -> Result<()> {
        let (heads, d) = (q.heads, q.head_dim);
        let q = q.rows;
        let (kv_heads, q_stride) = check_tensors(out, q, k_cache, v_cache, meta, heads, d)?;
        if meta.num_seqs() == 0 || meta.max_query_len == 0 {
            return Ok(());
        }
        let op = PagedPrefill {
            kernels: self,
            v_cache: v_cache.clone(),
            meta: meta.clone(),
            heads,
            kv_heads,
            head_dim: d,
            q_stride,
        };
        Ok(out.inplace_op3(q, k_cache, &op)?)
    }
}

/// The tensors' dtypes, shapes, devices and layouts against the metadata's host-side
/// extents (no data is read). Returns (kv_heads, q's row stride).
fn check_tensors(
    out: &Tensor,
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    meta: &PrefillMeta,
    heads: usize,
    d: usize,
) -> Result<(usize, usize)> {
    let dtype = q.dtype();
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        input_err!("paged_prefill: q is {dtype:?}, expected f32, f16 or bf16");
    }
    for (name, t) in [
        ("out", out),
        ("k_cache", k_cache),
        ("v_cache", v_cache),
        ("q", q),
    ] {
        if t.dtype() != dtype {
            input_err!(
                "paged_prefill: q is {dtype:?} but {name} is {:?}",
                t.dtype()
            );
        }
        same_device("paged_prefill", ("q", q), &[(name, t)])?;
        if !t.is_contiguous() {
            input_err!("paged_prefill: {name} must be contiguous");
        }
    }
    let (t, q_stride) = match q.dims() {
        &[t, w] if w >= heads * d => (t, w),
        dims => input_err!(
            "paged_prefill: q rows {dims:?} must be [tokens, width] with width >= {heads} heads x {d}"
        ),
    };
    if d == 0 || !d.is_multiple_of(8) || d > MAX_HEAD_DIM {
        input_err!(
            "paged_prefill: head_dim {d} unsupported (a multiple of 8, at most {MAX_HEAD_DIM})"
        );
    }
    if heads == 0 || heads > 65535 {
        input_err!("paged_prefill: {heads} heads, expected 1..=65535");
    }
    if out.dims().first() != Some(&t) || out.elem_count() != t * heads * d {
        input_err!(
            "paged_prefill: out is {:?}, expected [{t}, {}]",
            out.dims(),
            heads * d,
        );
    }
    let num_slots = k_cache.dims().first().copied().unwrap_or(0);
    if !matches!(k_cache.rank(), 2 | 3) || num_slots == 0 {
        input_err!(
            "paged_prefill: k_cache is {:?}, expected [num_slots, kv_heads * head_dim]",
            k_cache.dims()
        );
    }
    if v_cache.dims() != k_cache.dims() {
        input_err!(
            "paged_prefill: v_cache {:?} and k_cache {:?} differ",
            v_cache.dims(),
            k_cache.dims()
        );
    }
    let width = k_cache.elem_count() / num_slots;
    if width == 0 || !width.is_multiple_of(d) {
        input_err!("paged_prefill: cache rows of {width} are not kv_heads x head_dim {d}");
    }
    let kv_heads = width / d;
    if !heads.is_multiple_of(kv_heads) {
        input_err!("paged_prefill: {heads} query heads are not a multiple of {kv_heads} kv heads");
    }
    for (name, m) in [
        ("query_start", &meta.query_start),
        ("query_len", &meta.query_len),
        ("context_len", &meta.context_len),
        ("block_tables", &meta.block_tables),
    ] {
        if m.dtype() != DType::U32 || !m.is_contiguous() || !m.device().same_device(q.device()) {
            input_err!("paged_prefill: meta.{name} must be contiguous u32 on q's device");
        }
    }
    if meta.rows_end > t {
        input_err!(
            "paged_prefill: the sequences' rows reach {} but q has {t} rows",
            meta.rows_end
        );
    }
    if meta.blocks_end * meta.block_size > num_slots {
        input_err!(
            "paged_prefill: a block table names block {} but the cache holds {} blocks of {}",
            meta.blocks_end - 1,
            num_slots / meta.block_size,
            meta.block_size
        );
    }
    let held = [
        v_cache,
        &meta.query_start,
        &meta.query_len,
        &meta.context_len,
        &meta.block_tables,
    ];
    if held
        .iter()
        .chain([q, k_cache].iter())
        .any(|t| shares_storage(t, out))
    {
        input_err!("paged_prefill: out shares storage with an input");
    }
    Ok((kv_heads, q_stride))
}

/// The op on `out` with operands (q, k_cache); it holds v_cache and the meta tensors.
struct PagedPrefill<'a> {
    /// The function table the launch uses ([`Kernels::NONE`]: looked up at the launch).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    kernels: &'a Kernels,
    v_cache: Tensor,
    meta: PrefillMeta,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Elements between two query rows (>= heads * head_dim).
    q_stride: usize,
}

impl InplaceOp3 for PagedPrefill<'_> {
    fn name(&self) -> &'static str {
        "paged_prefill"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
    ) -> candle_core::Result<()> {
        let batch = cpu_port::host_batch(&self.meta, self.heads, self.kv_heads, self.head_dim)?;
        with_float!(dst.dtype(), T => {
            let (q, k) = (cpu::slice::<T>(qs, ql)?, cpu::slice::<T>(ks, kl)?);
            let out = cpu::slice_mut::<T>(dst, dst_l)?;
            cpu::with_host::<T, _>(&self.v_cache, |v| {
                cpu_port::run(out, (q, self.q_stride), k, v, &batch);
                Ok(())
            })
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        dst: &mut candle_core::CudaStorage,
        dst_l: &Layout,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
    ) -> candle_core::Result<()> {
        use crate::cuda;
        use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
        let m = &self.meta;
        let dev = dst.device.clone();
        let (o, q, k) = (
            cuda::ptr(dst, dst_l)?,
            cuda::ptr(qs, ql)?,
            cuda::ptr(ks, kl)?,
        );
        let v = cuda::tensor_ptr(&self.v_cache)?;
        let (starts, lens) = (
            cuda::tensor_ptr(&m.query_start)?,
            cuda::tensor_ptr(&m.query_len)?,
        );
        let (ctxs, tables) = (
            cuda::tensor_ptr(&m.context_len)?,
            cuda::tensor_ptr(&m.block_tables)?,
        );
        let f = self.kernels.get(&dev, Func::PagedPrefill, dst.dtype())?;
        let d = self.head_dim;
        let cfg = LaunchConfig {
            grid_dim: (
                m.max_query_len.div_ceil(BM) as u32,
                m.num_seqs() as u32,
                self.heads as u32,
            ),
            block_dim: (128, 1, 1),
            shared_mem_bytes: ((BM + BN) * d * 4) as u32,
        };
        let max_blocks = m.block_tables.dims().get(1).copied().unwrap_or(1) as i32;
        let window = m.sliding_window.map_or(0, |w| w.min(i32::MAX as usize)) as i32;
        let scale_log2 = std::f32::consts::LOG2_E / (d as f32).sqrt();
        let mut b = f.builder();
        candle_core::builder_arg!(
            b,
            o,
            q,
            k,
            v,
            starts,
            lens,
            ctxs,
            tables,
            max_blocks,
            self.heads as i32,
            self.kv_heads as i32,
            d as i32,
            m.block_size as i32,
            window,
            self.q_stride as i64,
            scale_log2
        );
        // SAFETY: the wrapper checked shapes, dtypes and contiguity: q and out hold
        // rows_end <= T rows of heads * d, the caches num_slots rows of kv_heads * d with
        // every block id the tables use (first ceil(context_len / block_size) entries) in
        // range, the meta tensors S (x max_blocks) u32; (BM + BN) * d * 4 <= 48 KiB of
        // dynamic shared memory (d <= 256); q rows are q_stride apart (>= heads * d). The
        // signature matches paged_prefill.cu.
        unsafe { b.launch(cfg) }
            .map_err(|e| candle_core::Error::Msg(format!("paged_prefill: {e:?}")))?;
        Ok(())
    }
}
