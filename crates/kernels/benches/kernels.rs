//! Criterion benches of every kernel in the registry at its default bench shapes, on
//! the CPU (the CPU ports) or, built with `--features cuda` and `ENGINE_BENCH_DEVICE=cuda`,
//! on GPU 0. Same cases as `engine kernels bench`, which also prints GB/s against the
//! copy ceiling.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine_kernels::harness;

fn device() -> candle_core::Device {
    match std::env::var("ENGINE_BENCH_DEVICE").as_deref() {
        Ok("cuda") => candle_core::Device::new_cuda(0).expect("CUDA device 0"),
        _ => candle_core::Device::Cpu,
    }
}

fn kernels(c: &mut Criterion) {
    let dev = device();
    // bf16 on the GPU (the serving dtype); f32 on the CPU (what the CPU build runs).
    let dtype = match dev.is_cuda() {
        true => candle_core::DType::BF16,
        false => candle_core::DType::F32,
    };
    for spec in harness::registry() {
        let mut group = c.benchmark_group(spec.name());
        group.sample_size(10);
        let shapes = spec.bench_shapes();
        // On the CPU (single-threaded ports) larger shapes take seconds per call: bench
        // the smallest only.
        let take = if dev.is_cuda() { shapes.len() } else { 1 };
        for shape in shapes.into_iter().take(take) {
            let mut case = spec.bench(&dev, dtype, &shape).expect("bench case");
            group.throughput(Throughput::Bytes(case.bytes));
            let id = shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("x");
            group.bench_function(id, |b| {
                b.iter(|| {
                    (case.run)().expect("kernel run");
                    dev.synchronize().expect("synchronize");
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
