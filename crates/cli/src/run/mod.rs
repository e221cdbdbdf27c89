//! `engine run`: an offline batch job over a JSONL file that loses nothing.
//!
//! Input lines stream through the continuous-batching engine with at most
//! `--max-in-flight` requests inside it, so memory stays flat whatever the input size
//! (apart from a fingerprint per id, needed to catch duplicate ids: see `job.rs`). Results
//! are appended to the output as requests finish, one flushed line each, so the output
//! is always a valid JSONL prefix; running the same command again resumes: finished ids
//! are skipped, a torn last line is cut off, and error records are keyed by input line
//! so none is written twice. See `job.rs` for the loop, `input.rs` for the line format,
//! `output.rs` for crash safety, `shard.rs` for `--shard i/n | auto` and `merge.rs` for
//! `engine run merge`, which joins the shards' outputs and checks that nothing is missing.

mod input;
mod job;
mod merge;
mod output;
mod progress;
mod shard;

use crate::args::{EngineArgs, ModelArgs};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use engine_core::Engine;
use engine_model::load_model;
use engine_scheduler::SamplingParams;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Exit status when some input lines failed.
const EXIT_SOME_FAILED: i32 = 2;
/// Exit status after Ctrl-C.
const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, Args)]
#[command(after_help = "\
Input: one JSON object per line: {\"id\": \"a1\", \"prompt\": \"...\"} or {\"id\": 7, \"messages\": \
[{\"role\": \"user\", \"content\": \"...\"}]}, with optional max_tokens, temperature, top_p, \
top_k, min_p, seed, stop (string or list), ignore_eos, logprobs (top-N per token). Ids must \
be unique strings or numbers. A request without a seed gets --seed mixed with a hash of \
its id, so sampled results do not depend on batching, resumes or shards.

Output: one line per finished request: id, line, text, prompt_tokens, output_tokens, \
finish_reason, timings {queue_s, ttft_s, e2e_s}, and logprobs when asked. If the output \
file exists the job resumes: ids already in it are skipped. Bad lines go to the errors \
file as {line, id, error}.

Exit status: 0 every line succeeded; 2 some lines failed (see the errors file; a \
command-line usage error also exits 2, before anything runs); 1 fatal error; \
130 interrupted (run the same command again to resume).

Sharded jobs: `--shard auto` in each task of a Slurm job array (or an srun step, a \
Kubernetes Indexed Job, torchrun), then `engine run merge --input IN --output OUT \
SHARD_OUTPUT...` checks that every line is accounted for and writes one output.")]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RunArgs {
    #[command(subcommand)]
    pub command: Option<RunCommand>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Input JSONL: one request per line.
    #[arg(long, required = true)]
    pub input: Option<PathBuf>,
    /// Output JSONL, appended as requests finish; resumed when it exists.
    #[arg(long, required = true)]
    pub output: Option<PathBuf>,
    /// Errors JSONL (default: the output path with `.errors.jsonl` for `.jsonl`).
    #[arg(long)]
    pub errors: Option<PathBuf>,
    /// Take only ids whose FNV-1a hash mod N is I (I/N, e.g. 0/4), to split one input
    /// over N processes; give each its own --output. `auto`: I/N from the scheduler
    /// (SLURM_ARRAY_TASK_ID, srun's SLURM_PROCID, JOB_COMPLETION_INDEX with
    /// JOB_COMPLETIONS, RANK with WORLD_SIZE).
    #[arg(long, value_parser = shard::ShardSpec::parse)]
    pub shard: Option<shard::ShardSpec>,
    /// Most requests inside the engine at once (default: 2 x --max-num-seqs).
    #[arg(long, value_parser = crate::validate::batch_size)]
    pub max_in_flight: Option<usize>,
    /// Start over: delete the output and errors files first instead of resuming.
    #[arg(long)]
    pub overwrite: bool,
    /// fsync the output every N lines (0: only at the end); each line is flushed anyway.
    #[arg(long, default_value_t = 256)]
    pub fsync_every: u64,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Default maximum tokens to generate per request.
    #[arg(long, default_value_t = 128, value_parser = crate::validate::token_count)]
    pub max_tokens: usize,
    /// Default temperature; 0 (greedy) so that a job's results are reproducible.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = crate::validate::temperature)]
    pub temperature: f32,
    /// Default nucleus mass, in (0, 1].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = crate::validate::top_p)]
    pub top_p: f32,
    /// Default top-k (0: off).
    #[arg(long, default_value_t = 0, value_parser = crate::validate::top_k)]
    pub top_k: usize,
    /// Default min-p, in [0, 1].
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = crate::validate::min_p)]
    pub min_p: f32,
    /// Default stop string (repeatable).
    #[arg(long, value_parser = crate::validate::stop_string)]
    pub stop: Vec<String>,
    /// Keep generating after the end-of-sequence token by default.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Default number of top log-probabilities per token (0-20); none unless given.
    #[arg(long, value_parser = crate::validate::logprobs)]
    pub logprobs: Option<usize>,
}

/// `engine run merge`.
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Join the outputs of a sharded job into one, checking that every input line has
    /// exactly one result or error record (exit 0: complete, 2: complete but some lines
    /// failed, 3: incomplete; missing, duplicated, torn or foreign records are listed).
    Merge(merge::MergeArgs),
}

/// Ctrl-C presses so far.
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

/// Has Ctrl-C been pressed?
pub(crate) fn interrupted() -> bool {
    INTERRUPTS.load(Ordering::Relaxed) > 0
}

/// First Ctrl-C: stop admitting and let the loop finish what is in flight.
/// Second: exit at once (whole lines already written are kept; a torn one is repaired).
fn install_ctrlc() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!(
                "\ninterrupt: admitting no more requests, finishing those in flight \
                 (Ctrl-C again to quit now)"
            );
        } else {
            eprintln!("\ninterrupted again: quitting; run the same command to resume");
            std::process::exit(EXIT_INTERRUPTED);
        }
    })
    .context("cannot install the Ctrl-C handler")
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let code = match a.command {
        Some(RunCommand::Merge(m)) => merge::run(&m)?,
        None => execute(a)?,
    };
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// The default errors path: `x.jsonl` -> `x.errors.jsonl`, else `x` -> `x.errors.jsonl`.
fn default_errors_path(output: &Path) -> PathBuf {
    let s = output.as_os_str().to_string_lossy();
    let stem = s.strip_suffix(".jsonl").unwrap_or(&s);
    PathBuf::from(format!("{stem}.errors.jsonl"))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn default_params(a: &RunArgs) -> anyhow::Result<SamplingParams> {
    let params = SamplingParams {
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        top_k: (a.top_k > 0).then_some(a.top_k),
        top_p: a.top_p,
        min_p: a.min_p,
        stop: a.stop.clone(),
        ignore_eos: a.ignore_eos,
        logprobs: a.logprobs,
        ..SamplingParams::default()
    };
    params.validate().context("invalid sampling defaults")?;
    Ok(params)
}

/// `--input` and `--output` (clap requires both unless a subcommand is given).
fn job_paths(a: &RunArgs) -> anyhow::Result<(&Path, &Path)> {
    match (&a.input, &a.output) {
        (Some(i), Some(o)) => Ok((i, o)),
        _ => bail!("engine run needs --input and --output"),
    }
}

fn execute(a: RunArgs) -> anyhow::Result<i32> {
    let defaults = default_params(&a)?;
    let (input, output) = job_paths(&a)?;
    let errors_path = a
        .errors
        .clone()
        .unwrap_or_else(|| default_errors_path(output));
    if !input.is_file() {
        bail!("--input {}: no such file", input.display());
    }
    for p in [output, &errors_path] {
        if same_file(input, p) {
            bail!("{} is the input file; choose another output", p.display());
        }
    }
    if same_file(output, &errors_path) {
        bail!("--errors must differ from --output");
    }
    if a.max_in_flight == Some(0) {
        bail!("--max-in-flight must be at least 1");
    }
    let shard = match a.shard {
        Some(spec) => spec.resolve()?,
        None => shard::Shard::ALL,
    };
    if a.overwrite {
        for p in [output, &errors_path] {
            if p.exists() {
                std::fs::remove_file(p)
                    .with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
    }
    let resume = job::Resume::load(output, &errors_path, a.fsync_every)?;
    let total_lines =
        input::count_lines(input).with_context(|| format!("cannot read {}", input.display()))?;
    let engine = load_engine(&a)?;
    install_ctrlc()?;
    let file =
        std::fs::File::open(input).with_context(|| format!("cannot read {}", input.display()))?;
    let reader = input::LineReader::new(std::io::BufReader::new(file));
    let cfg = job::JobConfig {
        defaults,
        seed: a.model.seed,
        shard,
        max_in_flight: a.max_in_flight.unwrap_or(
            2 * a
                .engine
                .max_num_seqs
                .unwrap_or(crate::args::DEFAULT_MAX_NUM_SEQS),
        ),
    };
    let progress = progress::Progress::new(total_lines, !a.no_progress);
    let mut runner = job::Runner::new(engine, cfg, resume, progress);
    let outcome = runner.run(reader)?;
    Ok(finish(&a, &runner, &errors_path, outcome))
}

fn load_engine(a: &RunArgs) -> anyhow::Result<Engine> {
    let device = crate::parse_device(&a.model.device)?;
    let dtype = crate::parse_dtype(a.model.dtype.as_deref(), &device)?;
    let opts = a.model.load_options(device, dtype);
    let model = load_model(&a.model.model, &opts, &crate::say)
        .with_context(|| format!("model {}", a.model.model))?;
    Ok(Engine::new(
        model,
        a.engine.engine_config(a.model.block_size, a.model.seed),
    )?)
}

/// Print the summary (and how to resume); return the exit status.
fn finish(a: &RunArgs, runner: &job::Runner, errors_path: &Path, outcome: job::Outcome) -> i32 {
    let c = runner.counters();
    eprintln!("{}", progress::summary(c, runner.elapsed(), errors_path));
    if outcome == job::Outcome::Interrupted {
        eprintln!(
            "interrupted: {} result(s) are in {}; run the same command again to resume:\n  {}",
            c.written,
            a.output
                .as_deref()
                .unwrap_or(Path::new("the output"))
                .display(),
            resume_command()
        );
        return EXIT_INTERRUPTED;
    }
    if c.failed > 0 {
        EXIT_SOME_FAILED
    } else {
        0
    }
}

/// This process's command line, quoted for a POSIX shell.
fn resume_command() -> String {
    let quote = |s: String| {
        let plain = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
        if plain {
            s
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::env::args().map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_file_sits_beside_the_output() {
        assert_eq!(
            default_errors_path(Path::new("out/res.jsonl")),
            PathBuf::from("out/res.errors.jsonl")
        );
        assert_eq!(
            default_errors_path(Path::new("res")),
            PathBuf::from("res.errors.jsonl")
        );
    }
}
