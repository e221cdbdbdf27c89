//! The per-config columns shared by summary.csv, the terminal table and report.md:
//! one definition of each column's name, unit and value.

use crate::result::{BenchResults, ConfigResult};
use crate::summary::ConfigSummary;

/// A column: its header and how to read it from a config (`None` prints empty/`-`).
pub struct Column {
    pub name: &'static str,
    pub value: fn(&ConfigResult) -> Option<String>,
}

fn sum<T>(c: &ConfigResult, f: impl Fn(&ConfigSummary) -> Option<T>) -> Option<T> {
    c.summary.as_ref().and_then(f)
}

fn ms(v: Option<f64>) -> Option<String> {
    v.map(|v| format!("{:.2}", v * 1e3))
}

fn num(v: Option<f64>, digits: usize) -> Option<String> {
    v.map(|v| format!("{v:.digits$}"))
}

fn pct(v: Option<f64>) -> Option<String> {
    v.map(|v| format!("{:.1}", v * 100.0))
}

/// Requests (rejected, failed, timed out) over the config's measured runs.
pub fn failures(c: &ConfigResult) -> (usize, usize, usize) {
    c.runs.iter().fold((0, 0, 0), |(r, f, t), run| {
        (r + run.rejected, f + run.failed, t + run.timed_out)
    })
}

/// Prefill time per request: a run's prefill-step time over its requests. In static
/// batches this is the batch's prefill split evenly; in serving modes, where each
/// request is prefilled on its own (often in mixed steps), it is the figure to read
/// beside TTFT, where the per-run total (`prefill_ms`) is not.
pub fn prefill_per_request_s(s: &ConfigSummary) -> Option<f64> {
    let per_run = s.num_requests as f64 / s.measured_runs.max(1) as f64;
    s.prefill_s
        .mean
        .filter(|_| per_run > 0.0)
        .map(|v| v / per_run)
}

macro_rules! col {
    ($name:expr, |$c:ident| $body:expr) => {
        Column {
            name: $name,
            value: |$c: &ConfigResult| $body,
        }
    };
}

/// Every column, in CSV order.
pub fn all() -> Vec<Column> {
    vec![
        col!("mode", |c| Some(
            c.spec
                .load
                .label()
                .split('=')
                .next()
                .unwrap_or("")
                .to_string()
        )),
        col!("load", |c| Some(format!("{}", c.spec.load.value()))),
        col!("workload", |c| c.spec.workload.clone()),
        col!("input_len", |c| c
            .spec
            .workload
            .is_none()
            .then(|| c.spec.input_len.to_string())),
        col!("output_len", |c| c
            .spec
            .workload
            .is_none()
            .then(|| c.spec.output_len.to_string())),
        col!("temperature", |c| Some(c.spec.temperature.to_string())),
        col!("top_p", |c| Some(c.spec.top_p.to_string())),
        col!("status", |c| Some(c.status.short())),
        col!("warmup_runs", |c| Some(c.warmup_runs.to_string())),
        col!("measured_runs", |c| Some(c.runs.len().to_string())),
        col!("requests", |c| sum(c, |s| Some(s.num_requests.to_string()))),
        col!("output_tokens", |c| sum(c, |s| Some(
            s.output_tokens.to_string()
        ))),
        col!("prefill_ms", |c| ms(sum(c, |s| s.prefill_s.mean))),
        col!("prefill_per_request_ms", |c| ms(sum(
            c,
            prefill_per_request_s
        ))),
        col!("prefill_tok_per_s", |c| num(
            sum(c, |s| s.prefill_tok_per_s),
            1
        )),
        col!("decode_step_p50_ms", |c| ms(sum(c, |s| s
            .decode_step_s
            .p50))),
        col!("decode_step_p90_ms", |c| ms(sum(c, |s| s
            .decode_step_s
            .p90))),
        col!("decode_step_p99_ms", |c| ms(sum(c, |s| s
            .decode_step_s
            .p99))),
        col!("decode_forward_p50_ms", |c| ms(sum(c, |s| s
            .decode_forward_s
            .p50))),
        col!("decode_sample_p50_ms", |c| ms(sum(c, |s| s
            .decode_sample_s
            .p50))),
        col!("decode_tok_per_s", |c| num(
            sum(c, |s| s.decode_tok_per_s),
            1
        )),
        col!("ttft_p50_ms", |c| ms(sum(c, |s| s.ttft_s.p50))),
        col!("ttft_p90_ms", |c| ms(sum(c, |s| s.ttft_s.p90))),
        col!("ttft_p95_ms", |c| ms(sum(c, |s| s.ttft_s.p95))),
        col!("ttft_p99_ms", |c| ms(sum(c, |s| s.ttft_s.p99))),
        col!("itl_p50_ms", |c| ms(sum(c, |s| s.itl_s.p50))),
        col!("itl_p90_ms", |c| ms(sum(c, |s| s.itl_s.p90))),
        col!("itl_p95_ms", |c| ms(sum(c, |s| s.itl_s.p95))),
        col!("itl_p99_ms", |c| ms(sum(c, |s| s.itl_s.p99))),
        col!("itl_samples", |c| sum(c, |s| Some(
            s.itl_s.count.to_string()
        ))),
        col!("e2e_p50_ms", |c| ms(sum(c, |s| s.e2e_s.p50))),
        col!("e2e_p90_ms", |c| ms(sum(c, |s| s.e2e_s.p90))),
        col!("e2e_p95_ms", |c| ms(sum(c, |s| s.e2e_s.p95))),
        col!("e2e_p99_ms", |c| ms(sum(c, |s| s.e2e_s.p99))),
        col!("tpot_mean_ms", |c| ms(sum(c, |s| s.tpot_s.mean))),
        col!("queue_p50_ms", |c| ms(sum(c, |s| s.queue_s.p50))),
        col!("compute_p50_ms", |c| ms(sum(c, |s| s.compute_s.p50))),
        col!("output_tok_per_s", |c| num(
            sum(c, |s| s.output_tok_per_s.mean),
            1
        )),
        col!("output_tok_per_s_p50", |c| num(
            sum(c, |s| s.output_tok_per_s.p50),
            1
        )),
        col!("output_tok_per_s_p90", |c| num(
            sum(c, |s| s.output_tok_per_s.p90),
            1
        )),
        col!("output_tok_per_s_cv", |c| num(
            sum(c, |s| s.output_tok_per_s_cv),
            4
        )),
        col!("total_tok_per_s", |c| num(sum(c, |s| s.total_tok_per_s), 1)),
        col!("requests_per_s", |c| num(sum(c, |s| s.requests_per_s), 3)),
        col!("goodput_req_per_s", |c| num(
            sum(c, |s| s.goodput.as_ref().map(|g| g.goodput_req_per_s)),
            3
        )),
        col!("good_fraction", |c| num(
            sum(c, |s| s.goodput.as_ref().map(|g| g.good_fraction)),
            3
        )),
        col!("max_kv_blocks_in_use", |c| sum(c, |s| Some(
            s.max_blocks_in_use.to_string()
        ))),
        col!("num_kv_blocks", |c| sum(c, |s| Some(
            s.num_blocks.to_string()
        ))),
        col!("preemptions", |c| sum(c, |s| Some(
            s.num_preemptions.to_string()
        ))),
        col!("decode_floor_pct", |c| pct(c
            .roofline
            .as_ref()
            .and_then(|r| r.decode_fraction))),
        col!("prefill_floor_pct", |c| pct(c
            .roofline
            .as_ref()
            .and_then(|r| r.prefill_fraction))),
        col!("rss_max_mib", |c| num(
            c.telemetry.rss_bytes.max.map(|b| b / 1048576.0),
            1
        )),
        col!("gpu_mem_max_mib", |c| num(
            c.telemetry.gpu_memory_used_bytes.max.map(|b| b / 1048576.0),
            1
        )),
        col!("gpu_util_mean_pct", |c| num(
            c.telemetry.gpu_util_percent.mean,
            1
        )),
        col!("power_mean_w", |c| num(c.telemetry.power_w.mean, 1)),
        col!("overhead_mean_us", |c| num(
            sum(c, |s| s.overhead_s.mean.map(|v| v * 1e6)),
            1
        )),
        col!("usd_per_1m_output_tok", |c| cost(c, |k| k
            .usd_per_1m_output_tokens)),
        col!("usd_per_1m_total_tok", |c| cost(c, |k| k
            .usd_per_1m_total_tokens)),
        col!("concurrent_users", |c| num(
            c.cost.as_ref().and_then(|k| k.concurrent_users),
            2
        )),
        col!("usd_per_user_hour", |c| cost(c, |k| k.usd_per_user_hour)),
        col!("fit_intercept_s", |c| num(
            fit(c, |f| Some(f.intercept_s)),
            4
        )),
        col!("fit_s_per_output_tok", |c| num(
            fit(c, |f| f.s_per_output_token),
            6
        )),
        col!("fit_s_per_prompt_tok", |c| num(
            fit(c, |f| f.s_per_prompt_token),
            6
        )),
        col!("fit_r2", |c| num(fit(c, |f| f.r2), 4)),
        col!("rejected", |c| Some(failures(c).0.to_string())),
        col!("failed", |c| Some(failures(c).1.to_string())),
        col!("timed_out", |c| Some(failures(c).2.to_string())),
    ]
}

fn cost(c: &ConfigResult, f: fn(&crate::cost::ConfigCost) -> Option<f64>) -> Option<String> {
    c.cost.as_ref().and_then(f).map(crate::cost::usd)
}

fn fit(c: &ConfigResult, f: fn(&crate::breakdown::LengthFit) -> Option<f64>) -> Option<f64> {
    sum(c, |s| s.length_fit.as_ref().and_then(f))
}

/// Columns shown only when some config has a value: the workload, money (only with
/// `--gpu-cost-per-hour`) and the latency-vs-length fit.
pub const OPTIONAL: &[&str] = &[
    "workload",
    "usd_per_1m_output_tok",
    "usd_per_1m_total_tok",
    "concurrent_users",
    "usd_per_user_hour",
    "fit_intercept_s",
    "fit_s_per_output_tok",
    "fit_s_per_prompt_tok",
    "fit_r2",
];

/// `cols` without the [`OPTIONAL`] columns that are empty for every config of `r`.
fn drop_empty(cols: Vec<Column>, r: &BenchResults) -> Vec<Column> {
    cols.into_iter()
        .filter(|c| {
            !OPTIONAL.contains(&c.name) || r.configs.iter().any(|cfg| (c.value)(cfg).is_some())
        })
        .collect()
}

/// The CSV's columns for `r`: [`all`] less the empty optional ones.
pub fn present(r: &BenchResults) -> Vec<Column> {
    drop_empty(all(), r)
}

/// report.md's table columns for `r`: [`table`] (per-request prefill in serving
/// modes) less the empty optional ones.
pub fn table_for(r: &BenchResults) -> Vec<Column> {
    let serving = r
        .configs
        .iter()
        .any(|c| !matches!(c.spec.load, crate::spec::Load::Batch { .. }));
    drop_empty(table(serving), r)
}

/// The columns of report.md's table, by name; `prefill_ms` (per run) becomes
/// `prefill_per_request_ms` in serving modes.
pub const TABLE: &[&str] = &[
    "load",
    "workload",
    "input_len",
    "output_len",
    "status",
    "prefill_ms",
    "prefill_tok_per_s",
    "decode_step_p50_ms",
    "decode_step_p99_ms",
    "decode_sample_p50_ms",
    "ttft_p50_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "e2e_p50_ms",
    "e2e_p99_ms",
    "tpot_mean_ms",
    "queue_p50_ms",
    "output_tok_per_s",
    "output_tok_per_s_cv",
    "decode_floor_pct",
    "prefill_floor_pct",
    "usd_per_1m_output_tok",
    "usd_per_user_hour",
];

/// The table's columns (those of [`TABLE`], in its order).
pub fn table(serving: bool) -> Vec<Column> {
    let mut all = all();
    TABLE
        .iter()
        .map(|&n| match n {
            "prefill_ms" if serving => "prefill_per_request_ms",
            n => n,
        })
        .filter_map(|n| {
            all.iter()
                .position(|c| c.name == n)
                .map(|i| all.swap_remove(i))
        })
        .collect()
}
