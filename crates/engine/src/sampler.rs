//! Token sampling from one row of host logits.
//!
//! [`sample`] turns a vocabulary-sized slice of logits into one [`SampledToken`]
//! according to [`SamplingParams`]. Greedy decoding (temperature 0) takes the argmax
//! (ties go to the lowest token id) and consumes no randomness. Otherwise the logits are
//! divided by the temperature and filtered in vLLM's order: top-k, then top-p (nucleus,
//! always keeping at least the most likely token), then min-p (dropping tokens whose
//! probability is below `min_p * p_max`); the survivors are renormalized and one token
//! is drawn by inverse CDF with exactly one `f64` from the sequence's [`SeqRng`].
//!
//! Cost is O(V) for greedy and for pure temperature / top-k / min-p sampling (top-k uses
//! a streaming insertion buffer for k <= 32, else `select_nth_unstable`, and sorts only
//! the `k` survivors). Top-p without top-k selects and sorts a growing prefix (256,
//! 1024, ... tokens) until it holds the nucleus, so it is O(V) for small nuclei and
//! O(V log V) in the worst case. Top logprobs use the same streaming buffer (O(V) for
//! the usual n <= 20). Exponentials use a vectorizable polynomial `exp` (relative
//! error < 5e-7, tested against `f64`).
//!
//! Non-finite logits never panic: NaN is treated as `-inf` (the token can never be
//! chosen), and `+inf` as `f32::MAX` (all `+inf` tokens share the probability mass
//! equally). If every logit is `-inf`/NaN, or the slice is empty, there is no valid
//! distribution: [`sample`] then returns token 0 with logprob `-inf` (and the
//! requested number of top logprobs, all `-inf`, from the lowest ids) without consuming
//! randomness; callers that care can detect this case by the `-inf` logprob.

use std::cmp::Ordering;

use engine_scheduler::SamplingParams;

use crate::rng::SeqRng;

/// The result of sampling one token.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    /// The chosen token id.
    pub token: u32,
    /// Log-probability of `token` under the raw distribution, `log_softmax(logits)`
    /// (temperature 1, before any top-k / top-p / min-p filtering).
    pub logprob: f32,
    /// The `params.logprobs` highest raw log-probabilities, descending, ties broken by
    /// lowest token id. Empty when `params.logprobs` is `None` or `Some(0)`.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Maps a logit to a NaN-free value: NaN becomes `-inf`, `+inf` becomes `f32::MAX`.
#[inline]
fn clean(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        f32::MAX
    } else {
        x
    }
}

/// A candidate token: `(id, value)`, where `value` is a cleaned logit or a weight.
type Cand = (u32, f32);

/// Ordering "more likely first": value descending, then token id ascending.
/// Values are NaN-free here; `-0.0` and `+0.0` compare equal, consistent with the `>`
/// used by [`argmax`].
#[inline]
fn more_likely_first(a: &Cand, b: &Cand) -> Ordering {
    b.1.partial_cmp(&a.1)
        .unwrap_or(Ordering::Equal)
        .then(a.0.cmp(&b.0))
}

/// Index and cleaned value of the largest logit, ties to the lowest index.
/// `None` when the slice is empty or every logit is `-inf`/NaN.
fn argmax(logits: &[f32]) -> Option<(usize, f32)> {
    let mut best = None;
    let mut best_x = f32::NEG_INFINITY;
    for (i, &x) in logits.iter().enumerate() {
        let x = clean(x);
        if x > best_x {
            best_x = x;
            best = Some(i);
        }
    }
    best.map(|i| (i, best_x))
}

/// `exp(x)` for `x <= 0`, accurate to a few ulp, branch-free so the loops that call it
/// vectorize (several times faster than `f32::exp` over a 150k vocabulary).
/// Results below `exp(-87)` (~1.6e-38) flush to 0; `-inf` and NaN give 0.
#[inline]
fn exp_nonpos(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // NaN fails both comparisons: clamp it into range here and zero it at the end.
    let xc = if x > -87.0 { x.min(0.0) } else { -87.0 };
    // Round x / ln 2 (in [-126, 0]) to nearest with the 1.5 * 2^23 trick: after the add,
    // the integer sits in the low mantissa bits. Plain float/integer ops only (no libm
    // `floor`, no float-to-int conversion), so the loop vectorizes on baseline x86-64.
    const SHIFT: f32 = 12_582_912.0;
    let t = xc * LOG2E + SHIFT;
    let n = t - SHIFT;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Cephes expf minimax polynomial on |r| <= ln(2) / 2.
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let y = p * r * r + r + 1.0;
    // 2^n for n in [-126, 0] is a normal f32: exponent field n + 127.
    let n_int = t.to_bits().wrapping_sub(SHIFT.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    if x > -87.0 {
        y * scale
    } else {
        0.0
    }
}

/// `ln(sum_i exp(x_i - max))`, so that `log_softmax(x)_i = (x_i - max) - result`.
fn log_sum_exp_offset(logits: &[f32], max: f32) -> f32 {
    // Exponentials a block at a time into a stack buffer (a loop that vectorizes),
    // then summed in f64.
    let mut buf = [0.0f32; 1024];
    let mut s = 0.0f64;
    for block in logits.chunks(buf.len()) {
        for (b, &x) in buf.iter_mut().zip(block) {
            *b = exp_nonpos(clean(x) - max);
        }
        s += buf[..block.len()]
            .iter()
            .map(|&e| f64::from(e))
            .sum::<f64>();
    }
    // s >= 1 because the maximum contributes exp(0) = 1.
    s.ln() as f32
}

/// Above this many requested logprobs, [`top_n`] switches from a streaming insertion
/// buffer (O(V) typical, O(V n) worst case) to `select_nth_unstable` (O(V) always).
const STREAMING_TOP_N_MAX: usize = 32;

/// The `n` most likely tokens (cleaned logits), sorted more-likely-first.
fn top_n(logits: &[f32], n: usize) -> Vec<Cand> {
    if n == 0 {
        return Vec::new();
    }
    if n <= STREAMING_TOP_N_MAX {
        let mut best: Vec<Cand> = Vec::with_capacity(n + 1);
        for (i, &x) in logits.iter().enumerate() {
            let c = (i as u32, clean(x));
            if best.len() == n
                && best
                    .last()
                    .is_some_and(|w| more_likely_first(&c, w).is_ge())
            {
                continue;
            }
            let pos = best.partition_point(|b| more_likely_first(b, &c).is_lt());
            best.insert(pos, c);
            best.truncate(n);
        }
        return best;
    }
    let mut all: Vec<Cand> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| (i as u32, clean(x)))
        .collect();
    if n < all.len() {
        all.select_nth_unstable_by(n - 1, more_likely_first);
        all.truncate(n);
    }
    all.sort_unstable_by(more_likely_first);
    all
}

/// Length of the top-p nucleus of `items` (weights): the smallest more-likely-first
/// prefix whose mass reaches `top_p` of the total, at least 1. On return
/// `items[..len]` holds that prefix in order. If `sorted` is false the order is built
/// lazily: select and sort the best 256, then 1024, ... until the prefix mass reaches
/// the cutoff, so a small nucleus costs O(V) rather than a full O(V log V) sort.
fn nucleus_len(items: &mut [Cand], top_p: f32, sorted: bool) -> usize {
    let len = items.len();
    let total: f64 = items.iter().map(|&(_, w)| f64::from(w)).sum();
    let cutoff = f64::from(top_p) * total;
    let mut m = if sorted { len } else { len.min(256) };
    loop {
        if !sorted {
            if m < len {
                items.select_nth_unstable_by(m - 1, more_likely_first);
            }
            items[..m].sort_unstable_by(more_likely_first);
        }
        let mut cum = 0.0f64;
        for (n, &(_, w)) in items[..m].iter().enumerate() {
            cum += f64::from(w);
            if cum >= cutoff {
                return n + 1;
            }
        }
        if m >= len {
            // Only through rounding in the running sum: keep everything.
            return len.max(1);
        }
        m = len.min(m.saturating_mul(4));
    }
}

/// Draws a token for non-greedy sampling. `max` is the largest cleaned logit (finite or
/// `f32::MAX`, never `-inf`), and `argmax` its lowest index.
fn draw(
    logits: &[f32],
    params: &SamplingParams,
    max: f32,
    argmax: usize,
    rng: &mut SeqRng,
) -> usize {
    // Candidates (id, cleaned logit); tokens with logit -inf or NaN have probability 0
    // and are never candidates.
    // 1. Top-k on the raw logits (dividing by T > 0 preserves the order): a streaming
    //    buffer for small k, else `select_nth_unstable`; O(V) either way. The k
    //    survivors are sorted, which makes top-p below free.
    let finite = |c: &Cand| c.1 > f32::NEG_INFINITY;
    let top_k = params.effective_top_k().filter(|&k| k < logits.len());
    let sorted = top_k.is_some();
    let mut items: Vec<Cand> = match top_k {
        Some(k) if k <= STREAMING_TOP_N_MAX => {
            let mut v = top_n(logits, k);
            v.retain(finite);
            v
        }
        _ => {
            let mut v: Vec<Cand> = logits
                .iter()
                .enumerate()
                .map(|(i, &x)| (i as u32, clean(x)))
                .filter(finite)
                .collect();
            if let Some(k) = top_k {
                if k < v.len() {
                    v.select_nth_unstable_by(k - 1, more_likely_first);
                    v.truncate(k);
                }
                v.sort_unstable_by(more_likely_first);
            }
            v
        }
    };

    // Unnormalized probabilities exp((x - max) / T) in (0, 1]; the argmax gets 1.
    // Subtracting `max` before dividing avoids overflow for tiny temperatures.
    // The map is monotone, so a sorted list stays sorted. Entries that underflow
    // to 0 can never be drawn, so they are dropped.
    let temperature = params.temperature;
    for c in items.iter_mut() {
        c.1 = exp_nonpos((c.1 - max) / temperature);
    }
    items.retain(|&(_, w)| w > 0.0);

    // 2. Top-p: keep the smallest most-likely-first prefix whose mass reaches top_p.
    if params.top_p < 1.0 && !items.is_empty() {
        let keep = nucleus_len(&mut items, params.top_p, sorted);
        items.truncate(keep);
    }

    // 3. Min-p: drop tokens with p < min_p * p_max (a ratio, so normalization is moot).
    if params.min_p > 0.0 {
        let w_max = items.iter().map(|&(_, w)| w).fold(0.0f32, f32::max);
        let threshold = params.min_p * w_max;
        items.retain(|&(_, w)| w >= threshold);
    }

    // 4. Inverse CDF over the renormalized survivors; always exactly one draw.
    let u = rng.next_f64();
    let Some(&(last, _)) = items.last() else {
        // Unreachable: the argmax has weight 1 and survives every filter.
        return argmax;
    };
    let total: f64 = items.iter().map(|&(_, w)| f64::from(w)).sum();
    let target = u * total;
    let mut cum = 0.0f64;
    for &(i, w) in &items {
        cum += f64::from(w);
        if target < cum {
            return i as usize;
        }
    }
    // Only reachable through rounding in the running sum.
    last as usize
}

/// Samples one token from a row of logits (`logits.len()` = vocabulary size).
///
/// See the module docs for the algorithm and for how non-finite logits are handled.
/// `params` is assumed to have passed [`SamplingParams::validate`]; out-of-range
/// values do not panic (e.g. `top_p > 1` disables top-p, `min_p > 1` keeps only the
/// argmax and its ties).
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut SeqRng) -> SampledToken {
    let n_top = params.logprobs.unwrap_or(0).min(logits.len());

    let Some((amax, max)) = argmax(logits) else {
        // No valid distribution (empty, or all -inf/NaN): token 0, logprob -inf.
        return SampledToken {
            token: 0,
            logprob: f32::NEG_INFINITY,
            top_logprobs: (0..n_top as u32).map(|i| (i, f32::NEG_INFINITY)).collect(),
        };
    };

    // The returned logprobs are from the raw distribution, log_softmax(logits) at
    // temperature 1 and before filtering, matching vLLM's default ("raw_logprobs"):
    // they describe what the model predicted, independent of the sampling knobs.
    let lse_off = log_sum_exp_offset(logits, max);
    let top_logprobs = top_n(logits, n_top)
        .into_iter()
        .map(|(i, x)| (i, (x - max) - lse_off))
        .collect();

    let token = if params.is_greedy() || params.temperature.is_nan() || params.temperature <= 0.0 {
        amax
    } else {
        draw(logits, params, max, amax, rng)
    };
    let logprob = (clean(logits[token]) - max) - lse_off;

    SampledToken {
        token: token as u32,
        logprob,
        top_logprobs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            ..Default::default()
        }
    }

    /// softmax(logits / t) in f64.
    fn softmax(logits: &[f32], t: f32) -> Vec<f64> {
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = logits
            .iter()
            .map(|&x| ((x as f64 - m) / t as f64).exp())
            .collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|x| x / s).collect()
    }

    /// Pseudo-random logits in [-scale, scale) from a seed.
    fn random_logits(seed: u64, v: usize, scale: f32) -> Vec<f32> {
        let mut r = SeqRng::new(seed);
        (0..v).map(|_| (r.next_f32() * 2.0 - 1.0) * scale).collect()
    }

    #[test]
    fn exp_nonpos_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = 0.0f32;
        while x > -87.0 {
            let want = (x as f64).exp();
            let got = exp_nonpos(x) as f64;
            worst = worst.max((got - want).abs() / want);
            x -= 0.000_731;
        }
        assert!(worst < 5e-7, "max relative error {worst}");
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(-0.0), 1.0);
        assert_eq!(exp_nonpos(-100.0), 0.0);
        assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos(f32::NAN), 0.0);
        assert_eq!(exp_nonpos(f32::MIN), 0.0);
    }

    #[test]
    fn greedy_is_argmax_and_uses_no_randomness() {
        let logits = [0.1, 3.0, -2.0, 2.9, 3.0];
        let p = SamplingParams::greedy(4);
        let mut rng = SeqRng::new(5);
        let before = rng.clone();
        let out = sample(&logits, &p, &mut rng);
        assert_eq!(out.token, 1, "ties go to the lowest id");
        assert_eq!(rng, before, "greedy must not consume randomness");
        for seed in 0..20 {
            let l = random_logits(seed, 1000, 5.0);
            let expect = l
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                )
                .0;
            assert_eq!(sample(&l, &p, &mut rng).token as usize, expect);
        }
    }

    #[test]
    fn same_seed_same_draws_different_seed_differs() {
        let logits = random_logits(1, 500, 2.0);
        let p = params(1.0);
        let run = |seed: u64| {
            let mut rng = SeqRng::new(seed);
            (0..100)
                .map(|_| sample(&logits, &p, &mut rng).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    #[test]
    fn each_non_greedy_sample_uses_one_draw() {
        let logits = random_logits(2, 50, 3.0);
        let p = SamplingParams {
            top_k: Some(1),
            ..params(0.8)
        };
        let mut rng = SeqRng::new(3);
        let mut reference = rng.clone();
        sample(&logits, &p, &mut rng);
        reference.next_u64();
        assert_eq!(rng, reference);
    }

    #[test]
    fn top_k_one_equals_greedy() {
        let greedy = SamplingParams::greedy(1);
        for seed in 0..50 {
            let logits = random_logits(seed, 300, 4.0);
            let p = SamplingParams {
                top_k: Some(1),
                ..params(1.5)
            };
            let mut rng = SeqRng::new(seed);
            let g = sample(&logits, &greedy, &mut rng);
            for _ in 0..5 {
                assert_eq!(sample(&logits, &p, &mut rng), g);
            }
        }
    }

    #[test]
    fn tiny_top_p_equals_greedy() {
        let greedy = SamplingParams::greedy(1);
        for seed in 0..50 {
            let logits = random_logits(seed + 100, 300, 4.0);
            let p = SamplingParams {
                top_p: 1e-6,
                ..params(1.0)
            };
            let mut rng = SeqRng::new(seed);
            let g = sample(&logits, &greedy, &mut rng);
            for _ in 0..5 {
                assert_eq!(sample(&logits, &p, &mut rng), g);
            }
        }
    }

    #[test]
    fn min_p_one_equals_greedy() {
        let greedy = SamplingParams::greedy(1);
        for seed in 0..50 {
            let logits = random_logits(seed + 200, 300, 4.0);
            let p = SamplingParams {
                min_p: 1.0,
                ..params(2.0)
            };
            let mut rng = SeqRng::new(seed);
            let g = sample(&logits, &greedy, &mut rng);
            for _ in 0..5 {
                assert_eq!(sample(&logits, &p, &mut rng), g);
            }
        }
    }

    #[test]
    fn tiny_temperature_is_greedy_and_does_not_panic() {
        let logits = [1.0, 5.0, 4.999, -3.0, 5.0];
        for t in [1e-30, f32::MIN_POSITIVE, 1e-45] {
            let mut rng = SeqRng::new(0);
            for _ in 0..100 {
                // Two tied maxima (ids 1 and 4) share the mass; nothing else is drawn.
                let tok = sample(&logits, &params(t), &mut rng).token;
                assert!(tok == 1 || tok == 4, "t={t} tok={tok}");
            }
        }
    }

    /// Draws `n` samples and returns empirical frequencies.
    fn frequencies(logits: &[f32], p: &SamplingParams, seed: u64, n: usize) -> Vec<f64> {
        let mut rng = SeqRng::new(seed);
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[sample(logits, p, &mut rng).token as usize] += 1;
        }
        counts.into_iter().map(|c| c as f64 / n as f64).collect()
    }

    #[test]
    fn empirical_distribution_matches_softmax() {
        // 20,000 draws: the standard error of each frequency is at most
        // sqrt(0.25 / 20000) ~= 0.0035; the tolerance is 0.015 absolute (> 4 sigma).
        const N: usize = 20_000;
        const TOL: f64 = 0.015;
        let logits = [1.0f32, 2.0, 0.5, -1.0, 3.0, 2.5, -4.0, 0.0];
        for (t, seed) in [(1.0f32, 17u64), (0.7, 18), (2.0, 19)] {
            let want = softmax(&logits, t);
            let got = frequencies(&logits, &params(t), seed, N);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < TOL,
                    "T={t} token {i}: empirical {g:.4} vs softmax {w:.4}"
                );
            }
        }
    }

    #[test]
    fn empirical_distribution_after_top_k_renormalizes() {
        const N: usize = 20_000;
        const TOL: f64 = 0.015;
        let logits = [1.0f32, 2.0, 0.5, -1.0, 3.0, 2.5, -4.0, 0.0];
        let p = SamplingParams {
            top_k: Some(3),
            ..params(1.0)
        };
        // Top 3: ids 4, 5, 1.
        let kept = [4usize, 5, 1];
        let sub: Vec<f32> = kept.iter().map(|&i| logits[i]).collect();
        let want = softmax(&sub, 1.0);
        let got = frequencies(&logits, &p, 23, N);
        for (j, &i) in kept.iter().enumerate() {
            assert!(
                (got[i] - want[j]).abs() < TOL,
                "token {i}: {} vs {}",
                got[i],
                want[j]
            );
        }
        let excluded: f64 = (0..logits.len())
            .filter(|i| !kept.contains(i))
            .map(|i| got[i])
            .sum();
        assert_eq!(excluded, 0.0);
    }

    #[test]
    fn top_k_and_top_p_never_pick_excluded_tokens() {
        let logits = random_logits(77, 200, 3.0);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));

        // top-k = 5 (streaming selection) and 40 (select_nth_unstable path).
        let mut rng = SeqRng::new(1);
        for k in [5usize, 40] {
            let p = SamplingParams {
                top_k: Some(k),
                ..params(1.0)
            };
            let allowed = &order[..k];
            let mut seen = std::collections::HashSet::new();
            for _ in 0..5000 {
                let t = sample(&logits, &p, &mut rng).token as usize;
                assert!(allowed.contains(&t), "top-k={k} picked excluded token {t}");
                seen.insert(t);
            }
            assert!(
                seen.len() > k / 2,
                "top-k={k} only drew {} tokens",
                seen.len()
            );
        }

        // top-p = 0.5 at T = 0.5: the nucleus is the smallest prefix with mass >= 0.5.
        let t = 0.5;
        let probs = softmax(&logits, t);
        let mut cum = 0.0;
        let mut nucleus = Vec::new();
        for &i in &order {
            nucleus.push(i);
            cum += probs[i];
            if cum >= 0.5 {
                break;
            }
        }
        assert!(nucleus.len() > 1 && nucleus.len() < 50);
        let p = SamplingParams {
            top_p: 0.5,
            ..params(t)
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5000 {
            let tok = sample(&logits, &p, &mut rng).token as usize;
            assert!(nucleus.contains(&tok), "top-p picked excluded token {tok}");
            seen.insert(tok);
        }
        assert!(
            seen.len() > 1,
            "top-p should still sample among several tokens"
        );

        // top-k and top-p combined: the intersection of both.
        let p = SamplingParams {
            top_k: Some(2),
            top_p: 0.5,
            ..params(t)
        };
        for _ in 0..2000 {
            let tok = sample(&logits, &p, &mut rng).token as usize;
            assert!(order[..2].contains(&tok));
        }
    }

    #[test]
    fn lazy_nucleus_matches_full_sort() {
        // Flat logits give nuclei much larger than the first 256-token round.
        for (seed, top_p) in [(1u64, 0.9f32), (2, 0.3), (3, 0.999), (4, 0.01)] {
            let logits = random_logits(seed, 5000, 1.0);
            let items: Vec<Cand> = logits
                .iter()
                .enumerate()
                .map(|(i, &x)| (i as u32, x.exp()))
                .collect();
            let mut full = items.clone();
            full.sort_by(more_likely_first);
            let want = nucleus_len(&mut full, top_p, true);
            let mut lazy = items.clone();
            let got = nucleus_len(&mut lazy, top_p, false);
            assert_eq!(got, want, "top_p={top_p}");
            assert_eq!(&lazy[..got], &full[..want]);
        }
        // And end to end: nothing outside a large nucleus is ever drawn.
        let logits = random_logits(9, 3000, 1.0);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let probs = softmax(&logits, 1.0);
        let (mut cum, mut n) = (0.0, 0);
        while cum < 0.8 {
            cum += probs[order[n]];
            n += 1;
        }
        assert!(n > 1000);
        let allowed: std::collections::HashSet<usize> = order[..n].iter().copied().collect();
        let p = SamplingParams {
            top_p: 0.8,
            ..params(1.0)
        };
        let mut rng = SeqRng::new(5);
        for _ in 0..3000 {
            let t = sample(&logits, &p, &mut rng).token as usize;
            assert!(allowed.contains(&t), "picked {t} outside the nucleus");
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        // p ratios to the max: token 0 = 1, token 1 = e^-1 ~ 0.37, token 2 = e^-3 ~ 0.05.
        let logits = [0.0f32, -1.0, -3.0];
        let p = SamplingParams {
            min_p: 0.1,
            ..params(1.0)
        };
        let f = frequencies(&logits, &p, 9, 5000);
        assert_eq!(f[2], 0.0);
        assert!(f[0] > 0.0 && f[1] > 0.0);
    }

    #[test]
    fn logprobs_are_raw_log_softmax() {
        let logits = random_logits(5, 64, 4.0);
        let want = softmax(&logits, 1.0);
        let p = SamplingParams {
            logprobs: Some(20),
            top_k: Some(3),
            ..params(0.3)
        };
        let mut rng = SeqRng::new(0);
        let out = sample(&logits, &p, &mut rng);
        // Chosen token logprob is temperature-1 and unfiltered.
        assert!((out.logprob as f64 - want[out.token as usize].ln()).abs() < 1e-5);

        assert_eq!(out.top_logprobs.len(), 20);
        for w in out.top_logprobs.windows(2) {
            assert!(w[0].1 >= w[1].1, "top_logprobs not descending");
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| want[b].total_cmp(&want[a]).then(a.cmp(&b)));
        for (k, &(id, lp)) in out.top_logprobs.iter().enumerate() {
            assert_eq!(id as usize, order[k]);
            assert!((lp as f64 - want[id as usize].ln()).abs() < 1e-5);
        }
        // The chosen token (from top-3) is in the reported top list.
        assert!(out.top_logprobs.iter().any(|&(id, _)| id == out.token));

        // With logprobs = V every token appears and the probabilities sum to 1.
        let p = SamplingParams {
            logprobs: Some(logits.len()),
            ..params(1.0)
        };
        let out = sample(&logits, &p, &mut rng);
        let total: f64 = out
            .top_logprobs
            .iter()
            .map(|&(_, lp)| (lp as f64).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-5, "sum of probs = {total}");
    }

    #[test]
    fn logprob_ties_ordered_by_lowest_id() {
        let logits = [1.0f32, 2.0, 2.0, 0.0, 2.0, -0.0];
        let p = SamplingParams {
            logprobs: Some(6),
            ..SamplingParams::greedy(1)
        };
        let out = sample(&logits, &p, &mut SeqRng::new(0));
        let ids: Vec<u32> = out.top_logprobs.iter().map(|&(i, _)| i).collect();
        assert_eq!(ids, vec![1, 2, 4, 0, 3, 5]);
        assert_eq!(out.token, 1);
        let none = sample(&logits, &SamplingParams::greedy(1), &mut SeqRng::new(0));
        assert!(none.top_logprobs.is_empty());
    }

    #[test]
    fn nan_and_infinite_logits_do_not_panic() {
        let logits = [f32::NAN, 1.0, f32::NAN, 0.5, f32::NEG_INFINITY];
        let p = SamplingParams {
            logprobs: Some(5),
            ..params(1.0)
        };
        let mut rng = SeqRng::new(4);
        for _ in 0..500 {
            let out = sample(&logits, &p, &mut rng);
            assert!(out.token == 1 || out.token == 3, "picked NaN/-inf token");
            assert!(out.logprob.is_finite());
        }
        let out = sample(&logits, &SamplingParams::greedy(1), &mut rng);
        assert_eq!(out.token, 1);
        let ids: Vec<u32> = out.top_logprobs.iter().map(|&(i, _)| i).collect();
        assert!(ids.is_empty());
        let out = sample(&logits, &p, &mut rng);
        let ids: Vec<u32> = out.top_logprobs.iter().map(|&(i, _)| i).collect();
        assert_eq!(ids, vec![1, 3, 0, 2, 4]);
        assert_eq!(out.top_logprobs[4].1, f32::NEG_INFINITY);

        // +inf tokens share all the mass.
        let logits = [0.0f32, f32::INFINITY, 3.0, f32::INFINITY];
        for _ in 0..200 {
            let out = sample(&logits, &params(1.0), &mut rng);
            assert!(out.token == 1 || out.token == 3);
            assert!((out.logprob - (-std::f32::consts::LN_2)).abs() < 1e-6);
        }
    }

    #[test]
    fn degenerate_rows_return_token_zero() {
        let p = SamplingParams {
            logprobs: Some(2),
            top_p: 0.5,
            top_k: Some(2),
            min_p: 0.5,
            ..params(1.0)
        };
        for logits in [
            vec![f32::NAN; 4],
            vec![f32::NEG_INFINITY; 3],
            vec![f32::NAN, f32::NEG_INFINITY],
        ] {
            let mut rng = SeqRng::new(1);
            let before = rng.clone();
            let out = sample(&logits, &p, &mut rng);
            assert_eq!(out.token, 0);
            assert_eq!(out.logprob, f32::NEG_INFINITY);
            assert_eq!(
                out.top_logprobs,
                vec![(0, f32::NEG_INFINITY), (1, f32::NEG_INFINITY)]
            );
            assert_eq!(rng, before);
        }
        let out = sample(&[], &p, &mut SeqRng::new(1));
        assert_eq!(out.token, 0);
        assert_eq!(out.logprob, f32::NEG_INFINITY);
        assert!(out.top_logprobs.is_empty());
    }

    #[test]
    fn top_k_larger_than_vocab_or_zero_is_off() {
        let logits = [0.0f32, 0.1, 0.2];
        for k in [Some(0), Some(3), Some(100), None] {
            let p = SamplingParams {
                top_k: k,
                ..params(1.0)
            };
            let f = frequencies(&logits, &p, 8, 3000);
            assert!(f.iter().all(|&x| x > 0.2), "k={k:?} f={f:?}");
        }
    }
}
