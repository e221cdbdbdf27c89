//! Background telemetry while a configuration runs: NVML (GPU memory used,
//! utilization, power, temperature, SM clock) and the process's resident memory.
//!
//! A [`Sampler`] owns one thread that samples every `period` until stopped, then hands
//! its samples back with a per-config [`TelemetrySummary`]. NVML is loaded at run time
//! (`nvml-wrapper` opens libnvidia-ml dynamically), so this always compiles and reports
//! "unavailable" where there is no NVIDIA driver. RSS is read from `/proc/self/status`
//! (`VmRSS`); it is absent off Linux.

use crate::metrics::Summary;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One sample; `t_s` is seconds since the sampler started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySample {
    pub t_s: f64,
    pub rss_bytes: Option<u64>,
    pub gpu_memory_used_bytes: Option<u64>,
    pub gpu_util_percent: Option<u32>,
    pub power_w: Option<f64>,
    pub temperature_c: Option<u32>,
    pub sm_clock_mhz: Option<u32>,
}

/// Every sample of one configuration and their summaries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySummary {
    /// `sampled: <gpu name>`, or why NVML was not sampled (`unavailable: ...`).
    pub nvml: String,
    pub samples: Vec<TelemetrySample>,
    pub rss_bytes: Summary,
    pub gpu_memory_used_bytes: Summary,
    pub gpu_util_percent: Summary,
    pub power_w: Summary,
    pub temperature_c: Summary,
    pub sm_clock_mhz: Summary,
}

impl TelemetrySummary {
    /// Summarize `samples`.
    pub fn of(nvml: String, samples: Vec<TelemetrySample>) -> Self {
        let col = |f: &dyn Fn(&TelemetrySample) -> Option<f64>| -> Summary {
            Summary::of(&samples.iter().filter_map(f).collect::<Vec<_>>())
        };
        Self {
            nvml,
            rss_bytes: col(&|s| s.rss_bytes.map(|v| v as f64)),
            gpu_memory_used_bytes: col(&|s| s.gpu_memory_used_bytes.map(|v| v as f64)),
            gpu_util_percent: col(&|s| s.gpu_util_percent.map(f64::from)),
            power_w: col(&|s| s.power_w),
            temperature_c: col(&|s| s.temperature_c.map(f64::from)),
            sm_clock_mhz: col(&|s| s.sm_clock_mhz.map(f64::from)),
            samples,
        }
    }
}

/// Resident set size of this process, from `/proc/self/status`.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The GPU's name and the driver version, or why NVML cannot say.
pub fn nvml_info(gpu_index: u32) -> std::result::Result<(String, String), String> {
    let nvml = Nvml::init().map_err(|e| format!("unavailable: {e}"))?;
    let driver = nvml
        .sys_driver_version()
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let name = nvml
        .device_by_index(gpu_index)
        .and_then(|d| d.name())
        .map_err(|e| format!("unavailable: {e}"))?;
    Ok((name, driver))
}

/// Total memory (bytes) and CUDA compute capability (major, minor) of GPU `gpu_index`.
pub fn nvml_capacity(gpu_index: u32) -> std::result::Result<(u64, (i32, i32)), String> {
    let nvml = Nvml::init().map_err(|e| format!("unavailable: {e}"))?;
    let dev = nvml
        .device_by_index(gpu_index)
        .map_err(|e| format!("unavailable: {e}"))?;
    let total = dev.memory_info().map_err(|e| e.to_string())?.total;
    let cc = dev.cuda_compute_capability().map_err(|e| e.to_string())?;
    Ok((total, (cc.major, cc.minor)))
}

/// A background sampling thread.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(String, Vec<TelemetrySample>)>>,
}

impl Sampler {
    /// Start sampling every `period`; NVML device `gpu_index` when given (CUDA runs).
    pub fn start(gpu_index: Option<u32>, period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || sample_loop(gpu_index, period, &flag))
            .ok();
        Self { stop, handle }
    }

    /// Stop the thread and summarize what it saw.
    pub fn finish(mut self) -> TelemetrySummary {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok((nvml, samples))) => TelemetrySummary::of(nvml, samples),
            _ => TelemetrySummary::of("unavailable: sampler thread failed".into(), Vec::new()),
        }
    }
}

fn sample_loop(
    gpu_index: Option<u32>,
    period: Duration,
    stop: &AtomicBool,
) -> (String, Vec<TelemetrySample>) {
    let nvml = match gpu_index {
        Some(_) => Nvml::init().map_err(|e| format!("unavailable: {e}")),
        None => Err("not sampled: CPU device".to_string()),
    };
    let device = match (&nvml, gpu_index) {
        (Ok(n), Some(i)) => n
            .device_by_index(i)
            .map_err(|e| format!("unavailable: {e}")),
        (Err(e), _) => Err(e.clone()),
        (Ok(_), None) => Err("not sampled: CPU device".to_string()),
    };
    let status = match &device {
        Ok(d) => format!("sampled: {}", d.name().unwrap_or_else(|_| "GPU".into())),
        Err(e) => e.clone(),
    };
    let start = Instant::now();
    let mut samples = Vec::new();
    loop {
        let mut s = TelemetrySample {
            t_s: start.elapsed().as_secs_f64(),
            rss_bytes: rss_bytes(),
            ..Default::default()
        };
        if let Ok(d) = &device {
            s.gpu_memory_used_bytes = d.memory_info().ok().map(|m| m.used);
            s.gpu_util_percent = d.utilization_rates().ok().map(|u| u.gpu);
            s.power_w = d.power_usage().ok().map(|mw| f64::from(mw) / 1e3);
            s.temperature_c = d.temperature(TemperatureSensor::Gpu).ok();
            s.sm_clock_mhz = d.clock_info(Clock::SM).ok();
        }
        samples.push(s);
        // Sleep in small slices so that stopping is prompt.
        let next = start + period.mul_f64(samples.len() as f64);
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return (status, samples);
            }
            std::thread::sleep(Duration::from_millis(5).min(period));
        }
        if stop.load(Ordering::Relaxed) {
            return (status, samples);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_parsed_in_bytes() {
        let s = "Name:\tengine\nVmPeak:\t 2000 kB\nVmRSS:\t    1234 kB\n";
        assert_eq!(parse_vm_rss(s), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn sampler_collects_rss_and_reports_cpu_status() {
        let s = Sampler::start(None, Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(50));
        let t = s.finish();
        assert!(t.nvml.starts_with("not sampled"));
        assert!(!t.samples.is_empty());
        if cfg!(target_os = "linux") {
            assert!(t.rss_bytes.max.is_some_and(|v| v > 0.0));
        }
    }
}
