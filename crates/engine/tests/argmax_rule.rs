//! One rule for the greedy token on every path: NaN is never chosen, among equal maxima
//! the lowest id wins, +inf ranks above a real f32::MAX, a row with nothing valid gives
//! id 0. The engine samples every row with the sample op (engine_kernels::sample, here
//! its CPU port, the same algorithm as the CUDA kernel); its greedy rows (temperature 0,
//! with or without logprobs) must pick what the argmax op (engine_kernels::argmax) picks.

use candle_core::{Device, Tensor};
use engine_core::rng::SeqRng;
use engine_core::sampler::row_params;
use engine_core::SamplingParams;
use engine_kernels::sample::{params_tensor, sample, unpack};

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

/// The sample op's greedy rows, as the engine builds them (with and without logprobs),
/// and the argmax op pick the same id on every row, NaN, ties and +inf included.
#[test]
fn sample_op_greedy_rows_take_the_argmax_rule() -> anyhow::Result<()> {
    for row in planted_rows() {
        let dev = Tensor::from_slice(&row, (1, row.len()), &Device::Cpu)?;
        let argmax_id = engine_kernels::argmax::argmax(&dev)?.to_vec1::<u32>()?[0];
        for logprobs in [None, Some(2)] {
            let p = SamplingParams {
                logprobs,
                ..SamplingParams::greedy(1)
            };
            let rows = [row_params(&p, 7, 3)];
            let out = sample(&dev, &params_tensor(&rows, 2, &Device::Cpu)?, 2)?;
            let token = unpack(&out, &rows)?[0].token;
            assert_eq!(argmax_id, token, "row {row:?} logprobs {logprobs:?}");
            // NaN is never chosen unless nothing else is valid (then id 0).
            if row.iter().any(|x| x.is_finite() || *x == f32::INFINITY) {
                assert!(!row[token as usize].is_nan(), "row {row:?}");
            }
        }
    }
    Ok(())
}
