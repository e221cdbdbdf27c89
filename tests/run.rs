//! End-to-end tests of `engine run`, the resumable batch job: bad lines are recorded and
//! skipped, SIGKILL at random moments loses and duplicates nothing, shards partition the
//! ids, Ctrl-C stops cleanly, and resident memory does not grow with the input.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::default_model;

fn engine() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_engine"));
    c.env_remove("RUST_BACKTRACE");
    c
}

fn run_engine(args: &[String]) -> Output {
    engine().args(args).output().expect("run engine")
}

fn spawn_engine(args: &[String]) -> Child {
    engine()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn engine")
}

/// A tiny seeded llama with the byte-level tokenizer (prompts are bytes).
fn tiny_model(dir: &Path) -> String {
    support::tiny_manifest(dir, 256)
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// Every line of a JSONL file, which must be complete (newline-terminated, valid JSON).
fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends with a torn line",
        path.display()
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Results by id (canonical JSON text), asserting each id appears once; the values keep
/// what greedy decoding determines (no timings).
fn results(path: &Path) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for r in read_jsonl(path) {
        let key = r["id"].to_string();
        let v = json!([r["text"], r["output_tokens"], r["finish_reason"], r["line"]]);
        assert!(map.insert(key.clone(), v).is_none(), "duplicate id {key}");
    }
    map
}

/// Error records by line number, asserting each line appears once.
fn error_lines(path: &Path) -> BTreeMap<u64, String> {
    let mut map = BTreeMap::new();
    for r in read_jsonl(path) {
        let line = r["line"].as_u64().expect("line number");
        let reason = r["error"].as_str().expect("reason").to_string();
        assert!(map.insert(line, reason).is_none(), "line {line} twice");
    }
    map
}

fn args(model: &str, input: &Path, output: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["run", "--model", model, "--no-progress", "--input"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(input.display().to_string());
    a.push("--output".into());
    a.push(output.display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Good tiny-model lines with varied prompt lengths and output lengths; ids alternate
/// between strings and numbers.
fn tiny_lines(n: usize) -> Vec<String> {
    tiny_lines_with(n, |i| json!(1 + i % 6))
}

fn tiny_lines_with(n: usize, max_tokens: impl Fn(usize) -> Value) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = if i % 2 == 0 {
                json!(format!("r{i}"))
            } else {
                json!(i)
            };
            let prompt = format!("p{i} {}", "abcdefg".repeat(i % 5));
            json!({"id": id, "prompt": prompt, "max_tokens": max_tokens(i)}).to_string()
        })
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small deterministic RNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// The 20 bad lines of the 2,000-line job: (line, expected reason); `LONG n` stands for a
/// 9,000-word prompt with id n (the default model's context is 8,192 tokens).
const BAD_LINES: [(&str, &str); 20] = [
    (r#"{"id": "j0", "prompt": "#, "invalid JSON"),
    ("not json at all", "invalid JSON"),
    (r#"{"id": 1, }"#, "invalid JSON"),
    (r#"{'id': 'x', 'prompt': 'hi'}"#, "invalid JSON"),
    (r#"{"prompt": "no id"}"#, "missing `id`"),
    (r#"{"prompt": "no id", "max_tokens": 2}"#, "missing `id`"),
    (r#"{"messages": []}"#, "missing `id`"),
    (r#"{"id": "g-10", "prompt": "again"}"#, "duplicate id"),
    (r#"{"id": 11, "prompt": "again"}"#, "duplicate id"),
    (r#"{"id": "g-20", "prompt": "again"}"#, "duplicate id"),
    ("LONG \"long-0\"", "this model's context is"),
    ("LONG \"long-1\"", "this model's context is"),
    ("LONG 99999", "this model's context is"),
    (
        r#"{"id": "t", "prompt": "a", "temperature": -1}"#,
        "temperature must be >= 0",
    ),
    (
        r#"{"id": "p", "prompt": "a", "top_p": 2}"#,
        "top_p must be in (0, 1]",
    ),
    (
        r#"{"id": "m", "prompt": "a", "max_tokens": 0}"#,
        "max_tokens must be >= 1",
    ),
    (
        r#"{"id": "l", "prompt": "a", "logprobs": 50}"#,
        "logprobs must be <= 20",
    ),
    (r#"{"id": "np-0"}"#, "missing `prompt` or `messages`"),
    (
        r#"{"id": "np-1", "stop": "x"}"#,
        "missing `prompt` or `messages`",
    ),
    ("[1, 2, 3]", "not a JSON object"),
];

fn bad_line(text: &str) -> String {
    match text.strip_prefix("LONG ") {
        Some(id) => format!(r#"{{"id": {id}, "prompt": "{}"}}"#, "word ".repeat(9000)),
        None => text.to_string(),
    }
}

/// The 2,000-line job: its lines, the good ids, and line number -> expected reason.
fn default_job() -> (Vec<String>, BTreeSet<String>, BTreeMap<u64, &'static str>) {
    let (mut lines, mut good, mut errors) = (Vec::new(), BTreeSet::new(), BTreeMap::new());
    let mut bad = BAD_LINES.iter();
    for i in 0..2000usize {
        if i % 100 == 50 {
            let (text, why) = bad.next().expect("20 bad lines");
            lines.push(bad_line(text));
            errors.insert(i as u64 + 1, *why);
            continue;
        }
        let id = if i % 2 == 0 {
            json!(format!("g-{i}"))
        } else {
            json!(i)
        };
        let mut req = if i % 50 == 7 {
            json!({"id": id, "messages": [{"role": "user", "content": format!("Hi {i}")}]})
        } else {
            let prompt = ["Hello", "Hi there", "Yes"][i % 3];
            json!({"id": id, "prompt": prompt})
        };
        if i % 97 == 3 {
            req["logprobs"] = json!(3);
        }
        good.insert(id.to_string());
        lines.push(req.to_string());
    }
    (lines, good, errors)
}

/// One result line of the 2,000-line job is complete and consistent with its request.
fn check_result(r: &Value, lines: &[String]) {
    let n = r["output_tokens"].as_u64().unwrap();
    assert!((1..=2).contains(&n), "{r}");
    assert!(r["prompt_tokens"].as_u64().unwrap() > 0, "{r}");
    assert!(["stop", "length"].contains(&r["finish_reason"].as_str().unwrap()));
    let t = &r["timings"];
    let [q, ttft, e2e] = ["queue_s", "ttft_s", "e2e_s"].map(|k| t[k].as_f64().unwrap());
    assert!(0.0 <= q && q <= ttft && ttft <= e2e, "{t}");
    let line = r["line"].as_u64().unwrap() as usize;
    let wants = serde_json::from_str::<Value>(&lines[line - 1]).unwrap()["logprobs"] == 3;
    match &r["logprobs"] {
        Value::Array(lp) if wants => {
            assert_eq!(lp.len() as u64, n);
            let top = |t: &Value| t["top_logprobs"].as_array().map_or(0, Vec::len);
            assert!(lp.iter().all(|t| top(t) == 3), "{r}");
        }
        Value::Null => assert!(!wants, "logprobs missing: {r}"),
        other => panic!("unexpected logprobs {other}"),
    }
}

#[test]
fn two_thousand_lines_on_the_default_model_with_twenty_bad_ones() {
    let gguf = default_model();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    let (lines, good, expected_errors) = default_job();
    assert_eq!((good.len(), expected_errors.len()), (1980, 20));
    write_lines(&input, &lines);
    let a = args(
        gguf.to_str().unwrap(),
        &input,
        &output,
        &["--max-tokens", "2"],
    );
    let t0 = Instant::now();
    let out = run_engine(&a);
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("2,000-line job on the default model: {secs:.1} s");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("errors: 20 line(s) failed"), "{err}");

    let records = read_jsonl(&output);
    let ids: BTreeSet<String> = results(&output).into_keys().collect();
    assert_eq!(records.len(), 1980);
    assert_eq!(ids, good, "every good id exactly once");
    records.iter().for_each(|r| check_result(r, &lines));
    let errors = error_lines(&dir.path().join("out.errors.jsonl"));
    assert_eq!(errors.len(), 20);
    for (line, why) in &expected_errors {
        let got = errors.get(line).map_or("(not recorded)", String::as_str);
        assert!(got.contains(why), "line {line}: {got:?} lacks {why:?}");
    }

    // Run again: everything is done; nothing is written twice, failures still count.
    let before = std::fs::read(&output).unwrap();
    let again = run_engine(&a);
    assert_eq!(again.status.code(), Some(2), "stderr: {}", stderr(&again));
    assert_eq!(std::fs::read(&output).unwrap(), before);
    assert_eq!(error_lines(&dir.path().join("out.errors.jsonl")).len(), 20);
}

/// Every complete line of a possibly-torn output is valid JSON.
fn assert_valid_prefix(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    for l in complete.lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
    }
    complete.lines().count()
}

#[test]
fn sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let input = dir.path().join("in.jsonl");
    let mut lines = tiny_lines(10_000);
    lines[100] = "{broken".into();
    lines[2000] = r#"{"id": "r4", "prompt": "dup"}"#.into();
    write_lines(&input, &lines);
    let reference = dir.path().join("ref.jsonl");
    let t0 = Instant::now();
    let out = run_engine(&args(&model, &input, &reference, &[]));
    let full_s = t0.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    eprintln!("uninterrupted tiny job: {full_s:.2} s");

    let output = dir.path().join("out.jsonl");
    let a = args(&model, &input, &output, &[]);
    let mut rng = Rng(0x5eed_1234);
    let (mut kills, mut progress) = (0, Vec::new());
    while kills < 6 {
        let mut child = spawn_engine(&a);
        // 4-12 % of the uninterrupted run's time: six kills stop well before the end
        // however fast the machine (fixed sleeps let a fast one finish the job first).
        let full_ms = (full_s * 1e3) as u64;
        std::thread::sleep(Duration::from_millis(full_ms * (4 + rng.below(9)) / 100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before kill {kills}"
        );
        let status = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status();
        assert!(status.unwrap().success());
        child.wait().unwrap();
        kills += 1;
        progress.push(assert_valid_prefix(&output));
        if kills == 3 {
            // A crash in the middle of a write: the next run must cut this off.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&output)
                .unwrap();
            f.write_all(br#"{"id":"r0","text":"tor"#).unwrap();
        }
    }
    eprintln!("lines after each SIGKILL: {progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(progress[kills - 1] > 0, "no progress between kills");
    let out = run_engine(&a);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("resuming:"), "{err}");
    let (got, want) = (results(&output), results(&reference));
    assert_eq!(got.len(), 9_998);
    assert!(
        got == want,
        "resumed results differ from the uninterrupted run"
    );
    let errors = error_lines(&dir.path().join("out.errors.jsonl"));
    assert_eq!(errors.keys().copied().collect::<Vec<_>>(), vec![101, 2001]);
}

#[test]
fn shards_cover_every_id_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let input = dir.path().join("in.jsonl");
    let mut lines = tiny_lines(900);
    for i in [10, 20, 30, 40, 50] {
        lines[i * 17] = format!("not json {i}");
    }
    write_lines(&input, &lines);
    let reference = dir.path().join("all.jsonl");
    let out = run_engine(&args(&model, &input, &reference, &[]));
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let want = results(&reference);
    let (mut union, mut errors) = (BTreeMap::new(), BTreeMap::new());
    for i in 0..3 {
        let output = dir.path().join(format!("s{i}.jsonl"));
        let shard = format!("{i}/3");
        let out = run_engine(&args(&model, &input, &output, &["--shard", &shard]));
        assert!(matches!(out.status.code(), Some(0 | 2)), "{}", stderr(&out));
        let part = results(&output);
        assert!(part.len() > 200, "shard {shard} has {} ids", part.len());
        for (k, v) in part {
            assert!(union.insert(k.clone(), v).is_none(), "{k} in two shards");
        }
        for (line, why) in error_lines(&dir.path().join(format!("s{i}.errors.jsonl"))) {
            assert!(
                errors.insert(line, why).is_none(),
                "line {line} in two shards"
            );
        }
    }
    assert!(
        union == want,
        "the shards' union differs from the unsharded run"
    );
    assert_eq!(errors.len(), 5);
}

#[test]
fn ctrl_c_finishes_in_flight_requests_and_says_how_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (input, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    write_lines(&input, &tiny_lines(6000));
    let a = args(&model, &input, &output, &[]);
    let child = spawn_engine(&a);
    let start = Instant::now();
    while assert_valid_prefix(&output) < 100 {
        assert!(start.elapsed() < Duration::from_secs(60), "no output");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(status.unwrap().success());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "stderr: {err}");
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    let partial = results(&output).len();
    assert!(
        (100..6000).contains(&partial),
        "{partial} results after Ctrl-C"
    );
    let out = run_engine(&a);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(results(&output).len(), 6000);
}

/// Peak resident set (VmHWM) of a job, sampled until it exits.
fn peak_rss_kib(a: &[String]) -> u64 {
    let mut child = spawn_engine(a);
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            let hwm = s.lines().find_map(|l| l.strip_prefix("VmHWM:"));
            if let Some(kb) = hwm.and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            {
                peak = peak.max(kb);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    peak
}

#[test]
fn resident_memory_is_flat_from_2k_to_20k_lines() {
    // Growth allowed from 2,000 to 20,000 lines. Expected: the id map, about 30 bytes per
    // id (under 1 MiB here); the rest of memory is bounded by --max-in-flight and the
    // fixed KV cache, which is kept small so that its warm-up does not hide a leak.
    const BOUND_KIB: u64 = 8 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let mut peaks = Vec::new();
    for n in [2_000, 20_000] {
        let input = dir.path().join(format!("in{n}.jsonl"));
        write_lines(&input, &tiny_lines_with(n, |_| json!(1)));
        let output = dir.path().join(format!("out{n}.jsonl"));
        let extra = ["--num-blocks", "512"];
        let t0 = Instant::now();
        peaks.push(peak_rss_kib(&args(&model, &input, &output, &extra)));
        eprintln!(
            "{n} lines: peak RSS {} KiB in {:.1} s",
            peaks[peaks.len() - 1],
            t0.elapsed().as_secs_f64()
        );
        assert_eq!(results(&output).len(), n);
    }
    let growth = peaks[1].saturating_sub(peaks[0]);
    assert!(growth <= BOUND_KIB, "peak RSS grew {growth} KiB: {peaks:?}");
}

#[test]
fn help_documents_the_exit_codes() {
    let out = engine().args(["run", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("2 some lines failed"), "{text}");
    assert!(text.contains("--shard"), "{text}");
}
