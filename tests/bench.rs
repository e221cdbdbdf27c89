//! End-to-end tests of `engine bench`, `engine report` and `engine device`: the real
//! binary on the default model (static batches, every output file checked), and a tiny
//! dummy model for serving modes, SLOs, budgets and a batch that does not fit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn engine(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run engine");
    assert!(
        out.status.success(),
        "engine {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every line of the table at the top of `text` (up to the analysis, whose first line
/// starts with `[`) fits in `width` columns.
fn assert_fits(text: &str, width: usize) {
    for line in text.lines().take_while(|l| !l.starts_with('[')) {
        assert!(
            line.chars().count() <= width,
            "line wider than {width}: {line:?}\n{text}"
        );
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const PLOTS: &[&str] = &[
    "throughput_vs_batch.svg",
    "latency_vs_batch.svg",
    "throughput_vs_latency.svg",
    "latency_vs_output_len.svg",
    "latency_cdf.svg",
    "queue_vs_compute.svg",
    "dashboard.svg",
];

/// Every file exists and is well-formed; returns the parsed results.json.
fn check_out_dir(dir: &Path, configs: usize) -> serde_json::Value {
    let results: serde_json::Value =
        serde_json::from_str(&read(&dir.join("results.json"))).expect("results.json parses");
    assert_eq!(results["configs"].as_array().map(Vec::len), Some(configs));
    for key in [
        "model",
        "dtype",
        "device_name",
        "driver",
        "cpu",
        "engine_config",
        "git_commit",
        "date",
    ] {
        assert!(
            !results["environment"][key].is_null(),
            "environment.{key} missing"
        );
    }
    let csv = read(&dir.join("summary.csv"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines.len(),
        1 + configs,
        "one header and one row per config:\n{csv}"
    );
    let width = lines[0].split(',').count();
    assert!(
        lines.iter().all(|l| l.split(',').count() == width),
        "ragged CSV:\n{csv}"
    );
    let md = read(&dir.join("report.md"));
    assert!(md.starts_with("# Benchmark report"));
    for p in PLOTS {
        // A plot with nothing to show is not drawn, and report.md shows what was.
        let drawn = dir.join(p).is_file();
        assert_eq!(drawn, md.contains(&format!("]({p})")), "{p} vs report.md");
        if !drawn {
            continue;
        }
        let svg = read(&dir.join(p));
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{p}"
        );
        assert!(svg.contains("<title>"), "{p} has no <title>");
        assert!(
            svg.contains("class=\"x-label\"") && svg.contains("class=\"y-label\""),
            "{p} lacks axis labels"
        );
        assert!(
            !svg.contains("NaN") && !svg.contains("inf"),
            "{p} has non-finite coordinates"
        );
    }
    results
}

#[test]
fn static_batches_on_the_default_model_write_every_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("out");
    let trace = tmp.path().join("trace.json");
    let d = dir.to_str().expect("utf-8 path");
    // The acceptance command uses --runs 3; two runs and no warm-up keep this test
    // within a few minutes on two CPU cores while exercising the same code.
    let out = engine(&[
        "bench",
        "--batch",
        "1,8,32",
        "--input-len",
        "64",
        "--output-len",
        "32",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--latency-budget",
        "2.5s",
        "--out",
        d,
        "--trace",
        trace.to_str().expect("utf-8"),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("knee (sweet spot)") && table.contains("latency budget 2.5s"),
        "{table}"
    );
    assert_fits(&table, 120);
    let r = check_out_dir(&dir, 3);
    assert_eq!(
        r["environment"]["driver"], "no GPU (CPU run)",
        "a CPU run has no driver to report"
    );
    assert!(dir.join("latency_vs_batch.svg").is_file());
    assert!(
        !dir.join("latency_vs_output_len.svg").exists(),
        "one output length: nothing to plot against it"
    );
    for c in r["configs"].as_array().into_iter().flatten() {
        assert_eq!(c["status"]["status"], "ok");
        assert_eq!(c["runs"].as_array().map(Vec::len), Some(2));
        let s = &c["summary"];
        assert!(s["prefill_tok_per_s"].as_f64().is_some_and(|v| v > 0.0));
        assert!(s["decode_step_s"]["p50"].as_f64().is_some_and(|v| v > 0.0));
        assert!(s["output_tok_per_s_cv"].is_number());
        assert!(s["overhead_s"]["count"].as_u64().is_some_and(|n| n > 0));
        assert!(c["roofline"]["decode_fraction"].is_number());
        let b = c["spec"]["load"]["size"].as_u64().unwrap_or(0);
        assert_eq!(
            s["output_tokens"].as_u64(),
            Some(2 * b * 32),
            "exactly --output-len tokens"
        );
        let steps = c["runs"][0]["steps"].as_array().map_or(0, Vec::len);
        assert!(steps >= 32, "every step is recorded");
    }
    let trace: serde_json::Value = serde_json::from_str(&read(&trace)).expect("trace parses");
    assert!(trace["traceEvents"]
        .as_array()
        .is_some_and(|e| e.len() > 100));

    // Re-render into a fresh directory, and compare the run with itself.
    let again = tmp.path().join("again");
    engine(&["report", d, "--out", again.to_str().expect("utf-8")]);
    for p in ["dashboard.svg", "summary.csv", "report.md"] {
        assert!(again.join(p).is_file(), "report did not write {p}");
    }
    // Without --out the run's own files stay as they are, unless --in-place.
    let summary = dir.join("summary.csv");
    std::fs::write(&summary, "marker").expect("write");
    let out = engine(&["report", d]);
    assert!(dir.join("report").join("report.md").is_file());
    assert_eq!(
        read(&summary),
        "marker",
        "report DIR rewrote DIR/summary.csv"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--in-place"));
    engine(&["report", d, "--in-place"]);
    assert!(
        read(&summary).starts_with("mode,load"),
        "--in-place rewrites"
    );
    let cmp = engine(&["report", d, d]);
    let cmp = String::from_utf8_lossy(&cmp.stdout);
    assert!(cmp.contains("B/A") && cmp.contains("1.000"), "{cmp}");
}

/// A tiny model: fast enough to exercise every serving path.
fn tiny_model(dir: &Path) -> String {
    let path = dir.join("tiny.json");
    let cfg = r#"{"name":"tiny","config":{"model_type":"llama","vocab_size":300,"hidden_size":32,
      "intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
      "rms_norm_eps":1e-5,"max_position_embeddings":256,"bos_token_id":256,"eos_token_id":257}}"#;
    std::fs::write(&path, cfg).expect("write manifest");
    format!("dummy:{}", path.display())
}

fn run_tiny(dir: &Path, model: &str, name: &str, extra: &[&str]) -> (serde_json::Value, PathBuf) {
    let out = dir.join(name);
    let mut args = vec![
        "bench",
        "--model",
        model,
        "--device",
        "cpu",
        "--input-len",
        "8",
        "--output-len",
        "4,8",
        "--quiet",
        "--out",
        out.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let run = engine(&args);
    assert_fits(&String::from_utf8_lossy(&run.stdout), 120);
    let n = serde_json::from_str::<serde_json::Value>(&read(&out.join("results.json")))
        .ok()
        .and_then(|v| v["configs"].as_array().map(Vec::len))
        .unwrap_or(0);
    (check_out_dir(&out, n), out)
}

#[test]
fn serving_modes_slo_budget_and_does_not_fit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tiny_model(tmp.path());
    let (r, _) = run_tiny(
        tmp.path(),
        &model,
        "closed",
        &[
            "--concurrency",
            "1,4",
            "--num-requests",
            "8",
            "--slo",
            "ttft=10s,itl=10s,e2e=10s",
            "--latency-budget",
            "10s",
            "--temperature",
            "0,0.7",
        ],
    );
    let configs = r["configs"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        configs.len(),
        2 * 2 * 2,
        "loads x output lengths x temperatures"
    );
    for c in &configs {
        let s = &c["summary"];
        assert_eq!(s["num_requests"].as_u64(), Some(8));
        assert_eq!(
            s["goodput"]["good_requests"].as_u64(),
            Some(8),
            "generous SLOs are met"
        );
        assert!(s["queue_s"]["count"].as_u64() == Some(8) && s["compute_s"]["p50"].is_number());
    }
    assert!(r["analysis"][0]["best_load_p50_within_budget"].is_number());

    let (r, open) = run_tiny(
        tmp.path(),
        &model,
        "open",
        &["--request-rate", "200", "--num-requests", "6"],
    );
    assert!(r["configs"][0]["summary"]["requests_per_s"]
        .as_f64()
        .is_some_and(|v| v > 0.0));

    // A concurrency run against a rate run: nothing to compare, said plainly.
    let closed = tmp.path().join("closed");
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["report"])
        .args([&closed, &open])
        .output()
        .expect("run engine");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "no table for nothing");
    assert!(
        stderr.starts_with("error: nothing to compare")
            && stderr.contains("A ran closed-loop concurrency, B ran open-loop request rates"),
        "{stderr}"
    );

    // 4 blocks of 16 tokens hold 4 sequences of 8 + 8 tokens, not 64.
    let (r, _) = run_tiny(
        tmp.path(),
        &model,
        "nofit",
        &["--batch", "1,64", "--num-blocks", "4", "--runs", "1"],
    );
    let statuses: Vec<&str> = r["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["status"]["status"].as_str())
        .collect();
    assert_eq!(statuses, ["ok", "does_not_fit", "ok", "does_not_fit"]);
}

#[test]
fn device_measures_and_caches_ceilings() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["device", "--device", "cpu", "--json"])
        .env("ENGINE_CACHE_DIR", tmp.path())
        .output()
        .expect("run engine");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON ceilings");
    assert!(c["copy_bytes_per_s"].as_f64().is_some_and(|v| v > 0.0));
    assert!(c["matmul_flops_per_s"].as_f64().is_some_and(|v| v > 0.0));
    let cached = std::fs::read_dir(tmp.path().join("device"))
        .expect("cache dir")
        .count();
    assert_eq!(cached, 1);
}
