//! The plots of a benchmark, built from saved results: throughput vs load, latency
//! percentiles vs load (log axes), throughput vs p50 latency with the knee, latency vs
//! output length, the E2E latency CDF, queue vs compute time, and a dashboard combining
//! them; a chart with nothing to show (one load, one output length) is left out.
//! Per-load charts show the first group (configs equal but for their load);
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

/// Every plot that has something to show (see [`Chart::has_something_to_show`]: a
/// single output length gives no latency-vs-length plot, a single load no per-load
/// curves) with its file name, a dashboard of them, and with a price the cost chart.
pub fn all(r: &BenchResults) -> Vec<(&'static str, String)> {
    let charts: Vec<(&'static str, Chart)> = [
        ("throughput_vs_batch.svg", throughput_vs_load(r)),
        ("latency_vs_batch.svg", latency_vs_load(r)),
        ("throughput_vs_latency.svg", throughput_vs_latency(r)),
        ("latency_vs_output_len.svg", latency_vs_output_len(r)),
        ("latency_cdf.svg", latency_cdf(r)),
        ("queue_vs_compute.svg", queue_vs_compute(r)),
    ]
    .into_iter()
    .filter(|(_, c)| c.has_something_to_show())
    .collect();
    let (w, h) = (640.0, 420.0);
    let mut out: Vec<(&'static str, String)> =
        charts.iter().map(|(n, c)| (*n, c.render(w, h))).collect();
    let cost = crate::cost::chart(r).map(|c| ("cost_vs_latency.svg", c.render(w, h)));
    if charts.is_empty() {
        out.extend(cost);
        return out;
    }
    let mut dash = String::new();
    for (i, (_, c)) in charts.iter().enumerate() {
        let (x, y) = ((i % 2) as f64 * w, 40.0 + (i / 2) as f64 * h);
        dash.push_str(&format!(
            "<svg x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\">\n{}</svg>\n",
            c.body(w, h)
        ));
    }
    let rows = charts.len().div_ceil(2) as f64;
    let (dw, dh) = (2.0 * w, 40.0 + rows * h);
    let title = format!(
        "Benchmark dashboard: {} on {}",
        r.environment.model, r.environment.device_name
    );
    let dashboard = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{dw}\" height=\"{dh}\" viewBox=\"0 0 {dw} {dh}\" font-family=\"sans-serif\">\n<title>{t}</title>\n<rect width=\"{dw}\" height=\"{dh}\" fill=\"white\"/>\n<text x=\"{}\" y=\"28\" text-anchor=\"middle\" font-size=\"20\" font-weight=\"bold\">{t}</text>\n{dash}</svg>\n",
        dw / 2.0,
        t = super::svg::esc(&title)
    );
    out.push(("dashboard.svg", dashboard));
    out.extend(cost);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::legend::Rect;
    use crate::report::svg::{Kind, Marker};

    fn attr(line: &str, name: &str) -> Option<f64> {
        let start = line.find(&format!(" {name}=\""))? + name.len() + 3;
        line[start..].split('"').next()?.parse().ok()
    }

    fn legend_box(svg: &str) -> Rect {
        let line = svg
            .lines()
            .find(|l| l.contains("class=\"legend\""))
            .expect("a legend");
        let get = |n| attr(line, n).expect("legend attribute");
        Rect {
            x: get("x"),
            y: get("y"),
            w: get("width"),
            h: get("height"),
        }
    }

    type Xy = (f64, f64);

    /// Every data point (circle centres and line vertices) and every line segment.
    fn data(svg: &str) -> (Vec<Xy>, Vec<(Xy, Xy)>) {
        let mut points = Vec::new();
        let mut segments = Vec::new();
        for l in svg.lines() {
            if l.contains("class=\"point\"") {
                points.push((attr(l, "cx").unwrap(), attr(l, "cy").unwrap()));
            }
            if l.contains("class=\"series\"") {
                let start = l.find("points=\"").unwrap() + 8;
                let v: Vec<(f64, f64)> = l[start..]
                    .split('"')
                    .next()
                    .unwrap()
                    .split(' ')
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect();
                segments.extend(v.windows(2).map(|w| (w[0], w[1])));
                points.extend(v);
            }
        }
        (points, segments)
    }

    fn assert_legend_hides_nothing(name: &str, svg: &str) {
        let b = legend_box(svg);
        let (points, segments) = data(svg);
        assert!(!points.is_empty(), "{name}: no data drawn");
        // Points are drawn with radius 3.
        let grown = Rect {
            x: b.x - 3.0,
            y: b.y - 3.0,
            w: b.w + 6.0,
            h: b.h + 6.0,
        };
        for p in &points {
            assert!(
                !grown.contains(*p),
                "{name}: point {p:?} under the legend {b:?}"
            );
        }
        for (a, z) in &segments {
            assert!(
                !b.crosses(*a, *z),
                "{name}: line {a:?}-{z:?} under the legend {b:?}"
            );
        }
    }

    fn lines(series: Vec<Series>) -> Chart {
        chart("t", "x", "y", (false, false), series)
    }

    #[test]
    fn no_legend_covers_a_point_or_a_line_in_any_report_plot() {
        let r = crate::report::tests::sample_results();
        for (name, svg) in all(&r) {
            if name != "dashboard.svg" && svg.contains("class=\"series\"") {
                assert_legend_hides_nothing(name, &svg);
            }
        }
    }

    #[test]
    fn a_legend_with_no_free_corner_moves_right_of_the_plot() {
        // Points in all four corners and lines across both diagonals.
        let c = lines(vec![
            Series::new("up", vec![(0.0, 0.0), (5.0, 5.0), (10.0, 10.0)]),
            Series::new("down", vec![(0.0, 10.0), (5.0, 5.0), (10.0, 0.0)]),
            Series::new("top", vec![(0.0, 9.5), (10.0, 9.5)]),
            Series::new("bottom", vec![(0.0, 0.5), (10.0, 0.5)]),
        ]);
        let svg = c.render(640.0, 420.0);
        assert_legend_hides_nothing("corners", &svg);
        let (points, _) = data(&svg);
        let right = points.iter().map(|p| p.0).fold(f64::MIN, f64::max);
        assert!(legend_box(&svg).x > right, "legend beside the plot");
    }

    #[test]
    fn a_single_point_and_a_knee_label_stay_visible() {
        // One output length (32) and its p50 E2E (1.9 s): the axes put the point 5 % in
        // from the left and 95 % up, where the legend used to sit.
        let mut c = lines(vec![Series::new("E2E p50", vec![(32.0, 1.9)])]);
        assert!(!c.has_something_to_show());
        assert_legend_hides_nothing("single point", &c.render(640.0, 420.0));
        c.series
            .push(Series::new("E2E p99", vec![(32.0, 2.0), (64.0, 3.0)]));
        c.markers.push(Marker {
            x: 32.0,
            y: 2.0,
            label: "knee: batch=1".into(),
        });
        assert!(c.has_something_to_show());
        assert_legend_hides_nothing("knee", &c.render(640.0, 420.0));
    }

    #[test]
    fn one_output_length_draws_no_latency_vs_length_plot() {
        let r = crate::report::tests::sample_results();
        let names: Vec<&str> = all(&r).into_iter().map(|(n, _)| n).collect();
        assert!(!names.contains(&"latency_vs_output_len.svg"), "{names:?}");
        assert!(names.contains(&"throughput_vs_batch.svg") && names.contains(&"dashboard.svg"));
        let mut r2 = r.clone();
        let mut shorter = r.configs[0].clone();
        shorter.spec.output_len = 5;
        r2.configs.push(shorter);
        let names: Vec<&str> = all(&r2).into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"latency_vs_output_len.svg"), "{names:?}");
        assert!(Chart {
            kind: Kind::StackedBars,
            categories: vec!["a".into()],
            ..lines(vec![])
        }
        .has_something_to_show());
    }

    #[test]
    fn long_titles_shrink_or_split_to_fit() {
        let long = "Latency percentiles vs concurrency (requests in flight) [in=128 out=128 T=0.7 top_p=0.95]";
        let mut s = String::new();
        crate::report::svg::title(&mut s, long, 640.0);
        for line in s.lines() {
            let size = attr(line, "font-size").unwrap();
            let text = line.split('>').nth(1).unwrap().split('<').next().unwrap();
            assert!(
                0.6 * size * text.chars().count() as f64 <= 624.0 || line.contains("textLength"),
                "{line}"
            );
        }
    }
}
