//! This machine's ceilings, measured with candle on the chosen device: memory bandwidth
//! (a copy — on CPU a parallel host memcpy, since candle's CPU copy is single-threaded —
//! and a matrix-vector product that streams a transposed weight-sized matrix, the access
//! pattern of decode; the larger is the ceiling) and matmul throughput. They are
//! the denominators of the roofline floors.
//!
//! Each measurement runs one untimed warm-up, then `reps` timed repetitions, each
//! bracketed by `Device::synchronize` so the clock is read only after the device
//! finished; the best repetition is kept (the ceiling is what the hardware *can* do).
//! Copy moves `2 * bytes` per repetition (read + write); the GEMV reads the `bytes` of
//! its matrix (`[1, k] x [k, k]^T`, vectors negligible). Matmul does `2 n^3` FLOPs.
//! Results are cached as JSON under `<cache dir>/device/`, keyed by device name and dtype.

use crate::error::{ProfilerError, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// Measured ceilings of one device and dtype.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ceilings {
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// The CPU model or GPU name.
    pub device_name: String,
    pub dtype: String,
    pub copy_bytes_per_s: f64,
    pub copy_buffer_bytes: u64,
    /// Bytes of the GEMV's matrix read per second.
    #[serde(default)]
    pub gemv_read_bytes_per_s: f64,
    pub matmul_flops_per_s: f64,
    pub matmul_n: usize,
    pub reps: usize,
    /// UTC date of the measurement.
    pub measured_at: String,
}

impl Ceilings {
    /// The memory-bandwidth ceiling: the better of copy and GEMV.
    pub fn mem_bandwidth_bytes_per_s(&self) -> f64 {
        self.copy_bytes_per_s.max(self.gemv_read_bytes_per_s)
    }
}

/// Run `f` once untimed, then `reps` times; the best seconds, synchronized.
fn best_of(device: &Device, reps: usize, f: &dyn Fn() -> Result<Tensor>) -> Result<f64> {
    drop(f()?);
    device.synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        device.synchronize()?;
        let t0 = Instant::now();
        let out = f()?;
        device.synchronize()?;
        best = best.min(t0.elapsed().as_secs_f64());
        drop(out);
    }
    Ok(best)
}

/// Measure copy GB/s and matmul FLOP/s on `device` in `dtype`.
pub fn measure(device: &Device, label: &str, name: &str, dtype: DType) -> Result<Ceilings> {
    let (elems, n, reps) = if device.is_cuda() {
        (256 << 20, 4096, 10)
    } else {
        (64 << 20, 1024, 5)
    };
    let bytes = (elems * dtype.size_in_bytes()) as u64;
    let copy_s = if device.is_cuda() {
        let src = Tensor::randn(0f32, 1.0, elems, device)?.to_dtype(dtype)?;
        best_of(device, reps, &|| Ok(src.copy()?))?
    } else {
        // candle's CPU copy is single-threaded: measure the memory system with one
        // memcpy stream per core instead.
        host_copy_seconds(bytes as usize, reps)
    };
    let k = (elems as f64).sqrt() as usize;
    // Decode's access pattern: one activation row against a [out, in] weight, transposed.
    let w = Tensor::randn(0f32, 1.0, (k, k), device)?.to_dtype(dtype)?;
    let x = Tensor::randn(0f32, 1.0, (1, k), device)?.to_dtype(dtype)?;
    let gemv_s = best_of(device, reps, &|| Ok(x.matmul(&w.t()?)?))?;
    let gemv_bytes = (k * k * dtype.size_in_bytes()) as f64;
    drop(w);
    let a = Tensor::randn(0f32, 1.0, (n, n), device)?.to_dtype(dtype)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), device)?.to_dtype(dtype)?;
    let mm_s = best_of(device, reps, &|| Ok(a.matmul(&b)?))?;
    Ok(Ceilings {
        device: label.to_string(),
        device_name: name.to_string(),
        dtype: format!("{dtype:?}").to_lowercase(),
        copy_bytes_per_s: 2.0 * bytes as f64 / copy_s,
        copy_buffer_bytes: bytes,
        gemv_read_bytes_per_s: gemv_bytes / gemv_s,
        matmul_flops_per_s: 2.0 * (n as f64).powi(3) / mm_s,
        matmul_n: n,
        reps,
        measured_at: crate::environment::utc_now_iso8601(),
    })
}

/// Best time of a parallel host memcpy of `bytes` (one chunk per core), after a warm-up.
fn host_copy_seconds(bytes: usize, reps: usize) -> f64 {
    let src: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
    let mut dst = vec![0u8; bytes];
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let chunk = bytes.div_ceil(threads);
    let mut best = f64::INFINITY;
    for rep in 0..=reps.max(1) {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for (d, c) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(c));
            }
        });
        if rep > 0 {
            best = best.min(t0.elapsed().as_secs_f64());
        }
    }
    std::hint::black_box(&dst);
    best
}

/// Where the ceilings of `name` (device name) and `dtype` are cached.
pub fn cache_path(name: &str, dtype: DType) -> PathBuf {
    let key: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    engine_model::paths::cache_dir()
        .join("device")
        .join(format!("ceilings-v3-{key}-{dtype:?}.json").to_lowercase())
}

/// Read cached ceilings, if any (a malformed file counts as absent).
pub fn load_cached(name: &str, dtype: DType) -> Option<Ceilings> {
    let s = std::fs::read_to_string(cache_path(name, dtype)).ok()?;
    serde_json::from_str(&s).ok()
}

/// Save ceilings to the cache; returns the path.
pub fn save(c: &Ceilings, dtype: DType) -> Result<PathBuf> {
    let path = cache_path(&c.device_name, dtype);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ProfilerError::io(dir, e))?;
    }
    let json = serde_json::to_string_pretty(c).map_err(|e| ProfilerError::Json {
        path: path.display().to_string(),
        source: e,
    })?;
    std::fs::write(&path, json).map_err(|e| ProfilerError::io(&path, e))?;
    Ok(path)
}

/// Cached ceilings, or measure and cache them (`refresh` forces a measurement).
/// Returns the ceilings and whether they came from the cache.
pub fn load_or_measure(
    device: &Device,
    label: &str,
    name: &str,
    dtype: DType,
    refresh: bool,
) -> Result<(Ceilings, bool)> {
    if !refresh {
        if let Some(c) = load_cached(name, dtype) {
            return Ok((c, true));
        }
    }
    let c = measure(device, label, name, dtype)?;
    save(&c, dtype)?;
    Ok((c, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ceilings_are_positive_and_finite() {
        let c = measure(&Device::Cpu, "cpu", "test cpu", DType::F32).unwrap();
        assert!(c.copy_bytes_per_s.is_finite() && c.copy_bytes_per_s > 1e6);
        assert!(c.matmul_flops_per_s.is_finite() && c.matmul_flops_per_s > 1e6);
        assert!(c.mem_bandwidth_bytes_per_s() >= c.copy_bytes_per_s);
        assert_eq!(c.dtype, "f32");
    }

    #[test]
    fn cache_path_is_sanitized() {
        let p = cache_path("AMD EPYC 7B13 / 64-Core", DType::BF16);
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(name, "ceilings-v3-amd-epyc-7b13---64-core-bf16.json");
    }
}
