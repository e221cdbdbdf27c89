//! Two saved runs side by side, configuration by configuration: each metric of A, of B,
//! the difference B - A and the ratio B / A. With A in-process and B through
//! `engine serve` on the same workload, B - A is what HTTP and serving add.
//! Configurations are matched by their label (load, lengths, sampling); those present
//! in only one run are listed, and when none match, [`why_nothing_matched`] says why
//! (e.g. a concurrency run against a rate run).

use crate::result::{BenchResults, ConfigResult};
use crate::spec::Load;
use crate::summary::ConfigSummary;

type Metric = (&'static str, fn(&ConfigSummary) -> Option<f64>);

/// The compared metrics; for latencies lower is better, for throughputs higher.
pub const METRICS: &[Metric] = &[
    ("output tok/s", |s| s.throughput()),
    ("prefill tok/s", |s| s.prefill_tok_per_s),
    ("decode step p50 ms", |s| {
        s.decode_step_s.p50.map(|v| v * 1e3)
    }),
    ("TTFT p50 ms", |s| s.ttft_s.p50.map(|v| v * 1e3)),
    ("TTFT p99 ms", |s| s.ttft_s.p99.map(|v| v * 1e3)),
    ("ITL p50 ms", |s| s.itl_s.p50.map(|v| v * 1e3)),
    ("ITL p99 ms", |s| s.itl_s.p99.map(|v| v * 1e3)),
    ("E2E p50 ms", |s| s.e2e_s.p50.map(|v| v * 1e3)),
    ("E2E p99 ms", |s| s.e2e_s.p99.map(|v| v * 1e3)),
];

/// One matched metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub config: String,
    pub metric: &'static str,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub ratio: Option<f64>,
}

fn find<'a>(r: &'a BenchResults, label: &str) -> Option<&'a ConfigResult> {
    r.configs.iter().find(|c| c.spec.label() == label)
}

/// Matched rows, and the labels present in only one of the runs.
pub fn compare(a: &BenchResults, b: &BenchResults) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut unmatched = Vec::new();
    for ca in &a.configs {
        let label = ca.spec.label();
        let Some(cb) = find(b, &label) else {
            unmatched.push(format!("{label} (only in A)"));
            continue;
        };
        for (name, f) in METRICS {
            let va = ca.summary.as_ref().and_then(f);
            let vb = cb.summary.as_ref().and_then(f);
            let ratio = match (va, vb) {
                (Some(x), Some(y)) if x != 0.0 => Some(y / x),
                _ => None,
            };
            rows.push(Row {
                config: label.clone(),
                metric: name,
                a: va,
                b: vb,
                ratio,
            });
        }
    }
    for cb in &b.configs {
        if find(a, &cb.spec.label()).is_none() {
            unmatched.push(format!("{} (only in B)", cb.spec.label()));
        }
    }
    (rows, unmatched)
}

fn kinds(r: &BenchResults) -> Vec<&'static str> {
    let mut k: Vec<&'static str> = Vec::new();
    for c in &r.configs {
        let name = match c.spec.load {
            Load::Batch { .. } => "static batches",
            Load::Concurrency { .. } => "closed-loop concurrency",
            Load::Rate { .. } => "open-loop request rates",
        };
        if !k.contains(&name) {
            k.push(name);
        }
    }
    k
}

fn labels(r: &BenchResults) -> String {
    let all: Vec<String> = r.configs.iter().map(|c| c.spec.label()).collect();
    match all.len() {
        0 => "no configs".into(),
        1..=3 => all.join("; "),
        n => format!("{}; ... ({n} configs)", all[..2].join("; ")),
    }
}

/// Why two runs share no configuration: different load kinds, else their labels.
pub fn why_nothing_matched(a: &BenchResults, b: &BenchResults) -> String {
    let (ka, kb) = (kinds(a), kinds(b));
    let what = if ka != kb {
        format!("A ran {}, B ran {}", ka.join(" and "), kb.join(" and "))
    } else {
        format!("A has {}; B has {}", labels(a), labels(b))
    };
    format!(
        "the runs have no configuration in common ({what}); configs match when their load, input and output lengths, temperature and top-p are all equal"
    )
}

/// The comparison as an aligned text table.
pub fn render(a: &BenchResults, b: &BenchResults) -> String {
    let (rows, unmatched) = compare(a, b);
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let side = |name: &str, r: &BenchResults| match &r.environment.endpoint {
        Some(e) => format!(
            "{name}: {} over HTTP ({} API, model {})\n",
            e.url, e.api, e.served_model
        ),
        None => format!(
            "{name}: in-process, {} on {}\n",
            r.environment.model, r.environment.device
        ),
    };
    let mut out = side("A", a) + &side("B", b);
    if a.environment.endpoint.is_none() && b.environment.endpoint.is_some() {
        out.push_str("B - A: what HTTP and serving add to the engine\n");
    }
    out.push_str(&format!(
        "{:<40} {:<20} {:>12} {:>12} {:>10} {:>8}\n",
        "config", "metric", "A", "B", "B-A", "B/A"
    ));
    for r in rows {
        let ratio = r.ratio.map_or("-".to_string(), |v| format!("{v:.3}"));
        let diff = match (r.a, r.b) {
            (Some(x), Some(y)) => format!("{:+.2}", y - x),
            _ => "-".to_string(),
        };
        out.push_str(&format!(
            "{:<40} {:<20} {:>12} {:>12} {:>10} {:>8}\n",
            r.config,
            r.metric,
            f(r.a),
            f(r.b),
            diff,
            ratio
        ));
    }
    for u in unmatched {
        out.push_str(&format!("unmatched: {u}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_b_over_a_and_unmatched_are_listed() {
        let a = crate::report::tests::sample_results();
        let mut b = a.clone();
        b.configs.remove(0);
        if let Some(s) = b.configs[0].summary.as_mut() {
            s.output_tok_per_s.mean = s.output_tok_per_s.mean.map(|v| v * 2.0);
        }
        let (rows, unmatched) = compare(&a, &b);
        let tput = rows.iter().find(|r| r.metric == "output tok/s").unwrap();
        assert!((tput.ratio.unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(unmatched.len(), 1);
        assert!(unmatched[0].contains("batch=1 ") && unmatched[0].contains("only in A"));
        let text = render(&a, &b);
        assert!(text.contains("B/A") && text.contains("B-A"));
        assert!(text.contains("A: in-process"), "{text}");
        // Throughput doubled: B - A is the first run's throughput, with a sign.
        let v = tput.a.unwrap();
        assert!(text.contains(&format!("{:+.2}", v)), "{text}");
    }

    #[test]
    fn nothing_in_common_is_explained() {
        let a = crate::report::tests::sample_results();
        let mut b = a.clone();
        for c in &mut b.configs {
            c.spec.load = Load::Rate {
                requests_per_s: 2.0,
            };
        }
        assert!(compare(&a, &b).0.is_empty());
        let why = why_nothing_matched(&a, &b);
        assert!(
            why.contains("A ran static batches, B ran open-loop request rates"),
            "{why}"
        );
        for c in &mut b.configs {
            c.spec.load = Load::Batch { size: 1 };
            c.spec.input_len = 999;
        }
        let why = why_nothing_matched(&a, &b);
        assert!(why.contains("in=10") && why.contains("in=999"), "{why}");
    }
}
