//! Rotary position embedding in place, half-split (NeoX / Hugging Face) or interleaved
//! (GPT-J / original Meta) (kernels/rope.cu).
//!
//! One call rotates the first `heads` heads of every row of a `[T, width]` matrix by
//! the cos/sin rows of its tokens' positions, computed in f32 from the stored cos/sin
//! and rounded once: the decoder rotates q and k together, in place in the fused qkv
//! projection's output (rows `[q heads | k heads | v heads]`), with no copy.
//! [`rope_inplace`] is the same on a `[T, heads, d]` tensor.

use crate::cpu::{self, with_float, Float};
use crate::error::{input_err, same_device, Result};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, InplaceOp3, Layout, Tensor};

#[path = "rope_spec.rs"]
mod spec;
pub(crate) use spec::random_positions;
pub use spec::{cos_sin_table, Spec};

/// The largest head_dim: the kernel holds a token's cos/sin row (head_dim f32) in shared
/// memory.
pub const MAX_HEAD_DIM: usize = 8192;

/// Rotate `x` in place: pair `(x1, x2)` of each head becomes `(x1 cos - x2 sin, x2 cos +
/// x1 sin)` at its token's position.
///
/// - `x`: `[T, heads, d]`, contiguous, f32/f16/bf16, `d` even, `d <= MAX_HEAD_DIM`;
/// - `cos_sin`: `[max_pos, d]`, same dtype: `cos(p * inv_freq[i])` in column `i` and
///   `sin(..)` in column `d/2 + i` of row `p`;
/// - `positions`: `[T]` u32, each `< max_pos`. Checked on the host when `positions` is on
///   the CPU (an error, `x` untouched); on CUDA it is not checked (that would need a
///   device sync): the kernel skips a token whose position is out of range, leaving it as
///   it is.
/// - `neox`: pair `i` with `i + d/2` (true) or `2i` with `2i + 1` (false).
pub fn rope_inplace(x: &Tensor, cos_sin: &Tensor, positions: &Tensor, neox: bool) -> Result<()> {
    let (t, heads, d) = match x.dims() {
        &[t, h, d] => (t, h, d),
        _ => input_err!(
            "rope: x must be [tokens, heads, head_dim], got {:?}",
            x.shape()
        ),
    };
    if !x.is_contiguous() {
        input_err!(
            "rope: x {:?} must be contiguous (it is rotated in place)",
            x.shape()
        );
    }
    rope_rows_inplace(
        &x.reshape((t, heads * d))?,
        cos_sin,
        positions,
        heads,
        d,
        neox,
    )
}

/// Rotate the first `heads` heads of `head_dim` of every row of `x` `[T, width]` in
/// place (`width >= heads * head_dim`; the rest of each row is left as it is), with the
/// rules of [`rope_inplace`]. `x` contiguous.
pub fn rope_rows_inplace(
    x: &Tensor,
    cos_sin: &Tensor,
    positions: &Tensor,
    heads: usize,
    head_dim: usize,
    neox: bool,
) -> Result<()> {
    check_rows("rope", x, cos_sin, positions, heads, head_dim)?;
    if x.dim(0)? == 0 {
        return Ok(());
    }
    let (cos_sin, positions) = (cos_sin.contiguous()?, positions.contiguous()?);
    let d = head_dim;
    Ok(x.inplace_op3(&cos_sin, &positions, &Rope { neox, heads, d })?)
}

/// The checks of [`rope_rows_inplace`] (errors prefixed with `op`).
pub(crate) fn check_rows(
    op: &str,
    x: &Tensor,
    cos_sin: &Tensor,
    positions: &Tensor,
    heads: usize,
    d: usize,
) -> Result<()> {
    let (t, width) = match x.dims() {
        &[t, w] => (t, w),
        _ => input_err!("{op}: x must be [tokens, width], got {:?}", x.shape()),
    };
    if d == 0 || !d.is_multiple_of(2) || d > MAX_HEAD_DIM {
        input_err!("{op}: head_dim {d} must be even and in 2..={MAX_HEAD_DIM}");
    }
    if heads == 0 || heads * d > width {
        input_err!("{op}: {heads} heads of {d} do not fit in rows of {width}");
    }
    if heads * d / 2 > i32::MAX as usize {
        input_err!("{op}: heads * head_dim / 2 = {} exceeds i32", heads * d / 2);
    }
    if !matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        input_err!("{op}: x is {:?}; expected f32, f16 or bf16", x.dtype());
    }
    if !x.is_contiguous() {
        input_err!(
            "{op}: x {:?} must be contiguous (it is rotated in place)",
            x.shape()
        );
    }
    let max_pos = match cos_sin.dims() {
        &[m, w] if w == d => m,
        _ => input_err!(
            "{op}: cos_sin {:?} must be [max_pos, {d}] (head_dim)",
            cos_sin.shape()
        ),
    };
    if cos_sin.dtype() != x.dtype() {
        input_err!(
            "{op}: x is {:?}, cos_sin is {:?}",
            x.dtype(),
            cos_sin.dtype()
        );
    }
    if positions.dims() != [t] || positions.dtype() != DType::U32 {
        input_err!(
            "{op}: positions must be [{t}] (tokens) u32, got {:?} {:?}",
            positions.shape(),
            positions.dtype()
        );
    }
    same_device(
        op,
        ("x", x),
        &[("cos_sin", cos_sin), ("positions", positions)],
    )?;
    if positions.device().is_cpu() {
        let p = positions.to_vec1::<u32>()?;
        if let Some((i, p)) = p.iter().enumerate().find(|(_, &p)| p as usize >= max_pos) {
            input_err!("{op}: positions[{i}] = {p} is out of range (cos_sin has {max_pos} rows)");
        }
    }
    Ok(())
}

/// The reference, with plain loops: `x` `[T, heads, d]`, `cos_sin` `[max_pos, d]`.
pub fn reference(
    x: &[f32],
    cos_sin: &[f32],
    positions: &[u32],
    heads: usize,
    d: usize,
    neox: bool,
) -> Vec<f32> {
    let half = d / 2;
    let mut out = x.to_vec();
    for (t, &p) in positions.iter().enumerate() {
        let row = &cos_sin[p as usize * d..(p as usize + 1) * d];
        for h in 0..heads {
            let base = (t * heads + h) * d;
            for i in 0..half {
                let (a, b) = match neox {
                    true => (base + i, base + half + i),
                    false => (base + 2 * i, base + 2 * i + 1),
                };
                let (x1, x2, c, s) = (x[a], x[b], row[i], row[half + i]);
                out[a] = x1 * c - x2 * s;
                out[b] = x2 * c + x1 * s;
            }
        }
    }
    out
}

/// Pairs per unit (one thread's work item), as the .cu header describes.
pub(crate) fn pairs_per_unit(half: usize, neox: bool, vec: bool, elem_size: usize) -> usize {
    let v = match neox {
        true => 16 / elem_size,
        false => 8 / elem_size,
    };
    match vec && half.is_multiple_of(v) {
        true => v,
        false => 1,
    }
}

struct Rope {
    neox: bool,
    heads: usize,
    d: usize,
}

/// The CPU port: per token, its cos/sin row as f32, then [`rotate_token`].
fn cpu_rope<T: Float>(
    x: &mut [T],
    row_stride: usize,
    cs: &[T],
    pos: &[u32],
    (heads, d): (usize, usize),
    neox: bool,
) -> candle_core::Result<()> {
    check_positions(pos, cs.len() / d)?;
    let mut c = vec![0f32; d];
    for (t, &p) in pos.iter().enumerate() {
        cos_sin_row(&mut c, cs, p);
        let xt = &mut x[t * row_stride..t * row_stride + heads * d];
        rotate_token(xt, &c, (heads, d), neox, None);
    }
    Ok(())
}

/// The CPU ports' position check (before anything is written).
pub(crate) fn check_positions(pos: &[u32], max_pos: usize) -> candle_core::Result<()> {
    if let Some((i, p)) = pos.iter().enumerate().find(|(_, &p)| p as usize >= max_pos) {
        candle_core::bail!(
            "rope: positions[{i}] = {p} is out of range (cos_sin has {max_pos} rows)"
        );
    }
    Ok(())
}

/// Row `p` of `cs` (`[max_pos, d]`) as f32 into `c` (`d` long), as the kernels load it.
pub(crate) fn cos_sin_row<T: Float>(c: &mut [f32], cs: &[T], p: u32) {
    let d = c.len();
    for (c, &s) in c.iter_mut().zip(&cs[p as usize * d..(p as usize + 1) * d]) {
        *c = s.f();
    }
}

/// One token of the CPU ports (rope_common.cuh's `rope_token`): heads `0..heads` of `xt`
/// rotated by `c` (cos | sin, f32) in the kernel's units of V pairs, with its arithmetic
/// (f32 products and sums, each rounded: no FMA, as the kernel). With `cached = (row,
/// first)`, heads `first..` are also stored to `row` (head `first` at its start), as
/// rope_and_cache stores the rotated k.
pub(crate) fn rotate_token<T: Float>(
    xt: &mut [T],
    c: &[f32],
    (heads, d): (usize, usize),
    neox: bool,
    mut cached: Option<(&mut [T], usize)>,
) {
    let half = d / 2;
    let v = pairs_per_unit(half, neox, true, T::DTYPE.size_in_bytes());
    let per_head = half / v;
    for u in 0..heads * per_head {
        let h = u / per_head;
        let i0 = (u - h * per_head) * v;
        let xh = &mut xt[h * d..(h + 1) * d];
        let mut dst = match &mut cached {
            Some((row, first)) if h >= *first => Some(&mut row[(h - *first) * d..][..d]),
            _ => None,
        };
        for i in i0..i0 + v {
            let (a, b) = match neox {
                true => (i, half + i),
                false => (2 * i, 2 * i + 1),
            };
            let (x1, x2, co, si) = (xh[a].f(), xh[b].f(), c[i], c[half + i]);
            xh[a] = T::from_f(x1 * co - x2 * si);
            xh[b] = T::from_f(x2 * co + x1 * si);
            if let Some(dst) = dst.as_mut() {
                (dst[a], dst[b]) = (xh[a], xh[b]);
            }
        }
    }
}

impl InplaceOp3 for Rope {
    fn name(&self) -> &'static str {
        "rope"
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
        let (_, width) = l1.shape().dims2()?;
        let geo = (self.heads, self.d);
        with_float!(s1.dtype(), T => {
            let (cs, pos) = (cpu::slice::<T>(s2, l2)?, cpu::slice::<u32>(s3, l3)?);
            cpu_rope(cpu::slice_mut::<T>(s1, l1)?, width, cs, pos, geo, self.neox)
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
        let (t, width) = l1.shape().dims2()?;
        let (heads, d) = (self.heads, self.d);
        let max_pos = l2.shape().dims2()?.0;
        let dtype = s1.dtype();
        let x = cuda::ptr(s1, l1)?;
        let (cs, pos) = (cuda::ptr(s2, l2)?, cuda::ptr(s3, l3)?);
        let vec = x % 16 == 0 && (width * dtype.size_in_bytes()).is_multiple_of(16);
        let units = heads * (d / 2 / pairs_per_unit(d / 2, self.neox, vec, dtype.size_in_bytes()));
        let threads = (units.div_ceil(32) * 32).clamp(32, 512);
        let f = cuda::func(
            &s1.device,
            "rope",
            &format!("rope_{}", cuda::suffix(dtype)?),
        )?;
        let cfg = LaunchConfig {
            grid_dim: (t as u32, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: (d * 4) as u32,
        };
        let (t, width, heads, d) = (t as i64, width as i64, heads as i32, d as i32);
        let (max_pos, neox, vec) = (max_pos as i64, self.neox as i32, vec as i32);
        let mut b = f.builder();
        candle_core::builder_arg!(b, x, cs, pos, t, width, heads, d, max_pos, neox, vec);
        // SAFETY: x addresses t rows of `width` elements of `dtype` (heads * d <= width),
        // cos_sin max_pos * d, positions t u32 (contiguous, shapes checked by the wrapper;
        // candle locks x mutably and rejects operands sharing its storage). Positions >=
        // max_pos are skipped by the kernel. Shared memory: d f32 (d <= MAX_HEAD_DIM).
        // Signature: (T*, const T*, const u32*, i64, i64, i32, i32, i64, i32, i32).
        unsafe { b.launch(cfg) }.map_err(|e| candle_core::Error::Msg(format!("rope: {e:?}")))?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "rope_tests.rs"]
mod tests;
