//! paged_prefill on the host: the CPU port of kernels/paged_prefill.cu (same query tiles,
//! key-tile range, masking and online softmax), the reference (a full softmax per query
//! row), and the test batches the spec builds.

use super::{PrefillMeta, BM, BN};
use crate::cpu::{self, Float};
use crate::error::Result;
use crate::harness::{self, Check};
use crate::paged;
use candle_core::{DType, Device, Tensor};

/// Host copy of a prefill batch: what [`PrefillMeta::new`] takes, plus the head geometry.
#[derive(Debug, Clone)]
pub struct HostBatch {
    pub query_start: Vec<u32>,
    pub query_len: Vec<u32>,
    pub context_len: Vec<u32>,
    pub block_tables: Vec<Vec<u32>>,
    pub block_size: usize,
    pub sliding_window: Option<usize>,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl HostBatch {
    /// Cache slot of position `pos` of sequence `s`.
    fn slot(&self, s: usize, pos: usize) -> usize {
        paged::slot(&self.block_tables[s], self.block_size, pos)
    }

    /// Whether query position `pos` sees key `key`.
    fn visible(&self, pos: usize, key: usize) -> bool {
        paged::visible(pos, key, self.sliding_window)
    }
}

/// The meta tensors' host copies as a [`HostBatch`] (in the op's `cpu_fwd`).
pub(super) fn host_batch(
    m: &PrefillMeta,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> candle_core::Result<HostBatch> {
    let v = |t: &Tensor| cpu::with_host::<u32, _>(t, |s| Ok(s.to_vec()));
    let flat = v(&m.block_tables)?;
    let max_blocks = m.block_tables.dims().get(1).copied().unwrap_or(1).max(1);
    Ok(HostBatch {
        query_start: v(&m.query_start)?,
        query_len: v(&m.query_len)?,
        context_len: v(&m.context_len)?,
        block_tables: flat.chunks(max_blocks).map(<[u32]>::to_vec).collect(),
        block_size: m.block_size,
        sliding_window: m.sliding_window,
        heads,
        kv_heads,
        head_dim,
    })
}

/// The reference, written the obvious way in f32: for every new token of every sequence
/// and every head, a full softmax over the visible keys read through the block table.
/// `q`: [T, heads, d]; caches [num_slots, kv_heads * d]. Returns [T, heads * d] with NaN
/// in the rows no sequence owns.
pub fn reference(q: &[f32], k_cache: &[f32], v_cache: &[f32], b: &HostBatch) -> Vec<f32> {
    let (heads, d) = (b.heads, b.head_dim);
    let (group, kv_width) = (heads / b.kv_heads, b.kv_heads * d);
    let mut out = vec![f32::NAN; q.len()];
    let scale = 1.0 / (d as f32).sqrt();
    for s in 0..b.query_start.len() {
        let (n, ctx) = (b.query_len[s] as usize, b.context_len[s] as usize);
        for i in 0..n {
            let (row, pos) = (b.query_start[s] as usize + i, ctx - n + i);
            for h in 0..heads {
                let qv = &q[(row * heads + h) * d..][..d];
                let kv_off = (h / group) * d;
                let slot =
                    |j: usize| paged::slot(&b.block_tables[s], b.block_size, j) * kv_width + kv_off;
                let keys: Vec<usize> = (0..=pos)
                    .filter(|&j| paged::visible(pos, j, b.sliding_window))
                    .collect();
                let scores: Vec<f32> = keys
                    .iter()
                    .map(|&j| {
                        let kr = &k_cache[slot(j)..][..d];
                        qv.iter().zip(kr).map(|(a, b)| a * b).sum::<f32>() * scale
                    })
                    .collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let probs: Vec<f32> = scores.iter().map(|x| (x - max).exp()).collect();
                let sum: f32 = probs.iter().sum();
                let o = &mut out[(row * heads + h) * d..][..d];
                o.fill(0.0);
                for (&j, &p) in keys.iter().zip(&probs) {
                    let vr = &v_cache[slot(j)..][..d];
                    o.iter_mut().zip(vr).for_each(|(o, v)| *o += p / sum * v);
                }
            }
        }
    }
    out
}

/// The CPU port: tiles of BM query rows per (sequence, head) loop over tiles of BN keys
/// from the tile's first visible key (window) to its last row's position (causal), with
/// the kernel's masking and online softmax (exp2 of log2(e)-prescaled scores). Writes
/// only the sequences' rows of `out` ([T, heads * d]); q rows are `q_stride` apart.
pub(super) fn run<T: Float>(
    out: &mut [T],
    (q, q_stride): (&[T], usize),
    k: &[T],
    v: &[T],
    b: &HostBatch,
) {
    let (heads, d) = (b.heads, b.head_dim);
    let (group, out_stride, kv_stride) = (heads / b.kv_heads, heads * d, b.kv_heads * d);
    let scale_log2 = std::f32::consts::LOG2_E / (d as f32).sqrt();
    let (mut qs, mut ks, mut vs) = (vec![0f32; BM * d], vec![0f32; BN * d], vec![0f32; BN * d]);
    let mut acc = vec![0f32; BM * d];
    for s in 0..b.query_start.len() {
        let (qlen, ctx) = (b.query_len[s] as usize, b.context_len[s] as usize);
        let (row0, first_pos) = (b.query_start[s] as usize, ctx - qlen);
        for q0 in (0..qlen).step_by(BM) {
            let q1 = (q0 + BM).min(qlen);
            let (p_lo, p_hi) = (first_pos + q0, first_pos + q1 - 1);
            let kv_begin = paged::first_visible(p_lo, b.sliding_window);
            let kv_end = p_hi + 1;
            for h in 0..heads {
                let kv_off = (h / group) * d;
                for r in 0..BM {
                    let dst = &mut qs[r * d..][..d];
                    match q0 + r < qlen {
                        true => {
                            let src = &q[(row0 + q0 + r) * q_stride + h * d..][..d];
                            dst.iter_mut()
                                .zip(src)
                                .for_each(|(x, y)| *x = y.f() * scale_log2);
                        }
                        false => dst.fill(0.0),
                    }
                }
                let (mut m, mut l) = ([f32::NEG_INFINITY; BM], [0f32; BM]);
                acc.fill(0.0);
                for kt in (kv_begin..kv_end).step_by(BN) {
                    for j in 0..BN {
                        let (kd, vd) = (&mut ks[j * d..][..d], &mut vs[j * d..][..d]);
                        match kt + j < kv_end {
                            true => {
                                let at = b.slot(s, kt + j) * kv_stride + kv_off;
                                kd.iter_mut()
                                    .zip(&k[at..at + d])
                                    .for_each(|(x, y)| *x = y.f());
                                vd.iter_mut()
                                    .zip(&v[at..at + d])
                                    .for_each(|(x, y)| *x = y.f());
                            }
                            false => {
                                kd.fill(0.0);
                                vd.fill(0.0);
                            }
                        }
                    }
                    for r in 0..BM {
                        let (qi, qr) = (q0 + r, &qs[r * d..][..d]);
                        let pos = first_pos + qi;
                        let mut p = [f32::NEG_INFINITY; BN];
                        for (j, pj) in p.iter_mut().enumerate() {
                            let key = kt + j;
                            let dot: f32 =
                                qr.iter().zip(&ks[j * d..][..d]).map(|(a, b)| a * b).sum();
                            if qi < qlen && key < kv_end && b.visible(pos, key) {
                                *pj = dot;
                            }
                        }
                        let mn = p.iter().copied().fold(m[r], f32::max);
                        let mu = if mn == f32::NEG_INFINITY { 0.0 } else { mn };
                        let alpha = (m[r] - mu).exp2();
                        p.iter_mut().for_each(|x| *x = (*x - mu).exp2());
                        l[r] = l[r] * alpha + p.iter().sum::<f32>();
                        m[r] = mn;
                        let a = &mut acc[r * d..][..d];
                        a.iter_mut().for_each(|x| *x *= alpha);
                        for (j, &pj) in p.iter().enumerate() {
                            a.iter_mut()
                                .zip(&vs[j * d..][..d])
                                .for_each(|(x, y)| *x += pj * y);
                        }
                    }
                }
                for r in 0..q1 - q0 {
                    let o = &mut out[(row0 + q0 + r) * out_stride + h * d..][..d];
                    let inv = 1.0 / l[r];
                    o.iter_mut()
                        .zip(&acc[r * d..][..d])
                        .for_each(|(x, a)| *x = T::from_f(a * inv));
                }
            }
        }
    }
}

/// A test / bench batch derived from a spec shape
/// `seqs,query_len,context_len,heads,kv_heads,head_dim,block_size,window`: sequence i has
/// max(query_len - 5i, 1) new tokens and max(context_len - 5i, its query_len) context;
/// sequences sit in reverse order in the rows, each after 3 rows nobody owns (2 more at
/// the end); blocks are a seeded permutation of the cache's blocks (2 spare), and every
/// table ends with a u32::MAX entry that must never be read.
pub(super) struct Case {
    pub batch: HostBatch,
    pub rows: usize,
    /// Whether a sequence owns each row (the others must stay untouched).
    pub owned: Vec<bool>,
    pub num_slots: usize,
}

impl Case {
    pub fn new(shape: &[usize], names: &str, seed: u64) -> Result<Self> {
        let [seqs, ql, ctx, heads, kv_heads, head_dim, block_size, window] =
            harness::dims::<8>(shape, names)?;
        let query_len: Vec<u32> = (0..seqs)
            .map(|i| ql.saturating_sub(5 * i).max(1) as u32)
            .collect();
        let context_len: Vec<u32> = (0..seqs)
            .map(|i| (ctx.saturating_sub(5 * i) as u32).max(query_len[i]))
            .collect();
        let (mut query_start, mut rows) = (vec![0u32; seqs], 0usize);
        let mut owned = Vec::new();
        for i in (0..seqs).rev() {
            owned.extend([false; 3]);
            query_start[i] = (rows + 3) as u32;
            rows += 3 + query_len[i] as usize;
            owned.extend(std::iter::repeat_n(true, query_len[i] as usize));
        }
        owned.extend([false; 2]);
        rows += 2;
        let bs = block_size.max(1);
        let needed: Vec<usize> = context_len
            .iter()
            .map(|&c| (c as usize).div_ceil(bs))
            .collect();
        let blocks = needed.iter().sum::<usize>() + 2;
        let keys = harness::random(blocks, 1.0, seed ^ 0x5EED);
        let mut perm: Vec<u32> = (0..blocks as u32).collect();
        perm.sort_by(|&a, &b| keys[a as usize].total_cmp(&keys[b as usize]));
        let mut block_tables = Vec::with_capacity(seqs);
        let mut next = 0;
        for &n in &needed {
            let mut t = perm[next..next + n].to_vec();
            t.push(u32::MAX);
            next += n;
            block_tables.push(t);
        }
        let batch = HostBatch {
            query_start,
            query_len,
            context_len,
            block_tables,
            block_size,
            sliding_window: (window > 0).then_some(window),
            heads,
            kv_heads,
            head_dim,
        };
        Ok(Self {
            batch,
            rows,
            owned,
            num_slots: blocks * bs,
        })
    }

    /// A random cache [num_slots, kv_heads * d] (NaN in the slots no sequence's context
    /// uses) on `dev`, and its values rounded to `dtype` as host f32.
    pub fn cache(&self, seed: u64, dtype: DType, dev: &Device) -> Result<(Tensor, Vec<f32>)> {
        let b = &self.batch;
        let width = b.kv_heads * b.head_dim;
        let random = harness::random(self.num_slots * width, 1.0, seed);
        let mut vals = vec![f32::NAN; self.num_slots * width];
        for s in 0..b.query_start.len() {
            for pos in 0..b.context_len[s] as usize {
                let at = b.slot(s, pos) * width;
                vals[at..at + width].copy_from_slice(&random[at..at + width]);
            }
        }
        let host =
            Tensor::from_vec(vals, (self.num_slots, width), &Device::Cpu)?.to_dtype(dtype)?;
        let rounded = harness::host_f32(&host)?;
        Ok((host.to_device(dev)?, rounded))
    }

    pub fn meta(&self, dev: &Device) -> Result<PrefillMeta> {
        let b = &self.batch;
        PrefillMeta::new(
            &b.query_start,
            &b.query_len,
            &b.context_len,
            &b.block_tables,
            b.block_size,
            b.sliding_window,
            dev,
        )
    }

    /// Compare the sequences' rows of `got` with `want` ([rows, heads * d]); a row nobody
    /// owns that is not NaN any more counts its written elements as `nan`.
    pub fn compare(&self, got: &[f32], want: &[f32], tol: f32) -> Check {
        let width = self.batch.heads * self.batch.head_dim;
        let (mut g, mut w, mut written) = (Vec::new(), Vec::new(), 0);
        for (row, (go, wo)) in got.chunks(width).zip(want.chunks(width)).enumerate() {
            if self.owned[row] {
                g.extend_from_slice(go);
                w.extend_from_slice(wo);
            } else {
                written += go.iter().filter(|x| !x.is_nan()).count();
            }
        }
        let mut check = harness::compare(&g, &w, tol);
        check.nan += written;
        check.elems = got.len();
        check
    }

    /// Visible (query, key) pairs of the batch (per head).
    pub fn visible_pairs(&self) -> usize {
        let b = &self.batch;
        (0..b.query_len.len())
            .map(|s| {
                let (n, c) = (b.query_len[s] as usize, b.context_len[s] as usize);
                (c - n..c)
                    .map(|p| b.sliding_window.map_or(p + 1, |w| (p + 1).min(w)))
                    .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{paged_prefill, PrefillMeta, Spec};
    use crate::error::Result;
    use crate::harness;
    use candle_core::{DType, Device, Tensor};

    fn err_of(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn cpu_port_matches_reference_in_every_dtype() -> anyhow::Result<()> {
        Ok(harness::check_all_shapes(&Spec, &Device::Cpu)?)
    }

    /// [out (NaN), q, k_cache, v_cache]: q / out of `t` rows of `heads` x `d`, caches of
    /// 32 slots (8 blocks of 4) of `kv_heads` x `d`.
    fn inputs(
        dtype: DType,
        t: usize,
        heads: usize,
        kv_heads: usize,
        d: usize,
    ) -> anyhow::Result<[Tensor; 4]> {
        let dev = Device::Cpu;
        Ok([
            Tensor::full(f32::NAN, (t, heads * d), &dev)?.to_dtype(dtype)?,
            Tensor::ones((t, heads, d), dtype, &dev)?,
            Tensor::ones((32, kv_heads * d), dtype, &dev)?,
            Tensor::ones((32, kv_heads * d), dtype, &dev)?,
        ])
    }

    #[test]
    fn rejects_bad_inputs() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let meta = PrefillMeta::new(&[0], &[3], &[5], &[vec![1, 0]], 4, None, &dev)?;
        let [out, q, k, v] = inputs(DType::F32, 4, 4, 2, 8)?;
        paged_prefill(&out, &q, &k, &v, &meta)?;
        let k16 = k.to_dtype(DType::F16)?;
        assert!(err_of(paged_prefill(&out, &q, &k16, &v, &meta)).contains("k_cache is F16"));
        let [o3, q3, k3, v3] = inputs(DType::F32, 4, 3, 2, 8)?;
        assert!(err_of(paged_prefill(&o3, &q3, &k3, &v3, &meta)).contains("not a multiple"));
        let [o2, q2, k2, v2] = inputs(DType::F32, 2, 4, 2, 8)?;
        assert!(err_of(paged_prefill(&o2, &q2, &k2, &v2, &meta)).contains("q has 2 rows"));
        for d in [12, 264] {
            let [o, q, k, v] = inputs(DType::F32, 4, 2, 2, d)?;
            assert!(
                err_of(paged_prefill(&o, &q, &k, &v, &meta)).contains("head_dim"),
                "d {d}"
            );
        }
        let far = PrefillMeta::new(&[0], &[3], &[5], &[vec![1, 8]], 4, None, &dev)?;
        assert!(err_of(paged_prefill(&out, &q, &k, &v, &far)).contains("names block 8"));
        assert!(err_of(paged_prefill(&out, &q, &k, &out, &meta)).contains("v_cache"));
        let alias = out.reshape((4, 4, 8))?;
        assert!(err_of(paged_prefill(&out, &alias, &k, &v, &meta)).contains("shares storage"));
        let [o32, q32, k32, _] = inputs(DType::F32, 32, 2, 2, 8)?;
        assert!(err_of(paged_prefill(&o32, &q32, &k32, &o32, &meta)).contains("shares storage"));
        let new = |qs: &[u32], ql: &[u32], cl: &[u32], bt: &[Vec<u32>]| {
            PrefillMeta::new(qs, ql, cl, bt, 4, None, &dev)
        };
        assert!(err_of(new(&[0], &[3], &[9], &[vec![1, 0]])).contains("needs 3 blocks"));
        assert!(
            err_of(new(&[0], &[6], &[5], &[vec![1, 0]])).contains("query_len 6 > context_len 5")
        );
        assert!(err_of(new(&[0], &[0], &[5], &[vec![1, 0]])).contains("query_len 0"));
        assert!(err_of(new(&[0, 2], &[3, 1], &[5, 1], &[vec![1, 0], vec![2]])).contains("overlap"));
        assert!(err_of(new(&[0], &[3, 1], &[5], &[vec![1, 0]])).contains("one of each"));
        Ok(())
    }

    #[test]
    fn out_may_be_three_dimensional() -> anyhow::Result<()> {
        let meta = PrefillMeta::new(&[1], &[3], &[7], &[vec![1, 0]], 4, Some(2), &Device::Cpu)?;
        let [out, _, k, v] = inputs(DType::F32, 5, 4, 2, 8)?;
        let q = Tensor::randn(0f32, 1.0, (5, 4, 8), &Device::Cpu)?;
        let out3 = out.reshape((5, 4, 8))?.copy()?;
        paged_prefill(&out, &q, &k, &v, &meta)?;
        paged_prefill(&out3, &q, &k, &v, &meta)?;
        let (a, b) = (harness::host_f32(&out)?, harness::host_f32(&out3)?);
        assert!(a
            .iter()
            .zip(&b)
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan())));
        assert_eq!(a.iter().filter(|x| x.is_nan()).count(), 2 * 32);
        Ok(())
    }

    #[test]
    fn empty_batch_leaves_out_untouched() -> anyhow::Result<()> {
        let meta = PrefillMeta::new::<&[u32]>(&[], &[], &[], &[], 4, None, &Device::Cpu)?;
        let [out, q, k, v] = inputs(DType::BF16, 4, 4, 2, 8)?;
        paged_prefill(&out, &q, &k, &v, &meta)?;
        assert!(harness::host_f32(&out)?.iter().all(|x| x.is_nan()));
        Ok(())
    }

    #[test]
    #[ignore = "requires a CUDA device"]
    fn cuda_matches_reference_in_every_dtype() -> anyhow::Result<()> {
        Ok(harness::check_all_shapes(&Spec, &Device::new_cuda(0)?)?)
    }
}
