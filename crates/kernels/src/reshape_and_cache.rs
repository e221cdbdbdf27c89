//! Scatter new tokens' K (or V) rows into the paged cache by slot, in place
//! (kernels/reshape_and_cache.cu). The decoder calls it twice per layer (K and V), with
//! [`reshape_and_cache_cols`] reading K and V straight out of the fused qkv projection's
//! rows (no copy).

use crate::cpu::{self, with_float, Float};
use crate::error::{input_err, same_device, Result};
use crate::harness::{self, BenchCase, Check, KernelSpec};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, InplaceOp3, Layout, Tensor};

pub use crate::paged::SKIP_SLOT;
use crate::paged::{bad_slot, slot_writes};

/// `cache[slots[t]] = src[t]` for every token `t` whose slot is not [`SKIP_SLOT`].
///
/// - `cache`: `[num_slots, width]` (or `[num_slots, kv_heads, head_dim]`), contiguous,
///   f32/f16/bf16, written in place;
/// - `src`: `[T, width]` or `[T, kv_heads, head_dim]`, same dtype;
/// - `slots`: `[T]` u32, each `< num_slots` or [`SKIP_SLOT`]. Checked on the host when
///   `slots` is on the CPU (an error, the cache untouched); on CUDA it is not checked (that
///   would need a device sync): the kernel skips every slot `>= num_slots`.
///
/// Two tokens with the same slot: one of them wins (which is unspecified on CUDA).
pub fn reshape_and_cache(cache: &Tensor, src: &Tensor, slots: &Tensor) -> Result<()> {
    let t = src.dims().first().copied().unwrap_or(0);
    let width = src.dims().iter().skip(1).product::<usize>();
    if src.rank() < 2 {
        input_err!(
            "reshape_and_cache: src {:?} must be [tokens, width] or [tokens, kv_heads, head_dim]",
            src.shape()
        );
    }
    reshape_and_cache_cols(cache, &src.contiguous()?.reshape((t, width))?, 0, slots)
}

/// `cache[slots[t]] = src[t, col..col + width]` (width: the cache's row), the rules of
/// [`reshape_and_cache`] otherwise. `src`: `[T, src_width]`, contiguous, e.g. the fused
/// qkv rows with `col` at the K (or V) heads.
pub fn reshape_and_cache_cols(
    cache: &Tensor,
    src: &Tensor,
    col: usize,
    slots: &Tensor,
) -> Result<()> {
    if check_cols("reshape_and_cache", cache, src, col, slots)? == 0 {
        return Ok(());
    }
    let slots = slots.contiguous()?;
    Ok(cache.inplace_op3(src, &slots, &ReshapeAndCache { col })?)
}

/// The checks of [`reshape_and_cache_cols`] (errors prefixed with `op`); returns the
/// number of tokens.
pub(crate) fn check_cols(
    op: &str,
    cache: &Tensor,
    src: &Tensor,
    col: usize,
    slots: &Tensor,
) -> Result<usize> {
    if cache.rank() < 2 {
        input_err!(
            "{op}: cache must be [num_slots, width], got {:?}",
            cache.shape()
        );
    }
    let num_slots = cache.dims()[0];
    let width = cache.dims()[1..].iter().product::<usize>();
    let (t, src_width) = match src.dims() {
        &[t, w] => (t, w),
        d => input_err!("{op}: src {d:?} must be [tokens, width]"),
    };
    if col + width > src_width {
        input_err!(
            "{op}: columns {col}..{} of src rows of {src_width} (cache {:?})",
            col + width,
            cache.shape()
        );
    }
    if !matches!(cache.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        input_err!(
            "{op}: cache is {:?}; expected f32, f16 or bf16",
            cache.dtype()
        );
    }
    if src.dtype() != cache.dtype() {
        input_err!(
            "{op}: cache is {:?}, src is {:?}",
            cache.dtype(),
            src.dtype()
        );
    }
    if !cache.is_contiguous() || !src.is_contiguous() {
        input_err!(
            "{op}: cache {:?} and src {:?} must be contiguous",
            cache.shape(),
            src.shape()
        );
    }
    if slots.dims() != [t] || slots.dtype() != DType::U32 {
        input_err!(
            "{op}: slots must be [{t}] (tokens) u32, got {:?} {:?}",
            slots.shape(),
            slots.dtype()
        );
    }
    same_device(op, ("cache", cache), &[("src", src), ("slots", slots)])?;
    if slots.device().is_cpu() {
        if let Some((i, s)) = bad_slot(&slots.to_vec1::<u32>()?, num_slots) {
            input_err!("{op}: slots[{i}] = {s} is out of range (cache has {num_slots} slots)");
        }
    }
    Ok(t)
}

/// The reference: `cache` `[num_slots, width]` with src's rows written at their slots.
pub fn reference(cache: &[f32], src: &[f32], slots: &[u32], width: usize) -> Vec<f32> {
    let mut out = cache.to_vec();
    for (t, &s) in slots.iter().enumerate() {
        if s != SKIP_SLOT {
            let s = s as usize;
            out[s * width..(s + 1) * width].copy_from_slice(&src[t * width..(t + 1) * width]);
        }
    }
    out
}

struct ReshapeAndCache {
    /// First column of the rows copied out of src.
    col: usize,
}

/// Units per row (16-byte vectors or single elements) as the .cu header describes.
fn units(width: usize, vec: bool, elem_size: usize) -> (usize, usize) {
    let p = 16 / elem_size;
    match vec && width.is_multiple_of(p) {
        true => (width / p, p),
        false => (width, 1),
    }
}

/// The CPU port: per token (block), the row's units copied in the kernel's order.
fn cpu_scatter<T: Float>(
    cache: &mut [T],
    (src, src_width, col): (&[T], usize, usize),
    slots: &[u32],
    width: usize,
) -> candle_core::Result<()> {
    let num_slots = cache.len() / width;
    if let Some((i, s)) = bad_slot(slots, num_slots) {
        candle_core::bail!(
            "reshape_and_cache: slots[{i}] = {s} is out of range (cache has {num_slots} slots)"
        );
    }
    let (n, p) = units(width, true, T::DTYPE.size_in_bytes());
    for (t, &slot) in slots.iter().enumerate() {
        if !slot_writes(slot, num_slots) {
            continue;
        }
        let (s, d) = (t * src_width + col, slot as usize * width);
        for u in 0..n {
            cache[d + u * p..d + (u + 1) * p].copy_from_slice(&src[s + u * p..s + (u + 1) * p]);
        }
    }
    Ok(())
}

impl InplaceOp3 for ReshapeAndCache {
    fn name(&self) -> &'static str {
        "reshape_and_cache"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let width = l1.shape().elem_count() / l1.dims()[0].max(1);
        let src_width = l2.dims().get(1).copied().unwrap_or(width);
        with_float!(s1.dtype(), T => {
            let (src, slots) = (cpu::slice::<T>(s2, l2)?, cpu::slice::<u32>(s3, l3)?);
            let src = (src, src_width, self.col);
            cpu_scatter(cpu::slice_mut::<T>(s1, l1)?, src, slots, width)
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        use crate::cuda;
        use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
        let num_slots = l1.dims()[0];
        let width = l1.shape().elem_count() / num_slots.max(1);
        let t = l3.shape().elem_count();
        let dtype = s1.dtype();
        let src_width = l2.dims().get(1).copied().unwrap_or(width);
        let size = dtype.size_in_bytes();
        let cache = cuda::ptr(s1, l1)?;
        let src = cuda::ptr(s2, l2)? + (self.col * size) as u64;
        let slots = cuda::ptr(s3, l3)?;
        let vec =
            cache % 16 == 0 && src.is_multiple_of(16) && (src_width * size).is_multiple_of(16);
        let (n, _) = units(width, vec, dtype.size_in_bytes());
        let threads = (n.div_ceil(32) * 32).clamp(32, 512);
        let f = cuda::func(
            &s1.device,
            "reshape_and_cache",
            &format!("reshape_and_cache_{}", cuda::suffix(dtype)?),
        )?;
        let cfg = LaunchConfig {
            grid_dim: (t as u32, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let (t, width, num_slots, vec) = (t as i64, width as i64, num_slots as i64, vec as i32);
        let src_width = src_width as i64;
        let mut b = f.builder();
        candle_core::builder_arg!(b, cache, src, slots, t, width, src_width, num_slots, vec);
        // SAFETY: cache addresses num_slots * width elements of `dtype`; src (offset by
        // `col`) t rows of src_width with col + width <= src_width; slots t u32
        // (contiguous, shapes checked by the wrapper; candle locks the cache mutably and
        // rejects operands sharing its storage). Slots >= num_slots are skipped by the
        // kernel. Signature: (T*, const T*, const u32*, i64, i64, i64, i64, i32).
        unsafe { b.launch(cfg) }
            .map_err(|e| candle_core::Error::Msg(format!("reshape_and_cache: {e:?}")))?;
        Ok(())
    }
}

/// `tokens` distinct random slots in `0..num_slots` (a seeded shuffle), with `skipped`
/// of them, spread out, replaced by [`SKIP_SLOT`].
pub fn random_slots(tokens: usize, num_slots: usize, skipped: usize, seed: u64) -> Vec<u32> {
    let mut all: Vec<u32> = (0..num_slots as u32).collect();
    for (i, r) in harness::random(num_slots, 1.0, seed)
        .into_iter()
        .enumerate()
        .rev()
    {
        let j = (((r + 1.0) / 2.0 * (i + 1) as f32) as usize).min(i);
        all.swap(i, j);
    }
    all.truncate(tokens);
    for k in 0..skipped.min(tokens) {
        all[k * tokens / skipped] = SKIP_SLOT;
    }
    all
}

/// `engine kernels test|bench reshape_and_cache`: shape `tokens,width,num_slots,skipped`
/// (`num_slots >= tokens`; `skipped` tokens get [`SKIP_SLOT`]).
pub struct Spec;

impl KernelSpec for Spec {
    fn name(&self) -> &'static str {
        "reshape_and_cache"
    }
    fn about(&self) -> &'static str {
        "scatter new K or V rows into the paged cache by slot (in place)"
    }
    fn shape_names(&self) -> &'static str {
        "tokens,width,num_slots,skipped"
    }
    fn test_shapes(&self) -> Vec<Vec<usize>> {
        vec![
            vec![1, 8, 4, 0],
            vec![3, 7, 10, 1],
            vec![5, 12, 5, 0],
            vec![9, 100, 16, 2],
            vec![17, 1024, 64, 3],
            vec![64, 1024, 100, 0],
            vec![4, 40, 8, 4],
        ]
    }
    fn bench_shapes(&self) -> Vec<Vec<usize>> {
        [1, 32, 256, 4096]
            .iter()
            .map(|&t| vec![t, 1024, 8192, 0])
            .collect()
    }
    fn check(&self, dev: &Device, dtype: DType, shape: &[usize], seed: u64) -> Result<Check> {
        let [t, width, num_slots, skipped] = harness::dims::<4>(shape, self.shape_names())?;
        if num_slots < t || skipped > t {
            input_err!("reshape_and_cache: shape {shape:?} needs num_slots >= tokens >= skipped");
        }
        let cache = Tensor::full(f32::NAN, (num_slots, width), dev)?.to_dtype(dtype)?;
        let (src, sh) = harness::random_input(&[t, width], 2.0, seed, dtype, dev)?;
        let slots = random_slots(t, num_slots, skipped, seed + 1);
        reshape_and_cache(&cache, &src, &Tensor::from_vec(slots.clone(), t, dev)?)?;
        let got = harness::host_f32(&cache)?;
        // Written rows must equal src exactly (a copy); every other element stays NaN.
        let (mut out, mut want, mut written) = (Vec::new(), Vec::new(), vec![false; num_slots]);
        for (i, &s) in slots.iter().enumerate().filter(|(_, &s)| s != SKIP_SLOT) {
            let s = s as usize;
            out.extend_from_slice(&got[s * width..(s + 1) * width]);
            want.extend_from_slice(&sh[i * width..(i + 1) * width]);
            written[s] = true;
        }
        let mut c = harness::compare(&out, &want, 0.0);
        for (s, _) in written.iter().enumerate().filter(|(_, &w)| !w) {
            c.nan += got[s * width..(s + 1) * width]
                .iter()
                .filter(|v| !v.is_nan())
                .count();
        }
        c.elems = got.len();
        Ok(c)
    }
    fn bench(&self, dev: &Device, dtype: DType, shape: &[usize]) -> Result<BenchCase> {
        let [t, width, num_slots, skipped] = harness::dims::<4>(shape, self.shape_names())?;
        let cache = Tensor::zeros((num_slots.max(t), width), dtype, dev)?;
        let (src, _) = harness::random_input(&[t, width], 2.0, 1, dtype, dev)?;
        let slots = Tensor::from_vec(random_slots(t, num_slots.max(t), skipped, 2), t, dev)?;
        let bytes = 2 * t * width * dtype.size_in_bytes() + 4 * t;
        Ok(BenchCase {
            run: Box::new(move || reshape_and_cache(&cache, &src, &slots)),
            bytes: bytes as u64,
            flops: 0,
        })
    }
}

#[cfg(test)]
#[path = "reshape_and_cache_tests.rs"]
mod tests;
