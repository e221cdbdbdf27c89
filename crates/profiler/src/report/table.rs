//! The tables: a compact one for the terminal and the full one in Markdown for
//! report.md, plus the printed analysis lines (knee and latency-budget choice per group).
//!
//! The terminal table shows the handful of numbers a reader compares (p50/p99 pairs in
//! one cell, two-line headers) and fits the terminal's width, or 120 columns when
//! stdout is not a terminal: columns are dropped from the least important up until it
//! fits, and the table says so. Every column stays in summary.csv and report.md.
//! comfy-table lays it out; the columns are plain data ([`Compact`]), so a new metric
//! is one more entry in [`compact_columns`].

use super::columns;
use crate::result::{BenchResults, ConfigResult};
use crate::spec::Load;
use crate::summary::ConfigSummary;
use comfy_table::{CellAlignment, Table};

/// No borders and no lines but a rule under the header (comfy-table's preset format:
/// 19 table components, a space draws nothing).
const RULE_UNDER_HEADER: &str = "     --            ";

/// The width used when stdout is not a terminal.
pub const DEFAULT_WIDTH: usize = 120;

/// A cell's text from a config (`None` prints `-`); boxed so that a column may capture
/// run-wide settings.
pub type CellFn = Box<dyn Fn(&ConfigResult) -> Option<String>>;

/// One column of the terminal table. `priority` 0 is never dropped; higher numbers go
/// first when the table is too wide.
pub struct Compact {
    pub header: String,
    pub priority: u8,
    pub value: CellFn,
}

impl Compact {
    fn new(
        header: &str,
        priority: u8,
        value: impl Fn(&ConfigResult) -> Option<String> + 'static,
    ) -> Self {
        Self {
            header: header.to_string(),
            priority,
            value: Box::new(value),
        }
    }
}

/// Milliseconds to three significant figures or so: 0.425, 4.25, 48.4, 138, 1916.
fn ms(v: Option<f64>) -> Option<String> {
    let v = v? * 1e3;
    let digits = match v.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 1.0 => 2,
        _ => 3,
    };
    Some(format!("{v:.digits$}"))
}

fn pair(a: Option<String>, b: Option<String>) -> Option<String> {
    Some(format!("{}/{}", a?, b.as_deref().unwrap_or("-")))
}

fn summary(c: &ConfigResult) -> Option<&ConfigSummary> {
    c.summary.as_ref()
}

/// True when the configs differ in `f` (a sweep axis worth a column).
fn varies<T: PartialEq>(r: &BenchResults, f: impl Fn(&ConfigResult) -> T) -> bool {
    let mut it = r.configs.iter().map(f);
    it.next().is_some_and(|first| it.any(|v| v != first))
}

/// The terminal table's columns for these results, most important first.
pub fn compact_columns(r: &BenchResults) -> Vec<Compact> {
    let serving = r
        .configs
        .iter()
        .any(|c| !matches!(c.spec.load, Load::Batch { .. }));
    let load_header = match r.configs.first().map(|c| c.spec.load) {
        Some(Load::Concurrency { .. }) => "concur-\nrency",
        Some(Load::Rate { .. }) => "rate\nreq/s",
        _ => "batch",
    };
    let mut cols = vec![Compact::new(load_header, 0, |c| {
        Some(c.spec.load.value().to_string())
    })];
    if r.configs.iter().any(|c| c.spec.workload.is_some()) {
        cols.push(Compact::new("workload", 0, |c| c.spec.workload.clone()));
    }
    if r.configs.iter().any(|c| c.spec.workload.is_none()) {
        let fixed = |c: &ConfigResult, n: usize| c.spec.workload.is_none().then(|| n.to_string());
        cols.push(Compact::new("in", 0, move |c| fixed(c, c.spec.input_len)));
        cols.push(Compact::new("out", 0, move |c| fixed(c, c.spec.output_len)));
    }
    if varies(r, |c| c.spec.temperature) {
        cols.push(Compact::new("T", 0, |c| {
            Some(c.spec.temperature.to_string())
        }));
    }
    if varies(r, |c| c.spec.top_p) {
        cols.push(Compact::new("top_p", 0, |c| Some(c.spec.top_p.to_string())));
    }
    if r.configs.iter().any(|c| !c.status.is_ok()) {
        cols.push(Compact::new("status", 1, |c| Some(c.status.short())));
    }
    cols.push(if serving {
        Compact::new("prefill ms\n/request", 3, |c| {
            ms(summary(c).and_then(columns::prefill_per_request_s))
        })
    } else {
        Compact::new("prefill\nms", 3, |c| ms(summary(c)?.prefill_s.mean))
    });
    cols.push(Compact::new("TTFT\np50 ms", 1, |c| {
        ms(summary(c)?.ttft_s.p50)
    }));
    cols.push(Compact::new("ITL ms\np50/p99", 1, |c| {
        let s = summary(c)?;
        pair(ms(s.itl_s.p50), ms(s.itl_s.p99))
    }));
    cols.push(Compact::new("E2E ms\np50/p99", 0, |c| {
        let s = summary(c)?;
        pair(ms(s.e2e_s.p50), ms(s.e2e_s.p99))
    }));
    cols.push(Compact::new("TPOT\nms", 4, |c| ms(summary(c)?.tpot_s.mean)));
    if serving {
        cols.push(Compact::new("queue\np50 ms", 2, |c| {
            ms(summary(c)?.queue_s.p50)
        }));
    }
    cols.push(Compact::new("output\ntok/s (CV)", 0, |c| {
        let s = summary(c)?;
        let cv = s
            .output_tok_per_s_cv
            .map_or("-".into(), |v| format!("{v:.2}"));
        Some(format!("{:.1} ({cv})", s.throughput()?))
    }));
    if r.configs
        .iter()
        .any(|c| summary(c).is_some_and(|s| s.goodput.is_some()))
    {
        cols.push(Compact::new("goodput\nreq/s", 2, |c| {
            let g = summary(c)?.goodput.as_ref()?;
            Some(format!("{:.2}", g.goodput_req_per_s))
        }));
    }
    if r.configs.iter().any(|c| c.cost.is_some()) {
        let usd = |c: &ConfigResult, f: fn(&crate::cost::ConfigCost) -> Option<f64>| {
            c.cost.as_ref().and_then(f).map(crate::cost::usd)
        };
        cols.push(Compact::new("USD per 1M\noutput tok", 1, move |c| {
            usd(c, |k| k.usd_per_1m_output_tokens)
        }));
        cols.push(Compact::new("USD per\nuser-hour", 3, move |c| {
            usd(c, |k| k.usd_per_user_hour)
        }));
    }
    if r.configs.iter().any(|c| c.roofline.is_some()) {
        cols.push(Compact::new("% of floor\ndec/prefill", 2, |c| {
            let f = c.roofline.as_ref()?;
            let pct = |v: Option<f64>| v.map(|v| format!("{:.1}", v * 100.0));
            pair(pct(f.decode_fraction), pct(f.prefill_fraction))
        }));
    }
    cols
}

fn build(r: &BenchResults, cols: &[&Compact]) -> Table {
    let mut t = Table::new();
    t.load_preset(RULE_UNDER_HEADER);
    t.set_header(cols.iter().map(|c| c.header.as_str()));
    for cfg in &r.configs {
        t.add_row(
            cols.iter()
                .map(|c| (c.value)(cfg).unwrap_or_else(|| "-".into())),
        );
    }
    for col in t.column_iter_mut() {
        col.set_cell_alignment(CellAlignment::Right);
    }
    t
}

fn width_of(text: &str) -> usize {
    text.lines()
        .map(console::measure_text_width)
        .max()
        .unwrap_or(0)
}

/// The terminal table, at most `max_width` columns wide where the essential columns
/// allow it (priority-0 columns are always kept).
pub fn render_text_width(r: &BenchResults, max_width: usize) -> String {
    let all = compact_columns(r);
    let mut keep: Vec<&Compact> = all.iter().collect();
    let mut text = build(r, &keep).to_string();
    while width_of(&text) > max_width {
        // The least important column, rightmost among equals.
        let Some((i, _)) = keep
            .iter()
            .enumerate()
            .filter(|(_, c)| c.priority > 0)
            .max_by_key(|(i, c)| (c.priority, *i))
        else {
            break;
        };
        keep.remove(i);
        text = build(r, &keep).to_string();
    }
    let mut text: String = text
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    if keep.len() < all.len() {
        text.push_str(&format!(
            "({} of {} columns fit in {max_width} characters; all are in summary.csv and report.md)\n",
            keep.len(),
            all.len()
        ));
    }
    text
}

/// The terminal's width when stdout is one, else [`DEFAULT_WIDTH`].
pub fn terminal_width() -> usize {
    let term = console::Term::stdout();
    if !term.is_term() {
        return DEFAULT_WIDTH;
    }
    term.size_checked()
        .map_or(DEFAULT_WIDTH, |(_, cols)| usize::from(cols))
}

/// The terminal table at the terminal's width.
pub fn render_text(r: &BenchResults) -> String {
    render_text_width(r, terminal_width())
}

/// The full table in Markdown (report.md).
pub fn render_markdown(r: &BenchResults) -> String {
    let cols = columns::table_for(r);
    let mut out = format!(
        "| {} |\n",
        cols.iter().map(|c| c.name).collect::<Vec<_>>().join(" | ")
    );
    out.push_str(&format!("|{}\n", "---:|".repeat(cols.len())));
    for cfg in &r.configs {
        let row: Vec<String> = cols
            .iter()
            .map(|c| (c.value)(cfg).unwrap_or_else(|| "-".into()))
            .collect();
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

fn load_text(v: Option<f64>, none: &str) -> String {
    v.map_or_else(|| none.to_string(), |v| format!("{v}"))
}

/// The analysis as lines of text (one block per group).
pub fn analysis_lines(r: &BenchResults) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = &r.environment.endpoint {
        out.push(format!(
            "measured over HTTP at {} ({} API, model {}); tokens: {}; not measurable from a client: {}",
            e.url,
            e.api,
            e.served_model,
            e.token_counts,
            e.not_measured.join(", ")
        ));
    }
    for g in &r.analysis {
        out.push(format!("[{}] ({})", g.group, g.load_axis));
        out.push(format!(
            "  knee (sweet spot): {}",
            load_text(
                g.knee_load,
                "none in the measured range (needs >= 3 points and a bend)"
            )
        ));
        if let Some(b) = g.latency_budget_s {
            out.push(format!(
                "  latency budget {b}s: most throughput with p50 E2E within budget at {}; with p99 E2E within budget at {}",
                load_text(g.best_load_p50_within_budget, "none"),
                load_text(g.best_load_p99_within_budget, "none")
            ));
        }
    }
    for c in &r.configs {
        let (rejected, failed, timed_out) = columns::failures(c);
        if rejected + failed + timed_out > 0 {
            let answered: usize = c.runs.iter().map(|r| r.requests.len()).sum();
            let first = c.runs.iter().flat_map(|r| r.errors.first()).next();
            out.push(format!(
                "{}: {answered} answered, {rejected} rejected, {failed} failed, {timed_out} timed out (not in the latency metrics){}",
                c.spec.label(),
                first.map_or(String::new(), |e| format!("; e.g. {e}"))
            ));
        }
        if let crate::result::Status::DoesNotFit { reason }
        | crate::result::Status::Failed { error: reason } = &c.status
        {
            out.push(format!(
                "{}: {} ({reason})",
                c.spec.label(),
                c.status.short()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widths(text: &str) -> Vec<usize> {
        text.lines().map(console::measure_text_width).collect()
    }

    #[test]
    fn the_compact_table_fits_100_columns_with_every_column() {
        let r = crate::report::tests::sample_results();
        let text = render_text_width(&r, DEFAULT_WIDTH);
        assert!(widths(&text).iter().all(|&w| w <= 100), "{text}");
        assert!(!text.contains("columns fit"), "nothing dropped:\n{text}");
        for h in [
            "batch",
            "TTFT",
            "E2E ms",
            "tok/s (CV)",
            "status",
            "does not fit",
        ] {
            assert!(text.contains(h), "{h} missing:\n{text}");
        }
        // One line per config below a two-line header and its rules.
        assert!(text.lines().count() >= 2 + r.configs.len());
    }

    #[test]
    fn a_narrow_terminal_drops_the_least_important_columns_and_says_so() {
        let r = crate::report::tests::sample_results();
        let full = render_text_width(&r, DEFAULT_WIDTH);
        let narrow = render_text_width(&r, 72);
        let table_lines: Vec<&str> = narrow.lines().filter(|l| !l.starts_with('(')).collect();
        assert!(
            table_lines
                .iter()
                .all(|l| console::measure_text_width(l) <= 72),
            "{narrow}"
        );
        assert!(narrow.contains("columns fit in 72 characters"), "{narrow}");
        assert!(
            full.contains("TPOT") && !narrow.contains("TPOT"),
            "{narrow}"
        );
        assert!(narrow.contains("E2E ms") && narrow.contains("tok/s (CV)"));
    }

    #[test]
    fn sweep_axes_get_a_column_only_when_they_vary() {
        let mut r = crate::report::tests::sample_results();
        assert!(!render_text_width(&r, 200).contains("top_p"));
        r.configs[1].spec.top_p = 0.9;
        assert!(render_text_width(&r, 200).contains("top_p"));
    }

    #[test]
    fn milliseconds_keep_three_significant_figures_or_so() {
        assert_eq!(ms(Some(0.000425)).as_deref(), Some("0.425"));
        assert_eq!(ms(Some(0.00425)).as_deref(), Some("4.25"));
        assert_eq!(ms(Some(0.04843)).as_deref(), Some("48.4"));
        assert_eq!(ms(Some(0.1375)).as_deref(), Some("138"));
        assert_eq!(ms(Some(1.9164)).as_deref(), Some("1916"));
    }
}
