//! `sample`'s reference (a full sort and f64 sums: the obvious way), and its harness
//! spec: seeded logits with planted NaN / +-inf / ties, a mix of sampling parameters per
//! row, and the check of the op's output against the reference.

use super::{params_tensor, sample_host, sample_with, Fill, LogprobMode, RowParams};
use crate::error::Result;
use crate::harness::{self, BenchCase, Check, KernelSpec};
use candle_core::{DType, Device, Tensor};

/// A row's exact filtered distribution and logprobs, from a full sort in f64.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Token ids, most likely first (cleaned logit descending, then lowest id).
    pub order: Vec<usize>,
    /// Each token's probability under the filtered distribution (0 if not kept); for a
    /// greedy row, the distribution at temperature 1 (what its processed logprobs use).
    pub probs: Vec<f64>,
    /// `log_softmax(logits)`.
    pub raw: Vec<f64>,
    /// False when every logit is -inf or NaN.
    pub valid: bool,
    /// The greedy token by the engine's argmax rule (`crate::argmax::reference`): like
    /// `order[0]`, except that +inf ranks above a real `f32::MAX`.
    pub greedy: usize,
}

impl Expected {
    /// The greedy token (see [`Expected::greedy`]).
    pub fn argmax(&self) -> usize {
        self.greedy
    }

    /// The logprob of token `i` in `mode` (-inf for an invalid row).
    pub fn logprob(&self, i: usize, mode: LogprobMode) -> f64 {
        match (self.valid, mode) {
            (false, _) => f64::NEG_INFINITY,
            (true, LogprobMode::Raw) => self.raw[i],
            (true, LogprobMode::Processed) => self.probs[i].ln(),
        }
    }
}

/// The reference: clean (NaN -> -inf, +inf -> f32::MAX), sort, then top-k, weights
/// `exp((x - max) / T)` (dropping those that underflow f32: `(x - max) / T <= -87`),
/// top-p over the sorted prefix, min-p, normalize.
pub fn reference(logits: &[f32], p: &RowParams) -> Expected {
    let x: Vec<f64> = logits
        .iter()
        .map(|&v| match v {
            v if v.is_nan() => f64::NEG_INFINITY,
            f32::INFINITY => f64::from(f32::MAX),
            v => f64::from(v),
        })
        .collect();
    let mut order: Vec<usize> = (0..x.len()).collect();
    // partial_cmp, not total_cmp: -0 and +0 are equal (ties go to the lowest id).
    order.sort_by(|&a, &b| {
        x[b].partial_cmp(&x[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    let max = x[order[0]];
    let greedy = crate::argmax::reference(logits, logits.len().max(1))
        .first()
        .map_or(0, |&i| i as usize);
    let mut probs = vec![0.0; x.len()];
    if max == f64::NEG_INFINITY {
        let raw = vec![f64::NEG_INFINITY; x.len()];
        return Expected {
            order,
            probs,
            raw,
            valid: false,
            greedy,
        };
    }
    // (x - max) - ln(sum): max + ln(sum) would lose ln(sum) next to f32::MAX (+inf).
    let ln_sum = x.iter().map(|&v| (v - max).exp()).sum::<f64>().ln();
    let raw = x.iter().map(|&v| (v - max) - ln_sum).collect();
    let t = if p.is_greedy() {
        1.0
    } else {
        f64::from(p.temperature)
    };
    let z = |i: usize| (x[i] - max) / t;
    let mut kept = order.clone();
    if p.top_k > 0 && (p.top_k as usize) < kept.len() {
        kept.truncate(p.top_k as usize);
    }
    kept.retain(|&i| z(i) > -87.0);
    if p.top_p < 1.0 {
        let total: f64 = kept.iter().map(|&i| z(i).exp()).sum();
        let mut cum = 0.0;
        let n = kept
            .iter()
            .position(|&i| {
                cum += z(i).exp();
                cum >= f64::from(p.top_p) * total
            })
            .map_or(kept.len(), |n| n + 1);
        kept.truncate(n);
    }
    kept.retain(|&i| z(i).exp() >= f64::from(p.min_p));
    let total: f64 = kept.iter().map(|&i| z(i).exp()).sum();
    for &i in &kept {
        probs[i] = z(i).exp() / total;
    }
    Expected {
        order,
        probs,
        raw,
        valid: true,
        greedy,
    }
}

/// Parameter presets, cycled over the rows of the test mix (`mix` 0).
#[rustfmt::skip]
fn preset(i: usize) -> RowParams {
    let d = RowParams::default();
    let pr = LogprobMode::Processed;
    let t = |temperature| RowParams { temperature, ..d };
    match i % 11 {
        0 => RowParams { n_logprobs: 3, ..RowParams::greedy() },
        1 => t(1.0),
        2 => RowParams { top_p: 0.9, ..t(0.7) },
        3 => RowParams { top_k: 5, n_logprobs: 2, logprobs: pr, ..t(1.2) },
        4 => RowParams { min_p: 0.1, n_logprobs: 1, ..t(0.8) },
        5 => RowParams { top_k: 40, top_p: 0.8, min_p: 0.02, n_logprobs: 4, logprobs: pr, ..t(0.9) },
        6 => RowParams { top_k: 3, top_p: 0.5, n_logprobs: 4, logprobs: pr, ..RowParams::greedy() },
        7 => t(1e-20),
        8 => RowParams { top_p: 0.05, n_logprobs: 1, ..t(1.0) },
        9 => RowParams { top_k: 1, ..t(2.0) },
        _ => RowParams { top_k: 2000, top_p: 0.95, ..t(0.5) },
    }
}

/// Row `r`'s parameters for `mix`: 0 cycles every preset (the tests), 1 greedy, 2 the
/// issue's T 0.7 / top-p 0.9, 3 T 0.7 / top-k 50 / top-p 0.9 / min-p 0.05 with 5
/// processed logprobs, 4 pure temperature 1 (the draw over the whole vocabulary). Mix 5
/// is the statistical check (sample_stats.rs), whose shape is `draws,vocab,5`.
pub(crate) fn mix_params(r: usize, mix: usize, seed: u64) -> RowParams {
    let p = match mix {
        0 => preset(r),
        1 => RowParams::greedy(),
        2 => RowParams {
            temperature: 0.7,
            top_p: 0.9,
            ..Default::default()
        },
        3 => RowParams {
            temperature: 0.7,
            top_k: 50,
            top_p: 0.9,
            min_p: 0.05,
            n_logprobs: 5,
            logprobs: LogprobMode::Processed,
            ..Default::default()
        },
        _ => RowParams::default(),
    };
    RowParams {
        seed: seed ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        position: (r * 3) as u32,
        ..p
    }
}

/// Seeded `[rows, vocab]` logits. `planted`: the test mix's NaN, -inf, +inf, coarse ties
/// and all-invalid rows; else rows shaped like a model's (see below).
pub(crate) fn test_logits(rows: usize, vocab: usize, seed: u64, planted: bool) -> Vec<f32> {
    let mut x = harness::random(rows * vocab, 8.0, seed);
    if !planted {
        // Bench rows look like a model's: a bulk around 0 and a few strong candidates.
        let boost = harness::random(rows * 16, 3.0, seed + 1);
        for (r, row) in x.chunks_mut(vocab).enumerate() {
            row.iter_mut().for_each(|v| *v *= 0.3);
            for (j, b) in boost[r * 16..(r + 1) * 16].iter().enumerate() {
                row[(j * 7919 + r * 31) % vocab] = 11.0 + b;
            }
        }
        return x;
    }
    for (r, row) in x.chunks_mut(vocab).enumerate() {
        match r % 17 {
            2 | 9 => {
                row[(r * 7) % vocab] = f32::NAN;
                row[(r * 13 + 1) % vocab] = f32::NEG_INFINITY;
            }
            4 => {
                row[(r * 3 + 2) % vocab] = f32::INFINITY;
                row[(r * 5 + 1) % vocab] = f32::INFINITY;
            }
            6 | 12 => row.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0),
            8 => row.iter_mut().enumerate().for_each(|(j, v)| {
                *v = if j % 2 == 0 {
                    f32::NAN
                } else {
                    f32::NEG_INFINITY
                }
            }),
            _ => {}
        }
    }
    x
}

/// The op's top-n width for a mix.
fn n_top(mix: usize) -> usize {
    match mix {
        0 => 4,
        3 => 5,
        _ => 0,
    }
}

/// Compare the op's words with the reference (and, on a GPU, with the CPU port: tokens
/// and top ids must be identical). `nan` counts wrong or unwritten words.
pub(crate) fn compare(
    x: &[f32],
    vocab: usize,
    rows: &[RowParams],
    words: &[u32],
    port_words: Option<&[u32]>,
    n_top: usize,
) -> Check {
    let width = 2 + 2 * n_top;
    let (mut bad, mut max_abs, mut scale) = (0usize, 0f64, 0f64);
    let mut lp = |got: u32, want: f64| {
        let got = f64::from(f32::from_bits(got));
        match (got == f64::NEG_INFINITY, want == f64::NEG_INFINITY) {
            (true, true) => 0,
            (false, false) if got.is_finite() => {
                max_abs = max_abs.max((got - want).abs());
                scale = scale.max(want.abs());
                0
            }
            _ => 1,
        }
    };
    for (r, p) in rows.iter().enumerate() {
        let (w, e) = (
            &words[r * width..(r + 1) * width],
            reference(&x[r * vocab..(r + 1) * vocab], p),
        );
        let token = w[0] as usize;
        let ok = match (e.valid, p.is_greedy()) {
            _ if token >= vocab => false,
            (false, _) => token == 0,
            (true, true) => token == e.argmax(),
            (true, false) => e.probs[token] > 0.0,
        };
        bad += usize::from(!ok);
        if let Some(pw) = port_words {
            let pw = &pw[r * width..(r + 1) * width];
            bad += (0..2 + n_top).filter(|&j| j != 1 && w[j] != pw[j]).count();
        }
        if ok {
            bad += lp(w[1], e.logprob(token, p.logprobs));
        }
        let n = (p.n_logprobs as usize).min(n_top).min(vocab);
        for j in 0..n_top {
            let (id, l) = (w[2 + j], w[2 + n_top + j]);
            if j >= n {
                bad += usize::from(id != u32::MAX || l != f32::NEG_INFINITY.to_bits());
                continue;
            }
            let want_id = if e.valid { e.order[j] } else { j };
            bad += usize::from(id as usize != want_id);
            bad += lp(l, e.logprob(want_id, p.logprobs));
        }
    }
    Check {
        max_abs: max_abs as f32,
        max_rel: (max_abs / scale.max(f64::from(f32::MIN_POSITIVE))) as f32,
        tol: LOGPROB_TOL,
        nan: bad,
        elems: words.len(),
    }
}

/// Tolerance on logprobs relative to the largest |logprob| compared (f32 sums of up to
/// 10^5 exponentials against f64).
pub const LOGPROB_TOL: f32 = 5e-6;

/// `engine kernels test|bench sample`: shape `rows,vocab,mix` (mix: see [`mix_params`]).
/// A check compares every row with the reference (and on a GPU with the CPU port, token
/// for token), and requires the same bits from the last row alone and from the batch in
/// reverse order.
pub struct Spec;

impl KernelSpec for Spec {
    fn name(&self) -> &'static str {
        "sample"
    }
    fn about(&self) -> &'static str {
        "per row: temperature, top-k -> top-p -> min-p, one draw, logprobs (radix select)"
    }
    fn shape_names(&self) -> &'static str {
        "rows,vocab,mix"
    }
    fn test_shapes(&self) -> Vec<Vec<usize>> {
        let s = |r, v| vec![r, v, 0];
        vec![
            s(1, 1),
            s(3, 7),
            s(24, 100),
            s(34, 1000),
            s(11, 5003),
            s(6, 32000),
            s(3, 128256),
        ]
    }
    fn bench_shapes(&self) -> Vec<Vec<usize>> {
        let mut v: Vec<_> = (1..=4).map(|mix| vec![128, 128256, mix]).collect();
        v.push(vec![1, 128256, 2]);
        v
    }
    fn check(&self, dev: &Device, dtype: DType, shape: &[usize], seed: u64) -> Result<Check> {
        let [rows, vocab, mix] = harness::dims::<3>(shape, self.shape_names())?;
        if mix == 5 {
            return super::stats::check_draws(dev, dtype, rows, vocab, seed);
        }
        let host = test_logits(rows, vocab, seed, mix == 0);
        let t = Tensor::from_vec(host, (rows, vocab), &Device::Cpu)?.to_dtype(dtype)?;
        let x = harness::host_f32(&t)?;
        let p: Vec<RowParams> = (0..rows).map(|r| mix_params(r, mix, seed)).collect();
        let n = n_top(mix);
        let run = |x: &[f32], p: &[RowParams]| -> Result<Vec<u32>> {
            let t = Tensor::from_slice(x, (p.len(), vocab), &Device::Cpu)?.to_dtype(dtype)?;
            let out = sample_with(
                &t.to_device(dev)?,
                &params_tensor(p, n, dev)?,
                n,
                Fill::Poison,
            )?;
            Ok(out
                .flatten_all()?
                .to_device(&Device::Cpu)?
                .to_vec1::<u32>()?)
        };
        let words = run(&x, &p)?;
        let port_words = match dev.is_cuda() {
            true => {
                let pw: Vec<u32> = p.iter().flat_map(|r| r.words()).collect();
                Some(sample_host(&x, vocab, &pw, n, Fill::Poison))
            }
            false => None,
        };
        let mut check = compare(&x, vocab, &p, &words, port_words.as_deref(), n);
        // The same bits for the last row alone and for the rows in reverse order.
        let width = words.len() / rows.max(1);
        let rev_x: Vec<f32> = x.chunks(vocab).rev().flatten().copied().collect();
        let rev_p: Vec<RowParams> = p.iter().rev().copied().collect();
        let rev = run(&rev_x, &rev_p)?;
        check.nan += rev
            .chunks(width)
            .rev()
            .flatten()
            .zip(&words)
            .filter(|(a, b)| a != b)
            .count();
        if rows > 0 {
            let alone = run(&x[(rows - 1) * vocab..], &p[rows - 1..])?;
            check.nan += alone
                .iter()
                .zip(&words[(rows - 1) * width..])
                .filter(|(a, b)| a != b)
                .count();
        }
        Ok(check)
    }
    fn bench(&self, dev: &Device, dtype: DType, shape: &[usize]) -> Result<BenchCase> {
        let [rows, vocab, mix] = harness::dims::<3>(shape, self.shape_names())?;
        let host = test_logits(rows, vocab, 7, false);
        let logits = Tensor::from_vec(host, (rows, vocab), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(dev)?;
        let n = n_top(mix);
        let p: Vec<RowParams> = (0..rows).map(|r| mix_params(r, mix, 7)).collect();
        let params = params_tensor(&p, n, dev)?;
        Ok(BenchCase {
            run: Box::new(move || sample_with(&logits, &params, n, Fill::Uninit).map(|_| ())),
            // The floor: reading the logits once.
            bytes: (rows * vocab * dtype.size_in_bytes()) as u64,
            flops: 0,
        })
    }
}
