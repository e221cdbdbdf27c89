//! The CPU matmul `y[m][n] = Σ_k x[m][k] * W[n][k]` on a [`QMatrix`], on all threads of
//! a [`CpuContext`].
//!
//! 1. The activation rows are quantized once (Q8 blocks of 32, or Q8_K blocks of 256
//!    for the K-quants; float weights take the f32 rows as they are).
//! 2. The work is a grid of (8-row tile range) x (column panel) tasks, handed out
//!    through an atomic counter so that a thread slowed by other load takes fewer.
//!    A panel holds as many activation rows as fit in about 256 KiB, so they stay in
//!    the L2 cache while every tile of the task reads them.
//! 3. A task walks its tiles in groups of about 16 KiB of weights; for each group the
//!    panel's columns go by in kernel calls of 8/4/2/1 columns ([`crate::kernels`]), so
//!    the weights are read from memory once per panel and from L1/L2 by the following
//!    calls; the outputs gather in a small scratch buffer and go to y in whole runs. With one activation row (decode) this streams
//!    the weights once at memory bandwidth; with many (prefill, batched decode) each
//!    weight block read serves up to 8 rows from registers.

use crate::act::{quantize_q8, quantize_q8k, BlockQ8, BlockQ8K};
use crate::error::{input_err, QuantError, Result};
use crate::kernels::{run_width, width_for, Tile, Q8K_BYTES, Q8_BYTES};
use crate::matrix::QMatrix;
use crate::pack::{packed_bytes, TILE};
use crate::pool::ThreadPool;
use crate::simd::Level;
use crate::types::{GgmlType, QK, QK_K};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Threads and SIMD level of the CPU matmuls. Create one and reuse it.
#[derive(Debug)]
pub struct CpuContext {
    pool: ThreadPool,
    level: Level,
}

/// How long idle workers spin before sleeping: longer than the gap between two matmuls
/// of a decode step, short enough not to burn a core between requests.
const SPIN: Duration = Duration::from_millis(2);

impl CpuContext {
    /// `threads` threads (at least 1) at the best SIMD level of this CPU.
    pub fn new(threads: usize) -> Result<CpuContext> {
        CpuContext::with_level(threads, Level::detect())
    }

    /// `threads` threads at a given level (an error if this CPU lacks it).
    pub fn with_level(threads: usize, level: Level) -> Result<CpuContext> {
        CpuContext::with_options(threads, level, SPIN)
    }

    /// As [`CpuContext::with_level`], with idle workers spinning for `spin` before they
    /// sleep (longer: faster hand-offs between close matmuls; shorter: less CPU taken
    /// from other work between them, e.g. candle's own threaded ops).
    pub fn with_options(threads: usize, level: Level, spin: Duration) -> Result<CpuContext> {
        let level = level.checked()?;
        let pool = ThreadPool::new(threads.max(1), spin).map_err(|e| {
            QuantError::Input(format!("cannot start {threads} matmul threads: {e}"))
        })?;
        Ok(CpuContext { pool, level })
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    pub fn level(&self) -> Level {
        self.level
    }

    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }
}

/// A pointer shared by the pool's threads, each writing its own disjoint part.
struct SharedPtr<T>(*mut T);
impl<T> Clone for SharedPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedPtr<T> {}
impl<T> SharedPtr<T> {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn get(&self) -> *mut T {
        self.0
    }
}
// SAFETY: every use writes disjoint elements from different threads and the owner
// outlives the pool job (see the SAFETY notes at the uses).
unsafe impl<T> Send for SharedPtr<T> {}
unsafe impl<T> Sync for SharedPtr<T> {}

/// Activation rows in the form the kernels of a weight type read.
enum Acts<'a> {
    Q8(Vec<BlockQ8>),
    Q8K(Vec<BlockQ8K>),
    F32(&'a [f32]),
}

impl Acts<'_> {
    fn ptr(&self) -> *const u8 {
        match self {
            Acts::Q8(v) => v.as_ptr() as *const u8,
            Acts::Q8K(v) => v.as_ptr() as *const u8,
            Acts::F32(v) => v.as_ptr() as *const u8,
        }
    }
}

/// Quantize `m` rows of `k` values for `ty`'s kernels, rows spread over the pool.
fn quantize_acts<'a>(ty: GgmlType, x: &'a [f32], m: usize, k: usize, cpu: &CpuContext) -> Acts<'a> {
    fn rows<B: Default + Clone + Send>(
        x: &[f32],
        m: usize,
        k: usize,
        per_block: usize,
        cpu: &CpuContext,
        f: fn(&[f32], &mut [B]),
    ) -> Vec<B> {
        let nb = k / per_block;
        let mut out = vec![B::default(); m * nb];
        // One activation row per piece.
        let row = |i: usize, o: &mut [B]| f(&x[i * k..(i + 1) * k], o);
        match m * k >= 1 << 15 {
            true => cpu.pool.for_each_chunk(&mut out, nb, &row),
            false => out.chunks_mut(nb).enumerate().for_each(|(i, o)| row(i, o)),
        }
        out
    }
    match ty.block_elems() {
        QK => Acts::Q8(rows(x, m, k, QK, cpu, quantize_q8)),
        QK_K => Acts::Q8K(rows(x, m, k, QK_K, cpu, quantize_q8k)),
        _ => Acts::F32(x),
    }
}

impl QMatrix {
    /// `y = x · Wᵀ`: `x` is `[m, cols]`, `y` is `[m, rows]`, both row-major f32.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32], cpu: &CpuContext) -> Result<()> {
        let (n, k, ty) = (self.rows(), self.cols(), self.ty());
        if x.len() != m * k || y.len() != m * n {
            input_err!(
                "{self:?} matmul: x has {} values (expected {m} x {k}), y {} (expected {m} x {n})",
                x.len(),
                y.len()
            );
        }
        if m == 0 {
            return Ok(());
        }
        let acts = quantize_acts(ty, x, m, k, cpu);
        let (a_row, tile_bytes, nb) = match ty.block_elems() {
            QK => (k / QK * Q8_BYTES, k / QK * packed_bytes(ty), k / QK),
            QK_K => (k / QK_K * Q8K_BYTES, k / QK_K * packed_bytes(ty), k / QK_K),
            _ => (k * 4, TILE * ty.bytes_for(k), k),
        };
        let tiles = n.div_ceil(TILE);
        let panel = (256 * 1024 / a_row.max(1)).clamp(8, 256) / 8 * 8;
        let panels = m.div_ceil(panel);
        let per_task = tiles.div_ceil(4 * cpu.threads()).max(1);
        // Tiles whose weights (about 16 KiB) stay in L1/L2 while the columns go by in
        // kernel-width steps: each step then writes whole runs of y rows.
        let group = (16 * 1024 / tile_bytes.max(1)).clamp(1, 16);
        let tile_tasks = tiles.div_ceil(per_task);
        let next = AtomicUsize::new(0);
        let (w, a, out) = (
            SharedPtr(self.packed().as_ptr() as *mut u8),
            SharedPtr(acts.ptr() as *mut u8),
            SharedPtr(y.as_mut_ptr()),
        );
        let level = cpu.level;
        let job = |_: usize| {
            // [c, group * 8]: one kernel step's outputs, copied to y in whole runs (the
            // y rows of a large `n` are a power-of-two stride apart and would otherwise
            // fight over the same cache sets, 8 floats at a time).
            let mut scratch = vec![0f32; 8 * group * TILE];
            loop {
                let task = next.fetch_add(1, Ordering::Relaxed);
                if task >= tile_tasks * panels {
                    break;
                }
                let (p, tt) = (task / tile_tasks, task % tile_tasks);
                let (first, end) = (tt * per_task, ((tt + 1) * per_task).min(tiles));
                let (c_first, c_end) = (p * panel, (p * panel + panel).min(m));
                for g0 in (first..end).step_by(group) {
                    let g1 = (g0 + group).min(end);
                    let (r0, r1) = (g0 * TILE, (g1 * TILE).min(n));
                    let mut c0 = c_first;
                    while c0 < c_end {
                        let c = width_for(level, ty, c_end - c0);
                        for tile in g0..g1 {
                            // SAFETY: the packed weights hold `tiles` tiles of
                            // `tile_bytes`, the activations `m` rows of `a_row` bytes;
                            // the outputs go to `scratch` ([c, group * 8]). `level` was
                            // checked when the context was made.
                            unsafe {
                                let t = Tile {
                                    w: w.get().add(tile * tile_bytes),
                                    nb,
                                    a: a.get().add(c0 * a_row),
                                    a_stride: a_row,
                                    y: scratch.as_mut_ptr().add((tile - g0) * TILE),
                                    y_stride: group * TILE,
                                    rows: (n - tile * TILE).min(TILE),
                                };
                                run_width(level, ty, &t, c);
                            }
                        }
                        for (j, col) in (c0..c0 + c).enumerate() {
                            let src = &scratch[j * group * TILE..][..r1 - r0];
                            // SAFETY: y holds `m` rows of `n`; this task alone writes
                            // rows [r0, r1) of columns [c_first, c_end).
                            unsafe {
                                let dst = out.get().add(col * n + r0);
                                std::ptr::copy_nonoverlapping(src.as_ptr(), dst, r1 - r0);
                            }
                        }
                        c0 += c;
                    }
                }
            }
        };
        match tile_tasks * panels {
            1 => job(0),
            _ => cpu.pool.run(&job),
        }
        drop(acts);
        Ok(())
    }
}
