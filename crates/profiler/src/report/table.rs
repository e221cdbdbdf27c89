//! The terminal table (aligned text) and the same table in Markdown, plus the printed
//! analysis lines (knee and latency-budget choice per group).

use super::columns;
use crate::result::BenchResults;

fn cells(r: &BenchResults) -> (Vec<String>, Vec<Vec<String>>) {
    let cols = columns::table();
    let header = cols.iter().map(|c| c.name.to_string()).collect();
    let rows = r
        .configs
        .iter()
        .map(|cfg| {
            cols.iter()
                .map(|c| (c.value)(cfg).unwrap_or_else(|| "-".into()))
                .collect()
        })
        .collect();
    (header, rows)
}

/// An aligned text table for the terminal.
pub fn render_text(r: &BenchResults) -> String {
    let (header, rows) = cells(r);
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |row: &[String]| {
        row.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = line(&header);
    out.push('\n');
    out.push_str(&"-".repeat(out.len().saturating_sub(1)));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// The same table in Markdown.
pub fn render_markdown(r: &BenchResults) -> String {
    let (header, rows) = cells(r);
    let mut out = format!("| {} |\n", header.join(" | "));
    out.push_str(&format!("|{}\n", "---:|".repeat(header.len())));
    for row in rows {
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
