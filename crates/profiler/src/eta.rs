//! How long the rest of a benchmark will take, estimated from the runs measured so far.
//!
//! Progress is counted in output tokens, but a token's cost depends on the load: on two
//! CPU cores SmolLM2 decodes at 48 ms per token at batch 1 and 8.6 ms per token at
//! batch 32, so a sweep's token rate quadruples as it goes and a plain
//! tokens-left / tokens-per-second ETA (what a generic progress bar computes) starts 4x
//! too high. Instead each completed run gives a sample of seconds per output token at
//! its load (prefill and per-run overhead included in their true proportion), and a
//! load never measured is predicted from a power law fitted through the measured ones
//! in log-log space: `s_per_token(w) = c * w^beta`, beta clamped to [-1, 0] (a step is
//! never cheaper at a larger batch, a token never dearer). With one measured load beta
//! is -0.5: halfway between "a step costs the same at any batch" (-1) and "a token
//! costs the same" (0); it held within 2x on the CPU and the H100 results in
//! benches/results/. The bench's first run is cold (allocations, first kernels) and
//! never a sample; until a sample exists the estimate is `None` and no ETA is shown.
//!
//! This is hand-written rather than indicatif's own ETA because that ETA is a moving
//! average of the position's rate, which has exactly the load dependence above.

/// One configuration of the plan: what it will produce and at what load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    /// Output tokens expected, warm-up runs included.
    pub tokens: f64,
    /// Requests stepped together (batch size, concurrency; 1 for open loop).
    pub width: f64,
    /// A lower bound on its duration (open loop: the arrivals' span), else 0.
    pub min_s: f64,
}

/// A completed run: its load, duration and output tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    width: f64,
    secs: f64,
    tokens: f64,
}

/// The estimator: the plan, the samples so far and where the sweep stands.
#[derive(Debug, Clone, Default)]
pub struct Estimator {
    plan: Vec<Planned>,
    samples: Vec<Sample>,
    runs_seen: usize,
}

/// With a single measured load, seconds per token scale as `width^-0.5`.
const PRIOR_BETA: f64 = -0.5;

impl Estimator {
    pub fn new(plan: Vec<Planned>) -> Self {
        Self {
            plan,
            samples: Vec::new(),
            runs_seen: 0,
        }
    }

    /// A run of config `config` took `secs` for `tokens` output tokens.
    pub fn run_done(&mut self, config: usize, secs: f64, tokens: f64) {
        self.runs_seen += 1;
        let Some(p) = self.plan.get(config) else {
            return;
        };
        // The first run of the bench is cold; runs with nothing produced say nothing.
        if self.runs_seen > 1 && tokens > 0.0 && secs > 0.0 {
            self.samples.push(Sample {
                width: p.width,
                secs,
                tokens,
            });
        }
    }

    /// Seconds per output token at `width`: the pooled samples at that width, else
    /// the power law through the per-width means.
    pub fn secs_per_token(&self, width: f64) -> Option<f64> {
        let mut widths: Vec<(f64, f64, f64)> = Vec::new(); // (width, secs, tokens)
        for s in &self.samples {
            match widths.iter_mut().find(|w| w.0 == s.width) {
                Some(w) => (w.1, w.2) = (w.1 + s.secs, w.2 + s.tokens),
                None => widths.push((s.width, s.secs, s.tokens)),
            }
        }
        if let Some(w) = widths.iter().find(|w| w.0 == width) {
            return Some(w.1 / w.2);
        }
        let points: Vec<(f64, f64)> = widths
            .iter()
            .map(|w| (w.0.max(1.0).ln(), (w.1 / w.2).ln()))
            .collect();
        let (x0, y0) = mean(&points)?;
        let beta = if points.len() < 2 {
            PRIOR_BETA
        } else {
            let sxy: f64 = points.iter().map(|p| (p.0 - x0) * (p.1 - y0)).sum();
            let sxx: f64 = points.iter().map(|p| (p.0 - x0).powi(2)).sum();
            if sxx > 0.0 {
                (sxy / sxx).clamp(-1.0, 0.0)
            } else {
                PRIOR_BETA
            }
        };
        Some((y0 + beta * (width.max(1.0).ln() - x0)).exp())
    }

    /// Seconds left: `tokens_left` of config `current` (whose current run has lasted
    /// `run_elapsed_s`), then every later config.
    pub fn remaining_s(&self, current: usize, tokens_left: f64, run_elapsed_s: f64) -> Option<f64> {
        let p = self.plan.get(current)?;
        let here = tokens_left * self.secs_per_token(p.width)?;
        let here = here.max(p.min_s - run_elapsed_s);
        let later: Option<f64> = self
            .plan
            .iter()
            .skip(current + 1)
            .map(|p| Some((p.tokens * self.secs_per_token(p.width)?).max(p.min_s)))
            .sum();
        Some(here.max(0.0) + later?)
    }
}

fn mean(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    (n > 0.0).then(|| {
        (
            points.iter().map(|p| p.0).sum::<f64>() / n,
            points.iter().map(|p| p.1).sum::<f64>() / n,
        )
    })
}

/// `45s`, `3m05s`, `1h02m`.
pub fn short_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU timings from the README: step time 48, 137, 276 ms at batch 1, 8, 32.
    fn cpu_secs_per_token(width: f64) -> f64 {
        let step_ms = match width as usize {
            1 => 48.4,
            8 => 137.5,
            _ => 276.4,
        };
        step_ms / 1e3 / width
    }

    fn readme_plan() -> Vec<Planned> {
        // --batch 1,8,32 --output-len 32 --runs 3 --warmup 1: 4 runs per config.
        [1.0, 8.0, 32.0]
            .iter()
            .map(|&w| Planned {
                tokens: 4.0 * w * 32.0,
                width: w,
                min_s: 0.0,
            })
            .collect()
    }

    #[test]
    fn no_estimate_before_a_warm_sample_and_the_cold_run_is_ignored() {
        let mut e = Estimator::new(readme_plan());
        assert_eq!(e.remaining_s(0, 96.0, 0.0), None);
        // The cold first run is 20x slower than the rest; it must not count.
        e.run_done(0, 20.0 * 32.0 * cpu_secs_per_token(1.0), 32.0);
        assert_eq!(e.remaining_s(0, 96.0, 0.0), None);
        e.run_done(0, 32.0 * cpu_secs_per_token(1.0), 32.0);
        let got = e.secs_per_token(1.0).unwrap();
        assert!((got - cpu_secs_per_token(1.0)).abs() < 1e-12);
    }

    #[test]
    fn the_estimate_after_batch_1_is_within_2x_and_exact_once_loads_are_measured() {
        let plan = readme_plan();
        let truth: f64 = plan
            .iter()
            .map(|p| p.tokens * cpu_secs_per_token(p.width))
            .sum();
        let mut e = Estimator::new(plan.clone());
        for _ in 0..4 {
            e.run_done(0, 32.0 * cpu_secs_per_token(1.0), 32.0);
        }
        let left = truth - plan[0].tokens * cpu_secs_per_token(1.0);
        let est = e.remaining_s(1, plan[1].tokens, 0.0).unwrap();
        // A token-rate ETA would say 5120 tokens at 48 ms = 248 s (3.3x the truth).
        assert!(est / left < 2.0 && left / est < 2.0, "{est} vs {left}");
        for _ in 0..4 {
            e.run_done(1, 8.0 * 32.0 * cpu_secs_per_token(8.0), 8.0 * 32.0);
        }
        // Two loads measured: the fitted power law predicts batch 32 within 5 %.
        let est = e.remaining_s(2, plan[2].tokens, 0.0).unwrap();
        let left = plan[2].tokens * cpu_secs_per_token(32.0);
        assert!((est / left - 1.0).abs() < 0.05, "{est} vs {left}");
    }

    #[test]
    fn open_loop_configs_last_at_least_their_arrivals() {
        let plan = vec![
            Planned {
                tokens: 100.0,
                width: 1.0,
                min_s: 0.0,
            },
            Planned {
                tokens: 100.0,
                width: 1.0,
                min_s: 60.0,
            },
        ];
        let mut e = Estimator::new(plan);
        e.run_done(0, 1.0, 10.0);
        e.run_done(0, 1.0, 10.0);
        assert_eq!(e.remaining_s(0, 0.0, 0.0), Some(60.0));
        assert_eq!(e.remaining_s(1, 50.0, 10.0), Some(50.0));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(4.4), "4s");
        assert_eq!(short_duration(185.0), "3m05s");
        assert_eq!(short_duration(3720.0), "1h02m");
    }
}
