//! The kernel registry and what `engine kernels test|bench`, the criterion benches and
//! the tests share: seeded random inputs rounded to the dtype, comparison against a
//! reference with a threshold per dtype, timing, and the copy-bandwidth ceiling.
//!
//! Error metric: `max |out - ref| / max |ref|` over the output (the error relative to
//! the output's scale), and any NaN fails, in the output or in the reference: every
//! `check` allocates its outputs poisoned with NaN ([`crate::Fill::Poison`]), so an
//! element a kernel forgets to write is caught, and a reference that produced NaN has
//! checked nothing.

use crate::error::{KernelError, Result};
use candle_core::{DType, Device, Tensor};
use std::time::{Duration, Instant};

/// One kernel as `engine kernels` sees it. A shape is a list of sizes whose meaning
/// [`KernelSpec::shape_names`] gives (e.g. `tokens,hidden`).
pub trait KernelSpec: Sync {
    fn name(&self) -> &'static str;
    /// One line: what it computes.
    fn about(&self) -> &'static str;
    /// The meaning of the numbers of a shape, comma-separated.
    fn shape_names(&self) -> &'static str;
    /// Shapes the tests run (small, odd sizes included).
    fn test_shapes(&self) -> Vec<Vec<usize>>;
    /// Shapes `bench` runs when none are given (realistic model sizes).
    fn bench_shapes(&self) -> Vec<Vec<usize>>;
    /// Run the op on `dev` on seeded random inputs, its outputs poisoned with NaN
    /// ([`crate::Fill::Poison`]), and compare with the reference.
    fn check(&self, dev: &Device, dtype: DType, shape: &[usize], seed: u64) -> Result<Check>;
    /// Inputs on `dev` and the op to time, with the bytes it must move and its flops.
    fn bench(&self, dev: &Device, dtype: DType, shape: &[usize]) -> Result<BenchCase>;
}

/// Every kernel, in the order `engine kernels` lists them.
pub fn registry() -> Vec<&'static dyn KernelSpec> {
    vec![
        &crate::add_rms_norm::Spec,
        &crate::rope::Spec,
        &crate::silu_mul::Spec,
        &crate::reshape_and_cache::Spec,
        &crate::rope_and_cache::Spec,
        &crate::paged_decode::Spec,
        &crate::paged_prefill::Spec,
        &crate::argmax::Spec,
        &crate::sample::Spec,
    ]
}

/// Look a kernel up by name.
pub fn find(name: &str) -> Result<&'static dyn KernelSpec> {
    let all = registry();
    let names: Vec<_> = all.iter().map(|k| k.name()).collect();
    all.into_iter().find(|k| k.name() == name).ok_or_else(|| {
        KernelError::Input(format!(
            "unknown kernel {name:?}; known: {}",
            names.join(", ")
        ))
    })
}

/// A prepared benchmark: `run` enqueues one call of the op.
pub struct BenchCase {
    pub run: Box<dyn FnMut() -> Result<()>>,
    /// Bytes the op must read and write at least (its memory floor).
    pub bytes: u64,
    /// Floating-point operations of one call.
    pub flops: u64,
}

/// The outcome of one comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Check {
    pub max_abs: f32,
    /// `max_abs / max |ref|`.
    pub max_rel: f32,
    pub tol: f32,
    /// Elements that are NaN in the output or in the reference (either fails).
    pub nan: usize,
    pub elems: usize,
}

impl Check {
    pub fn pass(&self) -> bool {
        self.nan == 0 && self.max_rel <= self.tol
    }
}

/// The default threshold on [`Check::max_rel`]: a few units of the dtype's rounding.
pub fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => 1.6e-2,
        DType::F16 => 2e-3,
        _ => 2e-5,
    }
}

/// Compare an output with its reference (same length). A NaN on either side counts in
/// [`Check::nan`] and fails the check: NaN in the output is an element the kernel did
/// not write (or computed wrongly); NaN in the reference means it checks nothing there.
/// (`f32::max` drops NaN, so the scale and the error are taken over finite pairs only.)
pub fn compare(out: &[f32], reference: &[f32], tol: f32) -> Check {
    let mut c = Check {
        max_abs: 0.0,
        max_rel: 0.0,
        tol,
        nan: 0,
        elems: out.len(),
    };
    if out.len() != reference.len() {
        c.nan = out.len().max(reference.len());
        return c;
    }
    let mut scale = 0f32;
    for (&o, &r) in out.iter().zip(reference) {
        if o.is_nan() || r.is_nan() {
            c.nan += 1;
            continue;
        }
        scale = scale.max(r.abs());
        c.max_abs = c.max_abs.max((o - r).abs());
    }
    c.max_rel = c.max_abs / scale.max(f32::MIN_POSITIVE);
    c
}

/// The sizes of a shape, checked against the kernel's shape names.
pub fn dims<const N: usize>(shape: &[usize], names: &str) -> Result<[usize; N]> {
    <[usize; N]>::try_from(shape)
        .map_err(|_| KernelError::Input(format!("shape {shape:?}: expected {N} sizes ({names})")))
}

/// `n` seeded values uniform in `[-scale, scale)` (splitmix64).
pub fn random(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            (2.0 * u - 1.0) * scale
        })
        .collect()
}

/// A random input on `dev` in `dtype`, and the same values (rounded to `dtype`) as
/// host f32 for the reference.
pub fn random_input(
    shape: &[usize],
    scale: f32,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> Result<(Tensor, Vec<f32>)> {
    let n = shape.iter().product();
    let host = Tensor::from_vec(random(n, scale, seed), shape, &Device::Cpu)?.to_dtype(dtype)?;
    let rounded = host.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok((host.to_device(dev)?, rounded))
}

/// A tensor's elements as host f32, in row-major order.
pub fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// The dtypes the tests cover.
pub const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Check every test shape in every dtype with poisoned outputs; fail with a table of
/// the failures.
pub fn check_all_shapes(spec: &dyn KernelSpec, dev: &Device) -> Result<()> {
    let mut failures = Vec::new();
    for dtype in DTYPES {
        for (i, shape) in spec.test_shapes().iter().enumerate() {
            let c = spec.check(dev, dtype, shape, 1000 + i as u64)?;
            if !c.pass() {
                failures.push(format!(
                    "{} {dtype:?} {shape:?}: max_rel {:.3e} (tol {:.1e}), max_abs {:.3e}, {} NaN of {}",
                    spec.name(),
                    c.max_rel,
                    c.tol,
                    c.max_abs,
                    c.nan,
                    c.elems
                ));
            }
        }
    }
    match failures.is_empty() {
        true => Ok(()),
        false => Err(KernelError::Mismatch(failures.join("\n"))),
    }
}

/// Wall time of one call, from repeated calls between device synchronizations.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub median: Duration,
    pub min: Duration,
    /// Calls per sample.
    pub iters: usize,
    pub samples: usize,
}

/// Time `case` for about `budget`: warm up, size batches of calls to ~budget/10 each,
/// take 10 batches; per-call median and min.
pub fn time(dev: &Device, case: &mut BenchCase, budget: Duration) -> Result<Timing> {
    for _ in 0..3 {
        (case.run)()?;
    }
    dev.synchronize()?;
    let t0 = Instant::now();
    (case.run)()?;
    dev.synchronize()?;
    let one = t0.elapsed().max(Duration::from_nanos(100));
    let samples = 10;
    let iters =
        ((budget / samples as u32).as_secs_f64() / one.as_secs_f64()).clamp(1.0, 10_000.0) as usize;
    let mut per_call = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        for _ in 0..iters {
            (case.run)()?;
        }
        dev.synchronize()?;
        per_call.push(t.elapsed() / iters as u32);
    }
    per_call.sort();
    Ok(Timing {
        median: per_call[samples / 2],
        min: per_call[0],
        iters,
        samples,
    })
}

/// The device's copy bandwidth in GB/s (bytes read + written per second): on CUDA the
/// `copy_u4` kernel over 512 MiB; on the CPU a single-threaded `copy_from_slice` over
/// 256 MiB (the CPU ports are single-threaded too).
pub fn copy_ceiling_gbs(dev: &Device) -> Result<f64> {
    let mut case = copy_case(dev)?;
    let t = time(dev, &mut case, Duration::from_millis(500))?;
    Ok(case.bytes as f64 / t.median.as_secs_f64() / 1e9)
}

fn copy_case(dev: &Device) -> Result<BenchCase> {
    match dev {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => crate::cuda::copy_case(d, 512 << 20),
        _ => {
            let n = (256usize << 20) / 4;
            let src = vec![1f32; n];
            let mut dst = vec![0f32; n];
            Ok(BenchCase {
                run: Box::new(move || {
                    dst.copy_from_slice(std::hint::black_box(&src));
                    std::hint::black_box(&mut dst);
                    Ok(())
                }),
                bytes: 2 * 4 * n as u64,
                flops: 0,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_fails_on_nan_on_either_side() {
        let ok = compare(&[1.0, 2.0], &[1.0, 2.0], 0.0);
        assert!(ok.pass(), "{ok:?}");
        // A kernel that left an element unwritten (poison) fails.
        let out_nan = compare(&[1.0, f32::NAN], &[1.0, 2.0], 1.0);
        assert!(!out_nan.pass() && out_nan.nan == 1, "{out_nan:?}");
        // A reference that produced NaN has checked nothing there: it fails too (this
        // passed before: f32::max dropped the NaN from both the scale and the error).
        let ref_nan = compare(&[1.0, 5.0], &[1.0, f32::NAN], 1.0);
        assert!(!ref_nan.pass() && ref_nan.nan == 1, "{ref_nan:?}");
        let both = compare(&[f32::NAN], &[f32::NAN], 1.0);
        assert!(!both.pass(), "{both:?}");
    }

    #[test]
    fn compare_measures_error_relative_to_the_reference_scale() {
        let c = compare(&[1.0, 2.1], &[1.0, 2.0], 0.06);
        assert!((c.max_abs - 0.1).abs() < 1e-6 && (c.max_rel - 0.05).abs() < 1e-6);
        assert!(c.pass());
        assert!(!compare(&[1.0, 2.2], &[1.0, 2.0], 0.06).pass());
        assert!(!compare(&[1.0], &[1.0, 2.0], 1.0).pass(), "length mismatch");
    }
}
