//! `sample` on the host: the CPU port of kernels/sample.cu, in three parts.
//!
//! - The element math (sample_math.rs, the twin of kernels/sample_math.cuh): the logit
//!   key, the weight `exp((x - max) / T)`, its fixed-point mass and the exponential
//!   variate of a Philox word. Because these are bit-identical and everything else that
//!   decides the token is integer arithmetic or comparisons, the port and the kernel draw
//!   the same token for the same (logits, params, seed, position).
//! - The radix select over keys, by count (top-k, top-n) or by mass (top-p), with the
//!   kernel's levels, histograms and shared-memory buffer ([`Radix`]).
//! - The row: pass 1 (max, argmax, log-sum-exp), thresholds, the draw, the logprobs.
//!   Sums of floats agree within rounding, not bit for bit: the kept weight follows the
//!   kernel's per-thread partition but merges in a different order; the log-sum-exp of
//!   pass 1 sums in vector lanes (pass 1 is vectorized for the CPU's SIMD level).

use super::math::{clean, exp_nonpos, exponential, mass, weight, Keys};
use super::{LogprobMode, RowParams};
use crate::philox;

/// Threads per block of the CUDA kernel (one block per row); the port partitions its
/// per-thread sums the same way.
pub(crate) const THREADS: usize = 512;

/// Radix-select parameters: bits per digit (histogram of `2^digit_bits` bins) and the
/// shared-memory buffer that a level's candidates move into once they fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Radix {
    pub digit_bits: u32,
    pub cap: usize,
}

/// The CUDA kernel's parameters (`DIGIT`, `CAP` in sample.cu). Tests shrink them to reach
/// every path (overflowing buffers, deep levels) with small vocabularies.
pub(crate) const RADIX: Radix = Radix {
    digit_bits: 11,
    cap: 2048,
};

// ---- radix select ------------------------------------------------------------------

/// A row after pass 1: cleaned logits, their maximum and the temperature in effect.
pub(crate) struct Row<'a> {
    pub x: &'a [f32],
    pub keys: Keys,
    pub max: f32,
    pub t: f32,
}

impl Row<'_> {
    fn key(&self, i: usize) -> u64 {
        self.keys.key(self.x[i], i)
    }
    fn mass_of(&self, key: u64) -> u64 {
        mass(weight(self.keys.value(key), self.max, self.t))
    }
}

/// What a select looks for, walking keys from the largest down.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want {
    /// The key of the n-th token (n >= 1).
    Count(u64),
    /// The key of the token at which the running mass reaches `top_p` of the total.
    Mass(f32),
}

/// Top-p's mass target: `max(ceil(top_p * total), 1)`, the same f64 operations as the
/// kernel's.
pub(crate) fn cutoff(top_p: f32, total: u64) -> u64 {
    (f64::from(top_p) * total as f64).ceil().max(1.0) as u64
}

/// The threshold key of `want` over the tokens with key >= `lo`: the kept set is then
/// exactly the tokens with key >= the result (`lo` when the mass never reaches the
/// target). Level by level, a histogram of the next digit (counts, and masses when
/// selecting by mass) over the tokens matching the digits chosen so far picks the bin
/// where the running total crosses the target; the first levels scan the row, and once a
/// chosen bin holds at most `radix.cap` tokens their keys move to a buffer (one more scan)
/// and the remaining levels read only that.
pub(crate) fn select(row: &Row, want: Want, lo: u64, radix: Radix) -> u64 {
    let kb = row.keys.bits();
    let by_mass = matches!(want, Want::Mass(_));
    let mut need = match want {
        Want::Count(n) => n,
        Want::Mass(_) => 0,
    };
    let (mut prefix, mut done) = (0u64, 0u32);
    let mut buf: Option<Vec<u64>> = None;
    while done < kb {
        let width = radix.digit_bits.min(kb - done);
        let shift = kb - done - width;
        let nb = 1usize << width;
        let (mut cnt, mut mass) = (vec![0u64; nb], vec![0u64; nb]);
        let mut visit = |key: u64| {
            if key < lo || key >> (shift + width) != prefix >> (shift + width) {
                return;
            }
            let d = (key >> shift) as usize & (nb - 1);
            cnt[d] += 1;
            if by_mass {
                mass[d] += row.mass_of(key);
            }
        };
        match &buf {
            Some(b) => b.iter().for_each(|&k| visit(k)),
            None => (0..row.x.len()).for_each(|i| visit(row.key(i))),
        }
        if let (Want::Mass(top_p), 0) = (want, done) {
            let total = mass.iter().sum();
            need = cutoff(top_p, total);
            if total < need {
                return lo;
            }
        }
        let hist = if by_mass { &mass } else { &cnt };
        let mut above = 0u64;
        let Some(d) = (0..nb).rev().find(|&d| {
            let hit = above + hist[d] >= need;
            if !hit {
                above += hist[d];
            }
            hit
        }) else {
            return lo;
        };
        need -= above;
        prefix |= (d as u64) << shift;
        done += width;
        if buf.is_none() && cnt[d] as usize <= radix.cap && done < kb {
            buf = Some(
                (0..row.x.len())
                    .map(|i| row.key(i))
                    .filter(|&k| k >= lo && k >> shift == prefix >> shift)
                    .collect(),
            );
        }
    }
    prefix
}

// ---- the row -----------------------------------------------------------------------

/// One row's result: the token, its logprob, and the top-n `(id, logprob)` pairs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RowOut {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Pass 1's result: maximum, its lowest id (see [`pass1`]), `sum exp(x - max)`.
#[derive(Clone, Copy)]
struct Stats {
    max: f32,
    argmax: u32,
    sum: f32,
}

impl Stats {
    const EMPTY: Stats = Stats {
        max: f32::NEG_INFINITY,
        argmax: u32::MAX,
        sum: 0.0,
    };
}

/// Visit thread `t`'s elements in the kernel's order: quads `t, t + THREADS, ...`.
fn for_thread(v: usize, t: usize, mut f: impl FnMut(usize)) {
    let quads = v.div_ceil(4);
    for q in (t..quads).step_by(THREADS) {
        (4 * q..(4 * q + 4).min(v)).for_each(&mut f);
    }
}

/// Pass 1 over the raw logits: the max of the cleaned logits, `sum exp(x - max)` and the
/// engine's greedy token (crates/kernels/src/argmax.rs's rule): the lowest +inf if any
/// (cleaning alone would tie it with a real `f32::MAX`), else the lowest id of the
/// cleaned maximum. Each weight is the kernel's `exp_nonpos` bit for bit; the sum runs in
/// vector lanes (the kernel's is per thread, then a tree), so it agrees within rounding.
fn pass1(raw: &[f32]) -> Stats {
    pass1_simd(raw)
}

crate::cpu::multiversion!(fn pass1_simd(raw: &[f32]) -> Stats = pass1_body);

const LANES: usize = 16;

#[inline(always)]
fn pass1_body(raw: &[f32]) -> Stats {
    let chunks = raw.chunks_exact(LANES);
    let tail = chunks.remainder();
    let (mut acc, mut inf) = ([f32::NEG_INFINITY; LANES], [false; LANES]);
    for c in chunks.clone() {
        for i in 0..LANES {
            acc[i] = acc[i].max(clean(c[i]));
            inf[i] |= c[i] == f32::INFINITY;
        }
    }
    let max = tail.iter().fold(
        acc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)),
        |a, &b| a.max(clean(b)),
    );
    if max == f32::NEG_INFINITY {
        return Stats::EMPTY; // no valid logit: the caller returns token 0
    }
    let mut sums = [0f32; LANES];
    for c in chunks {
        for i in 0..LANES {
            sums[i] += exp_nonpos(clean(c[i]) - max);
        }
    }
    let sum = tail
        .iter()
        .map(|&x| exp_nonpos(clean(x) - max))
        .sum::<f32>()
        + sums.iter().sum::<f32>();
    let argmax = match inf.contains(&true) || tail.contains(&f32::INFINITY) {
        true => first(raw, |v| v == f32::INFINITY),
        false => first(raw, |v| clean(v) == max),
    };
    Stats {
        max,
        argmax: argmax.unwrap_or(0) as u32,
        sum,
    }
}

/// The first index where `hit` holds, `LANES` elements tested at a time.
#[inline(always)]
fn first(raw: &[f32], hit: impl Fn(f32) -> bool) -> Option<usize> {
    let mut chunks = raw.chunks_exact(LANES);
    for (n, c) in chunks.by_ref().enumerate() {
        let mut any = false;
        for &v in c {
            any |= hit(v);
        }
        if any {
            return c.iter().position(|&v| hit(v)).map(|i| n * LANES + i);
        }
    }
    let done = raw.len() - chunks.remainder().len();
    chunks
        .remainder()
        .iter()
        .position(|&v| hit(v))
        .map(|i| done + i)
}

/// The kept set: key >= `thr`, weight > 0 and >= `min_w`.
struct Kept {
    thr: u64,
    min_w: f32,
}

impl Kept {
    /// Top-k, then top-p within it, as one threshold key; min-p as a weight bound.
    fn new(row: &Row, p: &RowParams, radix: Radix) -> Kept {
        let mut thr = 0;
        if p.top_k > 0 && (p.top_k as usize) < row.x.len() {
            thr = select(row, Want::Count(p.top_k.into()), 0, radix);
        }
        if p.top_p < 1.0 {
            thr = select(row, Want::Mass(p.top_p), thr, radix);
        }
        Kept {
            thr,
            min_w: p.min_p.max(0.0),
        }
    }

    fn weight(&self, row: &Row, i: usize) -> Option<f32> {
        if row.key(i) < self.thr {
            return None;
        }
        let w = weight(row.x[i], row.max, row.t);
        (w > 0.0 && w >= self.min_w).then_some(w)
    }
}

/// The tokens the port may draw from for `x` (a valid row) under `p` (tests).
#[cfg(test)]
pub(crate) fn kept_tokens(x: &[f32], p: &RowParams, radix: Radix) -> Vec<usize> {
    let x: Vec<f32> = x.iter().map(|&v| clean(v)).collect();
    let row = Row {
        x: &x,
        keys: Keys::new(x.len()),
        max: pass1(&x).max,
        t: if p.is_greedy() { 1.0 } else { p.temperature },
    };
    let kept = Kept::new(&row, p, radix);
    (0..x.len())
        .filter(|&i| kept.weight(&row, i).is_some())
        .collect()
}

/// The draw (exponential race: the kept token with the largest `w / E`, E ~ Exp(1) from
/// Philox at (seed, position, id), ties to the lowest id) when `draw` is given, and the
/// kept weight's sum.
fn draw_pass(row: &Row, kept: &Kept, draw: Option<(u64, u32)>) -> (Option<u32>, f32) {
    let mut best: Option<(f32, u32)> = None;
    let mut total = 0f32;
    for t in 0..THREADS {
        let mut sum = 0f32;
        let mut words: Option<(usize, [u32; 4])> = None;
        for_thread(row.x.len(), t, |i| {
            let Some(w) = kept.weight(row, i) else { return };
            sum += w;
            let Some((seed, position)) = draw else { return };
            let q = i / 4;
            if words.is_none_or(|(wq, _)| wq != q) {
                let ctr = philox::sample_counter(position, q as u32);
                words = Some((q, philox::philox4x32_10(ctr, philox::seed_key(seed))));
            }
            let bits = words.map_or(0, |(_, ws)| ws[i % 4]);
            let r = w / exponential(bits);
            if best.is_none_or(|(br, bi)| r > br || (r == br && (i as u32) < bi)) {
                best = Some((r, i as u32));
            }
        });
        total += sum;
    }
    (best.map(|(_, i)| i), total)
}

/// The port of one row: `x` holds the logits as f32, `n_out` is the op's top-n width.
pub(crate) fn sample_row(x: &[f32], p: &RowParams, n_out: usize, radix: Radix) -> RowOut {
    let n = (p.n_logprobs as usize).min(n_out).min(x.len());
    let stats = pass1(x);
    let (greedy, processed) = (p.is_greedy(), p.logprobs == LogprobMode::Processed);
    if greedy && !processed && n == 0 && stats.max > f32::NEG_INFINITY {
        // The argmax and its raw logprob: nothing else of the row is needed.
        let token = stats.argmax;
        return RowOut {
            token,
            logprob: (clean(x[token as usize]) - stats.max) - stats.sum.ln(),
            top: Vec::new(),
        };
    }
    let x: Vec<f32> = x.iter().map(|&v| clean(v)).collect();
    if stats.max == f32::NEG_INFINITY {
        // No valid distribution (every logit -inf or NaN).
        let top = (0..n as u32).map(|i| (i, f32::NEG_INFINITY)).collect();
        return RowOut {
            token: 0,
            logprob: f32::NEG_INFINITY,
            top,
        };
    }
    let row = Row {
        x: &x,
        keys: Keys::new(x.len()),
        max: stats.max,
        t: if greedy { 1.0 } else { p.temperature },
    };
    let mut kept = Kept { thr: 0, min_w: 0.0 };
    let (mut drawn, mut kept_sum) = (None, 1.0);
    if !greedy || processed {
        kept = Kept::new(&row, p, radix);
        let rng = (!greedy).then_some((p.seed, p.position));
        (drawn, kept_sum) = draw_pass(&row, &kept, rng);
    }
    let lse = stats.sum.ln();
    let ln_kept = kept_sum.ln();
    let logprob = |i: usize| match processed {
        true => kept.weight(&row, i).map_or(f32::NEG_INFINITY, |_| {
            (row.x[i] - row.max) / row.t - ln_kept
        }),
        false => (row.x[i] - row.max) - lse,
    };
    let token = match greedy {
        true => stats.argmax,
        false => drawn.unwrap_or(stats.argmax),
    };
    let mut top = Vec::new();
    if n > 0 {
        let thr = select(&row, Want::Count(n as u64), 0, radix);
        let mut keys: Vec<u64> = (0..x.len())
            .map(|i| row.key(i))
            .filter(|&k| k >= thr)
            .collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        top = keys
            .iter()
            .map(|&k| (row.keys.id(k) as u32, logprob(row.keys.id(k))))
            .collect();
    }
    RowOut {
        token,
        logprob: logprob(token as usize),
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pass 1 in f64: the greedy token and its raw logprob.
    fn greedy_f64(raw: &[f32]) -> (u32, f64) {
        let x: Vec<f64> = raw.iter().map(|&v| f64::from(clean(v))).collect();
        let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let token = match raw.iter().position(|&v| v == f32::INFINITY) {
            Some(i) => i,
            None => x.iter().position(|&v| v == max).unwrap(),
        };
        let lse = x.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        (token as u32, x[token] - max - lse)
    }

    /// The greedy rows' fast path (no logprobs wanted: pass 1 only) against f64, and
    /// against the full path of the same row (asking for one top logprob), on rows of
    /// lengths around the vector width with NaN, +-inf, ties and large values.
    #[test]
    fn greedy_fast_path_matches_the_full_row_and_f64() {
        let greedy = RowParams::greedy();
        let full = RowParams {
            n_logprobs: 1,
            ..greedy
        };
        for (case, v) in [1usize, 15, 16, 17, 33, 1000, 49152]
            .into_iter()
            .enumerate()
        {
            let mut x = crate::harness::random(v, 8.0, case as u64);
            if v > 20 {
                x[3] = f32::NAN;
                x[7] = f32::NEG_INFINITY;
                x[v - 2] = 30.0; // the max, tied with a later one: the lowest id wins
                x[v - 1] = 30.0;
            }
            if case == 5 {
                x[600] = f32::INFINITY;
                x[900] = f32::INFINITY;
            }
            let fast = sample_row(&x, &greedy, 0, RADIX);
            let slow = sample_row(&x, &full, 1, RADIX);
            let (token, lp) = greedy_f64(&x);
            assert_eq!((fast.token, slow.token), (token, token), "vocab {v}");
            assert!(
                (f64::from(fast.logprob) - lp).abs() < 1e-4,
                "vocab {v}: {} vs {lp}",
                fast.logprob
            );
            assert_eq!(fast.logprob, slow.logprob, "vocab {v}");
        }
        let dead = [f32::NAN, f32::NEG_INFINITY, f32::NAN];
        let out = sample_row(&dead, &greedy, 0, RADIX);
        assert_eq!((out.token, out.logprob), (0, f32::NEG_INFINITY));
    }
}
