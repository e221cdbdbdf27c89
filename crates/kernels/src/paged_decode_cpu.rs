//! paged_decode on the host: the CPU port (same partitions and merge as
//! kernels/paged_decode.cu) and the reference (plain loops); the test batches are in
//! paged_decode_spec.rs.

use super::Params;
use crate::cpu::Float;
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

/// The CPU port. Per (sequence, kv head, partition, head tile, head): logits of the
/// partition's visible keys, their max and exp-sum, the normalized partial output; a
/// sequence with one partition writes `out` directly, else its partitions are merged
/// with `w_i = sum_i * exp(max_i - max)` like `paged_decode_reduce`. A context of 0 (a
/// padding row) writes zeros, as the kernel does. Unlike the kernel (which clamps or
/// skips), it fails on a row past `q`, a context past the cap and a block past the cache.
pub(super) fn forward<T: Float>(
    out: &mut [T],
    x: &Inputs<'_, T>,
    p: &Params,
) -> candle_core::Result<()> {
    let (h, d, group, np, ps) = (
        p.heads,
        p.head_dim,
        p.group(),
        p.num_parts,
        p.partition_size,
    );
    let kvw = p.kv_heads * d;
    let num_slots = x.k.len() / kvw;
    let scale = 1.0 / (d as f32).sqrt();
    let mut part_max = vec![f32::NEG_INFINITY; p.batch * h * np];
    let mut part_sum = vec![0f32; p.batch * h * np];
    let mut part_acc = vec![0f32; p.batch * h * np * d];
    let (mut logits, mut acc) = (Vec::with_capacity(ps), vec![0f32; d]);
    for b in 0..p.batch {
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
            // A padding row (a decode graph's unused slot): zeros, as the kernel writes.
            out[row * h * d..(row + 1) * h * d].fill(T::from_f(0.0));
            continue;
        }
        let r = seq_range(ctx, p);
        let direct = r.end_part - r.first_part == 1;
        let table = &x.tables[b * p.max_blocks..][..p.max_blocks];
        for part in r.first_part..r.end_part {
            let p0 = (part * ps).max(r.start);
            let p1 = ((part + 1) * ps).min(r.ctx);
            let mut slots = Vec::with_capacity(p1 - p0);
            for pos in p0..p1 {
                let slot = paged::slot(table, p.block_size, pos);
                if slot >= num_slots {
                    return Err(err(format!(
                        "paged_decode: block_tables[{b}][{}] = {} is past the cache's {num_slots} slots",
                        pos / p.block_size,
                        table[pos / p.block_size]
                    )));
                }
                slots.push(slot);
            }
            for kvh in 0..p.kv_heads {
                for tile in 0..p.ntiles() {
                    let g0 = tile * p.head_tile;
                    for hh in kvh * group + g0..kvh * group + group.min(g0 + p.head_tile) {
                        let qh: Vec<f32> = x.q[row * p.q_stride + hh * d..][..d]
                            .iter()
                            .map(|e| e.f() * scale)
                            .collect();
                        logits.clear();
                        for &s in &slots {
                            let kr = &x.k[s * kvw + kvh * d..][..d];
                            logits.push(qh.iter().zip(kr).map(|(a, b)| a * b.f()).sum::<f32>());
                        }
                        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let mut sum = 0f32;
                        for l in logits.iter_mut() {
                            *l = (*l - m).exp();
                            sum += *l;
                        }
                        acc.fill(0.0);
                        for (&s, &pr) in slots.iter().zip(&logits) {
                            let vr = &x.v[s * kvw + kvh * d..][..d];
                            for (a, e) in acc.iter_mut().zip(vr) {
                                *a += pr * e.f();
                            }
                        }
                        if direct {
                            for (o, a) in out[(row * h + hh) * d..][..d].iter_mut().zip(&acc) {
                                *o = T::from_f(a / sum);
                            }
                        } else {
                            let pi = (b * h + hh) * np + part;
                            part_max[pi] = m;
                            part_sum[pi] = sum;
                            for (o, a) in part_acc[pi * d..][..d].iter_mut().zip(&acc) {
                                *o = a / sum;
                            }
                        }
                    }
                }
            }
        }
        if direct {
            continue;
        }
        for hh in 0..h {
            let base = (b * h + hh) * np;
            let own = r.first_part..r.end_part;
            let m = own
                .clone()
                .map(|i| part_max[base + i])
                .fold(f32::NEG_INFINITY, f32::max);
            for t in 0..d {
                let (mut s, mut a) = (0f32, 0f32);
                for i in own.clone() {
                    let w = part_sum[base + i] * (part_max[base + i] - m).exp();
                    s += w;
                    a += w * part_acc[(base + i) * d + t];
                }
                out[(row * h + hh) * d + t] = T::from_f(a / s);
            }
        }
    }
    Ok(())
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
