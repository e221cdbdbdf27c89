//! Length distributions for prompts and outputs (`--input-len-dist`,
//! `--output-len-dist` and the `--workload` presets), drawn from the profiler's seeded
//! [`Rng`] so that the same seed gives the same lengths.
//!
//! | spec | draw |
//! |---|---|
//! | `fixed:N` | always N |
//! | `uniform:min=A,max=B` | an integer uniform on [A, B] |
//! | `normal:mean=M,std=S[,min=A][,max=B]` | round(M + S z), z standard normal (Box-Muller), clipped to [A, B] (A defaults to 1) |
//! | `lognormal:median=M,sigma=S[,min=A][,max=B]` | round(M exp(S z)), clipped to [A, B]: log-length is normal with mean ln M and standard deviation S |
//! | `file:PATH` | one of the file's lengths (whitespace-separated integers, `#` comments), each equally likely |
//!
//! Every draw is at least 1. Clipping piles the tail's mass on the bound (it does not
//! redraw), so a distribution clipped close to its mean has a smaller mean and spread
//! than its parameters; [`LengthDist::mean`] and [`LengthDist::std`] give the
//! unclipped parameters' values.

use crate::error::{ProfilerError, Result};
use crate::workload::Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A distribution of token counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LengthDist {
    Fixed {
        n: usize,
    },
    Uniform {
        min: usize,
        max: usize,
    },
    Normal {
        mean: f64,
        std: f64,
        min: usize,
        max: usize,
    },
    LogNormal {
        median: f64,
        sigma: f64,
        min: usize,
        max: usize,
    },
    Empirical {
        /// Where the lengths came from (a file path).
        source: String,
        lengths: Vec<usize>,
    },
}

fn bad(spec: &str, why: impl std::fmt::Display) -> ProfilerError {
    ProfilerError::Parse(format!(
        "length distribution `{spec}`: {why} (expected fixed:N, uniform:min=A,max=B, normal:mean=M,std=S[,min=A,max=B], lognormal:median=M,sigma=S[,min=A,max=B] or file:PATH)"
    ))
}

/// `key=value` pairs of a spec's parameters, each key once and all known.
fn params(spec: &str, body: &str, known: &[&str]) -> Result<Vec<(String, f64)>> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for part in body.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad(spec, format!("`{part}` is not KEY=VALUE")))?;
        let k = k.trim();
        if !known.contains(&k) {
            return Err(bad(spec, format!("unknown key `{k}`")));
        }
        if out.iter().any(|(seen, _)| seen == k) {
            return Err(bad(spec, format!("`{k}` given twice")));
        }
        let v: f64 = v
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| bad(spec, format!("`{k}` must be a non-negative number")))?;
        out.push((k.to_string(), v));
    }
    Ok(out)
}

fn get(p: &[(String, f64)], key: &str) -> Option<f64> {
    p.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

fn need(spec: &str, p: &[(String, f64)], key: &str) -> Result<f64> {
    get(p, key).ok_or_else(|| bad(spec, format!("`{key}` is required")))
}

fn count(spec: &str, v: f64, what: &str) -> Result<usize> {
    if v.fract() != 0.0 || v < 1.0 {
        return Err(bad(spec, format!("`{what}` must be a whole number >= 1")));
    }
    Ok(v as usize)
}

fn bounds(spec: &str, p: &[(String, f64)]) -> Result<(usize, usize)> {
    let min = get(p, "min").map_or(Ok(1), |v| count(spec, v, "min"))?;
    let max = get(p, "max").map_or(Ok(usize::MAX), |v| count(spec, v, "max"))?;
    if min > max {
        return Err(bad(spec, "min exceeds max"));
    }
    Ok((min, max))
}

impl LengthDist {
    /// Parse a spec (see the module docs); `file:` specs read their file.
    pub fn parse(spec: &str) -> Result<Self> {
        let s = spec.trim();
        let (kind, body) = s.split_once(':').unwrap_or((s, ""));
        match kind.trim() {
            "fixed" => {
                let v = body.trim().strip_prefix("n=").unwrap_or(body.trim());
                let n = v
                    .parse::<f64>()
                    .map_err(|_| bad(spec, "N must be a number"))?;
                Ok(Self::Fixed {
                    n: count(spec, n, "N")?,
                })
            }
            "uniform" => {
                let p = params(spec, body, &["min", "max"])?;
                let min = count(spec, need(spec, &p, "min")?, "min")?;
                let max = count(spec, need(spec, &p, "max")?, "max")?;
                if min > max {
                    return Err(bad(spec, "min exceeds max"));
                }
                Ok(Self::Uniform { min, max })
            }
            "normal" => {
                let p = params(spec, body, &["mean", "std", "min", "max"])?;
                let (min, max) = bounds(spec, &p)?;
                Ok(Self::Normal {
                    mean: need(spec, &p, "mean")?,
                    std: need(spec, &p, "std")?,
                    min,
                    max,
                })
            }
            "lognormal" => {
                let p = params(spec, body, &["median", "sigma", "min", "max"])?;
                let (min, max) = bounds(spec, &p)?;
                let median = need(spec, &p, "median")?;
                if median <= 0.0 {
                    return Err(bad(spec, "`median` must be positive"));
                }
                Ok(Self::LogNormal {
                    median,
                    sigma: need(spec, &p, "sigma")?,
                    min,
                    max,
                })
            }
            "file" if !body.trim().is_empty() => Self::from_file(Path::new(body.trim())),
            _ => Err(bad(spec, "unknown kind")),
        }
    }

    /// An empirical distribution from a file of lengths.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ProfilerError::io(path, e))?;
        let mut lengths = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("");
            for word in line.split(|c: char| c.is_whitespace() || c == ',') {
                if word.is_empty() {
                    continue;
                }
                match word.parse::<usize>() {
                    Ok(n) if n >= 1 => lengths.push(n),
                    _ => {
                        return Err(ProfilerError::Parse(format!(
                            "{}:{}: `{word}` is not a length (a whole number >= 1)",
                            path.display(),
                            i + 1
                        )))
                    }
                }
            }
        }
        if lengths.is_empty() {
            return Err(ProfilerError::Parse(format!(
                "{}: no lengths in the file",
                path.display()
            )));
        }
        Ok(Self::Empirical {
            source: path.display().to_string(),
            lengths,
        })
    }

    /// One length (at least 1).
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let clip = |x: f64, min: usize, max: usize| -> usize {
            let r = x.round();
            if r <= min as f64 {
                min
            } else if r >= max as f64 {
                max
            } else {
                r as usize
            }
        };
        let n = match self {
            Self::Fixed { n } => *n,
            Self::Uniform { min, max } => min + rng.below((max - min) as u64 + 1) as usize,
            Self::Normal {
                mean,
                std,
                min,
                max,
            } => clip(mean + std * rng.standard_normal(), *min, *max),
            Self::LogNormal {
                median,
                sigma,
                min,
                max,
            } => clip(median * (sigma * rng.standard_normal()).exp(), *min, *max),
            Self::Empirical { lengths, .. } => lengths[rng.below(lengths.len() as u64) as usize],
        };
        n.max(1)
    }

    /// The mean of the unclipped distribution.
    pub fn mean(&self) -> f64 {
        match self {
            Self::Fixed { n } => *n as f64,
            Self::Uniform { min, max } => (min + max) as f64 / 2.0,
            Self::Normal { mean, .. } => *mean,
            Self::LogNormal { median, sigma, .. } => median * (sigma * sigma / 2.0).exp(),
            Self::Empirical { lengths, .. } => {
                lengths.iter().sum::<usize>() as f64 / lengths.len() as f64
            }
        }
    }

    /// The standard deviation of the unclipped distribution (population, for files).
    pub fn std(&self) -> f64 {
        match self {
            Self::Fixed { .. } => 0.0,
            Self::Uniform { min, max } => {
                let k = (max - min + 1) as f64;
                ((k * k - 1.0) / 12.0).sqrt()
            }
            Self::Normal { std, .. } => *std,
            Self::LogNormal { sigma, .. } => {
                self.mean() * ((sigma * sigma).exp() - 1.0).max(0.0).sqrt()
            }
            Self::Empirical { lengths, .. } => {
                let m = self.mean();
                let ss: f64 = lengths.iter().map(|&x| (x as f64 - m).powi(2)).sum();
                (ss / lengths.len() as f64).sqrt()
            }
        }
    }

    /// The largest length it can draw.
    pub fn max(&self) -> usize {
        match self {
            Self::Fixed { n } => *n,
            Self::Uniform { max, .. } | Self::Normal { max, .. } | Self::LogNormal { max, .. } => {
                *max
            }
            Self::Empirical { lengths, .. } => lengths.iter().copied().max().unwrap_or(1),
        }
    }

    /// Short text for labels and reports, e.g. `lognormal(median=256,sigma=1,max=4096)`.
    pub fn label(&self) -> String {
        let bounds = |min: usize, max: usize| {
            let mut s = String::new();
            if min != 1 {
                s.push_str(&format!(",min={min}"));
            }
            if max != usize::MAX {
                s.push_str(&format!(",max={max}"));
            }
            s
        };
        match self {
            Self::Fixed { n } => format!("fixed({n})"),
            Self::Uniform { min, max } => format!("uniform({min}..={max})"),
            Self::Normal {
                mean,
                std,
                min,
                max,
            } => format!("normal(mean={mean},std={std}{})", bounds(*min, *max)),
            Self::LogNormal {
                median,
                sigma,
                min,
                max,
            } => format!(
                "lognormal(median={median},sigma={sigma}{})",
                bounds(*min, *max)
            ),
            Self::Empirical { source, lengths } => {
                format!("file({source}, {} lengths)", lengths.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{mean, std_dev};

    const DRAWS: usize = 10_000;

    /// The stated tolerance: the sample mean within 4 standard errors (+ 0.5 for
    /// rounding to whole tokens) of the distribution's mean, and the sample std within
    /// 5 % (+ 0.5) of its std. (5 % is about 3 standard errors of a sample std for the
    /// heaviest tail tested, lognormal sigma 0.6.)
    fn check(d: &LengthDist, seed: u64) {
        let mut rng = Rng::new(seed);
        let x: Vec<f64> = (0..DRAWS).map(|_| d.sample(&mut rng) as f64).collect();
        let (m, s) = (mean(&x).unwrap_or(0.0), std_dev(&x).unwrap_or(0.0));
        let se = d.std() / (DRAWS as f64).sqrt();
        assert!(
            (m - d.mean()).abs() <= 4.0 * se + 0.5,
            "{}: mean {m} vs {}",
            d.label(),
            d.mean()
        );
        assert!(
            (s - d.std()).abs() <= 0.05 * d.std() + 0.5,
            "{}: std {s} vs {}",
            d.label(),
            d.std()
        );
        assert!(x.iter().all(|&v| v >= 1.0 && v <= d.max() as f64));
    }

    #[test]
    fn every_distribution_matches_its_parameters_over_10k_draws() {
        let specs = [
            "fixed:128",
            "uniform:min=64,max=512",
            "normal:mean=512,std=128",
            "lognormal:median=256,sigma=0.5",
            "lognormal:median=1000,sigma=0.6",
        ];
        for (i, s) in specs.iter().enumerate() {
            check(&LengthDist::parse(s).unwrap(), i as u64 + 1);
        }
        let e = LengthDist::Empirical {
            source: "test".into(),
            lengths: vec![10, 20, 20, 30, 400],
        };
        check(&e, 9);
    }

    #[test]
    fn clipping_bounds_every_draw_and_piles_mass_on_the_bound() {
        let d = LengthDist::parse("normal:mean=100,std=50,min=80,max=120").unwrap();
        let mut rng = Rng::new(3);
        let x: Vec<usize> = (0..DRAWS).map(|_| d.sample(&mut rng)).collect();
        assert!(x.iter().all(|&v| (80..=120).contains(&v)));
        // P(z < -0.4) = 0.345: about a third of the draws sit on each bound.
        let at_min = x.iter().filter(|&&v| v == 80).count() as f64 / DRAWS as f64;
        assert!((at_min - 0.345).abs() < 0.03, "{at_min}");
    }

    #[test]
    fn same_seed_same_lengths() {
        let d = LengthDist::parse("lognormal:median=300,sigma=0.8,max=4096").unwrap();
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..100).map(|_| d.sample(&mut r)).collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }

    #[test]
    fn files_parse_and_bad_specs_name_the_problem() {
        let dir = std::env::temp_dir().join(format!("engine-lengths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("lens.txt");
        std::fs::write(&f, "# prompt lengths\n12 30\n7,\n\n99\n").unwrap();
        let d = LengthDist::parse(&format!("file:{}", f.display())).unwrap();
        assert!(matches!(&d, LengthDist::Empirical { lengths, .. } if lengths == &[12, 30, 7, 99]));
        std::fs::write(&f, "12\nforty\n").unwrap();
        let err = LengthDist::from_file(&f).unwrap_err().to_string();
        assert!(err.contains(":2:") && err.contains("forty"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        for (spec, needle) in [
            ("gaussian:mean=1", "unknown kind"),
            ("normal:mean=5", "`std` is required"),
            ("normal:mean=5,std=1,mean=6", "twice"),
            ("uniform:min=9,max=3", "min exceeds max"),
            ("fixed:0", "whole number"),
            ("lognormal:median=-3,sigma=1", "non-negative"),
            ("normal:mean=5,std=1,cap=3", "unknown key `cap`"),
        ] {
            let e = LengthDist::parse(spec).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(spec), "{spec}: {e}");
        }
    }
}
