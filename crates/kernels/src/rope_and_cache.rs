//! Rope of q and k in place in the fused qkv rows, and the rotated k and the v stored at
//! each row's cache slot, in one launch (kernels/rope_and_cache.cu). The decoder ran
//! [`crate::rope`] then [`crate::reshape_and_cache`] twice per layer (3 launches, k and v
//! read twice); this op does the same work in one pass with the same arithmetic, so its
//! results equal that composition bit for bit (the tests and `engine kernels test
//! rope_and_cache` check it on the device they run on).
//!
//! Positions follow [`crate::rope`]'s rules, slots [`crate::paged`]'s (a row whose slot
//! does not write, [`crate::paged::SKIP_SLOT`] for padding, writes no cache element).

use crate::cpu::{self, with_float, Float};
use crate::error::{input_err, same_device, shares_storage, Result};
#[cfg(feature = "cuda")]
use crate::functions::Func;
use crate::functions::Kernels;
use crate::paged::{bad_slot, slot_writes};
use crate::reshape_and_cache::check_cols;
use crate::rope::{check_positions, check_rows, cos_sin_row, rotate_token};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, InplaceOp3, Layout, Tensor};

#[path = "rope_and_cache_spec.rs"]
mod spec;
pub use spec::{reference, Spec};

/// The head layout of the fused qkv projection's rows: `[q: heads * head_dim | k:
/// kv_heads * head_dim | v: kv_heads * head_dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QkvHeads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl QkvHeads {
    /// Elements of one cache row (k or v heads).
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    /// Elements of q, k and v in a row.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }
}

/// The rotary table and convention: `cos_sin` `[max_pos, head_dim]` (cos in the first
/// half of each row, sin in the second, the dtype of qkv), `neox` half-split (true) or
/// interleaved (false), as [`crate::rope::rope_inplace`] takes them.
#[derive(Debug, Clone, Copy)]
pub struct Rotary<'a> {
    pub cos_sin: &'a Tensor,
    pub neox: bool,
}

/// Rotate q and k of every row of `qkv` in place at its position and store the rotated
/// k and the v at its slot: `k_cache[slots[t]] = rope(k[t])`, `v_cache[slots[t]] = v[t]`.
///
/// - `qkv`: `[T, width]`, contiguous, f32/f16/bf16, `width >= geo.qkv_width()`;
/// - `caches`: (k_cache, v_cache), each `[num_slots, kv_heads * head_dim]` (or
///   `[num_slots, kv_heads, head_dim]`), contiguous, qkv's dtype, written in place; they
///   may not share storage with each other or any other operand;
/// - `positions`, `slots`: `[T]` u32 ([`crate::rope`]'s and [`crate::paged`]'s rules:
///   checked on the host when on the CPU, an error that leaves everything untouched; on
///   CUDA a position `>= max_pos` is not rotated and a slot that does not write is
///   skipped, as the two ops it fuses do).
pub fn rope_and_cache(
    qkv: &Tensor,
    geo: QkvHeads,
    rotary: Rotary,
    positions: &Tensor,
    (k_cache, v_cache): (&Tensor, &Tensor),
    slots: &Tensor,
) -> Result<()> {
    Kernels::NONE.rope_and_cache(qkv, geo, rotary, positions, (k_cache, v_cache), slots)
}

impl Kernels {
    /// [`rope_and_cache`] launched from this table.
    pub fn rope_and_cache(
        &self,
        qkv: &Tensor,
        geo: QkvHeads,
        rotary: Rotary,
        positions: &Tensor,
        (k_cache, v_cache): (&Tensor, &Tensor),
        slots: &Tensor,
    ) -> Result<()> {
        const OP: &str = "rope_and_cache";
        let QkvHeads {
            heads,
            kv_heads,
            head_dim: d,
        } = geo;
        if kv_heads == 0 {
            input_err!("{OP}: kv_heads must be at least 1");
        }
        check_rows(OP, qkv, rotary.cos_sin, positions, heads + kv_heads, d)?;
        let kv_width = geo.kv_width();
        for (name, cache, col) in [
            ("k_cache", k_cache, heads * d),
            ("v_cache", v_cache, (heads + kv_heads) * d),
        ] {
            check_cols(OP, cache, qkv, col, slots)?;
            if cache.elem_count() != cache.dim(0)? * kv_width {
                input_err!(
                    "{OP}: {name} {:?} rows must hold {kv_heads} x {d}",
                    cache.shape()
                );
            }
            let others = [qkv, rotary.cos_sin, positions, slots];
            if others.iter().any(|t| shares_storage(t, cache)) {
                input_err!("{OP}: {name} shares storage with another operand");
            }
        }
        if shares_storage(k_cache, v_cache) {
            input_err!("{OP}: k_cache and v_cache share storage");
        }
        same_device(
            OP,
            ("qkv", qkv),
            &[("k_cache", k_cache), ("v_cache", v_cache)],
        )?;
        if qkv.dim(0)? == 0 {
            return Ok(());
        }
        let op = RopeAndCache {
            kernels: self,
            geo,
            neox: rotary.neox,
            cos_sin: rotary.cos_sin.contiguous()?,
            k_cache: k_cache.clone(),
            v_cache: v_cache.clone(),
        };
        Ok(qkv.inplace_op3(&positions.contiguous()?, &slots.contiguous()?, &op)?)
    }
}

/// The op on `qkv` (dst) with operands (positions, slots); cos/sin and the caches held.
struct RopeAndCache<'a> {
    /// The function table the launch uses ([`Kernels::NONE`]: looked up at the launch).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    kernels: &'a Kernels,
    geo: QkvHeads,
    neox: bool,
    cos_sin: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
}

/// One call's host slices for the CPU port.
struct Host<'a, T> {
    qkv: &'a mut [T],
    width: usize,
    cs: &'a [T],
    pos: &'a [u32],
    slots: &'a [u32],
}

/// The CPU port, per token (block) as the kernel: the cos/sin row, q and k rotated in
/// place with the k heads also stored at the slot's k row, then the v heads copied.
fn cpu_rope_and_cache<T: Float>(
    x: Host<T>,
    k_cache: &mut [T],
    v_cache: &mut [T],
    geo: QkvHeads,
    neox: bool,
) -> candle_core::Result<()> {
    let (d, kvw) = (geo.head_dim, geo.kv_width());
    let num_slots = k_cache.len() / kvw;
    check_positions(x.pos, x.cs.len() / d)?;
    if let Some((i, s)) = bad_slot(x.slots, num_slots) {
        candle_core::bail!("rope_and_cache: slots[{i}] = {s} is out of range ({num_slots} slots)");
    }
    let mut c = vec![0f32; d];
    for (t, (&p, &slot)) in x.pos.iter().zip(x.slots).enumerate() {
        cos_sin_row(&mut c, x.cs, p);
        let row = &mut x.qkv[t * x.width..t * x.width + geo.qkv_width()];
        let writes = slot_writes(slot, num_slots);
        let (s, qk) = (slot as usize * kvw, geo.heads + geo.kv_heads);
        let k_row = writes.then(|| (&mut k_cache[s..s + kvw], geo.heads));
        rotate_token(row, &c, (qk, d), neox, k_row);
        if writes {
            v_cache[s..s + kvw].copy_from_slice(&row[qk * d..]);
        }
    }
    Ok(())
}

impl InplaceOp3 for RopeAndCache<'_> {
    fn name(&self) -> &'static str {
        "rope_and_cache"
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
        let (geo, neox) = (self.geo, self.neox);
        with_float!(s1.dtype(), T => {
            let qkv = cpu::slice_mut::<T>(s1, l1)?;
            let (pos, slots) = (cpu::slice::<u32>(s2, l2)?, cpu::slice::<u32>(s3, l3)?);
            cpu::with_host::<T, _>(&self.cos_sin, |cs| {
                cpu::with_host_mut::<T>(&self.k_cache, |k| {
                    cpu::with_host_mut::<T>(&self.v_cache, |v| {
                        let x = Host { qkv, width, cs, pos, slots };
                        cpu_rope_and_cache(x, k, v, geo, neox)
                    })
                })
            })
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
        let QkvHeads {
            heads,
            kv_heads,
            head_dim: d,
        } = self.geo;
        let (dtype, size) = (s1.dtype(), s1.dtype().size_in_bytes());
        let max_pos = self.cos_sin.dim(0)?;
        let kvw = self.geo.kv_width();
        let num_slots = self.k_cache.dim(0)?;
        let qkv = cuda::ptr(s1, l1)?;
        let (pos, slots) = (cuda::ptr(s2, l2)?, cuda::ptr(s3, l3)?);
        let cs = cuda::tensor_ptr(&self.cos_sin)?;
        let (k, v) = (
            cuda::tensor_ptr(&self.k_cache)?,
            cuda::tensor_ptr(&self.v_cache)?,
        );
        let vec = (qkv | k | v) % 16 == 0
            && (width * size).is_multiple_of(16)
            && (kvw * size).is_multiple_of(16);
        let v_units = match vec {
            true => kvw * size / 16,
            false => kvw,
        };
        let pairs = crate::rope::pairs_per_unit(d / 2, self.neox, vec, size);
        let units = ((heads + kv_heads) * (d / 2 / pairs)).max(v_units);
        let threads = (units.div_ceil(32) * 32).clamp(32, 512);
        let f = self.kernels.get(&s1.device, Func::RopeAndCache, dtype)?;
        let cfg = LaunchConfig {
            grid_dim: (t as u32, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: (d * 4) as u32,
        };
        let (t, width, max_pos, num_slots) =
            (t as i64, width as i64, max_pos as i64, num_slots as i64);
        let (heads, kv_heads, d) = (heads as i32, kv_heads as i32, d as i32);
        let (neox, vec) = (self.neox as i32, vec as i32);
        let mut b = f.builder();
        candle_core::builder_arg!(
            b, qkv, k, v, cs, pos, slots, t, width, heads, kv_heads, d, max_pos, num_slots, neox,
            vec
        );
        // SAFETY: qkv addresses t rows of `width` elements of `dtype` ((heads + 2 kv_heads)
        // * d <= width), k and v num_slots * kv_heads * d each, cos_sin max_pos * d,
        // positions and slots t u32 (contiguous, shapes checked by the wrapper). candle
        // locks qkv mutably; the wrapper checked that neither cache shares storage with
        // another operand, and the caller owns the caches (the decoder's KvCache hands
        // them out with `layer_mut`). Positions >= max_pos are not rotated and slots >=
        // num_slots not written by the kernel. Shared memory: d f32 (d <= MAX_HEAD_DIM).
        // Signature: (T*, T*, T*, const T*, const u32*, const u32*, i64, i64, i32, i32,
        // i32, i64, i64, i32, i32).
        unsafe { b.launch(cfg) }
            .map_err(|e| candle_core::Error::Msg(format!("rope_and_cache: {e:?}")))?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "rope_and_cache_tests.rs"]
mod tests;
