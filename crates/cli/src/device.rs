//! `engine device`: measure this machine's ceilings (copy bandwidth and matmul rate, with
//! candle on the chosen device, synchronized) and cache them for the roofline.

use clap::Args;
use engine_profiler::{device, environment, telemetry};

#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Device: cpu, or cuda[:N] when built with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// dtype of the measurements: f32, f16 or bf16 (default: f32 on CPU, bf16 on CUDA).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Print the ceilings as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: DeviceArgs) -> anyhow::Result<()> {
    let dev = crate::parse_device(&a.device)?;
    let dtype = crate::parse_dtype(a.dtype.as_deref(), &dev)?;
    let ordinal = a
        .device
        .strip_prefix("cuda:")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let nvml = telemetry::nvml_info(ordinal);
    let name = match (&nvml, dev.is_cuda()) {
        (Ok((gpu, _)), true) => gpu.clone(),
        (Err(_), true) => format!("CUDA device {ordinal}"),
        _ => environment::cpu_name(),
    };
    crate::say(&format!("measuring {name} ({}, {dtype:?})", a.device));
    let c = device::measure(&dev, &a.device, &name, dtype)?;
    let path = device::save(&c, dtype)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        println!("device:      {} ({})", c.device, c.device_name);
        println!("dtype:       {}", c.dtype);
        println!(
            "copy:        {:.2} GB/s ({} MiB buffer, read + write, best of {})",
            c.copy_bytes_per_s / 1e9,
            c.copy_buffer_bytes >> 20,
            c.reps
        );
        println!(
            "matmul:      {:.1} GFLOP/s ({n}x{n}x{n}, best of {})",
            c.matmul_flops_per_s / 1e9,
            c.reps,
            n = c.matmul_n
        );
        match &nvml {
            Ok((gpu, driver)) => println!("NVML:        {gpu}, driver {driver}"),
            Err(e) => println!("NVML:        {e}"),
        }
    }
    crate::say(&format!("cached in {}", path.display()));
    Ok(())
}
