//! Answers drawn from the per-config metrics: goodput under SLOs, the knee of the
//! throughput-latency curve, and the batch size a latency budget allows.
//!
//! **Knee** (maximum distance to the chord, as in Kneedle): take the group's configs
//! that ran, ordered by load, as points (x = p50 E2E latency, y = mean sustained output
//! throughput). Normalize both axes to `[0, 1]` over those points and draw the chord from
//! the first point to the last. The knee is the interior point farthest *above* the
//! chord (perpendicular distance), i.e. where extra latency stops buying proportional
//! throughput. With fewer than three points, or when no interior point lies above the
//! chord by more than [`KNEE_MIN_DISTANCE`] (throughput still scales linearly, or worse),
//! there is no knee in the measured range and the analysis says so.
//!
//! **Budget choice**: among the group's configs that ran, the one with the highest
//! throughput whose p50 E2E is within the budget; separately, the same with p99 E2E.
//!
//! **Goodput**: a request is *good* when it meets every SLO given: TTFT, the largest
//! gap between its consecutive tokens (ITL), its TPOT, and its E2E. Goodput is good
//! requests per second of measured window; the good fraction is reported beside it.

use crate::error::{ProfilerError, Result};
use crate::result::ConfigResult;
use engine_core::RequestTimeline;
use serde::{Deserialize, Serialize};

/// Normalized distance above the chord below which a curve is called knee-free.
pub const KNEE_MIN_DISTANCE: f64 = 0.02;

/// The knee method's description as reports print it.
pub const KNEE_METHOD: &str = "max perpendicular distance above the chord of (p50 E2E, output tok/s), both normalized to [0,1] (Kneedle); none if < 3 points or distance < 0.02";

/// Service-level objectives, in seconds; `None` = not constrained.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_s: Option<f64>,
    pub itl_s: Option<f64>,
    pub tpot_s: Option<f64>,
    pub e2e_s: Option<f64>,
}

impl Slo {
    pub fn is_empty(&self) -> bool {
        self.ttft_s.is_none()
            && self.itl_s.is_none()
            && self.tpot_s.is_none()
            && self.e2e_s.is_none()
    }

    /// Parse `ttft=500ms,itl=50ms,e2e=5s` (keys ttft, itl, tpot, e2e).
    pub fn parse(s: &str) -> Result<Self> {
        let mut slo = Slo::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                ProfilerError::Parse(format!("SLO `{part}`: expected KEY=DURATION"))
            })?;
            let secs = Some(parse_duration(value)?);
            match key.trim() {
                "ttft" => slo.ttft_s = secs,
                "itl" => slo.itl_s = secs,
                "tpot" => slo.tpot_s = secs,
                "e2e" => slo.e2e_s = secs,
                other => {
                    return Err(ProfilerError::Parse(format!(
                        "SLO key `{other}`: expected ttft, itl, tpot or e2e"
                    )))
                }
            }
        }
        Ok(slo)
    }

    /// Whether one request meets every objective (a request with no token never does).
    pub fn is_met_by(&self, t: &RequestTimeline) -> bool {
        let within = |limit: Option<f64>, value: Option<f64>| match (limit, value) {
            (None, _) => true,
            (Some(l), Some(v)) => v <= l,
            (Some(_), None) => false,
        };
        let max_itl = t.itl_s().into_iter().reduce(f64::max).or(Some(0.0));
        t.ttft_s().is_some()
            && within(self.ttft_s, t.ttft_s())
            && within(self.itl_s, max_itl)
            && within(self.tpot_s, t.tpot_s().or(Some(0.0)))
            && within(self.e2e_s, t.e2e_s())
    }
}

/// Parse `500ms`, `2.5s`, `100us` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v * scale),
        _ => Err(ProfilerError::Parse(format!(
            "duration `{s}`: expected e.g. 500ms, 2.5s"
        ))),
    }
}

/// Requests meeting every SLO.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    pub good_requests: usize,
    pub total_requests: usize,
    pub good_fraction: f64,
    pub goodput_req_per_s: f64,
}

/// Goodput of `requests` over a measured window of `wall_s` seconds.
pub fn goodput(requests: &[&RequestTimeline], slo: &Slo, wall_s: f64) -> Goodput {
    let good = requests.iter().filter(|t| slo.is_met_by(t)).count();
    let total = requests.len();
    Goodput {
        good_requests: good,
        total_requests: total,
        good_fraction: if total > 0 {
            good as f64 / total as f64
        } else {
            0.0
        },
        goodput_req_per_s: if wall_s > 0.0 {
            good as f64 / wall_s
        } else {
            0.0
        },
    }
}

/// Index of the knee of `points` (x = latency, y = throughput, ordered by load).
pub fn knee_index(points: &[(f64, f64)]) -> Option<usize> {
    if points.len() < 3 {
        return None;
    }
    let (x0, x1) = min_max(points.iter().map(|p| p.0));
    let (y0, y1) = min_max(points.iter().map(|p| p.1));
    let (dx, dy) = (x1 - x0, y1 - y0);
    if dx <= 0.0 || dy <= 0.0 {
        return None;
    }
    let norm: Vec<(f64, f64)> = points
        .iter()
        .map(|&(x, y)| ((x - x0) / dx, (y - y0) / dy))
        .collect();
    let (a, b) = (norm[0], norm[norm.len() - 1]);
    let (cx, cy) = (b.0 - a.0, b.1 - a.1);
    let len = (cx * cx + cy * cy).sqrt();
    if len <= 0.0 {
        return None;
    }
    // Signed distance, positive above the chord (to its left going first -> last).
    let dist = |p: (f64, f64)| (cx * (p.1 - a.1) - cy * (p.0 - a.0)) / len;
    (1..norm.len() - 1)
        .map(|i| (i, dist(norm[i])))
        .filter(|&(_, d)| d > KNEE_MIN_DISTANCE)
        .max_by(|l, r| l.1.total_cmp(&r.1))
        .map(|(i, _)| i)
}

fn min_max(it: impl Iterator<Item = f64>) -> (f64, f64) {
    it.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// Index of the highest-throughput point whose latency is within `budget_s`.
/// `points` are (latency, throughput).
pub fn budget_choice(points: &[(f64, f64)], budget_s: f64) -> Option<usize> {
    points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.0 <= budget_s)
        .max_by(|l, r| l.1 .1.total_cmp(&r.1 .1))
        .map(|(i, _)| i)
}

/// The analysis of one group (configs equal but for their load).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupAnalysis {
    pub group: String,
    pub load_axis: String,
    /// The loads that ran, in order, with (p50 E2E s, p99 E2E s, output tok/s).
    pub loads: Vec<f64>,
    pub knee_load: Option<f64>,
    pub latency_budget_s: Option<f64>,
    pub best_load_p50_within_budget: Option<f64>,
    pub best_load_p99_within_budget: Option<f64>,
    /// The largest load held at the budget / SLO and what a user costs there
    /// (`--gpu-cost-per-hour` only; see [`crate::cost`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::cost::HeldLoad>,
}

/// Analyse each group of `configs`.
pub fn analyse(configs: &[ConfigResult], budget_s: Option<f64>) -> Vec<GroupAnalysis> {
    let mut groups: Vec<String> = Vec::new();
    for c in configs {
        let g = c.spec.group_key();
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups
        .into_iter()
        .map(|g| analyse_group(configs, &g, budget_s))
        .collect()
}

fn analyse_group(configs: &[ConfigResult], group: &str, budget_s: Option<f64>) -> GroupAnalysis {
    let mut ran: Vec<(f64, f64, f64, f64)> = configs
        .iter()
        .filter(|c| c.spec.group_key() == group && c.status.is_ok())
        .filter_map(|c| {
            let s = c.summary.as_ref()?;
            Some((
                c.spec.load.value(),
                s.e2e_s.p50?,
                s.e2e_s.p99?,
                s.throughput()?,
            ))
        })
        .collect();
    ran.sort_by(|a, b| a.0.total_cmp(&b.0));
    let p50: Vec<(f64, f64)> = ran.iter().map(|r| (r.1, r.3)).collect();
    let p99: Vec<(f64, f64)> = ran.iter().map(|r| (r.2, r.3)).collect();
    let load_at = |i: Option<usize>| i.map(|i| ran[i].0);
    let axis = configs
        .iter()
        .find(|c| c.spec.group_key() == group)
        .map(|c| c.spec.load.axis_name().to_string())
        .unwrap_or_default();
    GroupAnalysis {
        group: group.to_string(),
        load_axis: axis,
        loads: ran.iter().map(|r| r.0).collect(),
        knee_load: load_at(knee_index(&p50)),
        latency_budget_s: budget_s,
        best_load_p50_within_budget: budget_s.and_then(|b| load_at(budget_choice(&p50, b))),
        best_load_p99_within_budget: budget_s.and_then(|b| load_at(budget_choice(&p99, b))),
        cost: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slo_parses_units() {
        let s = Slo::parse("ttft=500ms,itl=50ms,e2e=5s").unwrap();
        assert_eq!(s.ttft_s, Some(0.5));
        assert_eq!(s.itl_s, Some(0.05));
        assert_eq!(s.e2e_s, Some(5.0));
        assert_eq!(s.tpot_s, None);
        assert!(Slo::parse("ttft=fast").is_err());
        assert!(Slo::parse("latency=1s").is_err());
        assert_eq!(parse_duration("2.5s").unwrap(), 2.5);
        assert_eq!(parse_duration("250us").unwrap(), 250e-6);
    }

    fn tl(arrival: f64, times: &[f64]) -> RequestTimeline {
        RequestTimeline {
            arrival_s: arrival,
            token_times_s: times.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn goodput_counts_requests_meeting_every_slo() {
        let slo = Slo::parse("ttft=500ms,itl=50ms,e2e=1s").unwrap();
        let ok = tl(0.0, &[0.4, 0.44, 0.48]);
        let slow_first = tl(0.0, &[0.6, 0.62]);
        let stall = tl(0.0, &[0.1, 0.2, 0.21]); // one 100 ms gap
        let long = tl(0.0, &[0.1, 0.15, 1.1]);
        let nothing = tl(0.0, &[]);
        let reqs = [&ok, &slow_first, &stall, &long, &nothing];
        let g = goodput(&reqs, &slo, 2.0);
        assert_eq!(g.good_requests, 1);
        assert_eq!(g.total_requests, 5);
        assert!((g.good_fraction - 0.2).abs() < 1e-12);
        assert!((g.goodput_req_per_s - 0.5).abs() < 1e-12);
    }

    #[test]
    fn knee_is_the_point_farthest_above_the_chord() {
        // Throughput saturates: 100, 700, 900, 950 at latencies 1, 2, 4, 8.
        let pts = [(1.0, 100.0), (2.0, 700.0), (4.0, 900.0), (8.0, 950.0)];
        // normalized: (0,0), (1/7, .706), (3/7, .941), (1,1); chord y = x;
        // distances (y - x)/sqrt2: .40, .36 -> knee at index 1.
        assert_eq!(knee_index(&pts), Some(1));
    }

    #[test]
    fn linear_scaling_or_too_few_points_has_no_knee() {
        assert_eq!(knee_index(&[(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]), None);
        assert_eq!(knee_index(&[(1.0, 1.0), (2.0, 5.0)]), None);
        // Convex (worse than linear): every interior point is below the chord.
        assert_eq!(knee_index(&[(1.0, 1.0), (2.0, 1.1), (3.0, 3.0)]), None);
    }

    #[test]
    fn budget_picks_the_most_throughput_within_budget() {
        let pts = [(0.5, 100.0), (1.0, 400.0), (2.4, 800.0), (3.0, 900.0)];
        assert_eq!(budget_choice(&pts, 2.5), Some(2));
        assert_eq!(budget_choice(&pts, 0.7), Some(0));
        assert_eq!(budget_choice(&pts, 0.1), None);
        assert_eq!(budget_choice(&pts, 10.0), Some(3));
    }
}
