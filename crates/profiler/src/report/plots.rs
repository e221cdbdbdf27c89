//! The plots of a benchmark, built from saved results: throughput vs load, latency
//! percentiles vs load (log axes), throughput vs p50 latency with the knee, latency vs
//! output length, the E2E latency CDF, queue vs compute time, and a dashboard combining
//! them. Per-load charts show the first group (configs equal but for their load);
//! throughput-latency and output-length charts show every group.

use super::svg::{Chart, Kind, Marker, Series};
use crate::metrics::ecdf;
use crate::result::{BenchResults, ConfigResult};
use crate::summary::ConfigSummary;

fn ok_configs(r: &BenchResults) -> impl Iterator<Item = (&ConfigResult, &ConfigSummary)> {
    r.configs
        .iter()
        .filter(|c| c.status.is_ok())
        .filter_map(|c| c.summary.as_ref().map(|s| (c, s)))
}

fn groups(r: &BenchResults) -> Vec<String> {
    let mut g: Vec<String> = Vec::new();
    for c in &r.configs {
        let k = c.spec.group_key();
        if !g.contains(&k) {
            g.push(k);
        }
    }
    g
}

/// Reads one point of a config for a chart.
type PointOf = dyn Fn(&ConfigResult, &ConfigSummary) -> Option<(f64, f64)>;
/// A named latency metric of a summary.
type LatencyOf = (&'static str, fn(&ConfigSummary) -> &crate::metrics::Summary);

fn series_by_group(r: &BenchResults, f: &PointOf) -> Vec<Series> {
    groups(r)
        .into_iter()
        .map(|g| {
            Series::new(
                g.clone(),
                ok_configs(r)
                    .filter(|(c, _)| c.spec.group_key() == g)
                    .filter_map(|(c, s)| f(c, s))
                    .collect(),
            )
        })
        .collect()
}

fn axis_name(r: &BenchResults) -> String {
    r.configs
        .first()
        .map_or("batch size", |c| c.spec.load.axis_name())
        .to_string()
}

fn chart(title: &str, x: &str, y: &str, log: (bool, bool), series: Vec<Series>) -> Chart {
    Chart {
        title: title.into(),
        x_label: x.into(),
        y_label: y.into(),
        x_log: log.0,
        y_log: log.1,
        kind: Kind::Lines,
        series,
        markers: vec![],
        categories: vec![],
    }
}

fn throughput_vs_load(r: &BenchResults) -> Chart {
    let s = series_by_group(r, &|c, s| Some((c.spec.load.value(), s.throughput()?)));
    let ax = axis_name(r);
    chart(
        &format!("Output throughput vs {ax}"),
        &format!("{ax} (log scale)"),
        "output throughput (tok/s)",
        (true, false),
        s,
    )
}

fn latency_vs_load(r: &BenchResults) -> Chart {
    let first = groups(r).into_iter().next().unwrap_or_default();
    let mut series = Vec::new();
    let metrics: [LatencyOf; 3] = [
        ("TTFT", |s| &s.ttft_s),
        ("ITL", |s| &s.itl_s),
        ("E2E", |s| &s.e2e_s),
    ];
    for (k, (name, get)) in metrics.into_iter().enumerate() {
        for (p, dash) in [(50, None), (90, Some("6 3")), (99, Some("2 3"))] {
            let points = ok_configs(r)
                .filter(|(c, _)| c.spec.group_key() == first)
                .filter_map(|(c, s)| Some((c.spec.load.value(), get(s).pct(p)? * 1e3)))
                .collect();
            series.push(Series {
                color: Some(k),
                dash,
                ..Series::new(format!("{name} p{p}"), points)
            });
        }
    }
    let ax = axis_name(r);
    chart(
        &format!("Latency percentiles vs {ax} [{first}]"),
        &format!("{ax} (log scale)"),
        "latency (ms, log scale)",
        (true, true),
        series,
    )
}

fn throughput_vs_latency(r: &BenchResults) -> Chart {
    let s = series_by_group(r, &|_, s| Some((s.e2e_s.p50?, s.throughput()?)));
    let mut c = chart(
        "Throughput vs p50 E2E latency (knee marked)",
        "p50 E2E latency (s)",
        "output throughput (tok/s)",
        (false, false),
        s,
    );
    for g in &r.analysis {
        let Some(k) = g.knee_load else { continue };
        let hit =
            ok_configs(r).find(|(c, _)| c.spec.group_key() == g.group && c.spec.load.value() == k);
        if let Some((cfg, s)) = hit {
            if let (Some(x), Some(y)) = (s.e2e_s.p50, s.throughput()) {
                c.markers.push(Marker {
                    x,
                    y,
                    label: format!("knee: {}", cfg.spec.load.label()),
                });
            }
        }
    }
    c
}

fn latency_vs_output_len(r: &BenchResults) -> Chart {
    let mut keys: Vec<String> = Vec::new();
    let key = |c: &ConfigResult| {
        format!(
            "{} in={} T={} top_p={}",
            c.spec.load.label(),
            c.spec.input_len,
            c.spec.temperature,
            c.spec.top_p
        )
    };
    for (c, _) in ok_configs(r) {
        if !keys.contains(&key(c)) {
            keys.push(key(c));
        }
    }
    let series = keys
        .into_iter()
        .map(|k| {
            let mut points: Vec<(f64, f64)> = ok_configs(r)
                .filter(|(c, _)| key(c) == k)
                .filter_map(|(c, s)| Some((c.spec.output_len as f64, s.e2e_s.p50?)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series::new(k, points)
        })
        .collect();
    chart(
        "p50 E2E latency vs output length",
        "output length (tokens)",
        "p50 E2E latency (s)",
        (false, false),
        series,
    )
}

fn latency_cdf(r: &BenchResults) -> Chart {
    let first = groups(r).into_iter().next().unwrap_or_default();
    let series = ok_configs(r)
        .filter(|(c, _)| c.spec.group_key() == first)
        .map(|(c, _)| {
            let e2e: Vec<f64> = c
                .runs
                .iter()
                .flat_map(|run| run.requests.iter())
                .filter_map(|q| q.timeline.e2e_s())
                .map(|v| v * 1e3)
                .collect();
            Series::new(c.spec.load.label(), ecdf(&e2e))
        })
        .collect();
    chart(
        &format!("E2E latency CDF [{first}]"),
        "E2E latency (ms)",
        "fraction of requests",
        (false, false),
        series,
    )
}

fn queue_vs_compute(r: &BenchResults) -> Chart {
    let first = groups(r).into_iter().next().unwrap_or_default();
    let cfgs: Vec<_> = ok_configs(r)
        .filter(|(c, _)| c.spec.group_key() == first)
        .collect();
    let bar = |f: fn(&ConfigSummary) -> Option<f64>| -> Vec<(f64, f64)> {
        cfgs.iter()
            .enumerate()
            .map(|(i, (_, s))| (i as f64, f(s).unwrap_or(0.0) * 1e3))
            .collect()
    };
    Chart {
        title: format!("Mean queue vs compute time per request [{first}]"),
        x_label: axis_name(r),
        y_label: "time per request (ms)".into(),
        x_log: false,
        y_log: false,
        kind: Kind::StackedBars,
        series: vec![
            Series::new(
                "queue (arrival -> first scheduled)",
                bar(|s| s.queue_s.mean),
            ),
            Series::new(
                "compute (first scheduled -> last token)",
                bar(|s| s.compute_s.mean),
            ),
        ],
        markers: vec![],
        categories: cfgs.iter().map(|(c, _)| c.spec.load.label()).collect(),
    }
}

/// Every plot with its file name, dashboard last.
pub fn all(r: &BenchResults) -> Vec<(&'static str, String)> {
    let charts = [
        ("throughput_vs_batch.svg", throughput_vs_load(r)),
        ("latency_vs_batch.svg", latency_vs_load(r)),
        ("throughput_vs_latency.svg", throughput_vs_latency(r)),
        ("latency_vs_output_len.svg", latency_vs_output_len(r)),
        ("latency_cdf.svg", latency_cdf(r)),
        ("queue_vs_compute.svg", queue_vs_compute(r)),
    ];
    let (w, h) = (640.0, 420.0);
    let mut dash = String::new();
    for (i, (_, c)) in charts.iter().enumerate() {
        let (x, y) = ((i % 2) as f64 * w, 40.0 + (i / 2) as f64 * h);
        dash.push_str(&format!(
            "<svg x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\">\n{}</svg>\n",
            c.body(w, h)
        ));
    }
    let (dw, dh) = (2.0 * w, 40.0 + 3.0 * h);
    let title = format!(
        "Benchmark dashboard: {} on {}",
        r.environment.model, r.environment.device_name
    );
    let dashboard = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{dw}\" height=\"{dh}\" viewBox=\"0 0 {dw} {dh}\" font-family=\"sans-serif\">\n<title>{t}</title>\n<rect width=\"{dw}\" height=\"{dh}\" fill=\"white\"/>\n<text x=\"{}\" y=\"28\" text-anchor=\"middle\" font-size=\"20\" font-weight=\"bold\">{t}</text>\n{dash}</svg>\n",
        dw / 2.0,
        t = super::svg::esc(&title)
    );
    let mut out: Vec<(&'static str, String)> =
        charts.iter().map(|(n, c)| (*n, c.render(w, h))).collect();
    out.push(("dashboard.svg", dashboard));
    if let Some(c) = crate::cost::chart(r) {
        out.push(("cost_vs_latency.svg", c.render(w, h)));
    }
    out
}
