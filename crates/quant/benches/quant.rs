//! Criterion benches of the CPU quantized matmul.
//!
//! - `copy`: a parallel memcpy of 256 MiB on the same threads, the ceiling; its
//!   throughput counts bytes read (compare with the M=1 weight bytes).
//! - `matvec/TYPE/ROWSxCOLS`: one activation row (a decode step), throughput in GGUF
//!   weight bytes; the calls cycle through copies of the weights filling 256 MiB, so
//!   they stream from memory as in a real model rather than from the cache.
//! - `batched/TYPE/ROWSxCOLS/M`: M activation rows (prefill, batched decode),
//!   throughput in multiply-adds (elements = M * rows * cols; x2 for FLOP/s).
//!
//! Threads: `ENGINE_QUANT_THREADS` (default: all cores); level: `ENGINE_QUANT_LEVEL`
//! (default: the best this CPU has). Shapes: the default model's (SmolLM2-135M: 576
//! hidden, 1536 FFN, 49152 vocabulary) and a Llama-3.1-8B FFN matrix.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine_quant::random::gaussian;
use engine_quant::{CpuContext, GgmlType, Level, QMatrix};

fn context() -> CpuContext {
    let threads = std::env::var("ENGINE_QUANT_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let level = std::env::var("ENGINE_QUANT_LEVEL")
        .ok()
        .map(|l| l.parse::<Level>().expect("ENGINE_QUANT_LEVEL"))
        .unwrap_or_else(Level::detect);
    CpuContext::with_level(threads, level).expect("CPU context")
}

fn copy(c: &mut Criterion, cpu: &CpuContext) {
    let n = 256 << 20;
    let src = vec![1u8; n];
    let parts: Vec<std::sync::Mutex<Vec<u8>>> = (0..cpu.threads())
        .map(|_| std::sync::Mutex::new(vec![0u8; n / cpu.threads()]))
        .collect();
    let mut g = c.benchmark_group("copy");
    g.sample_size(10).throughput(Throughput::Bytes(n as u64));
    g.bench_function(format!("{}MiB", n >> 20), |b| {
        b.iter(|| {
            cpu.pool().run(&|i| {
                let len = n / cpu.threads();
                let mut d = parts[i].lock().expect("no panics");
                d.copy_from_slice(&src[i * len..(i + 1) * len]);
            })
        })
    });
    g.finish();
}

fn matrix(ty: GgmlType, rows: usize, cols: usize, cpu: &CpuContext) -> QMatrix {
    let x = gaussian(rows * cols, 1, 0.05);
    QMatrix::quantize_on(ty, rows, cols, &x, Some(cpu)).expect("quantize")
}

fn matvec(c: &mut Criterion, cpu: &CpuContext) {
    let mut g = c.benchmark_group("matvec");
    g.sample_size(20);
    let cases = [
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q4_1, 576, 1536),
        (GgmlType::Q8_0, 49152, 576),
        (GgmlType::Q4_0, 14336, 4096),
        (GgmlType::Q4K, 14336, 4096),
        (GgmlType::Q6K, 14336, 4096),
        (GgmlType::Q8_0, 14336, 4096),
    ];
    for (ty, rows, cols) in cases {
        let w = matrix(ty, rows, cols, cpu);
        let copies: Vec<QMatrix> = (0..((256usize << 20) / w.size_bytes()).clamp(1, 1024))
            .map(|_| w.clone())
            .collect();
        let x = gaussian(cols, 2, 1.0);
        let mut y = vec![0f32; rows];
        let mut i = 0;
        g.throughput(Throughput::Bytes(w.ggml_bytes() as u64));
        g.bench_function(format!("{ty}/{rows}x{cols}"), |b| {
            b.iter(|| {
                copies[i].matmul(&x, 1, &mut y, cpu).expect("matmul");
                i = (i + 1) % copies.len();
            })
        });
    }
    g.finish();
}

fn batched(c: &mut Criterion, cpu: &CpuContext) {
    let mut g = c.benchmark_group("batched");
    g.sample_size(10);
    for (ty, rows, cols) in [
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q8_0, 49152, 576),
        (GgmlType::Q4K, 4096, 4096),
        (GgmlType::Q6K, 4096, 4096),
    ] {
        let w = matrix(ty, rows, cols, cpu);
        for m in [16, 64, 512] {
            let x = gaussian(m * cols, 3, 1.0);
            let mut y = vec![0f32; m * rows];
            g.throughput(Throughput::Elements((m * rows * cols) as u64));
            g.bench_function(format!("{ty}/{rows}x{cols}/{m}"), |b| {
                b.iter(|| w.matmul(&x, m, &mut y, cpu).expect("matmul"))
            });
        }
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let cpu = context();
    eprintln!("level {} threads {}", cpu.level(), cpu.threads());
    copy(c, &cpu);
    matvec(c, &cpu);
    batched(c, &cpu);
}

criterion_group!(quant, benches);
criterion_main!(quant);
