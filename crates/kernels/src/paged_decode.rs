//! Paged-attention decode with split-K over the context (kernels/paged_decode.cu).
//!
//! Each decoding sequence has one query row; its context lives in the paged KV cache
//! (`slot = block_table[pos / block_size] * block_size + pos % block_size`, see
//! crates/model/src/kv_cache.rs). The context is cut into partitions of
//! `partition_size` absolute positions; each (sequence, kv head, partition) computes a
//! partial softmax (max, sum of exp, normalized output) for all query heads of the kv
//! head's GQA group, so each K/V row is read once, and a second pass merges a sequence's
//! partitions (`w_i = sum_i * exp(max_i - max)`). A sequence that owns one partition is
//! written directly. The CPU port (`paged_decode_cpu.rs`) follows the same partitioning
//! and merge; the reference is plain loops.

use crate::cpu::{self, with_float};
use crate::error::{input_err, Result};
#[cfg(feature = "cuda")]
use crate::functions::Func;
use crate::functions::Kernels;
use crate::paged::QueryRows;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, InplaceOp3, Layout, Tensor};

#[path = "paged_decode_cpu.rs"]
mod cpu_port;
#[path = "paged_decode_meta.rs"]
mod meta;
#[path = "paged_decode_spec.rs"]
mod spec;
pub use cpu_port::{reference, Geometry};
pub use meta::{auto_partition_size, DecodeMeta};
use meta::{check_shapes, Shapes};
pub use spec::Spec;

/// The largest split-K partition (tokens), and the partition when the device's size is
/// unknown (the CPU).
pub const PARTITION_SIZE: usize = 512;
/// The smallest partition [`auto_partition_size`] picks: below this the merge of the
/// partials costs more than the parallelism brings.
pub const MIN_PARTITION_SIZE: usize = 64;
/// Threads per block of the CUDA kernel (fixed: the smem layout depends on it).
const THREADS: usize = 128;
/// Query heads one block handles at most (a GQA group larger than this is tiled).
const MAX_HEAD_TILE: usize = 8;
/// Dynamic shared memory a block may use without opting in (48 KB).
const MAX_SHARED_BYTES: usize = 48 * 1024;

/// Sizes of one call, shared by the CPU port and the launch.
#[derive(Debug, Clone, Copy)]
struct Params {
    batch: usize,
    num_tokens: usize,
    /// Elements between two query rows (>= heads * head_dim).
    q_stride: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    max_blocks: usize,
    /// 0: no window.
    window: usize,
    partition_size: usize,
    num_parts: usize,
    /// Contexts are at most this: min(max_blocks * block_size, num_parts * partition_size).
    ctx_cap: usize,
    /// Query heads per block (a tile of the group), <= MAX_HEAD_TILE.
    head_tile: usize,
}

impl Params {
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // the CPU port does not tile
    fn ntiles(&self) -> usize {
        self.group().div_ceil(self.head_tile)
    }
    /// Dynamic shared memory of the CUDA kernel (layout in kernels/paged_decode.cu).
    fn shared_bytes(&self, dtype: DType) -> usize {
        let nchunks = self.head_dim / (16 / dtype.size_in_bytes());
        let tgroups = THREADS / nchunks;
        let (ht, d, ps) = (self.head_tile, self.head_dim, self.partition_size);
        4 * (ht * d + tgroups * d + ht * ps + 2 * ht + ps)
    }
}

/// Write attention outputs of the decoding rows into `out`.
///
/// `q`: [T, heads, d]; `out`: [T, heads * d] or [T, heads, d], same dtype, contiguous,
/// written only at `meta.rows`; `k_cache`, `v_cache`: [num_slots, kv_heads * d],
/// contiguous. heads a multiple of kv_heads, d a multiple of 8 up to 256, f32/f16/bf16.
pub fn paged_decode(
    out: &Tensor,
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    meta: &DecodeMeta,
) -> Result<()> {
    let (t, heads, head_dim) = match q.dims() {
        &[t, h, d] => (t, h, d),
        s => input_err!("paged_decode: q has shape {s:?}; expected [tokens, heads, head_dim]"),
    };
    let rows = q.contiguous()?.reshape((t, heads * head_dim))?;
    let q = QueryRows {
        rows: &rows,
        heads,
        head_dim,
    };
    paged_decode_rows(out, q, k_cache, v_cache, meta)
}

/// [`paged_decode`] with the queries read in place from rows of a wider matrix (the
/// fused qkv output): `q.rows` [T, width] with `q.heads` heads of `q.head_dim` first.
pub fn paged_decode_rows(
    out: &Tensor,
    q: QueryRows,
    k_cache: &Tensor,
    v_cache: &Tensor,
    meta: &DecodeMeta,
) -> Result<()> {
    Kernels::NONE.paged_decode_rows(out, q, k_cache, v_cache, meta)
}

impl Kernels {
    /// [`paged_decode_rows`] launched from this table.
    pub fn paged_decode_rows(
        &self,
        out: &Tensor,
        q: QueryRows,
        k_cache: &Tensor,
        v_cache: &Tensor,
        meta: &DecodeMeta,
    ) -> Result<()> {
        let (heads, d) = (q.heads, q.head_dim);
        let q = q.rows;
        let dtype = q.dtype();
        let Shapes {
            num_tokens,
            q_stride,
            num_slots,
            kv_heads,
            b,
            max_blocks,
        } = check_shapes(out, q, k_cache, v_cache, meta, heads, d)?;
        let group = heads / kv_heads;
        let head_tile = group.div_ceil(group.div_ceil(MAX_HEAD_TILE));
        let blocks_per_part = b * kv_heads * group.div_ceil(head_tile);
        let bs = meta.block_size;
        let ps = meta.partition_size.unwrap_or_else(|| {
            auto_partition_size(blocks_per_part, meta.max_context_len, meta.target_blocks)
        });
        if bs == 0 || ps == 0 || meta.sliding_window == Some(0) {
            input_err!("paged_decode: block_size, partition_size and sliding_window must be >= 1");
        }
        if b == 0 {
            return Ok(());
        }
        if meta.max_context_len == 0 || meta.max_context_len > max_blocks * bs {
            input_err!(
                "paged_decode: max_context_len {} must be in 1..={} (block tables of {max_blocks} blocks of {bs})",
                meta.max_context_len,
                max_blocks * bs
            );
        }
        let num_parts = meta.max_context_len.div_ceil(ps);
        let p = Params {
            batch: b,
            num_tokens,
            q_stride,
            heads,
            kv_heads,
            head_dim: d,
            block_size: bs,
            max_blocks,
            window: meta.sliding_window.unwrap_or(0),
            partition_size: ps,
            num_parts,
            ctx_cap: (max_blocks * bs).min(num_parts * ps),
            head_tile,
        };
        let smem = p.shared_bytes(dtype);
        if smem > MAX_SHARED_BYTES {
            input_err!(
                "paged_decode: partition_size {ps} needs {smem} bytes of shared memory with head_dim {d} \
                 and {} heads per block (at most {MAX_SHARED_BYTES}): use a smaller partition_size",
                p.head_tile
            );
        }
        let too_big = [
            num_tokens * q_stride,
            max_blocks * bs,
            num_parts * ps,
            b * max_blocks,
        ];
        if too_big.iter().any(|&x| x > i32::MAX as usize) || num_slots > u32::MAX as usize {
            input_err!("paged_decode: sizes past the kernel's 32-bit indices");
        }
        let op = PagedDecode {
            kernels: self,
            p,
            v_cache: v_cache.clone(),
            rows: meta.rows.contiguous()?,
            tables: meta.block_tables.contiguous()?,
            ctx_lens: meta.context_lens.contiguous()?,
        };
        if !q.is_contiguous() {
            input_err!("paged_decode: q rows must be contiguous");
        }
        Ok(out.inplace_op3(q, k_cache, &op)?)
    }
}

/// The op on `out` (dst) with operands (q, k_cache); V and the metadata are held.
struct PagedDecode<'a> {
    /// The function table the launch uses ([`Kernels::NONE`]: looked up at the launch).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    kernels: &'a Kernels,
    p: Params,
    v_cache: Tensor,
    rows: Tensor,
    tables: Tensor,
    ctx_lens: Tensor,
}

impl InplaceOp3 for PagedDecode<'_> {
    fn name(&self) -> &'static str {
        "paged_decode"
    }

    fn cpu_fwd(
        &self,
        so: &mut CpuStorage,
        lo: &Layout,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
    ) -> candle_core::Result<()> {
        with_float!(sq.dtype(), T => {
            let out = cpu::slice_mut::<T>(so, lo)?;
            let (q, k) = (cpu::slice::<T>(sq, lq)?, cpu::slice::<T>(sk, lk)?);
            cpu::with_host::<T, _>(&self.v_cache, |v| {
                cpu::with_host::<u32, _>(&self.rows, |rows| {
                    cpu::with_host::<u32, _>(&self.tables, |tables| {
                        cpu::with_host::<u32, _>(&self.ctx_lens, |ctx_lens| {
                            let x = cpu_port::Inputs { q, k, v, rows, tables, ctx_lens };
                            cpu_port::forward(out, &x, &self.p)
                        })
                    })
                })
            })
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        so: &mut candle_core::CudaStorage,
        lo: &Layout,
        sq: &candle_core::CudaStorage,
        lq: &Layout,
        sk: &candle_core::CudaStorage,
        lk: &Layout,
    ) -> candle_core::Result<()> {
        use crate::cuda;
        use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
        let p = &self.p;
        let (dev, dtype) = (sq.device.clone(), sq.dtype());
        let (o, q, k) = (cuda::ptr(so, lo)?, cuda::ptr(sq, lq)?, cuda::ptr(sk, lk)?);
        let v = cuda::tensor_ptr(&self.v_cache)?;
        let rows = cuda::tensor_ptr(&self.rows)?;
        let tables = cuda::tensor_ptr(&self.tables)?;
        let ctx = cuda::tensor_ptr(&self.ctx_lens)?;
        let msg = candle_core::Error::Msg;
        if (k | v) % 16 != 0 {
            return Err(msg(
                "paged_decode: k_cache and v_cache must be 16-byte aligned".into(),
            ));
        }
        let z = p.kv_heads * p.ntiles();
        if p.batch > 65535 || z > 65535 {
            return Err(msg(format!(
                "paged_decode: grid ({}, {}, {z}) too large",
                p.num_parts, p.batch
            )));
        }
        // Partials [B, heads, num_parts] max, sum, then [B, heads, num_parts, d] acc.
        // No scratch when every sequence owns one partition (the kernel never touches it:
        // null pointers).
        let np = p.batch * p.heads * p.num_parts;
        let n = np * (2 + p.head_dim);
        let scratch = match p.num_parts > 1 {
            true => Some(cuda::alloc_storage(
                &dev,
                DType::F32,
                n,
                crate::Fill::Uninit,
            )?),
            false => None,
        };
        let pmax = match &scratch {
            Some(s) => cuda::ptr(s, &Layout::contiguous(n))?,
            None => 0,
        };
        let (psum, pacc) = match pmax {
            0 => (0, 0),
            base => (base + 4 * np as u64, base + 8 * np as u64),
        };
        let h = [1, 2, 4, 8]
            .into_iter()
            .find(|&h| h >= p.head_tile)
            .unwrap_or(MAX_HEAD_TILE);
        let f = self.kernels.get(&dev, Func::paged_decode(h), dtype)?;
        let cfg = LaunchConfig {
            grid_dim: (p.num_parts as u32, p.batch as u32, z as u32),
            block_dim: (THREADS as u32, 1, 1),
            shared_mem_bytes: p.shared_bytes(dtype) as u32,
        };
        let scale = 1.0 / (p.head_dim as f32).sqrt();
        #[rustfmt::skip]
        let ints = [
            p.num_tokens, p.heads, p.kv_heads, p.head_dim, p.max_blocks, p.block_size,
            p.ctx_cap, p.window, p.partition_size, p.num_parts, p.head_tile,
        ].map(|x| x as i32);
        let q_stride = p.q_stride as i64;
        let mut b = f.builder();
        let ptrs = [o, q, k, v, rows, tables, ctx, pmax, psum, pacc];
        for a in ptrs.iter() {
            b.arg(a);
        }
        for a in ints.iter() {
            b.arg(a);
        }
        b.arg(&q_stride);
        b.arg(&scale);
        // SAFETY: pointers address the tensors the wrapper checked (contiguous, shapes,
        // dtypes, u32 metadata, 16-byte aligned caches); the scratch holds `n` f32, exists
        // only when num_parts > 1 and is only touched then (else the pointers are null);
        // the wrapper checked the shared memory size and the 32-bit index ranges; the
        // argument list matches kernels/paged_decode.cu.
        unsafe { b.launch(cfg) }.map_err(|e| msg(format!("paged_decode: {e:?}")))?;
        if p.num_parts > 1 {
            // The partials were written by the first kernel on the same stream.
            self.launch_reduce(&dev, dtype, [o, rows, ctx, pmax, psum, pacc])?;
        }
        drop(scratch); // stream-ordered free, after both kernels
        Ok(())
    }
}

#[cfg(feature = "cuda")]
impl PagedDecode<'_> {
    /// The split-K merge: one block per (head, sequence) reads the partials of every
    /// partition (`ptrs`: out, rows, context_lens, max, sum, acc).
    fn launch_reduce(
        &self,
        dev: &candle_core::CudaDevice,
        dtype: DType,
        ptrs: [u64; 6],
    ) -> candle_core::Result<()> {
        use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
        let p = &self.p;
        let msg = candle_core::Error::Msg;
        let f = self.kernels.get(dev, Func::PagedDecodeReduce, dtype)?;
        let cfg = LaunchConfig {
            grid_dim: (p.heads as u32, p.batch as u32, 1),
            block_dim: (THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        #[rustfmt::skip]
        let ints = [
            p.num_tokens, p.heads, p.head_dim, p.ctx_cap, p.window, p.partition_size,
            p.num_parts,
        ].map(|x| x as i32);
        let mut b = f.builder();
        for a in ptrs.iter() {
            b.arg(a);
        }
        for a in ints.iter() {
            b.arg(a);
        }
        // SAFETY: the pointers address the output, the checked u32 metadata and the
        // partials the first kernel wrote on the same stream for every partition the
        // reducer reads; the argument list matches kernels/paged_decode.cu.
        unsafe { b.launch(cfg) }.map_err(|e| msg(format!("paged_decode_reduce: {e:?}")))?;
        Ok(())
    }
}
