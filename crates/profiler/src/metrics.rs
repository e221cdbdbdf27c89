//! Percentiles, summaries and dispersion: the statistics every report is built from.
//!
//! Percentiles use **linear interpolation between closest ranks** (numpy's default,
//! `method="linear"`, Hyndman & Fan type 7): for sorted samples `x[0..n]` and
//! quantile `q` in `[0, 1]`, the rank is `h = (n - 1) q` and the value is
//! `x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h])`. Every [`Summary`] carries
//! its sample count and the method's name so that a report can state both.

use serde::{Deserialize, Serialize};

/// The percentile method's name as reports print it.
pub const PERCENTILE_METHOD: &str =
    "linear interpolation between closest ranks (numpy default, type 7)";

/// The `q`-quantile (`q` in `[0, 1]`, clamped) of `sorted` (ascending, no NaN);
/// `None` when there are no samples.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    let (first, last) = (*sorted.first()?, *sorted.last()?);
    if n == 1 {
        return Some(first);
    }
    let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    if lo + 1 >= n {
        return Some(last);
    }
    Some(sorted[lo] + (h - lo as f64) * (sorted[lo + 1] - sorted[lo]))
}

/// The `p`-th percentile (`p` in `[0, 100]`) of unsorted samples; NaNs are dropped.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    quantile_sorted(&sorted_finite(samples), p / 100.0)
}

/// The finite samples, sorted ascending.
pub fn sorted_finite(samples: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Arithmetic mean; `None` when empty.
pub fn mean(samples: &[f64]) -> Option<f64> {
    (!samples.is_empty()).then(|| samples.iter().sum::<f64>() / samples.len() as f64)
}

/// Sample standard deviation (divides by `n - 1`); `None` with fewer than two samples.
pub fn std_dev(samples: &[f64]) -> Option<f64> {
    let n = samples.len();
    if n < 2 {
        return None;
    }
    let m = mean(samples)?;
    let ss: f64 = samples.iter().map(|x| (x - m) * (x - m)).sum();
    Some((ss / (n - 1) as f64).sqrt())
}

/// Coefficient of variation: sample standard deviation over mean; `None` with fewer
/// than two samples or a zero mean.
pub fn coefficient_of_variation(samples: &[f64]) -> Option<f64> {
    let m = mean(samples)?;
    (m != 0.0).then_some(std_dev(samples)? / m.abs())
}

/// Count, mean, spread and the standard percentiles of one sample set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples the statistics were computed from.
    pub count: usize,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

impl Summary {
    /// Summarize `samples` (non-finite values are dropped).
    pub fn of(samples: &[f64]) -> Self {
        let s = sorted_finite(samples);
        Self {
            count: s.len(),
            mean: mean(&s),
            std: std_dev(&s),
            min: s.first().copied(),
            max: s.last().copied(),
            p50: quantile_sorted(&s, 0.50),
            p90: quantile_sorted(&s, 0.90),
            p95: quantile_sorted(&s, 0.95),
            p99: quantile_sorted(&s, 0.99),
        }
    }

    /// The named percentile (50, 90, 95 or 99).
    pub fn pct(&self, p: u32) -> Option<f64> {
        match p {
            50 => self.p50,
            90 => self.p90,
            95 => self.p95,
            99 => self.p99,
            _ => None,
        }
    }
}

/// The empirical CDF of `samples`: sorted values with cumulative fractions `i / n`.
pub fn ecdf(samples: &[f64]) -> Vec<(f64, f64)> {
    let s = sorted_finite(samples);
    let n = s.len() as f64;
    s.iter()
        .enumerate()
        .map(|(i, &x)| (x, (i + 1) as f64 / n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn percentiles_match_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], [50, 90, 99]) = [2.5, 3.7, 3.97]
        let x = [4.0, 1.0, 3.0, 2.0];
        assert!(close(percentile(&x, 50.0), 2.5));
        assert!(close(percentile(&x, 90.0), 3.7));
        assert!(close(percentile(&x, 99.0), 3.97));
        assert!(close(percentile(&x, 0.0), 1.0));
        assert!(close(percentile(&x, 100.0), 4.0));
        // numpy.percentile(range(1, 101), 95) = 95.05
        let y: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!(close(percentile(&y, 95.0), 95.05));
        assert!(close(percentile(&y, 99.0), 99.01));
    }

    #[test]
    fn edge_cases_are_none_or_the_single_value() {
        assert_eq!(percentile(&[], 50.0), None);
        assert!(close(percentile(&[7.0], 99.0), 7.0));
        assert!(close(percentile(&[f64::NAN, 3.0], 50.0), 3.0));
        let s = Summary::of(&[]);
        assert_eq!(s.count, 0);
        assert_eq!(s.p50, None);
    }

    #[test]
    fn summary_counts_and_spreads() {
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(s.count, 8);
        assert!(close(s.mean, 5.0));
        // sample std of this classic set: sqrt(32 / 7)
        assert!(close(s.std, (32.0f64 / 7.0).sqrt()));
        assert!(close(s.min, 2.0) && close(s.max, 9.0));
        assert!(close(s.p50, 4.5));
    }

    #[test]
    fn coefficient_of_variation_is_std_over_mean() {
        assert!(close(coefficient_of_variation(&[10.0, 10.0, 10.0]), 0.0));
        let cv = coefficient_of_variation(&[1.0, 3.0]);
        assert!(close(cv, 2.0f64.sqrt() / 2.0));
        assert_eq!(coefficient_of_variation(&[1.0]), None);
    }

    #[test]
    fn ecdf_reaches_one() {
        let c = ecdf(&[3.0, 1.0, 2.0]);
        assert_eq!(c.first(), Some(&(1.0, 1.0 / 3.0)));
        assert_eq!(c.last(), Some(&(3.0, 1.0)));
    }
}
