//! Value parsers for numeric flags: every range is checked where clap parses the flag,
//! so a bad value is a usage error naming the flag (clap adds `for '--flag <VALUE>'`)
//! before anything is loaded, never a confusing failure later ("does not fit", a hang,
//! an allocation that aborts). Lists (`--batch 1,8,32`) are checked element by element.
//!
//! The bounds are far above real use and far below what would overflow the arithmetic
//! done with them; memory-dependent limits (a KV cache larger than the device) are
//! checked once the model is known (`engine_core::admission`).

use std::str::FromStr;

/// Parse `s` as `T`, with clap-style wording on failure.
fn number<T: FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("expected {what}, got `{s}`"))
}

/// An integer in `min..=max`.
fn int_in(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let v: usize = number(s, "a non-negative integer")?;
    if v < min {
        return Err(format!("must be at least {min}"));
    }
    if v > max {
        return Err(format!("must be at most {max}"));
    }
    Ok(v)
}

/// A finite float in `lo..=hi` (`lo` excluded when `open_lo`).
fn float_in(s: &str, lo: f64, open_lo: bool, hi: f64) -> Result<f64, String> {
    let v: f64 = number(s, "a number")?;
    let above = if open_lo { v > lo } else { v >= lo };
    if !(v.is_finite() && above && v <= hi) {
        let open = if open_lo { '(' } else { '[' };
        let hi = if hi.is_finite() {
            hi.to_string()
        } else {
            "inf)".into()
        };
        let close = if hi.ends_with(')') { "" } else { "]" };
        return Err(format!(
            "must be a finite number in {open}{lo}, {hi}{close}"
        ));
    }
    Ok(v)
}

/// Tokens per KV-cache block: 1 to 1024.
pub fn block_size(s: &str) -> Result<usize, String> {
    int_in(s, 1, 1024)
}

/// KV-cache blocks: 1 to 2^24.
pub fn num_blocks(s: &str) -> Result<usize, String> {
    int_in(s, 1, 1 << 24)
}

/// Sequences per step, batch sizes, concurrencies, requests in flight: 1 to 65536.
pub fn batch_size(s: &str) -> Result<usize, String> {
    int_in(s, 1, 1 << 16)
}

/// A token count (lengths, max tokens, tokens per step): 1 to 2^27.
pub fn token_count(s: &str) -> Result<usize, String> {
    int_in(s, 1, 1 << 27)
}

/// A count of requests or runs: 1 to 10^7.
pub fn request_count(s: &str) -> Result<usize, String> {
    int_in(s, 1, 10_000_000)
}

/// Warm-up runs: 0 to 1000.
pub fn warmup_runs(s: &str) -> Result<usize, String> {
    int_in(s, 0, 1000)
}

/// `--top-k`: 0 (off) or any k.
pub fn top_k(s: &str) -> Result<usize, String> {
    number(s, "a non-negative integer")
}

/// `--logprobs`: 0 to 20 (the OpenAI limit).
pub fn logprobs(s: &str) -> Result<usize, String> {
    int_in(s, 0, engine_scheduler::sampling_params::MAX_LOGPROBS)
}

/// A sampling temperature: finite, >= 0.
pub fn temperature(s: &str) -> Result<f32, String> {
    let t = float_in(s, 0.0, false, f64::INFINITY)? as f32;
    match t.is_finite() {
        true => Ok(t),
        false => Err("must be a finite number in [0, inf)".into()),
    }
}

/// `--top-p`: in (0, 1].
pub fn top_p(s: &str) -> Result<f32, String> {
    float_in(s, 0.0, true, 1.0).map(|v| v as f32)
}

/// `--min-p`: in [0, 1].
pub fn min_p(s: &str) -> Result<f32, String> {
    float_in(s, 0.0, false, 1.0).map(|v| v as f32)
}

/// `--gpu-memory-utilization`: in (0, 1].
pub fn fraction(s: &str) -> Result<f64, String> {
    float_in(s, 0.0, true, 1.0)
}

/// A request rate in requests/s: in (0, 10^6].
pub fn request_rate(s: &str) -> Result<f64, String> {
    float_in(s, 0.0, true, 1e6)
}

/// A factor on lengths: in (0, 1000].
pub fn scale(s: &str) -> Result<f64, String> {
    float_in(s, 0.0, true, 1000.0)
}

/// A price in USD per hour: in (0, 10^6].
pub fn price(s: &str) -> Result<f64, String> {
    float_in(s, 0.0, true, 1e6)
}

/// A count of GPUs: 1 to 65536.
pub fn gpu_count(s: &str) -> Result<usize, String> {
    int_in(s, 1, 1 << 16)
}

/// A period in milliseconds: 1 to 3,600,000 (an hour).
pub fn interval_ms(s: &str) -> Result<u64, String> {
    int_in(s, 1, 3_600_000).map(|v| v as u64)
}

/// A positive duration such as 500ms, 30s or 2.5 (seconds), at most a day.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    let secs = engine_profiler::analysis::parse_duration(s).map_err(|e| e.to_string())?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err("must be positive and at most a day (86400s)".into());
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// A stop string: non-empty, at most `MAX_STOP_STRING_BYTES`.
pub fn stop_string(s: &str) -> Result<String, String> {
    engine_formats::jsonl::check_stop_strings(&[s.to_string()])?;
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_non_numbers_are_rejected() {
        assert_eq!(block_size("16"), Ok(16));
        assert_eq!(block_size("0"), Err("must be at least 1".into()));
        assert_eq!(block_size("4096"), Err("must be at most 1024".into()));
        assert!(token_count("-1")
            .unwrap_err()
            .contains("non-negative integer"));
        assert!(token_count("99999999999999999999999").is_err());
        assert_eq!(temperature("0"), Ok(0.0));
        for bad in ["nan", "NaN", "inf", "-inf", "-0.5", "1e39", "x"] {
            assert!(temperature(bad).is_err(), "{bad}");
        }
        assert_eq!(top_p("1"), Ok(1.0));
        assert_eq!(top_p("0"), Err("must be a finite number in (0, 1]".into()));
        assert_eq!(min_p("0"), Ok(0.0));
        assert!(fraction("1.5").is_err());
        assert_eq!(
            request_rate("inf"),
            Err("must be a finite number in (0, 1000000]".into())
        );
        assert_eq!(
            temperature("-1"),
            Err("must be a finite number in [0, inf)".into())
        );
        assert!(logprobs("21").is_err());
        assert!(stop_string("").is_err());
        assert_eq!(duration("250ms"), Ok(std::time::Duration::from_millis(250)));
        for bad in ["0s", "-1s", "2d", "1e9s", "nan"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        assert!(stop_string(&"x".repeat(5000)).is_err());
    }
}
