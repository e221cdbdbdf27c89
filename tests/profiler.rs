//! End-to-end tests of the profiler's traffic mixes, cost figures and capacity plan:
//! the real binary, on the default model for `--workload mixed` (small lengths) and on a
//! tiny dummy model for seed parity, custom distributions and `engine plan`.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run engine")
}

fn engine(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "engine {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&read(p)).expect("JSON parses")
}

fn tiny_model(dir: &Path) -> String {
    let path = dir.join("tiny.json");
    let cfg = r#"{"name":"tiny","config":{"model_type":"llama","vocab_size":300,"hidden_size":32,
      "intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
      "rms_norm_eps":1e-5,"max_position_embeddings":256,"bos_token_id":256,"eos_token_id":257}}"#;
    std::fs::write(&path, cfg).expect("write manifest");
    format!("dummy:{}", path.display())
}

/// `engine bench` on `model` (CPU, no roofline) writing into `dir`; its results.json.
fn bench_tiny(model: &str, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let d = dir.to_str().expect("utf-8");
    let mut args = vec![
        "bench",
        "--model",
        model,
        "--device",
        "cpu",
        "--no-roofline",
    ];
    args.extend_from_slice(&["--quiet", "--out", d]);
    args.extend_from_slice(extra);
    engine(&args);
    json(&dir.join("results.json"))
}

#[test]
fn mixed_workload_on_the_default_model_writes_use_case_rows_the_fit_and_costs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("out");
    // --length-scale 0.02 keeps the mix's shapes at a few dozen tokens per request.
    let out = engine(&[
        "bench",
        "--workload",
        "mixed",
        "--length-scale",
        "0.02",
        "--concurrency",
        "4",
        "--num-requests",
        "12",
        "--warmup",
        "0",
        "--no-roofline",
        "--quiet",
        "--gpu-cost-per-hour",
        "2",
        "--latency-budget",
        "600s",
        "--out",
        dir.to_str().expect("utf-8"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("per use case:") && stdout.contains("latency vs length"),
        "{stdout}"
    );
    let r = json(&dir.join("results.json"));
    let s = &r["configs"][0]["summary"];
    let rows = s["use_cases"].as_array().cloned().unwrap_or_default();
    assert!(!rows.is_empty(), "no use-case rows: {s}");
    let names = ["chat", "code", "rag", "long-form"];
    assert!(rows
        .iter()
        .all(|u| names.contains(&u["name"].as_str().unwrap_or(""))));
    let total: u64 = rows.iter().filter_map(|u| u["requests"].as_u64()).sum();
    assert_eq!(total, 12, "every request is in one row");
    let fit = &s["length_fit"];
    assert_eq!(fit["requests"].as_u64(), Some(12), "{fit}");
    assert!(fit["s_per_output_token"].is_number() && fit["r2"].is_number());
    let csv = read(&dir.join("summary.csv"));
    let header = csv.lines().next().unwrap_or_default();
    for col in [
        "workload",
        "fit_r2",
        "fit_s_per_output_tok",
        "usd_per_1m_output_tok",
    ] {
        assert!(
            header.split(',').any(|h| h == col),
            "{col} missing: {header}"
        );
    }
    let uc = read(&dir.join("use_cases.csv"));
    assert_eq!(uc.lines().count(), 1 + rows.len());
    let md = read(&dir.join("report.md"));
    assert!(md.contains("## Traffic") && md.contains("Latency vs length"));
    assert!(read(&dir.join("cost_vs_latency.svg")).contains("<title>"));
    // A generous budget holds the only load: $2/h over 4 users.
    let held = &r["analysis"][0]["cost"];
    assert_eq!(held["load"].as_f64(), Some(4.0), "{held}");
    assert_eq!(held["usd_per_user_hour"].as_f64(), Some(0.5));
}

/// (use case, prompt tokens, output tokens, arrival offset) of every request.
fn requests(r: &serde_json::Value) -> Vec<(String, u64, usize, f64)> {
    let run = &r["configs"][0]["runs"][0];
    let start = run["start_s"].as_f64().unwrap_or(0.0);
    run["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| {
            let t = &q["timeline"];
            (
                q["use_case"].as_str().unwrap_or("").to_string(),
                t["prompt_tokens"].as_u64().unwrap_or(0),
                t["token_times_s"].as_array().map_or(0, Vec::len),
                t["arrival_s"].as_f64().unwrap_or(0.0) - start,
            )
        })
        .collect()
}

#[test]
fn the_same_seed_sends_the_same_requests_at_the_same_times() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tiny_model(tmp.path());
    let bench = |name: &str, seed: &str| {
        let extra = [
            "--workload",
            "mixed",
            "--length-scale",
            "0.02",
            "--request-rate",
            "40",
            "--num-requests",
            "10",
            "--temperature",
            "0.8",
            "--seed",
            seed,
        ];
        requests(&bench_tiny(&model, &tmp.path().join(name), &extra))
    };
    let (a, b, c) = (bench("a", "3"), bench("b", "3"), bench("c", "4"));
    assert_eq!(a.len(), 10);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.0, x.1, x.2), (&y.0, y.1, y.2));
        assert!((x.3 - y.3).abs() < 1e-9, "arrivals {} vs {}", x.3, y.3);
    }
    let key = |v: &[(String, u64, usize, f64)]| -> Vec<(String, u64, usize)> {
        v.iter().map(|x| (x.0.clone(), x.1, x.2)).collect()
    };
    assert_ne!(key(&a), key(&c), "another seed, another workload");
}

#[test]
fn custom_distributions_draw_within_their_bounds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tiny_model(tmp.path());
    let lens = tmp.path().join("out_lens.txt");
    std::fs::write(&lens, "# output lengths\n3\n5 7\n").expect("write lengths");
    let out_dist = format!("file:{}", lens.display());
    let extra = ["--batch", "6", "--runs", "2", "--input-len-dist"];
    let mut extra = extra.to_vec();
    extra.extend_from_slice(&["uniform:min=4,max=12", "--output-len-dist", &out_dist]);
    let r = bench_tiny(&model, &tmp.path().join("custom"), &extra);
    let reqs = requests(&r);
    assert_eq!(reqs.len(), 6);
    assert!(reqs
        .iter()
        .all(|q| (4..=12).contains(&q.1) && [3, 5, 7].contains(&q.2)));
    assert!(
        reqs.iter().any(|q| q.1 != reqs[0].1),
        "lengths vary: {reqs:?}"
    );
    let label = r["configs"][0]["spec"]["workload"].as_str().unwrap_or("");
    assert!(label.contains("uniform(4..=12)"), "{label}");
}

#[test]
fn plan_gives_the_engines_block_count_and_says_what_is_planning_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tiny_model(tmp.path());
    let plan = engine(&[
        "plan",
        "--model",
        &model,
        "--device",
        "cpu",
        "--kv-cache-memory",
        "1MiB",
        "--json",
    ]);
    let p: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");
    let extra = ["--kv-cache-memory", "1MiB", "--batch", "1", "--runs", "1"];
    let mut extra = extra.to_vec();
    extra.extend_from_slice(&["--input-len", "8", "--output-len", "4"]);
    let r = bench_tiny(&model, &tmp.path().join("b"), &extra);
    let engine_blocks = r["configs"][0]["summary"]["num_blocks"].as_u64();
    // 1 MiB / (64 f32 values x 4 bytes x 16 tokens) = 256 blocks.
    assert_eq!(p["cache"]["num_blocks"].as_u64(), Some(256));
    assert_eq!(p["cache"]["num_blocks"].as_u64(), engine_blocks);

    let out = tmp.path().join("plan");
    let fp8 = engine(&[
        "plan",
        "--model",
        &model,
        "--gpu-memory",
        "8GiB",
        "--kv-cache-dtype",
        "fp8",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    let text = String::from_utf8_lossy(&fp8.stdout);
    assert!(
        text.contains("planning only") && text.contains("concurrency cliff"),
        "{text}"
    );
    assert!(read(&out.join("plan.svg")).contains("<title>"));
    assert!(json(&out.join("plan.json"))["rows"].is_array());
}

#[test]
fn bad_traffic_cost_and_plan_flags_give_one_clear_error() {
    // Exit 2: a flag value its parser rejects (clap's usage error); 1: a value that
    // parses but is wrong for the run.
    let cases: &[(&[&str], &str, i32)] = &[
        (&["plan", "--kv-cache-dtype", "fp4"], "fp4", 1),
        (
            &["bench", "--batch", "1", "--workload", "poetry"],
            "poetry",
            1,
        ),
        (
            &["bench", "--batch", "1", "--input-len-dist", "normal:mean=5"],
            "`std` is required",
            1,
        ),
        (
            &["bench", "--batch", "1", "--gpu-cost-per-hour", "0"],
            "gpu-cost-per-hour",
            2,
        ),
        (
            &["bench", "--batch", "1", "--length-scale", "0.5"],
            "--length-scale",
            1,
        ),
    ];
    for (args, needle, code) in cases {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(errors[0].contains(needle), "{args:?}: {}", errors[0]);
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
