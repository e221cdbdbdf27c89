//! End-to-end tests of sharded batch jobs: `engine run --shard auto` takes its part from
//! a scheduler's environment, and `engine run merge` joins the shards' outputs, proves
//! that each input line is accounted for exactly once, and names what is missing (a whole
//! shard), duplicated, torn or foreign.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Output};

/// Every variable `--shard auto` reads: cleared so that the host's own (a CI job inside
/// Slurm...) cannot leak in.
const SCHEDULER_VARS: [&str; 12] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_STEP_ID",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "JOB_COMPLETION_INDEX",
    "JOB_COMPLETIONS",
    "RANK",
    "WORLD_SIZE",
];

/// A temp dir holding the input, a tiny seeded model and the shards' files.
struct Job {
    dir: tempfile::TempDir,
    model: String,
}

impl Job {
    /// `n` requests (varied prompts and lengths), one line that is not JSON and one
    /// repeated id: both become error records.
    fn new(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = json!({"name": "tiny", "config": {"model_type": "llama", "vocab_size": 300,
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 256, "bos_token_id": 256, "eos_token_id": 257}});
        std::fs::write(dir.path().join("tiny.json"), cfg.to_string()).unwrap();
        let mut text = String::new();
        for i in 0..n {
            let id = if i % 3 == 0 {
                json!(i)
            } else {
                json!(format!("q{i}"))
            };
            let prompt = format!("{i}: {}", "xyz ".repeat(i % 7));
            text += &json!({"id": id, "prompt": prompt, "max_tokens": 1 + i % 5}).to_string();
            text += "\n";
        }
        text += "{not json\n\n{\"id\": \"q1\", \"prompt\": \"again\"}\n";
        std::fs::write(dir.path().join("in.jsonl"), text).unwrap();
        let model = format!("dummy:{}", dir.path().join("tiny.json").display());
        Self { dir, model }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn engine(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_engine"));
        c.current_dir(self.dir.path()).env_remove("RUST_BACKTRACE");
        for v in SCHEDULER_VARS {
            c.env_remove(v);
        }
        c.args(args).envs(env.iter().copied());
        c.output().expect("run engine")
    }

    /// `engine run` into `output` with extra args and environment.
    fn run(&self, output: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut a = vec!["run", "--model", &self.model, "--no-progress"];
        a.extend(["--input", "in.jsonl", "--output", output]);
        a.extend(extra);
        self.engine(&a, env)
    }

    /// `engine run merge` of `shards` into merged.jsonl: (exit code, stderr).
    fn merge(&self, shards: &[&str]) -> (Option<i32>, String) {
        let mut a = vec![
            "run",
            "merge",
            "--input",
            "in.jsonl",
            "--output",
            "merged.jsonl",
        ];
        a.extend(shards);
        let out = self.engine(&a, &[]);
        (out.status.code(), text(&out))
    }

    /// The lines of a JSONL file (no torn line allowed), each without its timings.
    fn records(&self, name: &str) -> Vec<Value> {
        let body = std::fs::read_to_string(self.path(name)).unwrap_or_default();
        assert!(body.is_empty() || body.ends_with('\n'), "{name} is torn");
        body.lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("timings");
                v
            })
            .collect()
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Three shards, each finding its part in a different scheduler's variables.
fn run_three_shards(job: &Job) {
    let envs: [&[(&str, &str)]; 3] = [
        &[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "5"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ],
        &[("JOB_COMPLETION_INDEX", "1"), ("JOB_COMPLETIONS", "3")],
        &[("RANK", "2"), ("WORLD_SIZE", "3")],
    ];
    let said = [
        "shard 0/3 from SLURM_ARRAY_TASK_ID=5 of the array 5-7",
        "shard 1/3 from JOB_COMPLETION_INDEX=1 of JOB_COMPLETIONS=3",
        "shard 2/3 from RANK=2 of WORLD_SIZE=3",
    ];
    for (i, env) in envs.iter().enumerate() {
        let out = job.run(&format!("s{i}.jsonl"), &["--shard", "auto"], env);
        let err = text(&out);
        assert!(matches!(out.status.code(), Some(0 | 2)), "{err}");
        assert!(err.contains(said[i]), "{err}");
    }
}

#[test]
fn merged_shards_equal_the_unsharded_run_in_input_order() {
    let job = Job::new(240);
    let whole = job.run("all.jsonl", &[], &[]);
    assert_eq!(whole.status.code(), Some(2), "{}", text(&whole));
    run_three_shards(&job);
    let (code, err) = job.merge(&["s0.jsonl", "s1.jsonl", "s2.jsonl"]);
    assert_eq!(code, Some(2), "complete, with 2 failed lines: {err}");
    assert!(err.contains("complete: each of the 242 request line(s) is accounted for exactly once (240 result(s), 2 error record(s))"), "{err}");
    let merged = job.records("merged.jsonl");
    let lines: Vec<u64> = merged.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, (1..=240).collect::<Vec<_>>(), "input order");
    let mut whole = job.records("all.jsonl");
    whole.sort_by_key(|r| r["line"].as_u64());
    assert!(
        merged == whole,
        "merged results differ from the unsharded run"
    );
    assert_eq!(
        job.records("merged.errors.jsonl"),
        job.records("all.errors.jsonl")
    );
}

#[test]
fn a_missing_shard_is_named_and_the_exit_status_says_incomplete() {
    let job = Job::new(240);
    run_three_shards(&job);
    let (code, err) = job.merge(&["s0.jsonl", "s2.jsonl", "s3.jsonl"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("missing file: s3.jsonl: no such file"),
        "{err}"
    );
    let shard1 = job.records("s1.jsonl").len() + job.records("s1.errors.jsonl").len();
    let want = format!("missing: {shard1} line(s) have no result or error record: line ");
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains("they are exactly the lines of shard 1/3"),
        "{err}"
    );
    assert!(err.contains("incomplete: "), "{err}");
    // What is there is still merged.
    let got = job.records("merged.jsonl").len() + job.records("merged.errors.jsonl").len();
    assert_eq!(got, 242 - shard1);
    // Without the hint's pattern (one line of each shard gone) no shard is named.
    let (code, err) = job.merge(&["s0.jsonl", "s1.jsonl", "s2.jsonl"]);
    assert_eq!(code, Some(2), "{err}");
    for i in 0..3 {
        let name = format!("s{i}.jsonl");
        let body = std::fs::read_to_string(job.path(&name)).unwrap();
        let first_newline = body.find('\n').unwrap();
        std::fs::write(job.path(&name), &body[first_newline + 1..]).unwrap();
    }
    let (code, err) = job.merge(&["s0.jsonl", "s1.jsonl", "s2.jsonl"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("missing: 3 line(s)"), "{err}");
    assert!(!err.contains("exactly the lines of shard"), "{err}");
}

#[test]
fn duplicated_ids_across_and_within_shards_are_listed() {
    let job = Job::new(120);
    run_three_shards(&job);
    let first = |name: &str| {
        let body = std::fs::read_to_string(job.path(name)).unwrap();
        body.lines().next().unwrap().to_string()
    };
    let s0_first = first("s0.jsonl");
    let s1_first = first("s1.jsonl");
    let append = |name: &str, line: &str| {
        let mut body = std::fs::read_to_string(job.path(name)).unwrap();
        body += line;
        body += "\n";
        std::fs::write(job.path(name), body).unwrap();
    };
    append("s2.jsonl", &s0_first); // the same id in two shards
    append("s1.jsonl", &s1_first); // twice in one
    let line = |l: &str| serde_json::from_str::<Value>(l).unwrap()["line"].clone();
    let n2 = job.records("s2.jsonl").len();
    let n1 = job.records("s1.jsonl").len();
    let (code, err) = job.merge(&["s0.jsonl", "s1.jsonl", "s2.jsonl"]);
    assert_eq!(code, Some(3), "{err}");
    let across = format!(
        "duplicated: line {} in s0.jsonl:1 and s2.jsonl:{n2}",
        line(&s0_first)
    );
    let within = format!(
        "duplicated: line {} in s1.jsonl:1 and s1.jsonl:{n1}",
        line(&s1_first)
    );
    assert!(err.contains(&across) && err.contains(&within), "{err}");
    assert!(
        err.contains("0 missing line(s)") && err.contains("2 duplicated"),
        "{err}"
    );
    // The merged output keeps each line once.
    assert_eq!(job.records("merged.jsonl").len(), 120);
    // Outputs of a 2-way split mixed with a 3-way one: duplicates, never a silent union.
    let out = job.run("h0.jsonl", &["--shard", "0/2"], &[]);
    assert!(matches!(out.status.code(), Some(0 | 2)));
    let (code, err) = job.merge(&["s0.jsonl", "s1.jsonl", "h0.jsonl"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("duplicated: line"), "{err}");
}

#[test]
fn a_torn_shard_is_reported_until_its_task_resumes() {
    let job = Job::new(120);
    run_three_shards(&job);
    let s2 = job.path("s2.jsonl");
    let body = std::fs::read_to_string(&s2).unwrap();
    let records = body.lines().count();
    std::fs::write(&s2, &body[..body.len() - 20]).unwrap(); // killed mid-write
    let (code, err) = job.merge(&["s0.jsonl", "s1.jsonl", "s2.jsonl"]);
    assert_eq!(code, Some(3), "{err}");
    let torn = format!("torn: s2.jsonl:{records}: torn last line");
    assert!(err.contains(&torn), "{err}");
    assert!(err.contains("missing: 1 line(s)"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&s2).unwrap().len(),
        body.len() - 20,
        "merge never modifies a shard's file"
    );
    // The shard's task runs again: it cuts the torn line, finishes that request, and the
    // merge is complete.
    let out = job.run("s2.jsonl", &["--shard", "2/3"], &[]);
    assert!(
        text(&out).contains("cut off a torn last line"),
        "{}",
        text(&out)
    );
    let (code, err) = job.merge(&["s0.jsonl", "s1.jsonl", "s2.jsonl"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("complete: "), "{err}");
}

#[test]
fn outputs_of_another_input_are_foreign() {
    let job = Job::new(120);
    run_three_shards(&job);
    // Another input: the same ids on other lines, and one more line.
    let input = job.path("in.jsonl");
    let body = std::fs::read_to_string(&input).unwrap();
    std::fs::write(
        &input,
        format!("{{\"id\": \"new\", \"prompt\": \"x\"}}\n{body}"),
    )
    .unwrap();
    let (code, err) = job.merge(&["s0.jsonl", "s1.jsonl", "s2.jsonl"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("foreign: s0.jsonl:1: result with id "),
        "{err}"
    );
    assert!(err.contains("has another id"), "{err}");
    assert!(err.contains("missing: 123 line(s)"), "{err}");
    // A file that is not an `engine run` output at all.
    std::fs::write(
        job.path("other.jsonl"),
        "{\"id\": 1, \"text\": \"no line\"}\n",
    )
    .unwrap();
    let (code, err) = job.merge(&["other.jsonl"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("no `line` field"), "{err}");
}

#[test]
fn usage_errors_are_one_clear_line() {
    let job = Job::new(10);
    let out = job.run("x.jsonl", &["--shard", "auto"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out);
    assert!(
        err.contains("--shard auto: no scheduler environment found"),
        "{err}"
    );
    assert!(!job.path("x.jsonl").exists());
    let out = job.run(
        "x.jsonl",
        &["--shard", "auto"],
        &[("JOB_COMPLETION_INDEX", "0")],
    );
    assert!(
        text(&out).contains("JOB_COMPLETIONS is not"),
        "{}",
        text(&out)
    );
    let out = job.run("s.jsonl", &[], &[]);
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", text(&out));
    let (code, err) = job.merge(&["s.jsonl", "./s.jsonl"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("given twice"), "{err}");
    let (code, err) = job.merge(&["in.jsonl"]);
    assert_eq!(code, Some(1), "{err}");
    let help = job.engine(&["run", "merge", "--help"], &[]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("SHARD_OUTPUT"));
    let both = job.engine(&["run", "--input", "in.jsonl", "merge"], &[]);
    assert_eq!(
        both.status.code(),
        Some(2),
        "flags of `run` do not mix with merge"
    );
}
