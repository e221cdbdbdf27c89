//! Realistic traffic: each request belongs to a use case and draws its prompt and
//! output lengths from that use case's distributions (`--workload`, or
//! `--input-len-dist` / `--output-len-dist` for one custom use case).
//!
//! The presets are illustrative shapes chosen for each use (long prompts and short
//! answers for RAG, the reverse for long-form writing), not fits to a published trace;
//! docs/metrics.md lists them. `mixed` draws the use case first, by weight:
//!
//! | use case | weight in `mixed` | input tokens | output tokens |
//! |---|---|---|---|
//! | chat | 0.5 | lognormal(median 256, sigma 1.0, 8..4096) | lognormal(median 192, sigma 0.8, 8..2048) |
//! | code | 0.2 | lognormal(median 1024, sigma 0.7, 64..8192) | lognormal(median 128, sigma 0.9, 8..1024) |
//! | rag | 0.2 | normal(mean 3072, std 768, 512..8192) | lognormal(median 160, sigma 0.6, 16..1024) |
//! | long-form | 0.1 | normal(mean 256, std 96, 32..1024) | normal(mean 1536, std 384, 256..4096) |
//!
//! A request's draw depends on the run seed and its index only (its own generator), so
//! the same seed gives the same workload whatever the order requests are issued in.
//! `--length-scale F` multiplies every drawn length (rounded, at least 1), keeping the
//! shapes: small runs for smoke tests. Lengths are then cut to the model's context:
//! the prompt to `context - 1`, the output to what is left.

use crate::error::{ProfilerError, Result};
use crate::lengths::LengthDist;
use crate::workload::Rng;
use serde::{Deserialize, Serialize};

/// The preset names `--workload` accepts.
pub const PRESETS: &[&str] = &["chat", "code", "long-form", "rag", "mixed"];

/// Keeps length draws independent of the prompt-token and arrival streams.
const LENGTH_STREAM: u64 = 0x6C65_6E67_7468_7321;

/// One kind of request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UseCase {
    pub name: String,
    /// Relative frequency in the mix.
    pub weight: f64,
    pub input: LengthDist,
    pub output: LengthDist,
}

/// A mix of use cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    /// The preset's name, or `custom`.
    pub name: String,
    pub use_cases: Vec<UseCase>,
    pub length_scale: f64,
}

/// One request's draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    pub use_case: usize,
    pub input_len: usize,
    pub output_len: usize,
}

fn lognormal(median: f64, sigma: f64, min: usize, max: usize) -> LengthDist {
    LengthDist::LogNormal {
        median,
        sigma,
        min,
        max,
    }
}

fn normal(mean: f64, std: f64, min: usize, max: usize) -> LengthDist {
    LengthDist::Normal {
        mean,
        std,
        min,
        max,
    }
}

fn use_case(name: &str, weight: f64, input: LengthDist, output: LengthDist) -> UseCase {
    UseCase {
        name: name.into(),
        weight,
        input,
        output,
    }
}

/// The preset use cases with their weights in `mixed`.
fn preset_use_cases() -> Vec<UseCase> {
    vec![
        use_case(
            "chat",
            0.5,
            lognormal(256.0, 1.0, 8, 4096),
            lognormal(192.0, 0.8, 8, 2048),
        ),
        use_case(
            "code",
            0.2,
            lognormal(1024.0, 0.7, 64, 8192),
            lognormal(128.0, 0.9, 8, 1024),
        ),
        use_case(
            "rag",
            0.2,
            normal(3072.0, 768.0, 512, 8192),
            lognormal(160.0, 0.6, 16, 1024),
        ),
        use_case(
            "long-form",
            0.1,
            normal(256.0, 96.0, 32, 1024),
            normal(1536.0, 384.0, 256, 4096),
        ),
    ]
}

impl Traffic {
    /// A preset by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        let all = preset_use_cases();
        let use_cases = match name {
            "mixed" => all,
            _ => all
                .into_iter()
                .filter(|u| u.name == name)
                .map(|u| UseCase { weight: 1.0, ..u })
                .collect(),
        };
        if use_cases.is_empty() {
            return Err(ProfilerError::Parse(format!(
                "workload `{name}`: expected one of {}",
                PRESETS.join(", ")
            )));
        }
        Ok(Self {
            name: name.into(),
            use_cases,
            length_scale: 1.0,
        })
    }

    /// One custom use case.
    pub fn custom(input: LengthDist, output: LengthDist) -> Self {
        Self {
            name: "custom".into(),
            use_cases: vec![use_case("custom", 1.0, input, output)],
            length_scale: 1.0,
        }
    }

    /// Multiply every drawn length by `scale` (> 0, finite).
    pub fn with_length_scale(mut self, scale: f64) -> Result<Self> {
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(ProfilerError::Parse(format!(
                "length scale {scale}: expected a positive number"
            )));
        }
        self.length_scale = scale;
        Ok(self)
    }

    /// The expected output length of a request (weighted means of the unclipped
    /// distributions, scaled): the progress bar's estimate.
    pub fn mean_output_len(&self) -> f64 {
        let total: f64 = self.use_cases.iter().map(|u| u.weight).sum();
        let sum: f64 = self
            .use_cases
            .iter()
            .map(|u| u.weight * u.output.mean())
            .sum();
        sum / total.max(f64::MIN_POSITIVE) * self.length_scale
    }

    /// The label configs carry: the preset's name, or the custom distributions.
    pub fn label(&self) -> String {
        let mut s = match (self.name.as_str(), self.use_cases.as_slice()) {
            ("custom", [u]) => format!("in={} out={}", u.input.label(), u.output.label()),
            (name, _) => name.to_string(),
        };
        if self.length_scale != 1.0 {
            s.push_str(&format!(" x{}", self.length_scale));
        }
        s
    }

    /// The draw of request `index` in the run seeded `run_seed`, cut to `context` tokens.
    pub fn draw(&self, run_seed: u64, index: u64, context: usize) -> Draw {
        let mut rng =
            Rng::new(run_seed ^ LENGTH_STREAM ^ index.wrapping_mul(0xA24B_AED4_963E_E407));
        let total: f64 = self.use_cases.iter().map(|u| u.weight).sum();
        let mut pick = rng.next_f64() * total;
        let mut use_case = self.use_cases.len() - 1;
        for (i, u) in self.use_cases.iter().enumerate() {
            if pick < u.weight {
                use_case = i;
                break;
            }
            pick -= u.weight;
        }
        let u = &self.use_cases[use_case];
        let scale = |n: usize| ((n as f64 * self.length_scale).round() as usize).max(1);
        let input_len = scale(u.input.sample(&mut rng)).min(context.saturating_sub(1).max(1));
        let output_len = scale(u.output.sample(&mut rng))
            .min(context.saturating_sub(input_len))
            .max(1);
        Draw {
            use_case,
            input_len,
            output_len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_draws_use_cases_at_their_weights() {
        let t = Traffic::preset("mixed").unwrap();
        let n = 10_000;
        let mut counts = [0usize; 4];
        for i in 0..n {
            counts[t.draw(11, i, 1 << 20).use_case] += 1;
        }
        // Within 4 binomial standard errors of each weight.
        for (u, &c) in t.use_cases.iter().zip(&counts) {
            let (p, f) = (u.weight, c as f64 / n as f64);
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((f - p).abs() < 4.0 * se, "{}: {f} vs {p}", u.name);
        }
    }

    #[test]
    fn presets_draw_their_own_distributions() {
        let t = Traffic::preset("rag").unwrap();
        assert_eq!(t.use_cases.len(), 1);
        let n = 10_000u64;
        let mean = (0..n)
            .map(|i| t.draw(3, i, 1 << 20).input_len as f64)
            .sum::<f64>()
            / n as f64;
        // normal(3072, 768) clipped to 512..8192 (clipping negligible): 4 SE = 31.
        assert!((mean - 3072.0).abs() < 31.0, "{mean}");
        assert!(Traffic::preset("poetry").is_err());
    }

    #[test]
    fn same_seed_same_workload_and_draws_depend_on_the_index_only() {
        let t = Traffic::preset("mixed").unwrap();
        let a: Vec<Draw> = (0..64).map(|i| t.draw(7, i, 8192)).collect();
        let b: Vec<Draw> = (0..64).rev().map(|i| t.draw(7, i, 8192)).collect();
        assert_eq!(a, b.into_iter().rev().collect::<Vec<_>>());
        let c: Vec<Draw> = (0..64).map(|i| t.draw(8, i, 8192)).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn scale_shrinks_lengths_and_the_context_cuts_them() {
        let t = Traffic::custom(LengthDist::Fixed { n: 1000 }, LengthDist::Fixed { n: 300 });
        let d = t.clone().with_length_scale(0.01).unwrap().draw(0, 0, 4096);
        assert_eq!((d.input_len, d.output_len), (10, 3));
        let d = t.draw(0, 0, 1100);
        assert_eq!((d.input_len, d.output_len), (1000, 100));
        let d = Traffic::custom(LengthDist::Fixed { n: 5000 }, LengthDist::Fixed { n: 9 })
            .draw(0, 0, 4096);
        assert_eq!((d.input_len, d.output_len), (4095, 1));
        assert!(t.with_length_scale(0.0).is_err());
    }
}
