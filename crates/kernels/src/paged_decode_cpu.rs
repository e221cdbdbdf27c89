//! paged_decode on the host: the CPU port (same partitions and merge as
//! kernels/paged_decode.cu) and the reference (plain loops); the test batches are in
//! paged_decode_spec.rs.

use super::Params;
use crate::cpu::{self, Float};
use crate::paged;

/// The operands of the CPU port (host slices of the op's tensors).
pub(super) struct Inputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub rows: &'a [u32],
    pub tables: &'a [u32],
    pub ctx_lens: &'a [u32],
}

/// A sequence's visible positions and the partitions it owns (`seq_range` in the .cu).
struct SeqRange {
    ctx: usize,
    start: usize,
    first_part: usize,
    end_part: usize,
}

fn seq_range(ctx: usize, p: &Params) -> SeqRange {
    let start = paged::first_visible(ctx - 1, (p.window > 0).then_some(p.window));
    SeqRange {
        ctx,
        start,
        first_part: start / p.partition_size,
        end_part: ctx.div_ceil(p.partition_size),
    }
}

fn err(msg: String) -> candle_core::Error {
    candle_core::Error::Msg(msg)
}

/// Per-sequence buffers of the port, reused across sequences.
struct Scratch {
    slots: Vec<usize>,      // [visible context] cache slots, in position order
    q: Vec<f32>,            // [heads, d] the row's queries, scaled
    logits: Vec<f32>,       // [heads, partition keys]
    acc: Vec<f32>,          // [heads, d]
    stats: Vec<(f32, f32)>, // [heads] (max, sum of exp) of the partition
    part_max: Vec<f32>,     // [heads, parts of the sequence]
    part_sum: Vec<f32>,
    part_acc: Vec<f32>, // [heads, parts, d]
}

/// The CPU port. Per (sequence, partition): the logits of the partition's visible keys
/// for every head (each K and V row read once for all kv heads; the kernel's blocks
/// split the heads by kv head and head tile, which changes no head's math), their max
/// and exp-sum, the normalized partial output; a sequence with one partition writes
/// `out` directly, else its partitions are merged with `w_i = sum_i * exp(max_i - max)`
/// like `paged_decode_reduce`. A context of 0 (a padding row) writes zeros, as the kernel
/// does. Unlike the kernel (which clamps or skips), it fails on a row past `q`, a context
/// past the cap and a block past the cache. The loops are vectorized for the CPU's SIMD
/// level ([`cpu::multiversion!`]).
pub(super) fn forward<T: Float>(
    out: &mut [T],
    x: &Inputs<'_, T>,
    p: &Params,
) -> candle_core::Result<()> {
    let (h, d) = (p.heads, p.head_dim);
    // Check every input first, then hand out disjoint output rows.
    let mut work = 0;
    for b in 0..p.batch {
        work += check_sequence(x, p, b)? * h * d;
    }
    let mut rows: Vec<Option<&mut [T]>> = out.chunks_mut(h * d).map(Some).collect();
    let mut seqs = Vec::with_capacity(p.batch);
    for b in 0..p.batch {
        let row = rows.get_mut(x.rows[b] as usize).and_then(Option::take);
        let row = row.ok_or_else(|| err(format!("paged_decode: rows[{b}] appears twice")))?;
        seqs.push((b, row));
    }
    let one = |s: &mut Scratch, (b, row): (usize, &mut [T])| sequence_simd(row, x, p, b, s);
    if work < PARALLEL_WORK || rayon::current_num_threads() < 2 {
        let mut s = Scratch::new(p);
        seqs.into_iter().for_each(|seq| one(&mut s, seq));
    } else {
        use rayon::prelude::*;
        seqs.into_par_iter()
            .with_max_len(1)
            .for_each_init(|| Scratch::new(p), one);
    }
    Ok(())
}

/// Below this many `context x heads x head_dim` elements the call runs on the calling
/// thread alone (handing out costs more than it brings, e.g. one short sequence).
const PARALLEL_WORK: usize = 1 << 18;

/// Check sequence `b`'s row, context and the blocks of its visible positions; returns
/// its visible context length.
fn check_sequence<T>(x: &Inputs<'_, T>, p: &Params, b: usize) -> candle_core::Result<usize> {
    let row = x.rows[b] as usize;
    if row >= p.num_tokens {
        return Err(err(format!(
            "paged_decode: rows[{b}] = {row} is past q's {} rows",
            p.num_tokens
        )));
    }
    let ctx = x.ctx_lens[b] as usize;
    if ctx > p.ctx_cap {
        return Err(err(format!(
            "paged_decode: context_lens[{b}] = {ctx}: must be at most {} (max_context_len, block table)",
            p.ctx_cap
        )));
    }
    if ctx == 0 {
        return Ok(0);
    }
    let r = seq_range(ctx, p);
    let num_blocks = x.k.len() / (p.kv_heads * p.head_dim) / p.block_size;
    let table = &x.tables[b * p.max_blocks..][..p.max_blocks];
    let blocks = r.start / p.block_size..ctx.div_ceil(p.block_size);
    for (i, &block) in table[blocks.clone()].iter().enumerate() {
        if block as usize >= num_blocks {
            return Err(err(format!(
                "paged_decode: block_tables[{b}][{}] = {block} is past the cache's {} slots",
                blocks.start + i,
                num_blocks * p.block_size
            )));
        }
    }
    Ok(ctx - r.start)
}

impl Scratch {
    fn new(p: &Params) -> Scratch {
        let (h, d) = (p.heads, p.head_dim);
        let parts = if p.num_parts > 1 { h * p.num_parts } else { 0 };
        Scratch {
            slots: Vec::with_capacity(p.ctx_cap),
            q: vec![0.0; h * d],
            logits: vec![0.0; h * p.partition_size.min(p.ctx_cap)],
            acc: vec![0.0; h * d],
            stats: vec![(0.0, 0.0); h],
            // Partials only when some sequence may span several partitions.
            part_max: vec![0.0; parts],
            part_sum: vec![0.0; parts],
            part_acc: vec![0.0; parts * d],
        }
    }
}

cpu::multiversion!(fn sequence_simd<T: Float>(out: &mut [T], x: &Inputs<'_, T>, p: &Params, b: usize, s: &mut Scratch) -> () = sequence_body);

/// Sequence `b` (checked) into its output row `out` [heads * d].
#[inline(always)]
fn sequence_body<T: Float, L: cpu::Level>(
    out: &mut [T],
    x: &Inputs<'_, T>,
    p: &Params,
    b: usize,
    s: &mut Scratch,
) {
    let (row, ctx) = (x.rows[b] as usize, x.ctx_lens[b] as usize);
    if ctx == 0 {
        // A padding row (a decode graph's unused slot): zeros, as the kernel writes.
        out.fill(T::from_f(0.0));
        return;
    }
    let r = seq_range(ctx, p);
    let table = &x.tables[b * p.max_blocks..][..p.max_blocks];
    s.slots.clear();
    s.slots
        .extend((r.start..r.ctx).map(|pos| paged::slot(table, p.block_size, pos)));
    let q_row = &x.q[row * p.q_stride..][..p.heads * p.head_dim];
    sequence::<T, L>(out, q_row, x, p, &r, s);
}

/// One sequence's heads, partition by partition: one pass over the partition's K rows
/// (every head's logits from each row while it is in cache), the softmax statistics per
/// head, one pass over its V rows; then the merge when there are several partitions.
#[inline(always)]
fn sequence<T: Float, L: cpu::Level>(
    out: &mut [T],
    q_row: &[T],
    x: &Inputs<'_, T>,
    p: &Params,
    r: &SeqRange,
    s: &mut Scratch,
) {
    let (h, d, group, ps) = (p.heads, p.head_dim, p.group(), p.partition_size);
    let kvw = p.kv_heads * d;
    let scale = 1.0 / (d as f32).sqrt();
    let nparts = r.end_part - r.first_part;
    for (qs, qh) in s.q.iter_mut().zip(q_row) {
        *qs = qh.f() * scale;
    }
    for (pi, part) in (r.first_part..r.end_part).enumerate() {
        let p0 = (part * ps).max(r.start) - r.start;
        let p1 = ((part + 1) * ps).min(r.ctx) - r.start;
        let keys = &s.slots[p0..p1];
        let n = keys.len();
        for (j, &slot) in keys.iter().enumerate() {
            let kr = &x.k[slot * kvw..][..kvw];
            for hh in 0..h {
                let kh = &kr[hh / group * d..][..d];
                s.logits[hh * n + j] = cpu::dot::<L, T>(&s.q[hh * d..][..d], kh);
            }
        }
        for (hh, st) in s.stats.iter_mut().enumerate() {
            let l = &mut s.logits[hh * n..][..n];
            let m = cpu::max(l);
            *st = (m, cpu::exp_shifted_sum(l, m));
        }
        s.acc.fill(0.0);
        for (j, &slot) in keys.iter().enumerate() {
            let vr = &x.v[slot * kvw..][..kvw];
            for hh in 0..h {
                let vh = &vr[hh / group * d..][..d];
                cpu::axpy(&mut s.acc[hh * d..][..d], s.logits[hh * n + j], vh);
            }
        }
        for (hh, &(m, sum)) in s.stats.iter().enumerate() {
            let (acc, inv) = (&s.acc[hh * d..][..d], 1.0 / sum);
            if nparts == 1 {
                for (o, a) in out[hh * d..][..d].iter_mut().zip(acc) {
                    *o = T::from_f(a * inv);
                }
            } else {
                let i = hh * nparts + pi;
                (s.part_max[i], s.part_sum[i]) = (m, sum);
                for (o, a) in s.part_acc[i * d..][..d].iter_mut().zip(acc) {
                    *o = a * inv;
                }
            }
        }
    }
    if nparts > 1 {
        merge(out, p, nparts, s);
    }
}

/// The split-K merge of a sequence's partitions, per head.
#[inline(always)]
fn merge<T: Float>(out: &mut [T], p: &Params, nparts: usize, s: &mut Scratch) {
    let d = p.head_dim;
    for hh in 0..p.heads {
        let own = hh * nparts..(hh + 1) * nparts;
        let m = cpu::max(&s.part_max[own.clone()]);
        let acc = &mut s.acc[..d];
        acc.fill(0.0);
        let mut total = 0f32;
        for i in own {
            let w = s.part_sum[i] * (s.part_max[i] - m).exp();
            total += w;
            cpu::axpy(acc, w, &s.part_acc[i * d..][..d]);
        }
        for (o, a) in out[hh * d..][..d].iter_mut().zip(acc.iter()) {
            *o = T::from_f(a / total);
        }
    }
}

/// Sizes the reference needs besides the data.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub sliding_window: Option<usize>,
}

/// The reference, written the obvious way in f32: for decoding sequence i, gather its
/// visible keys `max(0, ctx - W)..ctx` through its block table and compute
/// `softmax(q k^T / sqrt(d)) v` per head (head h reads kv head h / group).
/// `q`: [T, heads, d], `k`, `v`: [num_slots, kv_heads * d]. Returns [B, heads * d], the
/// rows in batch order.
pub fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    geo: &Geometry,
    rows: &[u32],
    context_lens: &[u32],
    block_tables: &[Vec<u32>],
) -> Vec<f32> {
    let (h, d, bs) = (geo.heads, geo.head_dim, geo.block_size);
    let group = h / geo.kv_heads;
    let kvw = geo.kv_heads * d;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = Vec::with_capacity(rows.len() * h * d);
    for ((&row, &ctx), table) in rows.iter().zip(context_lens).zip(block_tables) {
        let ctx = ctx as usize;
        let first = paged::first_visible(ctx.saturating_sub(1), geo.sliding_window);
        let slots: Vec<usize> = (first..ctx).map(|j| paged::slot(table, bs, j)).collect();
        for head in 0..h {
            let qh = &q[(row as usize * h + head) * d..][..d];
            let off = (head / group) * d;
            let scores: Vec<f32> = slots
                .iter()
                .map(|&s| (0..d).map(|i| qh[i] * k[s * kvw + off + i]).sum::<f32>() * scale)
                .collect();
            let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
            let total: f32 = e.iter().sum();
            for i in 0..d {
                let o: f32 = slots
                    .iter()
                    .zip(&e)
                    .map(|(&s, w)| w * v[s * kvw + off + i])
                    .sum();
                out.push(o / total);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::harness::{self, KernelSpec};
    use candle_core::{DType, Device, Tensor};

    #[test]
    fn cpu_port_matches_reference_in_every_dtype() -> anyhow::Result<()> {
        Ok(harness::check_all_shapes(&Spec, &Device::Cpu)?)
    }

    /// f32 inputs: T = 3 rows, `heads` heads over `kv` kv heads of `d`, 4 blocks of 16
    /// slots, sequence 0 at row 1 with 40 tokens in blocks [2, 0, 3].
    fn small(
        heads: usize,
        kv: usize,
        d: usize,
    ) -> anyhow::Result<(Tensor, Tensor, Tensor, Tensor, DecodeMeta)> {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (3, heads, d), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (64, kv * d), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (64, kv * d), &dev)?;
        let out = Tensor::zeros((3, heads * d), DType::F32, &dev)?;
        let meta = DecodeMeta::new(&[1], &[40], &[vec![2, 0, 3]], 16, None, &dev)?;
        Ok((out, q, k, v, meta))
    }

    #[test]
    fn partition_size_does_not_change_the_result() -> anyhow::Result<()> {
        let (out, q, k, v, mut meta) = small(8, 2, 32)?;
        let mut results = Vec::new();
        for ps in [1, 3, 16, 40, 512] {
            meta.partition_size = Some(ps);
            paged_decode(&out, &q, &k, &v, &meta)?;
            results.push(harness::host_f32(&out)?);
        }
        for r in &results[1..] {
            let c = harness::compare(r, &results[0], 1e-5);
            assert!(c.pass(), "{c:?}");
        }
        Ok(())
    }

    fn err_of(r: Result<()>) -> String {
        match r {
            Ok(()) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn rejects_bad_inputs() -> anyhow::Result<()> {
        let (out, q, k, v, meta) = small(4, 2, 16)?;
        let kb = k.to_dtype(DType::BF16)?;
        assert!(err_of(paged_decode(&out, &q, &kb, &v, &meta)).contains("k_cache is BF16"));
        let q3 = Tensor::zeros((3, 3, 16), DType::F32, &Device::Cpu)?;
        let o3 = Tensor::zeros((3, 48), DType::F32, &Device::Cpu)?;
        assert!(err_of(paged_decode(&o3, &q3, &k, &v, &meta)).contains("kv_heads dividing"));
        for d in [12, 264] {
            let (out, q, k, v, meta) = small(2, 2, d)?;
            assert!(err_of(paged_decode(&out, &q, &k, &v, &meta)).contains("multiple of 8"));
        }
        let e = DecodeMeta::new(&[1], &[49], &[vec![2, 0, 3]], 16, None, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("context_lens[0] = 49"), "{e}");
        let mut long = meta.clone();
        long.max_context_len = 49;
        assert!(err_of(paged_decode(&out, &q, &k, &v, &long)).contains("max_context_len 49"));
        let mut short = meta.clone();
        short.max_context_len = 20; // context_lens[0] = 40 > 32 partitions: the CPU port fails
        short.partition_size = Some(16);
        assert!(err_of(paged_decode(&out, &q, &k, &v, &short)).contains("context_lens[0] = 40"));
        let mut huge = meta.clone();
        huge.partition_size = Some(100_000);
        assert!(err_of(paged_decode(&out, &q, &k, &v, &huge)).contains("shared memory"));
        let e = DecodeMeta::new(
            &[1, 1],
            &[4, 4],
            &[vec![0], vec![1]],
            16,
            None,
            &Device::Cpu,
        );
        assert!(e.unwrap_err().to_string().contains("appears twice"));
        let past = DecodeMeta::new(&[3], &[40], &[vec![2, 0, 3]], 16, None, &Device::Cpu)?;
        assert!(err_of(paged_decode(&out, &q, &k, &v, &past)).contains("past q"));
        let far = DecodeMeta::new(&[0], &[40], &[vec![2, 9, 3]], 16, None, &Device::Cpu)?;
        assert!(err_of(paged_decode(&out, &q, &k, &v, &far)).contains("past the cache"));
        let out_t = Tensor::zeros((64, 3), DType::F32, &Device::Cpu)?.t()?;
        assert!(err_of(paged_decode(&out_t, &q, &k, &v, &meta)).contains("out must be contiguous"));
        // out aliasing v_cache (an error, not a deadlock on the storage lock).
        let (_, q, k, v, meta) = small(2, 2, 16)?;
        let alias = v.narrow(0, 0, 3)?;
        assert!(err_of(paged_decode(&alias, &q, &k, &v, &meta)).contains("shares storage"));
        Ok(())
    }

    #[test]
    fn empty_batch_and_bench_case_run() -> anyhow::Result<()> {
        let (out, q, k, v, _) = small(4, 2, 16)?;
        let empty = DecodeMeta::new::<&[u32]>(&[], &[], &[], 16, None, &Device::Cpu)?;
        paged_decode(&out, &q, &k, &v, &empty)?;
        let mut case = Spec.bench(&Device::Cpu, DType::BF16, &[3, 100, 8, 2, 64, 16, 32, 0])?;
        (case.run)()?;
        assert_eq!(
            case.bytes,
            ((2 * 3 * 100 * 2 * 64 + 2 * 3 * 8 * 64) * 2) as u64
        );
        Ok(())
    }

    #[test]
    #[ignore = "requires a CUDA device"]
    fn cuda_matches_reference_in_every_dtype() -> anyhow::Result<()> {
        Ok(harness::check_all_shapes(&Spec, &Device::new_cuda(0)?)?)
    }

    #[test]
    fn auto_partitions_fill_the_device_at_small_batches() {
        use super::super::auto_partition_size as auto;
        // H100/H200: 132 SMs -> 264 blocks. Batch 1, 8 kv heads: 8 blocks per partition
        // -> 33 partitions; a 256-token context splits into 64-token partitions (the
        // floor), a 32k one into 1024 -> capped at 512.
        assert_eq!(auto(8, 256, 264), 64);
        assert_eq!(auto(8, 4096, 264), 128);
        assert_eq!(auto(8, 32768, 264), 512);
        // Batch 128 fills the device with sequences: one partition per 512 tokens.
        assert_eq!(auto(128 * 8, 2048, 264), 512);
        // The CPU keeps the default.
        assert_eq!(auto(8, 256, 0), PARTITION_SIZE);
        for (b, ctx) in [(1, 1), (3, 300), (64, 100_000)] {
            let ps = auto(b * 8, ctx, 264);
            assert!((MIN_PARTITION_SIZE..=PARTITION_SIZE).contains(&ps) && ps.is_multiple_of(32));
        }
    }
}
