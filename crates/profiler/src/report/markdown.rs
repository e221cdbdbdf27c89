//! report.md: the environment, the ceilings, the table, the analysis, the plots and the
//! definitions a reader needs to interpret them.

use super::table;
use crate::result::BenchResults;
use std::fmt::Write;

fn gib(b: f64) -> String {
    format!("{:.2}", b / 1e9)
}

/// The Markdown text; `plots` are the SVG file names written beside it.
pub fn render(r: &BenchResults, plots: &[&str]) -> String {
    let e = &r.environment;
    let mut s = String::from("# Benchmark report\n\n## Environment\n\n");
    let rows = [
        ("model", format!("{} ({})", e.model, e.model_source)),
        (
            "parameters / weight bytes",
            format!(
                "{} / {}",
                e.model_facts.num_parameters, e.model_facts.weight_bytes
            ),
        ),
        ("weight bytes by type", weight_types(&e.model_facts)),
        ("dtype", e.dtype.clone()),
        ("kernels", e.kernels.clone()),
        ("decode graphs", graphs_line(e.graphs.as_ref())),
        (
            "step overlap",
            match e.overlap {
                true => "on: step n+1 scheduled and launched while step n runs".into(),
                false => "off: each step finishes before the next is scheduled".into(),
            },
        ),
        ("device", format!("{} ({})", e.device, e.device_name)),
        ("driver", e.driver.clone()),
        ("CPU", format!("{} ({} logical CPUs)", e.cpu, e.num_cpus)),
        ("engine config", e.engine_config.to_string()),
        ("git commit", e.git_commit.clone()),
        ("date (UTC)", e.date.clone()),
        ("command", format!("`{}`", e.command_line)),
        (
            "runs / warm-up",
            format!(
                "{} measured, {} warm-up per config (excluded)",
                r.settings.runs, r.settings.warmup
            ),
        ),
        ("percentiles", r.settings.percentile_method.clone()),
        ("total wall time", format!("{:.1} s", r.total_wall_s)),
    ];
    s.push_str("| | |\n|---|---|\n");
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {} |", v.replace('|', "\\|"));
    }
    if let Some(c) = &r.ceilings {
        let _ = writeln!(
            s,
            "\n## Ceilings (measured on this machine)\n\nmemory bandwidth {} GB/s (copy {} GB/s, GEMV read {} GB/s, {} MiB buffer), matmul {:.1} GFLOP/s ({n}x{n} {}), best of {} reps, measured {}.",
            gib(c.mem_bandwidth_bytes_per_s()),
            gib(c.copy_bytes_per_s),
            gib(c.gemv_read_bytes_per_s),
            c.copy_buffer_bytes >> 20,
            c.matmul_flops_per_s / 1e9,
            c.dtype,
            c.reps,
            c.measured_at,
            n = c.matmul_n
        );
    }
    if let Some(ep) = &e.endpoint {
        let _ = writeln!(
            s,
            "\n## Measured over HTTP\n\n`{}` ({} API, model `{}`). Times are the client's: arrival = request sent, token times = streamed chunk arrivals ({}). Not measurable from a client, left empty: {}.",
            ep.url,
            ep.api,
            ep.served_model,
            ep.token_counts,
            ep.not_measured.join("; ")
        );
    }
    s.push_str("\n## Results\n\nTimes in ms; throughputs in tok/s; `*_floor_pct` = floor / measured (100 % = at the hardware limit). Every column is in summary.csv; every run, request and step in results.json.\n\n");
    s.push_str(&table::render_markdown(r));
    s.push_str("\n## Analysis\n\n");
    let _ = writeln!(s, "Knee: {}.\n", crate::analysis::KNEE_METHOD);
    for line in table::analysis_lines(r)
        .into_iter()
        .chain(crate::cost::lines(r))
    {
        let _ = writeln!(s, "- {}", line.trim());
    }
    s.push_str(&super::traffic::markdown(r));
    s.push_str("\n## Plots\n\n");
    for p in plots {
        let _ = writeln!(s, "![{p}]({p})\n");
    }
    s.push_str("Definitions: docs/metrics.md in the engine's repository.\n");
    s
}

/// The environment table's "decode graphs" cell.
fn graphs_line(g: Option<&engine_core::graphs::GraphReport>) -> String {
    match g {
        None => "off: every step eager".into(),
        Some(g) => format!(
            "{} for batch sizes {:?} (contexts up to {}): {:.2} s, {:.1} MiB{}",
            g.mode,
            g.buckets,
            g.max_context,
            g.capture_s,
            g.capture_bytes as f64 / (1u64 << 20) as f64,
            match g.failed.is_empty() {
                true => String::new(),
                false => format!("; failed: {}", g.failed.join("; ")),
            }
        ),
    }
}

/// `q4_1 84.9 MB, f32 ...`, largest first (empty in results that predate it).
fn weight_types(m: &crate::result::ModelFacts) -> String {
    let mut v: Vec<_> = m.weight_bytes_by_type.iter().collect();
    v.sort_by_key(|(_, b)| std::cmp::Reverse(**b));
    let types: Vec<String> = v
        .iter()
        .map(|(t, b)| format!("{t} {:.1} MB", **b as f64 / 1e6))
        .collect();
    match m.weight_bytes_read {
        0 => types.join(", "),
        r => format!(
            "{}; read per decode step {:.1} MB",
            types.join(", "),
            r as f64 / 1e6
        ),
    }
}
