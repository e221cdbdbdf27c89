//! `engine kernels list|test|bench`: the kernel developer's loop. `test` compares each
//! fused kernel with its reference on seeded random inputs (outputs poisoned with NaN
//! first); `bench` times it and reports GB/s against this device's copy ceiling.
//! docs/kernels.md is the guide.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use engine_kernels::harness::{self, KernelSpec};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct KernelsArgs {
    #[command(subcommand)]
    command: KernelsCommand,
}

#[derive(Debug, Subcommand)]
enum KernelsCommand {
    /// List the kernels, what they compute and their shape parameters.
    List,
    /// Check kernels against their references: max error per dtype and shape (exit 1 on
    /// any failure).
    Test(TestArgs),
    /// Time kernels: median time per call, GB/s and % of the copy ceiling, TFLOP/s.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct Common {
    /// One kernel (default: all); see `engine kernels list`.
    name: Option<String>,
    /// Device: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Shapes, `;`-separated, each a comma-separated list in the kernel's shape order
    /// (e.g. `32,4096;4096,4096`). Needs a kernel name.
    #[arg(long)]
    shapes: Option<String>,
}

#[derive(Debug, Args)]
struct TestArgs {
    #[command(flatten)]
    common: Common,
    /// Dtypes to test: all, f32, f16 or bf16.
    #[arg(long, default_value = "all")]
    dtype: String,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 1000)]
    seed: u64,
}

#[derive(Debug, Args)]
struct BenchArgs {
    #[command(flatten)]
    common: Common,
    /// Dtype (default: bf16 on CUDA, f32 on the CPU).
    #[arg(long)]
    dtype: Option<String>,
    /// Time to spend per shape, in milliseconds (at least 14 calls: 3 warm-up, 1 to size
    /// the batches, 10 timed).
    #[arg(long, default_value_t = 300)]
    time_ms: u64,
}

pub fn run(a: KernelsArgs) -> Result<()> {
    match a.command {
        KernelsCommand::List => {
            for k in harness::registry() {
                println!("{:<18} {}", k.name(), k.about());
                println!("{:<18} shape: {}", "", k.shape_names());
            }
            Ok(())
        }
        KernelsCommand::Test(t) => test(t),
        KernelsCommand::Bench(b) => bench(b),
    }
}

fn selected(c: &Common) -> Result<Vec<&'static dyn KernelSpec>> {
    match &c.name {
        Some(n) => Ok(vec![harness::find(n)?]),
        None if c.shapes.is_some() => bail!("--shapes needs a kernel name"),
        None => Ok(harness::registry()),
    }
}

fn shapes(c: &Common, default: Vec<Vec<usize>>) -> Result<Vec<Vec<usize>>> {
    let Some(s) = &c.shapes else {
        return Ok(default);
    };
    s.split(';')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split(',')
                .map(|n| n.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("--shapes: {p:?} is not a comma-separated list of sizes"))
        })
        .collect()
}

fn shape_str(s: &[usize]) -> String {
    s.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn dtype_name(d: candle_core::DType) -> String {
    format!("{d:?}").to_lowercase()
}

fn test(t: TestArgs) -> Result<()> {
    let dev = crate::parse_device(&t.common.device)?;
    let dtypes = match t.dtype.as_str() {
        "all" => harness::DTYPES.to_vec(),
        d => vec![crate::parse_dtype(Some(d), &dev)?],
    };
    let kernels = selected(&t.common)?;
    println!("device: {}", crate::bench::device_label(&dev));
    println!(
        "{:<18} {:<5} {:<28} {:>10} {:>10} {:>8} {:>5}  result",
        "kernel", "dtype", "shape", "max_abs", "max_rel", "tol", "NaN"
    );
    let mut failed = 0;
    let mut total = 0;
    for k in kernels {
        for shape in shapes(&t.common, k.test_shapes())? {
            for &dtype in &dtypes {
                total += 1;
                let c = k.check(&dev, dtype, &shape, t.seed).with_context(|| {
                    format!("{} {} [{}]", k.name(), dtype_name(dtype), shape_str(&shape))
                })?;
                let verdict = match c.pass() {
                    true => "ok",
                    false => {
                        failed += 1;
                        "FAIL"
                    }
                };
                println!(
                    "{:<18} {:<5} {:<28} {:>10.3e} {:>10.3e} {:>8.1e} {:>5}  {verdict}",
                    k.name(),
                    dtype_name(dtype),
                    shape_str(&shape),
                    c.max_abs,
                    c.max_rel,
                    c.tol,
                    c.nan
                );
            }
        }
    }
    println!("{} of {total} checks passed", total - failed);
    if failed > 0 {
        bail!("{failed} kernel checks failed");
    }
    Ok(())
}

fn bench(b: BenchArgs) -> Result<()> {
    let dev = crate::parse_device(&b.common.device)?;
    let dtype = crate::parse_dtype(b.dtype.as_deref(), &dev)?;
    let kernels = selected(&b.common)?;
    crate::say("measuring the copy ceiling ...");
    let ceiling = harness::copy_ceiling_gbs(&dev)?;
    println!(
        "device: {}, dtype {}, copy ceiling {ceiling:.1} GB/s (read + write)",
        crate::bench::device_label(&dev),
        dtype_name(dtype)
    );
    println!(
        "{:<18} {:<28} {:>11} {:>11} {:>9} {:>7} {:>9}",
        "kernel", "shape", "median_us", "min_us", "GB/s", "%copy", "TFLOP/s"
    );
    let budget = Duration::from_millis(b.time_ms.max(10));
    for k in kernels {
        for shape in shapes(&b.common, k.bench_shapes())? {
            let label = format!("{} [{}]", k.name(), shape_str(&shape));
            let mut case = k
                .bench(&dev, dtype, &shape)
                .with_context(|| label.clone())?;
            let t = harness::time(&dev, &mut case, budget).with_context(|| label.clone())?;
            let secs = t.median.as_secs_f64();
            let gbs = case.bytes as f64 / secs / 1e9;
            println!(
                "{:<18} {:<28} {:>11.2} {:>11.2} {:>9.1} {:>6.1}% {:>9.3}",
                k.name(),
                shape_str(&shape),
                secs * 1e6,
                t.min.as_secs_f64() * 1e6,
                gbs,
                100.0 * gbs / ceiling,
                case.flops as f64 / secs / 1e12
            );
        }
    }
    Ok(())
}
