//! One rule for the greedy token on every path: NaN is never chosen, among equal maxima
//! the lowest id wins, a row with nothing valid gives id 0. The engine takes a greedy
//! row's token with the device argmax (engine_kernels::argmax; its CPU port here, the
//! same rule as the CUDA kernel) unless the row wants logprobs, when the host sampler
//! takes it: both must agree on every row.

use candle_core::{Device, Tensor};
use engine_core::rng::SeqRng;
use engine_core::sampler::sample;
use engine_core::SamplingParams;

/// Pseudo-random logits in [-scale, scale) from a seed.
fn random_logits(seed: u64, v: usize, scale: f32) -> Vec<f32> {
    let mut r = SeqRng::new(seed);
    (0..v).map(|_| (r.next_f32() * 2.0 - 1.0) * scale).collect()
}

/// Logits with the hard cases of the argmax rule planted: NaN, ties of the maximum,
/// several +inf, a real f32::MAX beside +inf, rows of only -inf / NaN.
fn planted_rows() -> Vec<Vec<f32>> {
    let nan = f32::NAN;
    let mut rows = vec![
        vec![nan, 1.0, 3.0, 3.0, -2.0],
        vec![nan, nan, nan],
        vec![f32::NEG_INFINITY, nan, f32::NEG_INFINITY],
        vec![1.0, f32::INFINITY, 0.0, f32::INFINITY],
        vec![f32::MAX, 2.0, f32::INFINITY],
        vec![-5.0, nan, -4.0, -4.0],
        vec![0.0, -0.0, 0.0],
    ];
    for seed in 0..20u64 {
        let mut r = random_logits(seed, 257, 3.0);
        r[(seed as usize * 37) % 257] = nan;
        let m = r.iter().copied().fold(f32::MIN, f32::max);
        r[(seed as usize * 11 + 5) % 257] = m; // a tie with the maximum
        rows.push(r);
    }
    rows
}

/// Greedy rows go through the device argmax (engine_kernels::argmax, here its CPU port)
/// when they want no logprobs, and through the host sampler when they do: both must
/// pick the same id on every row, NaN and ties included.
#[test]
fn device_argmax_and_host_sampler_agree_on_nan_and_ties() -> anyhow::Result<()> {
    for row in planted_rows() {
        let dev = Tensor::from_slice(&row, (1, row.len()), &Device::Cpu)?;
        let device_id = engine_kernels::argmax::argmax(&dev)?.to_vec1::<u32>()?[0];
        let mut p = SamplingParams::greedy(1);
        p.logprobs = Some(2);
        let host = sample(&row, &p, &mut SeqRng::new(1));
        assert_eq!(device_id, host.token, "row {row:?}");
        // NaN is never chosen unless nothing else is valid (then id 0).
        if row.iter().any(|x| x.is_finite() || *x == f32::INFINITY) {
            assert!(!row[host.token as usize].is_nan(), "row {row:?}");
        }
    }
    Ok(())
}
