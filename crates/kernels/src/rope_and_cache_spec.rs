//! The reference of `rope_and_cache` and its [`KernelSpec`] (declared from
//! rope_and_cache.rs).

use super::{rope_and_cache, QkvHeads, Rotary};
use crate::error::{input_err, Result};
use crate::harness::{self, BenchCase, Check, KernelSpec};
use crate::paged::SKIP_SLOT;
use crate::reshape_and_cache::{self, random_slots, reshape_and_cache_cols};
use crate::rope::{self, cos_sin_table, random_positions, rope_rows_inplace};
use crate::Fill;
use candle_core::{DType, Device, Tensor};

/// The reference: [`rope::reference`] of the q and k heads of each row of `qkv` `[T,
/// qkv_width]`, then [`reshape_and_cache::reference`] of the rotated k and of the v into
/// `caches` (`[num_slots, kv_width]` each). Returns (qkv, k_cache, v_cache) after.
pub fn reference(
    qkv: &[f32],
    (cos_sin, neox): (&[f32], bool),
    positions: &[u32],
    slots: &[u32],
    geo: QkvHeads,
    (k_cache, v_cache): (&[f32], &[f32]),
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (w, d, kvw) = (geo.qkv_width(), geo.head_dim, geo.kv_width());
    let qk = (geo.heads + geo.kv_heads) * d;
    let cols = |c0: usize, n: usize| -> Vec<f32> {
        qkv.chunks(w).flat_map(|r| r[c0..c0 + n].to_vec()).collect()
    };
    let heads = geo.heads + geo.kv_heads;
    let rotated = rope::reference(&cols(0, qk), cos_sin, positions, heads, d, neox);
    let mut out = qkv.to_vec();
    for (row, r) in out.chunks_mut(w).zip(rotated.chunks(qk)) {
        row[..qk].copy_from_slice(r);
    }
    let k: Vec<f32> = rotated
        .chunks(qk)
        .flat_map(|r| r[qk - kvw..].to_vec())
        .collect();
    let k_out = reshape_and_cache::reference(k_cache, &k, slots, kvw);
    let v_out = reshape_and_cache::reference(v_cache, &cols(qk, kvw), slots, kvw);
    (out, k_out, v_out)
}

/// `engine kernels test|bench rope_and_cache`: shape
/// `tokens,heads,kv_heads,head_dim,neox,skipped` (neox 1 = half-split, 0 = interleaved;
/// `skipped` rows are padding, slot [`SKIP_SLOT`]). The cache has `2 * tokens + 3` slots,
/// positions are random in `0..2 * tokens + 7`.
pub struct Spec;

/// One case's inputs on the device (the caches poisoned) and their host f32 values.
struct Case {
    geo: QkvHeads,
    neox: bool,
    qkv: Tensor,
    cs: Tensor,
    pos: Tensor,
    slots: Tensor,
    caches: (Tensor, Tensor),
    host: (Vec<f32>, Vec<f32>, Vec<u32>, Vec<u32>),
}

impl Case {
    fn new(shape: &[usize], dtype: DType, dev: &Device, seed: u64) -> Result<Self> {
        let [t, heads, kv_heads, d, neox, skipped] = harness::dims::<6>(shape, Spec.shape_names())?;
        if skipped > t {
            input_err!("rope_and_cache: shape {shape:?} has more skipped rows than tokens");
        }
        let geo = QkvHeads {
            heads,
            kv_heads,
            head_dim: d,
        };
        let (max_pos, num_slots) = (2 * t + 7, 2 * t + 3);
        let (qkv, qh) = harness::random_input(&[t, geo.qkv_width()], 2.0, seed, dtype, dev)?;
        let cs = Tensor::from_vec(cos_sin_table(max_pos, d), (max_pos, d), &Device::Cpu)?
            .to_dtype(dtype)?;
        let csh = harness::host_f32(&cs)?;
        let pos = random_positions(t, max_pos, seed + 1);
        let slots = random_slots(t, num_slots, skipped, seed + 2);
        let cache = || crate::output(&[num_slots, geo.kv_width()], dtype, dev, Fill::Poison);
        Ok(Self {
            geo,
            neox: neox != 0,
            qkv,
            cs: cs.to_device(dev)?,
            pos: Tensor::from_vec(pos.clone(), t, dev)?,
            slots: Tensor::from_vec(slots.clone(), t, dev)?,
            caches: (cache()?, cache()?),
            host: (qh, csh, pos, slots),
        })
    }

    fn run(&self) -> Result<()> {
        let rotary = Rotary {
            cos_sin: &self.cs,
            neox: self.neox,
        };
        let caches = (&self.caches.0, &self.caches.1);
        rope_and_cache(&self.qkv, self.geo, rotary, &self.pos, caches, &self.slots)
    }

    /// The same work as rope then reshape_and_cache of k and of v (the three launches
    /// the op replaces), on this case's inputs.
    fn run_composition(&self) -> Result<()> {
        let QkvHeads {
            heads,
            kv_heads,
            head_dim: d,
        } = self.geo;
        rope_rows_inplace(
            &self.qkv,
            &self.cs,
            &self.pos,
            heads + kv_heads,
            d,
            self.neox,
        )?;
        let (k, v) = &self.caches;
        reshape_and_cache_cols(k, &self.qkv, heads * d, &self.slots)?;
        reshape_and_cache_cols(v, &self.qkv, (heads + kv_heads) * d, &self.slots)
    }

    /// qkv, k_cache and v_cache as host f32.
    fn outputs(&self) -> Result<[Vec<f32>; 3]> {
        let (k, v) = &self.caches;
        Ok([
            harness::host_f32(&self.qkv)?,
            harness::host_f32(k)?,
            harness::host_f32(v)?,
        ])
    }
}

/// Elements whose bits differ (NaN equals NaN of the same bits: the unwritten poison).
fn bit_mismatches(a: &[f32], b: &[f32]) -> usize {
    let differ = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits());
    differ.count() + a.len().abs_diff(b.len())
}

impl KernelSpec for Spec {
    fn name(&self) -> &'static str {
        "rope_and_cache"
    }
    fn about(&self) -> &'static str {
        "rope of q and k in the qkv rows + rotated k and v stored at each row's cache slot"
    }
    fn shape_names(&self) -> &'static str {
        "tokens,heads,kv_heads,head_dim,neox,skipped"
    }
    fn test_shapes(&self) -> Vec<Vec<usize>> {
        vec![
            vec![1, 1, 1, 2, 1, 0],
            vec![3, 4, 4, 64, 1, 1],    // MHA, head_dim 64
            vec![5, 8, 2, 128, 1, 2],   // GQA 4, head_dim 128
            vec![7, 6, 2, 64, 0, 1],    // interleaved
            vec![9, 4, 1, 36, 1, 3],    // (d/2) % V != 0: scalar units
            vec![33, 8, 8, 128, 1, 0],  // MHA
            vec![17, 12, 4, 80, 0, 5],  // interleaved, head_dim 80
            vec![4, 2, 1, 64, 1, 4],    // every row padding
            vec![65, 4, 2, 6, 1, 7],    // tiny heads, many rows
            vec![31, 32, 8, 128, 1, 3], // llama-3.1-8b's heads
        ]
    }
    fn bench_shapes(&self) -> Vec<Vec<usize>> {
        [1, 32, 256, 4096]
            .iter()
            .map(|&t| vec![t, 32, 8, 128, 1, 0])
            .collect()
    }
    /// Against the reference (qkv, and the cache rows written: tolerance of the dtype),
    /// every other cache row still poisoned, and against the composition rope +
    /// reshape_and_cache on the same device bit for bit (differences count as NaN).
    fn check(&self, dev: &Device, dtype: DType, shape: &[usize], seed: u64) -> Result<Check> {
        let case = Case::new(shape, dtype, dev, seed)?;
        case.run()?;
        let got = case.outputs()?;
        let twin = Case::new(shape, dtype, dev, seed)?;
        twin.run_composition()?;
        let composed = twin.outputs()?;
        let (qh, csh, pos, slots) = &case.host;
        let (geo, kvw) = (case.geo, case.geo.kv_width());
        let nan = vec![f32::NAN; got[1].len()];
        let want = reference(qh, (csh, case.neox), pos, slots, geo, (&nan, &nan));
        // qkv whole, then the written rows of k and v.
        let (mut out, mut refs) = (got[0].clone(), want.0);
        let live: Vec<usize> = slots
            .iter()
            .filter(|&&s| s != SKIP_SLOT)
            .map(|&s| s as usize)
            .collect();
        let mut written = vec![false; got[1].len() / kvw];
        live.iter().for_each(|&s| written[s] = true);
        for (g, w) in [(&got[1], &want.1), (&got[2], &want.2)] {
            for &s in &live {
                out.extend_from_slice(&g[s * kvw..(s + 1) * kvw]);
                refs.extend_from_slice(&w[s * kvw..(s + 1) * kvw]);
            }
        }
        let mut c = harness::compare(&out, &refs, harness::tolerance(dtype));
        for g in &got[1..] {
            let stray = g.chunks(kvw).zip(&written).filter(|(_, &w)| !w);
            c.nan += stray
                .map(|(r, _)| r.iter().filter(|v| !v.is_nan()).count())
                .sum::<usize>();
        }
        for (g, k) in got.iter().zip(&composed) {
            c.nan += bit_mismatches(g, k);
        }
        c.elems = got.iter().map(Vec::len).sum();
        Ok(c)
    }
    fn bench(&self, dev: &Device, dtype: DType, shape: &[usize]) -> Result<BenchCase> {
        let [t, heads, kv_heads, d, _, _] = harness::dims::<6>(shape, self.shape_names())?;
        let case = Case::new(shape, dtype, dev, 1)?;
        // q and k read and written, v read, k and v written to the cache, one cos/sin row
        // per token, positions and slots.
        let elems = 2 * (heads + kv_heads) * d + kv_heads * d + 2 * kv_heads * d + d;
        let bytes = t * elems * dtype.size_in_bytes() + 8 * t;
        Ok(BenchCase {
            run: Box::new(move || case.run()),
            bytes: bytes as u64,
            flops: (3 * t * (heads + kv_heads) * d) as u64,
        })
    }
}
