//! Per-request sampling parameters and their validation.
//!
//! [`SamplingParams`] mirrors the subset of vLLM / OpenAI sampling knobs the engine
//! supports: temperature (0 means greedy), top-k, top-p (nucleus), min-p, an optional
//! seed, stop conditions (token ids and strings), `ignore_eos`, and the number of
//! top log-probabilities to return per generated token. [`SamplingParams::validate`]
//! checks each rule and reports the first violation as a [`SamplingParamsError`] whose
//! message names the offending field and value.

/// The largest `logprobs` value accepted (matches the OpenAI API limit).
pub const MAX_LOGPROBS: usize = 20;

/// Sampling parameters for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Maximum number of tokens to generate (>= 1). Default 16.
    pub max_tokens: usize,
    /// Softmax temperature (finite, >= 0). `0` selects greedy decoding. Default 1.0.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens. `None` or `Some(0)` disables top-k.
    pub top_k: Option<usize>,
    /// Nucleus sampling mass, in `(0, 1]`. `1.0` disables top-p. Default 1.0.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p * p_max`, in `[0, 1]`.
    /// `0.0` disables min-p. Default 0.0.
    pub min_p: f32,
    /// Seed for the per-sequence RNG; `None` lets the engine pick one.
    pub seed: Option<u64>,
    /// Generation stops when one of these token ids is produced.
    pub stop_token_ids: Vec<u32>,
    /// Generation stops when the decoded text contains one of these (non-empty) strings.
    pub stop: Vec<String>,
    /// If true, keep generating past the model's end-of-sequence token.
    pub ignore_eos: bool,
    /// Number of top log-probabilities to return per token (<= 20); `None` = none.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_tokens: 16,
            temperature: 1.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            seed: None,
            stop_token_ids: Vec::new(),
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: None,
        }
    }
}

/// A violated sampling-parameter rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingParamsError {
    /// `temperature` was NaN or infinite.
    #[error("temperature must be finite, got {0}")]
    TemperatureNotFinite(f32),
    /// `temperature` was negative.
    #[error("temperature must be >= 0, got {0}")]
    NegativeTemperature(f32),
    /// `top_p` was outside `(0, 1]` (or NaN).
    #[error("top_p must be in (0, 1], got {0}")]
    TopPOutOfRange(f32),
    /// `min_p` was outside `[0, 1]` (or NaN).
    #[error("min_p must be in [0, 1], got {0}")]
    MinPOutOfRange(f32),
    /// `max_tokens` was 0.
    #[error("max_tokens must be >= 1, got {0}")]
    ZeroMaxTokens(usize),
    /// `logprobs` exceeded [`MAX_LOGPROBS`].
    #[error("logprobs must be <= {max}, got {got}", max = MAX_LOGPROBS)]
    TooManyLogprobs {
        /// The requested value.
        got: usize,
    },
    /// A stop string was empty.
    #[error("stop strings must be non-empty, got \"\" at stop[{index}]")]
    EmptyStopString {
        /// Position of the empty string in `stop`.
        index: usize,
    },
}

impl SamplingParams {
    /// Greedy decoding (temperature 0) of up to `max_tokens` tokens; other fields default.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// True when `temperature == 0`, i.e. the sampler takes the argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// The effective top-k: `None` when top-k is disabled (`None` or `Some(0)`).
    pub fn effective_top_k(&self) -> Option<usize> {
        self.top_k.filter(|&k| k > 0)
    }

    /// Checks every rule and returns the first violation.
    pub fn validate(&self) -> Result<(), SamplingParamsError> {
        if !self.temperature.is_finite() {
            return Err(SamplingParamsError::TemperatureNotFinite(self.temperature));
        }
        if self.temperature < 0.0 {
            return Err(SamplingParamsError::NegativeTemperature(self.temperature));
        }
        // Written so that NaN fails the check.
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingParamsError::TopPOutOfRange(self.top_p));
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return Err(SamplingParamsError::MinPOutOfRange(self.min_p));
        }
        if self.max_tokens == 0 {
            return Err(SamplingParamsError::ZeroMaxTokens(self.max_tokens));
        }
        if let Some(n) = self.logprobs {
            if n > MAX_LOGPROBS {
                return Err(SamplingParamsError::TooManyLogprobs { got: n });
            }
        }
        if let Some(index) = self.stop.iter().position(|s| s.is_empty()) {
            return Err(SamplingParamsError::EmptyStopString { index });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        let p = SamplingParams::default();
        assert_eq!(p.max_tokens, 16);
        assert_eq!(p.temperature, 1.0);
        assert_eq!(p.top_p, 1.0);
        assert_eq!(p.min_p, 0.0);
        assert!(!p.is_greedy());
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn greedy_constructor() {
        let p = SamplingParams::greedy(7);
        assert!(p.is_greedy());
        assert_eq!(p.max_tokens, 7);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn effective_top_k() {
        let mut p = SamplingParams::default();
        assert_eq!(p.effective_top_k(), None);
        p.top_k = Some(0);
        assert_eq!(p.effective_top_k(), None);
        p.top_k = Some(5);
        assert_eq!(p.effective_top_k(), Some(5));
    }

    #[test]
    fn temperature_rules() {
        let p = SamplingParams {
            temperature: -1.0,
            ..Default::default()
        };
        let err = p.validate().unwrap_err();
        assert_eq!(err, SamplingParamsError::NegativeTemperature(-1.0));
        assert_eq!(err.to_string(), "temperature must be >= 0, got -1");

        for t in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let p = SamplingParams {
                temperature: t,
                ..Default::default()
            };
            assert!(matches!(
                p.validate(),
                Err(SamplingParamsError::TemperatureNotFinite(_))
            ));
        }
        let p = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        assert_eq!(p.validate(), Ok(()));
        let p = SamplingParams {
            temperature: 2.5,
            ..Default::default()
        };
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn top_p_rules() {
        for bad in [0.0, -0.1, 1.0001, f32::NAN] {
            let p = SamplingParams {
                top_p: bad,
                ..Default::default()
            };
            assert!(
                matches!(p.validate(), Err(SamplingParamsError::TopPOutOfRange(_))),
                "top_p={bad}"
            );
        }
        let p = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "top_p must be in (0, 1], got 0"
        );
        for ok in [1e-6, 0.5, 1.0] {
            let p = SamplingParams {
                top_p: ok,
                ..Default::default()
            };
            assert_eq!(p.validate(), Ok(()), "top_p={ok}");
        }
    }

    #[test]
    fn min_p_rules() {
        for bad in [-0.01, 1.5, f32::NAN] {
            let p = SamplingParams {
                min_p: bad,
                ..Default::default()
            };
            assert!(
                matches!(p.validate(), Err(SamplingParamsError::MinPOutOfRange(_))),
                "min_p={bad}"
            );
        }
        let p = SamplingParams {
            min_p: 1.5,
            ..Default::default()
        };
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "min_p must be in [0, 1], got 1.5"
        );
        for ok in [0.0, 0.3, 1.0] {
            let p = SamplingParams {
                min_p: ok,
                ..Default::default()
            };
            assert_eq!(p.validate(), Ok(()), "min_p={ok}");
        }
    }

    #[test]
    fn max_tokens_rule() {
        let p = SamplingParams {
            max_tokens: 0,
            ..Default::default()
        };
        let err = p.validate().unwrap_err();
        assert_eq!(err, SamplingParamsError::ZeroMaxTokens(0));
        assert_eq!(err.to_string(), "max_tokens must be >= 1, got 0");
        assert_eq!(SamplingParams::greedy(1).validate(), Ok(()));
    }

    #[test]
    fn logprobs_rule() {
        let p = SamplingParams {
            logprobs: Some(21),
            ..Default::default()
        };
        let err = p.validate().unwrap_err();
        assert_eq!(err, SamplingParamsError::TooManyLogprobs { got: 21 });
        assert_eq!(err.to_string(), "logprobs must be <= 20, got 21");
        for ok in [None, Some(0), Some(5), Some(20)] {
            let p = SamplingParams {
                logprobs: ok,
                ..Default::default()
            };
            assert_eq!(p.validate(), Ok(()), "logprobs={ok:?}");
        }
    }

    #[test]
    fn stop_string_rule() {
        let p = SamplingParams {
            stop: vec!["\n\n".into(), String::new()],
            ..Default::default()
        };
        let err = p.validate().unwrap_err();
        assert_eq!(err, SamplingParamsError::EmptyStopString { index: 1 });
        assert_eq!(
            err.to_string(),
            "stop strings must be non-empty, got \"\" at stop[1]"
        );
        let p = SamplingParams {
            stop: vec!["END".into()],
            stop_token_ids: vec![2, 3],
            ..Default::default()
        };
        assert_eq!(p.validate(), Ok(()));
    }
}
