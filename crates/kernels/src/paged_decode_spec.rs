//! paged_decode's test batches and its [`KernelSpec`] for `engine kernels test|bench`
//! and the tests: mixed context lengths, shuffled blocks, decoding rows among others.

use super::{paged_decode, reference, DecodeMeta, Geometry, PARTITION_SIZE};
use crate::error::Result;
use crate::harness::{self, BenchCase, Check, KernelSpec};
use candle_core::{DType, Device, Tensor};

/// A test batch: mixed context lengths, shuffled distinct blocks, decoding rows spread
/// among other rows.
pub(super) struct TestCase {
    pub num_tokens: usize,
    pub num_slots: usize,
    pub rows: Vec<u32>,
    pub ctx: Vec<u32>,
    pub tables: Vec<Vec<u32>>,
}

impl TestCase {
    /// Sequence i: context max(context - 37 i, 1); rows 2B, 2B - 2, ..., 2 of 2B + 1
    /// (rows 0 and odd rows belong to nobody); blocks a seeded permutation of the cache
    /// (3 spare blocks).
    pub fn new(batch: usize, context: usize, block_size: usize, seed: u64) -> Self {
        let ctx: Vec<u32> = (0..batch)
            .map(|i| context.saturating_sub(37 * i).max(1) as u32)
            .collect();
        let rows = (0..batch).map(|i| (2 * (batch - i)) as u32).collect();
        Self::build(2 * batch + 1, rows, ctx, block_size, 3, seed)
    }

    /// Benchmark batch: every sequence at `context`, rows 0..B.
    pub fn uniform(batch: usize, context: usize, block_size: usize, seed: u64) -> Self {
        let rows = (0..batch as u32).collect();
        Self::build(
            batch,
            rows,
            vec![context as u32; batch],
            block_size,
            0,
            seed,
        )
    }

    fn build(
        num_tokens: usize,
        rows: Vec<u32>,
        ctx: Vec<u32>,
        bs: usize,
        spare: usize,
        seed: u64,
    ) -> Self {
        let need: Vec<usize> = ctx.iter().map(|&c| (c as usize).div_ceil(bs)).collect();
        let num_blocks = need.iter().sum::<usize>() + spare;
        let keys = crate::harness::random(num_blocks, 1.0, seed ^ 0x5eed);
        let mut perm: Vec<u32> = (0..num_blocks as u32).collect();
        perm.sort_by(|&a, &b| keys[a as usize].total_cmp(&keys[b as usize]));
        let mut next = perm.into_iter();
        let tables = need
            .iter()
            .map(|&n| next.by_ref().take(n).collect())
            .collect();
        Self {
            num_tokens,
            num_slots: num_blocks * bs,
            rows,
            ctx,
            tables,
        }
    }
}

/// `Spec::check`: a [`TestCase`] batch, poisoned `out`, the decoding rows against the
/// reference and every other row still NaN (violations counted as `nan`).
pub(super) fn check(dev: &Device, dtype: DType, dims: [usize; 8], seed: u64) -> Result<Check> {
    let [b, ctx, heads, kvh, d, bs, ps, win] = dims;
    let case = TestCase::new(b, ctx, bs, seed);
    let t = case.num_tokens;
    let (q, qh) = harness::random_input(&[t, heads, d], 2.0, seed, dtype, dev)?;
    let (k, kh) = harness::random_input(&[case.num_slots, kvh * d], 1.0, seed + 1, dtype, dev)?;
    let (v, vh) = harness::random_input(&[case.num_slots, kvh * d], 1.0, seed + 2, dtype, dev)?;
    let window = (win > 0).then_some(win);
    let mut meta = DecodeMeta::new(&case.rows, &case.ctx, &case.tables, bs, window, dev)?;
    meta.partition_size = Some(ps);
    let out = Tensor::full(f32::NAN, (t, heads * d), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(dev)?;
    paged_decode(&out, &q, &k, &v, &meta)?;
    let got = harness::host_f32(&out)?;
    let geo = Geometry {
        heads,
        kv_heads: kvh,
        head_dim: d,
        block_size: bs,
        sliding_window: window,
    };
    let want = reference(&qh, &kh, &vh, &geo, &case.rows, &case.ctx, &case.tables);
    let w = heads * d;
    let got_rows: Vec<f32> = case
        .rows
        .iter()
        .flat_map(|&r| got[r as usize * w..][..w].to_vec())
        .collect();
    let mut c = harness::compare(&got_rows, &want, harness::tolerance(dtype));
    // Rows that do not decode must still hold the NaN poison.
    let touched = (0..t as u32)
        .filter(|r| !case.rows.contains(r))
        .flat_map(|r| got[r as usize * w..][..w].iter())
        .filter(|x| !x.is_nan())
        .count();
    c.nan += touched;
    c.elems = got.len();
    Ok(c)
}

/// `Spec::bench`: B sequences at the same context; bytes = K and V of every visible
/// token once + q + out.
pub(super) fn bench(dev: &Device, dtype: DType, dims: [usize; 8]) -> Result<BenchCase> {
    let [b, ctx, heads, kvh, d, bs, ps, win] = dims;
    let case = TestCase::uniform(b, ctx, bs, 7);
    let (q, _) = harness::random_input(&[b, heads, d], 2.0, 1, dtype, dev)?;
    // Zeros: the kernel's traffic and work do not depend on the values.
    let k = Tensor::zeros((case.num_slots, kvh * d), dtype, dev)?;
    let v = Tensor::zeros((case.num_slots, kvh * d), dtype, dev)?;
    let out = Tensor::zeros((b, heads * d), dtype, dev)?;
    let window = (win > 0).then_some(win);
    let mut meta = DecodeMeta::new(&case.rows, &case.ctx, &case.tables, bs, window, dev)?;
    meta.partition_size = Some(ps);
    let seen = window.map_or(ctx, |w| w.min(ctx));
    let size = dtype.size_in_bytes();
    Ok(BenchCase {
        run: Box::new(move || paged_decode(&out, &q, &k, &v, &meta)),
        bytes: ((2 * b * seen * kvh * d + 2 * b * heads * d) * size) as u64,
        flops: (4 * b * heads * seen * d) as u64,
    })
}

/// `engine kernels test|bench paged_decode`.
pub struct Spec;

impl KernelSpec for Spec {
    fn name(&self) -> &'static str {
        "paged_decode"
    }
    fn about(&self) -> &'static str {
        "one query per sequence over its paged KV cache, split-K partitions merged (GQA, window)"
    }
    fn shape_names(&self) -> &'static str {
        "batch,context,heads,kv_heads,head_dim,block_size,partition,window"
    }
    fn test_shapes(&self) -> Vec<Vec<usize>> {
        // Sequence i has context max(context - 37 i, 1); window 0 = none.
        vec![
            vec![1, 1, 4, 4, 64, 16, 16, 0],
            vec![3, 300, 8, 2, 64, 16, 32, 0],
            vec![5, 257, 7, 1, 128, 8, 16, 0],
            vec![4, 100, 28, 4, 128, 16, 512, 0],
            vec![6, 200, 16, 1, 64, 16, 32, 0],
            vec![3, 150, 12, 1, 64, 16, 16, 75],
            vec![2, 77, 12, 4, 8, 5, 13, 0],
            vec![2, 64, 4, 2, 256, 32, 32, 0],
            vec![4, 130, 4, 1, 72, 16, 32, 17],
            vec![5, 200, 8, 2, 64, 16, 32, 89],
            vec![2, 40, 4, 2, 16, 4, 1, 0],
            vec![9, 300, 32, 8, 128, 16, 64, 0],
        ]
    }
    fn bench_shapes(&self) -> Vec<Vec<usize>> {
        [1, 8, 32, 128]
            .iter()
            .map(|&b| vec![b, 2048, 32, 8, 128, 16, PARTITION_SIZE, 0])
            .collect()
    }
    fn check(&self, dev: &Device, dtype: DType, shape: &[usize], seed: u64) -> Result<Check> {
        let dims = harness::dims::<8>(shape, self.shape_names())?;
        check(dev, dtype, dims, seed)
    }
    fn bench(&self, dev: &Device, dtype: DType, shape: &[usize]) -> Result<BenchCase> {
        bench(dev, dtype, harness::dims::<8>(shape, self.shape_names())?)
    }
}
