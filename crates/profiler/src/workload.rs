//! Prompts for benchmark requests: random token ids from a seeded generator (the
//! default), or real text from a file.
//!
//! Random prompts draw ids uniformly from the tokenizer's vocabulary (capped at the
//! model's), skipping BOS and EOS ids, from a SplitMix64 stream keyed by (seed, run,
//! request index): every run gets fresh prompts (so the prefix cache never serves
//! them), yet the same command reproduces the same prompts. File prompts are the
//! file's non-empty lines, tokenized without special tokens, each repeated or cut to
//! exactly `input_len` tokens; request `i` uses line `i mod lines`. Repeated lines can
//! hit the prefix cache (`--no-prefix-caching` turns it off).

use crate::error::{ProfilerError, Result};
use engine_model::Tokenizer;
use std::path::Path;

/// SplitMix64: a tiny, seedable generator (not cryptographic).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Box-Muller; two uniforms per draw, the sine half discarded).
    pub fn standard_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: ln is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Exponentially distributed with the given rate (mean `1 / rate`).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.next_f64()).ln() / rate
    }
}

/// Where prompts come from.
#[derive(Debug, Clone)]
pub enum Workload {
    Random {
        vocab_size: u32,
        /// Sorted ids never drawn (BOS, EOS).
        special: Vec<u32>,
        seed: u64,
    },
    File {
        prompts: Vec<Vec<u32>>,
    },
}

impl Workload {
    /// Random ids below `vocab_size`, skipping `special`.
    pub fn random(vocab_size: usize, special: &[u32], seed: u64) -> Result<Self> {
        let mut special: Vec<u32> = special
            .iter()
            .copied()
            .filter(|&t| (t as usize) < vocab_size)
            .collect();
        special.sort_unstable();
        special.dedup();
        if vocab_size <= special.len() {
            return Err(ProfilerError::Invalid(
                "the vocabulary has no ordinary tokens".into(),
            ));
        }
        Ok(Self::Random {
            vocab_size: vocab_size as u32,
            special,
            seed,
        })
    }

    /// Prompts from the non-empty lines of `path`.
    pub fn from_file(path: &Path, tokenizer: &Tokenizer) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ProfilerError::io(path, e))?;
        let mut prompts = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let ids = tokenizer.encode(line, false)?;
            if !ids.is_empty() {
                prompts.push(ids);
            }
        }
        if prompts.is_empty() {
            return Err(ProfilerError::Invalid(format!(
                "{}: no prompts (no non-empty lines)",
                path.display()
            )));
        }
        Ok(Self::File { prompts })
    }

    /// The prompt of request `index` in run `run`, exactly `input_len` tokens.
    pub fn prompt(&self, run: u64, index: u64, input_len: usize) -> Vec<u32> {
        match self {
            Self::Random {
                vocab_size,
                special,
                seed,
            } => {
                let mut rng = Rng::new(
                    seed ^ run.wrapping_mul(0xD1B5_4A32_D192_ED03)
                        ^ index.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7),
                );
                let ordinary = (*vocab_size as usize - special.len()) as u64;
                (0..input_len)
                    .map(|_| skip_special(rng.below(ordinary) as u32, special))
                    .collect()
            }
            Self::File { prompts } => {
                let p = &prompts[(index as usize) % prompts.len()];
                p.iter().copied().cycle().take(input_len).collect()
            }
        }
    }
}

/// Map `k`, an index among ordinary tokens, to the `k`-th id not in `special` (sorted).
fn skip_special(k: u32, special: &[u32]) -> u32 {
    let mut id = k;
    for &s in special {
        if s <= id {
            id += 1;
        } else {
            break;
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_prompts_have_the_length_avoid_specials_and_repeat() {
        let w = Workload::random(10, &[0, 3, 9], 7).unwrap();
        let a = w.prompt(0, 5, 500);
        assert_eq!(a.len(), 500);
        assert!(a.iter().all(|&t| t < 10 && t != 0 && t != 3 && t != 9));
        for t in [1, 2, 4, 5, 6, 7, 8] {
            assert!(a.contains(&t), "token {t} never drawn");
        }
        assert_eq!(a, w.prompt(0, 5, 500));
        assert_ne!(a, w.prompt(1, 5, 500));
        assert_ne!(a, w.prompt(0, 6, 500));
    }

    #[test]
    fn skip_special_maps_ordinals_to_ids() {
        assert_eq!(skip_special(0, &[0, 3]), 1);
        assert_eq!(skip_special(1, &[0, 3]), 2);
        assert_eq!(skip_special(2, &[0, 3]), 4);
    }

    #[test]
    fn file_prompts_cycle_to_length() {
        let w = Workload::File {
            prompts: vec![vec![5, 6], vec![7]],
        };
        assert_eq!(w.prompt(0, 0, 5), vec![5, 6, 5, 6, 5]);
        assert_eq!(w.prompt(0, 1, 2), vec![7, 7]);
        assert_eq!(w.prompt(0, 2, 1), vec![5]);
    }

    #[test]
    fn exponential_has_the_right_mean() {
        let mut r = Rng::new(1);
        let n = 20_000;
        let m: f64 = (0..n).map(|_| r.exponential(4.0)).sum::<f64>() / n as f64;
        assert!((m - 0.25).abs() < 0.01, "{m}");
    }
}
