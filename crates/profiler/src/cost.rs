//! What the measured throughput costs at a GPU's hourly price (`--gpu-cost-per-hour
//! USD`, `--num-gpus N`). Without the price nothing here is computed or printed.
//!
//! ```text
//!  usd_per_hour             = price x num_gpus
//!  usd_per_1m_output_tokens = usd_per_hour / 3600 x window_s / output_tokens x 1e6
//!  usd_per_1m_total_tokens  = usd_per_hour / 3600 x window_s / (prompt + output tokens) x 1e6
//!  concurrent_users         = B (static batch), N (closed loop), or for open loop the
//!                             mean requests in flight, sum of E2E / window_s (Little's law)
//!  usd_per_user_hour        = usd_per_hour / concurrent_users
//! ```
//! `window_s` is the config's summed measured windows: the measured runs' spend over
//! their tokens. A group's **held load** is its largest load whose p95 E2E is within
//! `--latency-budget` and at which at least 95 % of requests meet every `--slo`
//! (whichever are given); its cost per user-hour is what one concurrent user costs
//! when the GPU is filled to what that latency target allows.

use crate::error::{ProfilerError, Result};
use crate::report::svg::{Chart, Kind, Marker, Series};
use crate::result::{BenchResults, ConfigResult};
use crate::spec::Load;
use serde::{Deserialize, Serialize};

/// The share of requests a held load must serve within the targets (p95).
pub const HELD_QUANTILE: f64 = 0.95;

/// The GPU's price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostSettings {
    pub gpu_cost_per_hour_usd: f64,
    pub num_gpus: usize,
}

impl CostSettings {
    /// Checked settings: a positive, finite price and at least one GPU.
    pub fn new(gpu_cost_per_hour_usd: f64, num_gpus: usize) -> Result<Self> {
        if !(gpu_cost_per_hour_usd > 0.0 && gpu_cost_per_hour_usd.is_finite()) {
            return Err(ProfilerError::Parse(format!(
                "--gpu-cost-per-hour {gpu_cost_per_hour_usd}: expected a positive price in USD"
            )));
        }
        if num_gpus == 0 {
            return Err(ProfilerError::Parse(
                "--num-gpus 0: expected at least one GPU".into(),
            ));
        }
        Ok(Self {
            gpu_cost_per_hour_usd,
            num_gpus,
        })
    }

    pub fn usd_per_hour(&self) -> f64 {
        self.gpu_cost_per_hour_usd * self.num_gpus as f64
    }
}

/// The cost figures of one configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigCost {
    pub usd_per_hour: f64,
    pub usd_per_1m_output_tokens: Option<f64>,
    pub usd_per_1m_total_tokens: Option<f64>,
    pub concurrent_users: Option<f64>,
    pub usd_per_user_hour: Option<f64>,
}

/// A group's largest load held at the latency budget / SLO, and its cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldLoad {
    /// The targets, in words (empty when neither a budget nor an SLO was given).
    pub criterion: String,
    pub load: Option<f64>,
    pub concurrent_users: Option<f64>,
    pub usd_per_user_hour: Option<f64>,
    pub usd_per_1m_output_tokens: Option<f64>,
}

/// `v` with four significant digits (no exponent).
pub fn usd(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 9) as usize;
    format!("{v:.digits$}")
}

/// Mean requests in flight over the measured windows (see the module docs).
pub fn concurrent_users(c: &ConfigResult) -> Option<f64> {
    let s = c.summary.as_ref()?;
    match c.spec.load {
        Load::Batch { size } => Some(size as f64),
        Load::Concurrency { n } => Some(n as f64),
        Load::Rate { .. } => {
            let sum_e2e = s.e2e_s.mean? * s.e2e_s.count as f64;
            (s.window_s > 0.0).then(|| sum_e2e / s.window_s)
        }
    }
}

/// The figures of one config (`None` when it did not run).
pub fn config_cost(c: &ConfigResult, price: &CostSettings) -> Option<ConfigCost> {
    let s = c.summary.as_ref().filter(|_| c.status.is_ok())?;
    let per_hour = price.usd_per_hour();
    let spend = per_hour / 3600.0 * s.window_s;
    let per_1m =
        |tokens: usize| (tokens > 0 && s.window_s > 0.0).then(|| spend / tokens as f64 * 1e6);
    let users = concurrent_users(c).filter(|u| *u > 0.0);
    Some(ConfigCost {
        usd_per_hour: per_hour,
        usd_per_1m_output_tokens: per_1m(s.output_tokens),
        usd_per_1m_total_tokens: per_1m(s.prompt_tokens + s.output_tokens),
        concurrent_users: users,
        usd_per_user_hour: users.map(|u| per_hour / u),
    })
}

/// Whether a config that ran meets the targets.
fn meets(c: &ConfigResult, budget_s: Option<f64>, slo_given: bool) -> bool {
    let Some(s) = c.summary.as_ref().filter(|_| c.status.is_ok()) else {
        return false;
    };
    let within_budget = budget_s.is_none_or(|b| s.e2e_s.p95.is_some_and(|p| p <= b));
    let slo_met = !slo_given
        || s.goodput
            .as_ref()
            .is_some_and(|g| g.good_fraction >= HELD_QUANTILE);
    within_budget && slo_met
}

fn criterion(budget_s: Option<f64>, slo_given: bool) -> String {
    let mut parts = Vec::new();
    if let Some(b) = budget_s {
        parts.push(format!("p95 E2E <= {b}s"));
    }
    if slo_given {
        parts.push(format!(
            ">= {:.0} % of requests meet the SLO",
            HELD_QUANTILE * 100.0
        ));
    }
    parts.join(" and ")
}

/// The held load of `group` among `configs` (costs already filled in).
pub fn held_load(
    configs: &[ConfigResult],
    group: &str,
    budget_s: Option<f64>,
    slo_given: bool,
) -> HeldLoad {
    let criterion = criterion(budget_s, slo_given);
    if criterion.is_empty() {
        return HeldLoad::default();
    }
    let best = configs
        .iter()
        .filter(|c| c.spec.group_key() == group && meets(c, budget_s, slo_given))
        .max_by(|a, b| a.spec.load.value().total_cmp(&b.spec.load.value()));
    let cost = best.and_then(|c| c.cost.as_ref());
    HeldLoad {
        criterion,
        load: best.map(|c| c.spec.load.value()),
        concurrent_users: cost.and_then(|k| k.concurrent_users),
        usd_per_user_hour: cost.and_then(|k| k.usd_per_user_hour),
        usd_per_1m_output_tokens: cost.and_then(|k| k.usd_per_1m_output_tokens),
    }
}

/// Fill in every config's cost and every group's held load (with a price only).
pub fn apply(r: &mut BenchResults) {
    let Some(price) = r.settings.cost.clone() else {
        return;
    };
    for c in &mut r.configs {
        c.cost = config_cost(c, &price);
    }
    let (budget, slo_given) = (r.settings.latency_budget_s, !r.settings.slo.is_empty());
    for g in &mut r.analysis {
        g.cost = Some(held_load(&r.configs, &g.group, budget, slo_given));
    }
}

/// The cost lines of the terminal and report.md (none without a price).
pub fn lines(r: &BenchResults) -> Vec<String> {
    let Some(price) = &r.settings.cost else {
        return Vec::new();
    };
    let mut out = vec![format!(
        "cost: ${}/GPU-hour x {} GPU(s) = ${}/hour",
        usd(price.gpu_cost_per_hour_usd),
        price.num_gpus,
        usd(price.usd_per_hour())
    )];
    for g in &r.analysis {
        let cheapest = r
            .configs
            .iter()
            .filter(|c| c.spec.group_key() == g.group)
            .filter_map(|c| Some((c, c.cost.as_ref()?.usd_per_1m_output_tokens?)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((c, v)) = cheapest {
            out.push(format!(
                "  [{}] cheapest per 1M output tokens: {} at ${}",
                g.group,
                c.spec.load.label(),
                usd(v)
            ));
        }
        let held = g.cost.clone().unwrap_or_default();
        out.push(match (held.criterion.is_empty(), held.load) {
            (true, _) => format!(
                "  [{}] cost per concurrent user: give --latency-budget or --slo to pick the load held",
                g.group
            ),
            (false, None) => format!(
                "  [{}] no load holds {}: no cost per user",
                g.group, held.criterion
            ),
            (false, Some(load)) => format!(
                "  [{}] held at {}: load {load}, {} concurrent users, ${} per user-hour",
                g.group,
                held.criterion,
                held.concurrent_users.map_or("-".into(), |u| format!("{u:.1}")),
                held.usd_per_user_hour.map_or("-".into(), usd)
            ),
        });
    }
    out
}

/// Cost per 1M tokens against p95 E2E latency, one solid (output tokens) and one
/// dashed (total tokens) line per group; `None` without a price.
pub fn chart(r: &BenchResults) -> Option<Chart> {
    r.settings.cost.as_ref()?;
    let mut series = Vec::new();
    let mut markers = Vec::new();
    for (i, g) in r.analysis.iter().enumerate() {
        let pts = |f: fn(&ConfigCost) -> Option<f64>| -> Vec<(f64, f64)> {
            let mut v: Vec<(f64, f64)> = r
                .configs
                .iter()
                .filter(|c| c.spec.group_key() == g.group)
                .filter_map(|c| Some((c.summary.as_ref()?.e2e_s.p95?, f(c.cost.as_ref()?)?)))
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v
        };
        let (out, total) = (
            pts(|k| k.usd_per_1m_output_tokens),
            pts(|k| k.usd_per_1m_total_tokens),
        );
        series.push(Series {
            color: Some(i),
            ..Series::new(format!("per 1M output tokens [{}]", g.group), out)
        });
        series.push(Series {
            color: Some(i),
            dash: Some("6 3"),
            ..Series::new(format!("per 1M total tokens [{}]", g.group), total)
        });
        let held = g.cost.as_ref().and_then(|h| h.load);
        let at = r
            .configs
            .iter()
            .find(|c| c.spec.group_key() == g.group && Some(c.spec.load.value()) == held);
        if let Some(c) = at {
            let x = c.summary.as_ref().and_then(|s| s.e2e_s.p95);
            let y = c.cost.as_ref().and_then(|k| k.usd_per_1m_output_tokens);
            if let (Some(x), Some(y)) = (x, y) {
                markers.push(Marker {
                    x,
                    y,
                    label: format!("held: {}", c.spec.load.label()),
                });
            }
        }
    }
    Some(Chart {
        title: "Cost per 1M tokens vs p95 E2E latency".into(),
        x_label: "p95 E2E latency (s)".into(),
        y_label: "USD per 1M tokens (log scale)".into(),
        x_log: false,
        y_log: true,
        kind: Kind::Lines,
        series,
        markers,
        categories: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Slo;
    use crate::report::{csv, plots, table, tests::sample_results};
    use crate::result::{RequestRecord, RunRecord, Status};
    use crate::summary::summarize;
    use engine_core::RequestTimeline;

    /// The CSV cell of `column` in the row of static batch `b`.
    fn cell(csv: &str, column: &str, b: usize) -> String {
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        let (col, load) = (
            header.iter().position(|h| *h == column).expect("column"),
            header.iter().position(|h| *h == "load").expect("load"),
        );
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|row| row[load] == b.to_string())
            .map(|row| row[col].to_string())
            .unwrap_or_default()
    }

    #[test]
    fn figures_match_a_hand_computation_on_a_synthetic_timeline() {
        // Each config: 2 runs of a 2 s window; batch b makes 11 b output and 10 b
        // prompt tokens per run. $2.50 x 2 GPUs = $5/h; 4 s cost 5 x 4 / 3600 = $0.0055556.
        let mut r = sample_results();
        r.settings.cost = Some(CostSettings::new(2.5, 2).unwrap());
        r.settings.latency_budget_s = Some(2.5);
        apply(&mut r);
        let text = csv::render(&r);
        // b = 8: 176 output tokens -> $31.5657 per 1M; 336 tokens -> $16.5344 per 1M;
        // 8 users -> $0.625 per user-hour.
        assert_eq!(cell(&text, "usd_per_1m_output_tok", 8), "31.57");
        assert_eq!(cell(&text, "usd_per_1m_total_tok", 8), "16.53");
        assert_eq!(cell(&text, "usd_per_user_hour", 8), "0.6250");
        assert_eq!(cell(&text, "concurrent_users", 8), "8.00");
        // b = 1: 22 output tokens -> $252.525 per 1M.
        assert_eq!(cell(&text, "usd_per_1m_output_tok", 1), "252.5");
        let k = r.configs[1].cost.clone().unwrap_or_default();
        assert!((k.usd_per_1m_output_tokens.unwrap_or(0.0) - 31.565_656_565).abs() < 1e-6);
        assert!((k.usd_per_hour - 5.0).abs() < 1e-12);
        // Every config's p95 E2E is 2 s <= 2.5 s: the held load is the largest that
        // ran, batch 32: $5 / 32 users = $0.15625 per user-hour.
        let held = r.analysis[0].cost.clone().unwrap_or_default();
        assert_eq!(held.load, Some(32.0));
        assert!((held.usd_per_user_hour.unwrap_or(0.0) - 0.156_25).abs() < 1e-12);
        assert_eq!(r.configs[3].cost, None, "did not fit: no cost");
        let lines = lines(&r).join("\n");
        assert!(
            lines.contains("$5.000/hour") && lines.contains("$0.1562"),
            "{lines}"
        );
        assert!(table::render_text_width(&r, 200).contains("USD per 1M"));
        assert!(table::render_markdown(&r).contains("usd_per_1m_output_tok"));
        assert!(plots::all(&r)
            .iter()
            .any(|(n, _)| *n == "cost_vs_latency.svg"));
    }

    #[test]
    fn nothing_about_money_without_a_price() {
        let mut r = sample_results();
        apply(&mut r);
        let md = crate::report::markdown::render(&r, &[]);
        for text in [csv::render(&r), table::render_text(&r), md] {
            assert!(!text.contains("usd") && !text.contains('$'), "{text}");
        }
        assert!(lines(&r).is_empty() && chart(&r).is_none());
        assert!(r.analysis.iter().all(|g| g.cost.is_none()));
    }

    #[test]
    fn an_unmet_slo_holds_no_load() {
        let mut r = sample_results();
        let slo = Slo::parse("ttft=500ms").unwrap(); // synthetic TTFT is 1 s
        for c in &mut r.configs {
            c.summary = c.status.is_ok().then(|| summarize(&c.runs, &slo));
        }
        r.settings.slo = slo;
        r.settings.cost = Some(CostSettings::new(1.0, 1).unwrap());
        apply(&mut r);
        let held = r.analysis[0].cost.clone().unwrap_or_default();
        assert_eq!(held.load, None);
        assert!(lines(&r)
            .join("\n")
            .contains("no load holds >= 95 % of requests meet the SLO"));
    }

    #[test]
    fn open_loop_users_are_requests_in_flight_by_littles_law() {
        // One 10 s window, requests with E2E 2, 4 and 6 s: 12 / 10 = 1.2 in flight.
        let req = |e2e: f64| RequestRecord {
            id: 0,
            finish_reason: "length".into(),
            timeline: RequestTimeline {
                arrival_s: 1.0,
                token_times_s: vec![1.0 + e2e / 2.0, 1.0 + e2e],
                prompt_tokens: 4,
                ..Default::default()
            },
            use_case: None,
        };
        let run = RunRecord {
            end_s: 10.0,
            requests: vec![req(2.0), req(4.0), req(6.0)],
            ..Default::default()
        };
        let mut c = sample_results().configs.remove(0);
        c.spec.load = Load::Rate {
            requests_per_s: 0.3,
        };
        c.summary = Some(summarize(std::slice::from_ref(&run), &Slo::default()));
        c.runs = vec![run];
        c.status = Status::Ok;
        let k = config_cost(&c, &CostSettings::new(3.6, 1).unwrap()).unwrap_or_default();
        assert!((k.concurrent_users.unwrap_or(0.0) - 1.2).abs() < 1e-12);
        assert!((k.usd_per_user_hour.unwrap_or(0.0) - 3.0).abs() < 1e-12);
        // $3.6/h for 10 s = $0.01 over 6 output tokens -> $1666.67 per 1M.
        assert!((k.usd_per_1m_output_tokens.unwrap_or(0.0) - 1e4 / 6.0).abs() < 1e-6);
    }

    #[test]
    fn bad_prices_are_refused() {
        assert!(CostSettings::new(0.0, 1).is_err());
        assert!(CostSettings::new(f64::NAN, 1).is_err());
        assert!(CostSettings::new(2.0, 0).is_err());
        assert_eq!(usd(0.053_21), "0.05321");
        assert_eq!(usd(63_131.3), "63131");
    }
}
