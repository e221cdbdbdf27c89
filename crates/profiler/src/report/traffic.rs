//! The per-use-case rows and the latency-vs-length fit of each config (see
//! [`crate::breakdown`]), as terminal lines, a report.md section and use_cases.csv.
//! Nothing is rendered for configs without use cases or a fit.

use crate::result::{BenchResults, ConfigResult};

const HEADER: &[&str] = &[
    "config",
    "use_case",
    "requests",
    "mean_prompt_tokens",
    "mean_output_tokens",
    "ttft_p50_ms",
    "tpot_mean_ms",
    "e2e_p50_ms",
    "e2e_p95_ms",
];

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.2}", v * 1e3))
}

/// One row per (config, use case).
fn rows(r: &BenchResults) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for c in &r.configs {
        for u in c.summary.iter().flat_map(|s| &s.use_cases) {
            out.push(vec![
                c.spec.label(),
                u.name.clone(),
                u.requests.to_string(),
                format!("{:.1}", u.mean_prompt_tokens),
                format!("{:.1}", u.mean_output_tokens),
                ms(u.ttft_s.p50),
                ms(u.tpot_s.mean),
                ms(u.e2e_s.p50),
                ms(u.e2e_s.p95),
            ]);
        }
    }
    out
}

/// `E2E = a s + b ms/output tok + c ms/prompt tok (R^2 r, n requests)`.
fn fit_text(c: &ConfigResult) -> Option<String> {
    let f = c.summary.as_ref()?.length_fit.as_ref()?;
    let mut s = format!("E2E = {:.4} s", f.intercept_s);
    if let Some(b) = f.s_per_output_token {
        s.push_str(&format!(" + {:.4} ms x output tokens", b * 1e3));
    }
    if let Some(b) = f.s_per_prompt_token {
        s.push_str(&format!(" + {:.5} ms x prompt tokens", b * 1e3));
    }
    let r2 = f.r2.map_or("-".into(), |v| format!("{v:.3}"));
    Some(format!("{s} (R^2 {r2}, {} requests)", f.requests))
}

/// Terminal lines: the rows as an aligned table, then one fit line per config.
pub fn lines(r: &BenchResults) -> Vec<String> {
    let mut out = Vec::new();
    let rows = rows(r);
    if !rows.is_empty() {
        out.push("per use case:".into());
        let widths: Vec<usize> = (0..HEADER.len())
            .map(|i| {
                rows.iter()
                    .map(|row| row[i].len())
                    .chain([HEADER[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let mut s = format!("  {:<w$}", cells[0], w = widths[0]);
            for (c, w) in cells.iter().zip(&widths).skip(1) {
                s.push_str(&format!("  {c:>w$}"));
            }
            s
        };
        out.push(line(HEADER.to_vec()));
        for row in &rows {
            out.push(line(row.iter().map(String::as_str).collect()));
        }
    }
    let fits: Vec<String> = r
        .configs
        .iter()
        .filter_map(|c| Some(format!("  [{}] {}", c.spec.label(), fit_text(c)?)))
        .collect();
    if !fits.is_empty() {
        out.push("latency vs length (least squares over requests):".into());
        out.extend(fits);
    }
    out
}

/// The report.md section (empty when there is nothing to show).
pub fn markdown(r: &BenchResults) -> String {
    let rows = rows(r);
    let fits: Vec<(String, String)> = r
        .configs
        .iter()
        .filter_map(|c| Some((c.spec.label(), fit_text(c)?)))
        .collect();
    if rows.is_empty() && fits.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Traffic\n\n");
    if let Some(t) = &r.settings.traffic {
        s.push_str(&format!(
            "Workload `{}` (length scale {}):\n\n",
            t.name, t.length_scale
        ));
        for u in &t.use_cases {
            s.push_str(&format!(
                "- {} (weight {}): input {}, output {}\n",
                u.name,
                u.weight,
                u.input.label(),
                u.output.label()
            ));
        }
        s.push('\n');
    }
    if !rows.is_empty() {
        s.push_str(&format!("| {} |\n", HEADER.join(" | ")));
        s.push_str(&format!("|---|---|{}\n", "---:|".repeat(HEADER.len() - 2)));
        for row in rows {
            s.push_str(&format!("| {} |\n", row.join(" | ")));
        }
    }
    if !fits.is_empty() {
        s.push_str(
            "\nLatency vs length, least squares over each config's requests (docs/metrics.md):\n\n",
        );
        for (label, fit) in fits {
            s.push_str(&format!("- {label}: {fit}\n"));
        }
    }
    s
}

/// use_cases.csv, when some config has use-case rows.
pub fn csv(r: &BenchResults) -> Option<String> {
    let rows = rows(r);
    if rows.is_empty() {
        return None;
    }
    let mut s = HEADER.join(",");
    s.push('\n');
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| super::csv::escape(c)).collect();
        s.push_str(&cells.join(","));
        s.push('\n');
    }
    Some(s)
}
