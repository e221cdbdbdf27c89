//! Time the CPU quantized matmul at given shapes, print one line per case.
//!
//! ```text
//! cargo run --release -p engine-quant --example matmul_bench -- \
//!     --threads 2 --types q4_1,q8_0 --shapes 576x576,1536x576 --m 1,16,512 [--level avx2] [--cold]
//! ```
//! Shapes are `rows x cols` (out x in features). Columns: type, shape, m, microseconds per
//! call (fastest run), weight GB/s (GGUF bytes of the matrix / time), GFLOP/s
//! (2 m rows cols / time), and the weight rate as a fraction of the parallel copy
//! ceiling measured first (bytes read + written per second by `threads` threads).
//! `--cpu-time` (one thread) times by the thread's CPU time, not the wall clock, which
//! on a loaded machine keeps out the time spent waiting for a core.
//! `--cold` cycles through copies of the matrix filling 512 MiB, so each call streams
//! its weights from memory as in a real decode step rather than from the cache.
//! `--device cuda` (a `--features cuda` build) times `QuantLinear::forward` on GPU 0
//! instead, bf16 activations, synchronizing after each call (the last column is then
//! the weight rate in GB/s against nothing: compare with `engine device`'s ceiling).

use engine_quant::random::gaussian;
use engine_quant::{CpuContext, GgmlType, Level, QMatrix};
use std::time::{Duration, Instant};

thread_local! {
    /// The wall clock's origin for `time`.
    static START: Instant = Instant::now();
}

struct Args {
    threads: usize,
    level: Option<Level>,
    types: Vec<GgmlType>,
    shapes: Vec<(usize, usize)>,
    ms: Vec<usize>,
    cold: bool,
    cpu_time: bool,
    cuda: bool,
    seconds: f64,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        threads: 1,
        level: None,
        types: vec![GgmlType::Q4_1, GgmlType::Q8_0],
        shapes: vec![(576, 576), (1536, 576), (576, 1536), (49152, 576)],
        ms: vec![1, 16, 512],
        cold: false,
        cpu_time: false,
        cuda: false,
        seconds: 0.5,
    };
    let list = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("flags: --threads N --level L --types T,.. --shapes RxC,.. --m M,.. --seconds S --cold --cpu-time --device cpu|cuda (see the source's header)");
            std::process::exit(0);
        }
        if flag == "--cold" || flag == "--cpu-time" {
            a.cold |= flag == "--cold";
            a.cpu_time |= flag == "--cpu-time";
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--threads" => a.threads = v.parse()?,
            "--level" => a.level = Some(v.parse()?),
            "--types" => {
                a.types = list(&v)
                    .iter()
                    .map(|t| t.parse())
                    .collect::<Result<_, _>>()?
            }
            "--m" => {
                a.ms = list(&v)
                    .iter()
                    .map(|t| t.parse())
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => a.seconds = v.parse()?,
            "--device" => a.cuda = v == "cuda",
            "--shapes" => {
                a.shapes = list(&v)
                    .iter()
                    .map(|s| {
                        let (r, c) = s
                            .split_once('x')
                            .ok_or_else(|| anyhow::anyhow!("shape {s:?} is not ROWSxCOLS"))?;
                        Ok((r.parse()?, c.parse()?))
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// CPU seconds used by the calling thread.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Fastest seconds per call of `f` over about `seconds` of runs after a warm-up (the
/// minimum is the estimate least disturbed by other load on a shared machine). With
/// `cpu_time`, the calling thread's CPU time instead of the wall clock (meaningful with
/// one thread only: it leaves out the time the thread waited for a core).
fn time(seconds: f64, cpu_time: bool, mut f: impl FnMut()) -> f64 {
    let clock = || match cpu_time {
        true => thread_cpu_seconds(),
        false => Instant::now()
            .duration_since(START.with(|s| *s))
            .as_secs_f64(),
    };
    f();
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs_f64(seconds) || samples.len() < 5 {
        let t = clock();
        f();
        samples.push(clock() - t);
    }
    samples.into_iter().fold(f64::MAX, f64::min)
}

/// Bytes read + written per second by a copy of 256 MiB split over the pool's threads.
fn copy_ceiling(cpu: &CpuContext) -> f64 {
    let n = 256 << 20;
    let src = vec![1u8; n];
    let dst: Vec<std::sync::Mutex<Vec<u8>>> = (0..cpu.threads())
        .map(|_| std::sync::Mutex::new(vec![0u8; n / cpu.threads()]))
        .collect();
    let s = time(1.0, false, || {
        cpu.pool().run(&|i| {
            let part = n / cpu.threads();
            let mut d = dst[i].lock().unwrap();
            d.copy_from_slice(&src[i * part..(i + 1) * part]);
        })
    });
    2.0 * n as f64 / s
}

/// Fastest seconds per `QuantLinear::forward` on GPU 0 (bf16 activations).
#[cfg(feature = "cuda")]
fn cuda_seconds(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    m: usize,
    seconds: f64,
) -> anyhow::Result<f64> {
    use candle_core::{DType, Device, Tensor};
    let dev = Device::new_cuda(0)?;
    let cpu = std::sync::Arc::new(CpuContext::new(1)?);
    let bytes = engine_quant::quantize::quantize(ty, &gaussian(rows * cols, 1, 0.05))?;
    let layer = engine_quant::QuantLinear::from_ggml(ty, rows, cols, &bytes, &dev, &cpu)?;
    let x =
        Tensor::from_slice(&gaussian(m * cols, 2, 1.0), (m, cols), &dev)?.to_dtype(DType::BF16)?;
    let mut result = Ok(());
    let s = time(seconds, false, || {
        if result.is_ok() {
            result = layer.forward(&x).and_then(|_| Ok(dev.synchronize()?));
        }
    });
    result?;
    Ok(s)
}

#[cfg(not(feature = "cuda"))]
fn cuda_seconds(_: GgmlType, _: usize, _: usize, _: usize, _: f64) -> anyhow::Result<f64> {
    anyhow::bail!("--device cuda needs a build with --features cuda")
}

fn main() -> anyhow::Result<()> {
    let a = parse()?;
    if a.cuda {
        println!("type\trows\tcols\tm\tus\tweight_GB/s\tGFLOP/s");
        for &ty in &a.types {
            for &(rows, cols) in &a.shapes {
                for &m in &a.ms {
                    let s = cuda_seconds(ty, rows, cols, m, a.seconds)?;
                    let gbs = (rows * ty.bytes_for(cols)) as f64 / s / 1e9;
                    let gflops = 2.0 * (m * rows * cols) as f64 / s / 1e9;
                    println!(
                        "{ty}\t{rows}\t{cols}\t{m}\t{:.1}\t{gbs:.1}\t{gflops:.1}",
                        s * 1e6
                    );
                }
            }
        }
        return Ok(());
    }
    let cpu = match a.level {
        Some(l) => CpuContext::with_level(a.threads, l)?,
        None => CpuContext::new(a.threads)?,
    };
    let ceiling = copy_ceiling(&cpu);
    if a.cpu_time && a.threads != 1 {
        anyhow::bail!("--cpu-time measures one thread: use --threads 1");
    }
    println!(
        "# level {} threads {} copy ceiling {:.1} GB/s (read + written){}{}",
        cpu.level(),
        cpu.threads(),
        ceiling / 1e9,
        if a.cold { ", cold weights" } else { "" },
        if a.cpu_time { ", thread CPU time" } else { "" }
    );
    println!("type\trows\tcols\tm\tus\tweight_GB/s\tGFLOP/s\tof_copy");
    for &ty in &a.types {
        for &(rows, cols) in &a.shapes {
            let w = QMatrix::quantize(ty, rows, cols, &gaussian(rows * cols, 1, 0.05))?;
            let copies = match a.cold {
                true => ((512usize << 20) / w.size_bytes()).clamp(1, 4096),
                false => 1,
            };
            let ws: Vec<QMatrix> = (0..copies).map(|_| w.clone()).collect();
            for &m in &a.ms {
                let x = gaussian(m * cols, 2, 1.0);
                let mut y = vec![0f32; m * rows];
                let mut next = 0;
                let s = time(a.seconds, a.cpu_time, || {
                    ws[next].matmul(&x, m, &mut y, &cpu).expect("matmul");
                    next = (next + 1) % ws.len();
                });
                let gbs = w.ggml_bytes() as f64 / s;
                println!(
                    "{ty}\t{rows}\t{cols}\t{m}\t{:.1}\t{:.2}\t{:.1}\t{:.2}",
                    s * 1e6,
                    gbs / 1e9,
                    2.0 * (m * rows * cols) as f64 / s / 1e9,
                    gbs / ceiling
                );
            }
        }
    }
    Ok(())
}
