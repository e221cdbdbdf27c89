//! Sampling: every sampling row of a step in ONE launch of the device sample op
//! (engine_kernels::sample, kernels/sample.cu; its CPU port on the CPU), with no copy of
//! logits to the host. This module maps a request's [`SamplingParams`] to the op's
//! per-row [`RowParams`] and reads the op's results back.
//!
//! Semantics (the op's; tested there against a sort-based reference and by chi-square):
//! temperature 0 takes the argmax by the engine's one rule (NaN never, lowest id on ties,
//! +inf above a real `f32::MAX`, token 0 for a row with nothing valid: the rule of
//! engine_kernels::argmax); otherwise the logits are divided by the temperature and
//! filtered in vLLM's order, top-k -> top-p -> min-p, and one token is drawn. The draw is
//! Philox keyed by the request's seed at its output position (the index of the token
//! being generated), so a request's tokens depend only on its own logits, seed and
//! position: not on the batch, the row order, preemption (recompute) or the device.
//! Requests without a seed get one at admission from the engine's seed. Logprobs are the
//! raw `log_softmax(logits)` (temperature 1, before filtering; vLLM's default).
//!
//! Penalties that need the token history (repetition, frequency, presence) are not
//! supported: [`SamplingParams`] has no such fields, and the run input and the server
//! reject them by name.

use engine_kernels::sample::{LogprobMode, RowParams, Sampled};
use engine_scheduler::SamplingParams;

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

impl From<Sampled> for SampledToken {
    fn from(s: Sampled) -> Self {
        SampledToken {
            token: s.token,
            logprob: s.logprob,
            top_logprobs: s.top_logprobs,
        }
    }
}

/// The op's parameters for a request's token at output `position` (0 for its first
/// generated token) with the request's `seed`.
pub fn row_params(params: &SamplingParams, seed: u64, position: usize) -> RowParams {
    RowParams {
        temperature: params.temperature,
        top_k: params
            .effective_top_k()
            .map_or(0, |k| u32::try_from(k).unwrap_or(u32::MAX)),
        top_p: params.top_p,
        min_p: params.min_p,
        seed,
        position: u32::try_from(position).unwrap_or(u32::MAX),
        n_logprobs: params.logprobs.unwrap_or(0) as u32,
        logprobs: LogprobMode::Raw,
    }
}

/// The top-n width a step's sample launch needs: the widest `n_logprobs` of its rows.
pub fn n_top(rows: &[RowParams]) -> usize {
    rows.iter()
        .map(|r| r.n_logprobs as usize)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_params_map_every_knob() {
        let p = SamplingParams {
            temperature: 0.7,
            top_k: Some(40),
            top_p: 0.9,
            min_p: 0.05,
            logprobs: Some(5),
            ..Default::default()
        };
        let r = row_params(&p, 1 << 40, 3);
        assert_eq!(
            r,
            RowParams {
                temperature: 0.7,
                top_k: 40,
                top_p: 0.9,
                min_p: 0.05,
                seed: 1 << 40,
                position: 3,
                n_logprobs: 5,
                logprobs: LogprobMode::Raw,
            }
        );
        let g = row_params(&SamplingParams::greedy(4), 0, 0);
        assert!(g.is_greedy());
        assert_eq!((g.top_k, g.n_logprobs), (0, 0));
        let huge = SamplingParams {
            top_k: Some(usize::MAX),
            ..Default::default()
        };
        assert_eq!(
            row_params(&huge, 0, 0).top_k,
            u32::MAX,
            "top-k past the vocab: off"
        );
        assert_eq!(n_top(&[r, g]), 5);
        assert_eq!(n_top(&[]), 0);
    }
}
