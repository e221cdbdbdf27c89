//! The per-config columns shared by summary.csv, the terminal table and report.md:
//! one definition of each column's name, unit and value.

use crate::result::ConfigResult;
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
        col!("input_len", |c| Some(c.spec.input_len.to_string())),
        col!("output_len", |c| Some(c.spec.output_len.to_string())),
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
        col!("rejected", |c| Some(failures(c).0.to_string())),
        col!("failed", |c| Some(failures(c).1.to_string())),
        col!("timed_out", |c| Some(failures(c).2.to_string())),
    ]
}

/// The columns of the terminal table and report.md, by name.
pub const TABLE: &[&str] = &[
    "load",
    "input_len",
    "output_len",
    "status",
    "prefill_ms",
    "prefill_tok_per_s",
    "decode_step_p50_ms",
    "decode_step_p99_ms",
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
];

/// The table's columns (those of [`TABLE`], in its order).
pub fn table() -> Vec<Column> {
    let mut all = all();
    TABLE
        .iter()
        .filter_map(|n| {
            all.iter()
                .position(|c| c.name == *n)
                .map(|i| all.swap_remove(i))
        })
        .collect()
}
