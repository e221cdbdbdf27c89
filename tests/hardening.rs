//! Adversarial inputs through the `engine` binary: hostile model files, configs, chat
//! templates, flags and request lines. Each case must end (within a minute even on a
//! loaded machine; they take well under a second each when the machine is idle) with a
//! non-zero exit, exactly one `error:` line naming the input and what is wrong, and no
//! panic or backtrace; a bad request line must fail alone, the rest of the job intact.
//! Files are built here byte by byte (nothing big is committed). The model-file cases
//! are in `hardening/files.rs`; the benign cases (BOM, CRLF) assert success.

#[path = "hardening/files.rs"]
mod files;
#[path = "hardening/model.rs"]
mod model;
mod support;

pub use support::assert_rejected;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longer than any case needs, even on a machine shared with builds: catches hangs.
const DEADLINE: Duration = Duration::from_secs(60);

/// Run `engine ARGS`, killing it at the deadline.
pub fn engine(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env("HF_HUB_OFFLINE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start engine");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("engine {args:?} did not end within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn generate_with(model: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--prompt",
        "hi",
        "--max-tokens",
        "2",
    ];
    args.extend_from_slice(extra);
    engine(&args)
}

/// Usage errors: clap exits 2 and names the flag and the value.
#[test]
fn numeric_flags_are_range_checked_where_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let m = support::tiny_manifest(dir.path(), 32);
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["bench", "--batch", "1", "--input-len", "0"],
            "--input-len",
            "at least 1",
        ),
        (&["bench", "--batch", "1,0,8"], "--batch", "at least 1"),
        (
            &["bench", "--batch", "1,100000"],
            "--batch",
            "at most 65536",
        ),
        (
            &["bench", "--request-rate", "nan"],
            "--request-rate",
            "finite",
        ),
        (
            &["bench", "--request-rate", "inf"],
            "--request-rate",
            "finite",
        ),
        (
            &["bench", "--concurrency", "2.5"],
            "--concurrency",
            "non-negative integer",
        ),
        (
            &["bench", "--batch", "1", "--output-len", "1,x"],
            "--output-len",
            "`x`",
        ),
        (
            &["bench", "--batch", "1", "--temperature", "NaN"],
            "--temperature",
            "finite",
        ),
        (
            &["bench", "--batch", "1", "--warmup", "99999"],
            "--warmup",
            "at most 1000",
        ),
        (
            &["generate", "--prompt", "x", "--max-tokens", "0"],
            "--max-tokens",
            "at least 1",
        ),
        (
            &[
                "generate",
                "--prompt",
                "x",
                "--max-tokens",
                "18446744073709551615",
            ],
            "--max-tokens",
            "at most 134217728",
        ),
        (
            &["generate", "--prompt", "x", "--temperature", "nan"],
            "--temperature",
            "nan",
        ),
        (
            &["generate", "--prompt", "x", "--temperature", "-1"],
            "--temperature",
            "-1",
        ),
        (
            &["generate", "--prompt", "x", "--top-p", "0"],
            "--top-p",
            "(0, 1]",
        ),
        (
            &["generate", "--prompt", "x", "--min-p", "2"],
            "--min-p",
            "[0, 1]",
        ),
        (
            &["generate", "--prompt", "x", "--stop", ""],
            "--stop",
            "empty",
        ),
        (
            &["generate", "--prompt", "x", "--block-size", "0"],
            "--block-size",
            "at least 1",
        ),
        (
            &["generate", "--prompt", "x", "--block-size", "99999"],
            "--block-size",
            "at most",
        ),
        (
            &["generate", "--prompt", "x", "--num-blocks", "0"],
            "--num-blocks",
            "at least 1",
        ),
        (
            &[
                "generate",
                "--prompt",
                "x",
                "--gpu-memory-utilization",
                "1.5",
            ],
            "--gpu-memory-utilization",
            "(0, 1]",
        ),
        (
            &["generate", "--prompt", "x", "--kv-cache-memory", "0.1B"],
            "--kv-cache-memory",
            "1 byte",
        ),
        (
            &["generate", "--prompt", "x", "--max-num-seqs", "0"],
            "--max-num-seqs",
            "at least 1",
        ),
        (
            &[
                "run",
                "--input",
                "i",
                "--output",
                "o",
                "--max-in-flight",
                "0",
            ],
            "--max-in-flight",
            "at least 1",
        ),
        (
            &["run", "--input", "i", "--output", "o", "--logprobs", "50"],
            "--logprobs",
            "at most 20",
        ),
        (
            &["info", "--context-len", "0"],
            "--context-len",
            "at least 1",
        ),
    ];
    for (args, flag, why) in cases {
        let mut a = args.to_vec();
        a.extend(["--model", &m]);
        assert_rejected(&engine(&a), 2, &[flag, why]);
    }
}

/// max_tokens beyond the context: the message users know, with checked arithmetic.
#[test]
fn max_tokens_beyond_the_context_is_rejected_with_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let m = support::tiny_manifest(dir.path(), 32);
    let out = engine(&[
        "generate",
        "--model",
        &m,
        "--prompt",
        "hi",
        "--max-tokens",
        "100",
    ]);
    let msg = "this model's context is 32 tokens; the prompt has 3 and max_tokens asks for 100";
    assert_rejected(&out, 1, &[msg]);
    // The cache flags: less than one block, or more blocks than memory.
    let out = generate_with(&m, &["--kv-cache-memory", "1KiB"]);
    assert_rejected(
        &out,
        1,
        &[
            "kv_cache_memory 1024 bytes",
            "smaller than one KV-cache block",
        ],
    );
    let out = generate_with(&m, &["--num-blocks", "16777216", "--block-size", "1024"]);
    assert_rejected(&out, 1, &["KV cache of 16777216 blocks", "GB available"]);
}

/// A hostile chat template in a GGUF file ends quickly with the limit it hit.
#[test]
fn chat_templates_run_under_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "budget of",
        ),
        (
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "recursion",
        ),
        (
            "{% for i in range(10000) %}{{ 'x' * 100000 }}{% endfor %}",
            "over the limit of",
        ),
        (
            "{{ raise_exception('roles must alternate') }}",
            "roles must alternate",
        ),
        ("{% for m in messages %}", "cannot parse"),
    ];
    for (i, (template, why)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("t{i}.gguf"));
        model::write_gguf(&path, |s| s.set_str("tokenizer.chat_template", template));
        let p = path.to_str().unwrap();
        let out = engine(&[
            "generate",
            "--model",
            p,
            "--prompt",
            "hi",
            "--chat",
            "--max-tokens",
            "1",
        ]);
        assert_rejected(&out, 1, &["chat template", why]);
    }
}

/// Write `lines` (raw bytes) as the input of a job on the tiny model; run it.
fn run_job(dir: &Path, input: &[u8]) -> (Output, Vec<Value>, Vec<Value>) {
    let m = support::tiny_manifest(dir, 32);
    let (i, o) = (dir.join("in.jsonl"), dir.join("out.jsonl"));
    std::fs::write(&i, input).unwrap();
    let (i, o) = (i.to_str().unwrap(), o.to_str().unwrap());
    let out = engine(&[
        "run",
        "--model",
        &m,
        "--input",
        i,
        "--output",
        o,
        "--max-tokens",
        "2",
        "--no-progress",
        "--overwrite",
    ]);
    let read = |p: &Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    (
        out,
        read(&dir.join("out.jsonl")),
        read(&dir.join("out.errors.jsonl")),
    )
}

/// Each bad line fails alone (exit 2, one error record naming its line and what is
/// wrong); the good lines around it are all answered.
#[test]
fn bad_request_lines_fail_alone() {
    let long = format!(r#"{{"id":"big","prompt":"{}"}}"#, "x".repeat(17 << 20));
    let deep = format!(
        r#"{{"id":"deep","prompt":"a","stop":{}"x"{}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let stops: Vec<String> = (0..100).map(|i| format!("\"s{i}\"")).collect();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (long.into_bytes(), "the line has 17825816 bytes (at most 16777216)"),
        (deep.into_bytes(), "recursion limit exceeded"),
        (b"{\"id\":\"u\",\"prompt\":\"\xff\xfe\"}".to_vec(), "not valid UTF-8"),
        (br#"{"id":"m","prompt":"hi","max_tokens":18446744073709551615}"#.to_vec(),
            "this model's context is 32 tokens; the prompt has 3 and max_tokens asks for 18446744073709551615"),
        (br#"{"id":"t","prompt":"hi","temperature":1e39}"#.to_vec(), "temperature must be finite"),
        (format!(r#"{{"id":"s","prompt":"hi","stop":[{}]}}"#, stops.join(",")).into_bytes(), "100 stop strings"),
        (br#"{"id":"f","prompt":"hi","max_tokens":2.5}"#.to_vec(), "invalid request"),
        (br#"{"id":"x","prompt":"hi","n":4}"#.to_vec(), "unknown field `n`"),
        (br#"{"id":{"a":1},"prompt":"hi"}"#.to_vec(), "`id` must be a string or a number"),
    ];
    for (bad, why) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut input = b"{\"id\":\"a\",\"prompt\":\"hi\"}\n".to_vec();
        input.extend_from_slice(&bad);
        input.extend_from_slice(b"\n{\"id\":\"b\",\"prompt\":\"yo\"}\n");
        let (out, results, errors) = run_job(dir.path(), &input);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{why}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(results.len(), 2, "{why}: the good lines are answered");
        assert_eq!(errors.len(), 1, "{why}: {errors:?}");
        assert_eq!(errors[0]["line"], 2);
        let reason = errors[0]["error"].as_str().unwrap();
        assert!(reason.contains(why), "{reason} lacks {why}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (out, _, errors) = run_job(dir.path(), b"\xff\xfe{\0\"\0i\0d\0\"\0");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        errors[0]["error"].as_str().unwrap().contains("UTF-16"),
        "{errors:?}"
    );
}

/// A UTF-8 byte-order mark and CRLF line endings are fine.
#[test]
fn bom_and_crlf_input_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let input = b"\xEF\xBB\xBF{\"id\":\"a\",\"prompt\":\"hi\"}\r\n{\"id\":\"b\",\"prompt\":\"yo\"}\r\n\r\n{\"id\":\"c\",\"prompt\":\"x\"}";
    let (out, results, errors) = run_job(dir.path(), input);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(errors.is_empty(), "{errors:?}");
    let mut ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c"]);
}
