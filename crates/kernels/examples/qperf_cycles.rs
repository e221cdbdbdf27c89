// Scratch (never committed): run one kernel's bench case N times, for perf stat.
use candle_core::{DType, Device};
fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let spec = engine_kernels::harness::find(&a[1])?;
    let shape: Vec<usize> = a[2].split(',').map(|x| x.parse().unwrap()).collect();
    let n: usize = a[3].parse()?;
    let mut case = spec.bench(&Device::Cpu, DType::F32, &shape)?;
    for _ in 0..n {
        (case.run)()?;
    }
    Ok(())
}
