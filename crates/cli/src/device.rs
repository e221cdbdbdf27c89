//! `engine device`: measure this machine's ceilings (copy bandwidth and matmul rate, with
//! candle on the chosen device, synchronized) and cache them for the roofline.

use clap::Args;
use engine_profiler::{device, telemetry};

#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Device: auto (cuda:0 when available, else cpu), cpu, or cuda[:N].
    #[arg(long, default_value = "auto")]
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
    let label = crate::bench::device_label(&dev);
    let (name, _, gpu_index) = crate::bench::device_identity(&dev);
    let nvml = telemetry::nvml_info(gpu_index.unwrap_or(0));
    crate::say(&format!("measuring {name} ({label}, {dtype:?})"));
    let c = device::measure(&dev, &label, &name, dtype)?;
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
        println!(
            "GEMV read:   {:.2} GB/s (matrix-vector product streaming the matrix)",
            c.gemv_read_bytes_per_s / 1e9
        );
        println!(
            "memory:      {:.2} GB/s (the larger; the decode floors use it)",
            c.mem_bandwidth_bytes_per_s() / 1e9
        );
        match &nvml {
            Ok((gpu, driver)) => println!("NVML:        {gpu}, driver {driver}"),
            Err(e) => println!("NVML:        {e}"),
        }
        if dev.is_cuda() {
            match telemetry::nvml_capacity(gpu_index.unwrap_or(0)) {
                Ok((total, (major, minor))) => println!(
                    "GPU:         {:.1} GiB memory, compute capability {major}.{minor}",
                    total as f64 / (1u64 << 30) as f64
                ),
                Err(e) => println!("GPU:         memory and compute capability {e}"),
            }
        }
    }
    crate::say(&format!("cached in {}", path.display()));
    Ok(())
}
