//! The statistical acceptance of `sample`: many draws of one row (positions 0..n, one
//! seed) against the reference's exact filtered distribution, for each knob alone and
//! combined; a draw outside the kept set fails, and so does a chi-square p-value <= 0.001.
//! The tests run it on the CPU port; `mix` 5 of the spec runs it through the op on any
//! device (`engine kernels test sample --shapes 100000,256,5 --device cuda`), where it
//! also requires the device's tokens to equal the CPU port's.

use super::port::{self, Radix};
use super::{params_tensor, reference, sample_with, unpack, Fill, RowParams};
use crate::error::{input_err, Result};
use crate::harness::{self, Check};
use candle_core::{DType, Device, Tensor};

/// The significance level of every chi-square test here.
pub const ALPHA: f64 = 0.001;

/// Upper tail of the chi-square distribution with `df` degrees of freedom at `x`:
/// Q(df/2, x/2), the regularized upper incomplete gamma function (series below a + 1,
/// Lentz's continued fraction above; Numerical Recipes' method).
pub fn chi2_p_value(x: f64, df: usize) -> f64 {
    let a = df as f64 / 2.0;
    let x = x / 2.0;
    let front = (a * x.ln() - x - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        while term.abs() > sum.abs() * 1e-15 {
            n += 1.0;
            term *= x / n;
            sum += term;
        }
        return (1.0 - sum * front).max(0.0);
    }
    let tiny = 1e-300;
    let (mut b, mut c, mut d) = (x + 1.0 - a, 1.0 / tiny, 1.0 / (x + 1.0 - a));
    let mut h = d;
    for i in 1..1000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        d = if d.abs() < tiny { tiny } else { d };
        c = b + an / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        h *= d * c;
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    front * h
}

/// ln Γ(z), Lanczos approximation (g = 7, n = 9), z > 0.
fn ln_gamma(z: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let z = z - 1.0;
    let t = z + 7.5;
    let s: f64 = C[0] + (1..9).map(|i| C[i] / (z + i as f64)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (z + 0.5) * t.ln() - t + s.ln()
}

/// `(p-value, draws outside the support or the vocabulary)` of `tokens` against `probs`.
/// Tokens expected
/// fewer than 5 times share one bin (the usual validity rule of the test).
pub fn goodness_of_fit(tokens: &[u32], probs: &[f64]) -> (f64, u64) {
    let mut counts = vec![0u64; probs.len()];
    tokens.iter().for_each(|&t| counts[t as usize] += 1);
    let n = tokens.len() as f64;
    let outside = (0..probs.len())
        .filter(|&i| probs[i] == 0.0)
        .map(|i| counts[i])
        .sum();
    let (mut chi2, mut bins, mut pool) = (0.0, 0usize, (0.0, 0.0));
    for (&c, &q) in counts.iter().zip(probs).filter(|(_, &q)| q > 0.0) {
        let (c, e) = (c as f64, q * n);
        if e < 5.0 {
            pool = (pool.0 + e, pool.1 + c);
        } else {
            chi2 += (c - e).powi(2) / e;
            bins += 1;
        }
    }
    if pool.0 > 0.0 {
        chi2 += (pool.1 - pool.0).powi(2) / pool.0;
        bins += 1;
    }
    (chi2_p_value(chi2, bins.saturating_sub(1).max(1)), outside)
}

/// One statistical case: a row, its parameters, and the radix parameters the port uses
/// (the device always runs its own; the token does not depend on them).
pub(crate) struct Case {
    #[cfg_attr(not(test), allow(dead_code))] // the tests' messages
    pub name: &'static str,
    pub logits: Vec<f32>,
    pub params: RowParams,
    pub radix: Radix,
}

/// Each knob alone and combined, on logits uniform in [-4, 4) (the last on coarse ties,
/// with small radix parameters so that the port's multi-level paths are drawn from). Each
/// case draws with its own Philox seed, so the cases are independent tests.
pub(crate) fn knob_cases(vocab: usize, seed: u64) -> Vec<Case> {
    let logits = harness::random(vocab, 4.0, seed);
    let ties: Vec<f32> = logits.iter().map(|&a| (a * 4.0).round() / 4.0).collect();
    let d = RowParams::default();
    let knobs = [
        (
            "temperature 0.7",
            RowParams {
                temperature: 0.7,
                ..d
            },
        ),
        (
            "temperature 1.6",
            RowParams {
                temperature: 1.6,
                ..d
            },
        ),
        ("top-k 12", RowParams { top_k: 12, ..d }),
        ("top-p 0.8", RowParams { top_p: 0.8, ..d }),
        ("min-p 0.02", RowParams { min_p: 0.02, ..d }),
        (
            "combined",
            RowParams {
                temperature: 1.3,
                top_k: 40,
                top_p: 0.9,
                min_p: 0.01,
                ..d
            },
        ),
        (
            "combined, ties",
            RowParams {
                temperature: 2.0,
                top_k: 60,
                top_p: 0.7,
                min_p: 0.001,
                ..d
            },
        ),
    ];
    let last = knobs.len() - 1;
    knobs
        .into_iter()
        .enumerate()
        .map(|(i, (name, p))| Case {
            name,
            logits: if i == last {
                ties.clone()
            } else {
                logits.clone()
            },
            params: RowParams {
                seed: seed.wrapping_mul(31).wrapping_add(i as u64 + 1),
                ..p
            },
            radix: match i == last {
                true => Radix {
                    digit_bits: 3,
                    cap: 4,
                },
                false => port::RADIX,
            },
        })
        .collect()
}

/// Tokens drawn by the CPU port (with `radix`) at positions 0..n.
pub(crate) fn port_tokens(x: &[f32], p: &RowParams, n: u32, radix: Radix) -> Vec<u32> {
    (0..n)
        .map(|position| port::sample_row(x, &RowParams { position, ..*p }, 0, radix).token)
        .collect()
}

/// Tokens drawn by the op on `dev` at positions 0..n (one launch of n rows of `x`, rounded
/// to `dtype`), and the rounded row.
pub(crate) fn op_tokens(
    dev: &Device,
    dtype: DType,
    x: &[f32],
    p: &RowParams,
    n: u32,
) -> Result<(Vec<u32>, Vec<f32>)> {
    let rows: Vec<RowParams> = (0..n)
        .map(|position| RowParams { position, ..*p })
        .collect();
    let row = Tensor::from_slice(x, (1, x.len()), &Device::Cpu)?.to_dtype(dtype)?;
    let rounded = harness::host_f32(&row)?;
    let logits = row.to_device(dev)?.repeat((n as usize, 1))?;
    let out = sample_with(&logits, &params_tensor(&rows, 0, dev)?, 0, Fill::Poison)?;
    let tokens = unpack(&out, &rows)?.iter().map(|s| s.token).collect();
    Ok((tokens, rounded))
}

/// `mix` 5 of the spec: `draws` draws per knob case through the op on `dev`. In the
/// result, `max_abs` is the smallest p-value, and `nan` counts failed cases (p <=
/// [`ALPHA`]), draws outside the kept set and, on a GPU, draws that differ from the CPU
/// port's (the first 1000 positions of each case).
pub(crate) fn check_draws(
    dev: &Device,
    dtype: DType,
    draws: usize,
    vocab: usize,
    seed: u64,
) -> Result<Check> {
    if vocab < 64 || draws == 0 || draws > u32::MAX as usize {
        input_err!("sample draws check (mix 5): needs vocab >= 64 and 1..2^32 draws");
    }
    let (mut min_p, mut bad) = (1f64, 0usize);
    for case in knob_cases(vocab, seed) {
        let (tokens, x) = op_tokens(dev, dtype, &case.logits, &case.params, draws as u32)?;
        let (p, outside) = goodness_of_fit(&tokens, &reference(&x, &case.params).probs);
        min_p = min_p.min(p);
        bad += usize::from(p <= ALPHA) + outside as usize;
        if dev.is_cuda() {
            let n = draws.min(1000);
            let cpu = port_tokens(&x, &case.params, n as u32, case.radix);
            bad += tokens[..n].iter().zip(&cpu).filter(|(g, c)| g != c).count();
        }
    }
    Ok(Check {
        max_abs: min_p as f32,
        max_rel: 0.0,
        tol: 0.0,
        nan: bad,
        elems: 7 * draws,
    })
}
