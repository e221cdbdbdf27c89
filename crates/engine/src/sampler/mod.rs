//! Token sampling from one row of host logits: the policy (temperature, filters, one
//! draw). Split by concern: `select` (top-n selection and the nucleus), `fastmath`
//! (NaN-free logits, a vectorizable `exp`), tests in `tests.rs`.
//!
//! [`sample`] turns a vocabulary-sized slice of logits into one [`SampledToken`]
//! according to [`SamplingParams`]. Greedy decoding (temperature 0) takes the argmax
//! (ties go to the lowest token id) and consumes no randomness. Otherwise the logits are
//! divided by the temperature and filtered in vLLM's order: top-k, then top-p (nucleus,
//! always keeping at least the most likely token), then min-p (dropping tokens whose
//! probability is below `min_p * p_max`); the survivors are renormalized and one token
//! is drawn by inverse CDF with exactly one `f64` from the sequence's [`SeqRng`].
//!
//! Greedy rows take [`argmax_row`], the rule the device argmax runs too. Cost is O(V)
//! for greedy and for pure temperature / top-k / min-p sampling (one top-k selection,
//! `select::top_n`: a streaming insertion buffer for k <= 32, else
//! `select_nth_unstable`, sorting only the `k` survivors). Top-p without top-k selects and sorts a growing prefix (256,
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

mod fastmath;
mod select;

use engine_kernels::argmax::argmax_row;
use engine_scheduler::SamplingParams;
use fastmath::{clean, exp_nonpos, log_sum_exp_offset};
use select::{nucleus_len, top_n, Cand};

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
    // 1. Top-k on the raw logits (dividing by T > 0 preserves the order) with the one
    //    selection, `top_n`: O(V). The k survivors come sorted, which makes top-p below
    //    free.
    let finite = |c: &Cand| c.1 > f32::NEG_INFINITY;
    let top_k = params.effective_top_k().filter(|&k| k < logits.len());
    let sorted = top_k.is_some();
    let mut items: Vec<Cand> = match top_k {
        Some(k) => top_n(logits, k),
        None => logits
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, clean(x)))
            .collect(),
    };
    items.retain(finite);

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

    // The greedy token by the engine's one rule (NaN never, lowest id on ties), the
    // same function the device argmax's CPU port runs.
    let amax = argmax_row(logits) as usize;
    let max = logits.get(amax).map_or(f32::NEG_INFINITY, |&x| clean(x));
    if max == f32::NEG_INFINITY {
        // No valid distribution (empty, or all -inf/NaN): token 0, logprob -inf.
        return SampledToken {
            token: 0,
            logprob: f32::NEG_INFINITY,
            top_logprobs: (0..n_top as u32).map(|i| (i, f32::NEG_INFINITY)).collect(),
        };
    }

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
mod tests;
