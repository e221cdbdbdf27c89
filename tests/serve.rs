//! End-to-end tests of `engine serve` on the default model, with real clients: the
//! official `openai` Python package (installed from PyPI into a venv under the cache
//! directory on first use; the scripts are in tests/serve/) and `engine bench
//! --endpoint`. One server runs at a time (they share the machine's cores, and one test
//! compares timings).
//!
//! - completions and chat, streamed and not, equal `engine generate`'s greedy text;
//! - bad requests get clear 400s (404 for an unknown model) and the server keeps serving;
//! - 200 concurrent streaming clients against a tiny KV cache and waiting queue: each
//!   completes with its text served alone or gets a clean 429; /metrics agrees; KV
//!   blocks return to zero;
//! - clients killed mid-stream are aborted and their blocks freed;
//! - --request-timeout aborts and says so; SIGTERM drains in-flight requests;
//! - `engine bench --endpoint` against the in-process bench on the same workload: every
//!   request served, `engine report A B` shows what serving adds; the ITL p50 ratio and
//!   the TTFT difference are printed, and asserted (ITL within 10 %) only by
//!   benches/serve-overhead.sh (`ENGINE_SERVE_OVERHEAD_CHECK=1`): a timing target on a
//!   shared CI machine would fail on other jobs' load, not on serving.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;
use support::default_model;

const MODEL: &str = "smollm2-135m";

/// One server at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn engine(args: &[&str]) -> Output {
    engine_with(args, &[])
}

fn engine_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run engine")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Python with the `openai` package: a venv under the cache directory, made once
/// (in a scratch directory renamed into place, so concurrent test runs do not clash).
fn python() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let venv = engine_model::paths::cache_dir()
        .join("venv")
        .join("serve-tests");
    let py = venv.join("bin").join("python");
    let has_openai = |py: &Path| {
        Command::new(py)
            .args(["-c", "import openai"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_openai(&py) {
        return py;
    }
    let scratch = venv.with_extension(format!("tmp-{}", std::process::id()));
    let base = std::env::var("ENGINE_PYTHON").unwrap_or_else(|_| "python3".into());
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    eprintln!("creating {} with the openai package (pip)", venv.display());
    run(
        Command::new(&base).arg("-m").arg("venv").arg(&scratch),
        "python3 -m venv (Debian: apt-get install python3-venv)",
    );
    let spy = scratch.join("bin").join("python");
    run(
        Command::new(&spy).args(["-m", "pip", "install", "--quiet", "openai>=1.40"]),
        "pip install openai",
    );
    if std::fs::rename(&scratch, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&scratch); // another run made it first
    }
    assert!(has_openai(&py), "{} has no openai package", py.display());
    py
}

/// Run tests/serve/SCRIPT with ARGS; its last stdout line is a JSON summary.
fn script(name: &str, args: &[&str]) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/serve");
    let out = Command::new(python())
        .arg(dir.join(name))
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed:\n{}\nstdout: {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{name}: {}", stdout.trim());
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON summary")
}

/// `engine serve` on the default model and a free port, killed when dropped.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, &[])
    }

    fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let gguf = default_model();
        let mut child = Command::new(env!("CARGO_BIN_EXE_engine"))
            .envs(env.iter().copied())
            .args([
                "serve",
                "--port",
                "0",
                "--served-model-name",
                MODEL,
                "--model",
            ])
            .arg(&gguf)
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start engine serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split(" on ").nth(1).and_then(|r| r.split(' ').next()) {
                    let _ = tx.send(url.to_string());
                }
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(300))
            .unwrap_or_else(|_| {
                panic!(
                    "engine serve did not start:\n{}",
                    log.lock().unwrap_or_else(|e| e.into_inner())
                )
            });
        Self { child, url, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        let st = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(st.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP/1.1 exchange: (status, body).
fn http(url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn metric(url: &str, name: &str) -> f64 {
    let (_, text) = http(url, "GET", "/metrics", "");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

fn generate(prompt: &str, chat: bool, max_tokens: usize) -> String {
    let gguf = default_model();
    let n = max_tokens.to_string();
    let mut args = vec![
        "generate",
        "--model",
        gguf.to_str().unwrap(),
        "--prompt",
        prompt,
        "--temperature",
        "0",
        "--max-tokens",
        &n,
    ];
    if chat {
        args.push("--chat");
    }
    let text = ok(engine(&args), "engine generate");
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

#[test]
fn openai_client_completions_and_chat_equal_generate() {
    let _g = serial();
    let (p, q, n) = ("The capital of France is", "What is 2+2?", 12);
    let expected = serde_json::json!({
        "max_tokens": n,
        "completion": {"prompt": p, "text": generate(p, false, n)},
        "chat": {"prompt": q, "text": generate(q, true, n)},
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("expected.json");
    std::fs::write(&path, expected.to_string()).unwrap();
    let server = Server::start(&[]);
    let s = script("basic.py", &[&server.url, MODEL, path.to_str().unwrap()]);
    assert_eq!(s["completion_tokens"], n);
}

#[test]
fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let _g = serial();
    let server = Server::start(&[]);
    let s = script("bad_requests.py", &[&server.url, MODEL]);
    assert_eq!(s["errors"], 12);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn two_hundred_streaming_clients_complete_or_get_a_clean_429() {
    let _g = serial();
    // 6 blocks of 16 tokens hold about 3 requests of ~6 + 16 tokens: preemption and a
    // full 8-slot waiting queue under a 200-client burst.
    let server = Server::start(&["--num-blocks", "6", "--max-waiting", "8"]);
    let s = script("overload.py", &[&server.url, MODEL, "200"]);
    assert_eq!(
        s["ok"].as_f64().unwrap() + s["rejected_429"].as_f64().unwrap(),
        200.0
    );
}

#[test]
fn killed_clients_are_aborted_and_their_blocks_freed() {
    let _g = serial();
    let server = Server::start(&[]);
    let s = script("kill_clients.py", &[&server.url, MODEL, "4"]);
    assert_eq!(s["aborted"], 4.0);
}

#[test]
fn a_request_past_the_timeout_is_aborted_and_says_so() {
    let _g = serial();
    let server = Server::start(&["--request-timeout", "1s"]);
    let body =
        r#"{"prompt":"Tell me a long story.","max_tokens":2000,"temperature":0,"ignore_eos":true}"#;
    let t0 = Instant::now();
    let (status, text) = http(&server.url, "POST", "/v1/completions", body);
    assert_eq!(status, 504, "{text}");
    assert!(t0.elapsed() < Duration::from_secs(30));
    let v: Value = serde_json::from_str(&text).expect("JSON error body");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("--request-timeout of 1s"), "{msg}");
    assert_eq!(
        metric(&server.url, "engine_requests_total{outcome=\"timeout\"}"),
        1.0
    );
    assert_eq!(metric(&server.url, "engine_kv_cache_blocks_in_use"), 0.0);
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits() {
    let _g = serial();
    let mut server = Server::start(&[]);
    // A second server on the same port fails at once, naming the address.
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let busy = engine(&["serve", "--port", &port, "--model", "dummy:smollm2-135m"]);
    let err = String::from_utf8_lossy(&busy.stderr);
    assert!(
        !busy.status.success() && err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );

    let url = server.url.clone();
    let body = r#"{"prompt":"Tell me a story.","max_tokens":24,"temperature":0,"ignore_eos":true}"#;
    let client = std::thread::spawn(move || http(&url, "POST", "/v1/completions", body));
    let t0 = Instant::now();
    while metric(&server.url, "engine_requests_in_flight") < 1.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the request never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.signal("-TERM");
    let (status, text) = client.join().expect("client");
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 24, "{text}");
    let exit = server.child.wait().expect("wait");
    assert!(exit.success(), "exit {exit:?}\n{}", server.log());
    let log = server.log();
    assert!(
        log.contains("draining in-flight requests") && log.contains("drained; stopped"),
        "{log}"
    );
}

/// (ITL p50, TTFT p50) in seconds, and the summary, of a saved run's only config.
fn itl_ttft(dir: &Path) -> (f64, f64, Value) {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let s = v["configs"][0]["summary"].clone();
    (
        s["itl_s"]["p50"].as_f64().unwrap(),
        s["ttft_s"]["p50"].as_f64().unwrap(),
        s,
    )
}

#[test]
fn endpoint_bench_matches_the_in_process_bench() {
    let _g = serial();
    // One compute thread on both sides. With candle's default (a worker per core plus
    // the caller), a 2-core machine runs 3-4 compute threads per engine, and every
    // wake-up of the server's HTTP thread or of the client stalls a fork-join of each
    // matmul: on a loaded 2-core box the server's own /metrics showed decode gaps 2x
    // the in-process ones while the HTTP path added nothing (docs/serving.md,
    // "Overhead"). One thread compares what serving adds, not how cores are shared.
    let one = [("RAYON_NUM_THREADS", "1")];
    let server = Server::start_with(&[], &one);
    let gguf = default_model();
    let dir = tempfile::tempdir().unwrap();
    let workload = [
        "--concurrency",
        "4",
        "--num-requests",
        "16",
        "--input-len",
        "32",
        "--output-len",
        "16",
        "--no-roofline",
        "--quiet",
    ];
    // Alternate in-process and endpoint runs, and take the median over three pairs of
    // the pair's ratio: on a shared machine, other load slows whole stretches of a run
    // (steps 3x slower for seconds), which one pair cannot tell from serving overhead;
    // a pair run back to back sees about the same load.
    let (mut itl_ratios, mut ttft_diffs) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let (a, b) = (
            dir.path().join(format!("A{round}")),
            dir.path().join(format!("B{round}")),
        );
        let mut args = vec![
            "bench",
            "--model",
            gguf.to_str().unwrap(),
            "--out",
            a.to_str().unwrap(),
        ];
        args.extend(workload);
        ok(engine_with(&args, &one), "in-process bench");
        let mut args = vec![
            "bench",
            "--endpoint",
            &server.url,
            "--model",
            gguf.to_str().unwrap(),
            "--out",
            b.to_str().unwrap(),
        ];
        args.extend(workload);
        ok(engine(&args), "endpoint bench");
        let ((ai, at, _), (bi, bt, bs)) = (itl_ttft(&a), itl_ttft(&b));
        assert_eq!(
            (bs["num_requests"].as_u64(), bs["output_tokens"].as_u64()),
            (Some(16), Some(256))
        );
        assert_eq!(
            (
                bs["failed"].as_u64(),
                bs["rejected"].as_u64(),
                bs["timed_out"].as_u64()
            ),
            (Some(0), Some(0), Some(0))
        );
        itl_ratios.push(bi / ai);
        ttft_diffs.push(bt - at);
        eprintln!(
            "pair {round}: ITL p50 in-process {:.1} ms, endpoint {:.1} ms (ratio {:.3}); TTFT p50 in-process {:.1} ms, endpoint {:.1} ms ({:+.1} ms)",
            ai * 1e3, bi * 1e3, bi / ai, at * 1e3, bt * 1e3, (bt - at) * 1e3
        );
        let report = ok(
            engine(&["report", a.to_str().unwrap(), b.to_str().unwrap()]),
            "engine report A B",
        );
        assert!(
            report.contains("B - A: what HTTP and serving add") && report.contains("TTFT p50 ms"),
            "{report}"
        );
        eprintln!("round {round}:\n{report}");
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (itl, ttft) = (median(&mut itl_ratios), median(&mut ttft_diffs));
    eprintln!(
        "median of the pairs: ITL p50 endpoint / in-process {itl:.3}; TTFT p50 serving overhead {:+.1} ms",
        ttft * 1e3
    );
    let within = (itl - 1.0).abs() <= 0.10;
    if std::env::var_os("ENGINE_SERVE_OVERHEAD_CHECK").is_some() {
        assert!(
            within,
            "decode ITL p50 through engine serve differs from in-process by more than 10 % (median ratio {itl:.3} of {itl_ratios:?})"
        );
    } else if !within {
        eprintln!(
            "note: ITL ratio {itl:.3} is outside 10 %; timing is asserted only by \
             benches/serve-overhead.sh on a quiet machine"
        );
    }
}
