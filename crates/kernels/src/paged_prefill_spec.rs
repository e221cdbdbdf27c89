//! paged_prefill's [`KernelSpec`] for `engine kernels test|bench` and the tests (the
//! test batches themselves are built in paged_prefill_cpu.rs).

use super::{cpu_port, paged_prefill, reference};
use crate::error::Result;
use crate::harness::{self, BenchCase, Check, KernelSpec};
use candle_core::{DType, Device, Tensor};

/// `engine kernels test|bench paged_prefill`.
pub struct Spec;

impl KernelSpec for Spec {
    fn name(&self) -> &'static str {
        "paged_prefill"
    }
    fn about(&self) -> &'static str {
        "varlen causal prefill attention over the paged KV cache (tiles + online softmax)"
    }
    fn shape_names(&self) -> &'static str {
        // Sequence i: query_len - 5i (>= 1) new tokens, context_len - 5i (>= its query_len)
        // in the cache; window 0 = none.
        "seqs,query_len,context_len,heads,kv_heads,head_dim,block_size,window"
    }
    fn test_shapes(&self) -> Vec<Vec<usize>> {
        vec![
            vec![1, 37, 37, 4, 4, 64, 16, 0],    // full prefill, odd length
            vec![1, 20, 75, 8, 2, 128, 16, 0],   // chunk after a cached prefix, GQA 4
            vec![3, 23, 50, 7, 1, 80, 8, 0],     // several sequences, GQA 7, d 80
            vec![4, 1, 9, 4, 1, 64, 4, 0],       // 1-token prefills
            vec![5, 12, 12, 2, 1, 64, 16, 0],    // lengths 12, 7, 2, 1, 1
            vec![2, 45, 70, 4, 2, 64, 16, 13],   // sliding window shorter than a key tile
            vec![1, 70, 70, 2, 2, 32, 8, 40],    // window across tiles, full prefill
            vec![2, 33, 40, 2, 1, 256, 32, 0],   // d 256 (48 KiB of shared memory)
            vec![1, 5, 5, 1, 1, 8, 1, 0],        // d 8, block_size 1
            vec![2, 100, 300, 4, 1, 128, 16, 0], // longer chunk, several key tiles
            vec![3, 64, 200, 8, 8, 64, 32, 50],  // window, query tiles of exactly BM
        ]
    }
    fn bench_shapes(&self) -> Vec<Vec<usize>> {
        vec![
            vec![1, 512, 512, 32, 8, 128, 16, 0],
            vec![1, 2048, 2048, 32, 8, 128, 16, 0],
            vec![4, 512, 2048, 32, 8, 128, 16, 0],
        ]
    }
    fn check(&self, dev: &Device, dtype: DType, shape: &[usize], seed: u64) -> Result<Check> {
        let c = cpu_port::Case::new(shape, self.shape_names(), seed)?;
        let b = &c.batch;
        let (q, qh) = harness::random_input(&[c.rows, b.heads, b.head_dim], 3.0, seed, dtype, dev)?;
        let (k, kh) = c.cache(seed + 1, dtype, dev)?;
        let (v, vh) = c.cache(seed + 2, dtype, dev)?;
        let out = Tensor::full(f32::NAN, (c.rows, b.heads * b.head_dim), dev)?.to_dtype(dtype)?;
        paged_prefill(&out, &q, &k, &v, &c.meta(dev)?)?;
        let want = reference(&qh, &kh, &vh, b);
        Ok(c.compare(&harness::host_f32(&out)?, &want, harness::tolerance(dtype)))
    }
    fn bench(&self, dev: &Device, dtype: DType, shape: &[usize]) -> Result<BenchCase> {
        let c = cpu_port::Case::new(shape, self.shape_names(), 1)?;
        let b = &c.batch;
        let (q, _) = harness::random_input(&[c.rows, b.heads, b.head_dim], 3.0, 1, dtype, dev)?;
        let (k, _) = c.cache(2, dtype, dev)?;
        let (v, _) = c.cache(3, dtype, dev)?;
        let out = Tensor::zeros((c.rows, b.heads * b.head_dim), dtype, dev)?;
        let meta = c.meta(dev)?;
        let size = dtype.size_in_bytes();
        let tokens: usize = b.query_len.iter().map(|&n| n as usize).sum();
        let ctx: usize = b.context_len.iter().map(|&n| n as usize).sum();
        let bytes = (2 * tokens * b.heads + 2 * ctx * b.kv_heads) * b.head_dim * size;
        let flops = 4 * b.head_dim * b.heads * c.visible_pairs();
        Ok(BenchCase {
            run: Box::new(move || paged_prefill(&out, &q, &k, &v, &meta)),
            bytes: bytes as u64,
            flops: flops as u64,
        })
    }
}
