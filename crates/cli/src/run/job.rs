//! The job loop: admit lines up to the in-flight bound, step the engine, write results.
//!
//! ```text
//!  loop:
//!    fill   read lines until max_in_flight requests are in the engine (or EOF / Ctrl-C):
//!           bad line -> errors file | other shard, blank -> skip | duplicate id -> errors
//!           | id already in the output -> skip | else add_request (rejected -> errors)
//!    step   one engine step (all in-flight requests batched)
//!    drain  each finished request -> one flushed output line
//! ```
//! Memory: the in-flight requests (bounded), plus a map from each id's 128-bit
//! fingerprint to its first line (for duplicate detection: 32-byte entries, about 40-75
//! bytes per id with the hash table's slack, so ~60 MB for a million ids; some per-id
//! state is unavoidable when ids may repeat anywhere in the file), plus the fingerprints
//! of ids found in the output on resume, each dropped once its input line is met again.

use super::input::{self, BadLine, Envelope, Job, LineReader};
use super::output::JsonlLog;
use super::progress::{Counters, Progress};
use super::shard::{fingerprint, Shard};
use anyhow::{bail, Context};
use engine_core::{Engine, FinalOutput, FinishReason, RequestId};
use engine_scheduler::SamplingParams;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;

/// The job-wide settings.
pub struct JobConfig {
    pub defaults: SamplingParams,
    pub seed: u64,
    pub shard: Shard,
    pub max_in_flight: usize,
}

/// The output and errors files, opened, repaired, with what they already hold.
pub struct Resume {
    out: JsonlLog,
    errors: JsonlLog,
    done: HashSet<u128>,
    recorded: HashSet<u64>,
}

impl Resume {
    pub fn load(output: &Path, errors: &Path, fsync_every: u64) -> anyhow::Result<Self> {
        let mut done = HashSet::new();
        let (mut out, scan) = JsonlLog::open(output, fsync_every, |v| {
            match v.get("id").filter(|id| id.is_string() || id.is_number()) {
                Some(id) => done.insert(fingerprint(&id.to_string())),
                None => bail!("not a result record (no `id`)"),
            };
            Ok(())
        })?;
        out.create()?;
        report_scan("results", out.path(), scan);
        let mut recorded = HashSet::new();
        let (errors, scan) = JsonlLog::open(errors, fsync_every, |v| {
            match v.get("line").and_then(Value::as_u64) {
                Some(line) => recorded.insert(line),
                None => bail!("not an error record (no `line`)"),
            };
            Ok(())
        })?;
        report_scan("error records", errors.path(), scan);
        Ok(Self {
            out,
            errors,
            done,
            recorded,
        })
    }
}

fn report_scan(what: &str, path: &Path, scan: super::output::Scan) {
    if scan.truncated_bytes > 0 {
        crate::say(&format!(
            "{}: cut off a torn last line ({} bytes)",
            path.display(),
            scan.truncated_bytes
        ));
    }
    if scan.records > 0 {
        crate::say(&format!(
            "resuming: {} {what} already in {}",
            scan.records,
            path.display()
        ));
    }
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every input line is resolved.
    Completed,
    /// Ctrl-C before the end of the input.
    Interrupted,
}

/// A request inside the engine.
struct Pending {
    id: Value,
    line: u64,
    logprobs: bool,
}

#[derive(Serialize)]
struct Timings {
    queue_s: Option<f64>,
    ttft_s: Option<f64>,
    e2e_s: Option<f64>,
}

#[derive(Serialize)]
struct TopLogprob {
    token: u32,
    logprob: f32,
}

#[derive(Serialize)]
struct TokenLogprob {
    token: u32,
    logprob: f32,
    top_logprobs: Vec<TopLogprob>,
}

#[derive(Serialize)]
struct ResultRecord<'a> {
    id: &'a Value,
    line: u64,
    text: &'a str,
    prompt_tokens: usize,
    output_tokens: usize,
    finish_reason: &'static str,
    timings: Timings,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<Vec<TokenLogprob>>,
}

#[derive(Serialize)]
struct ErrorRecord<'a> {
    line: u64,
    id: &'a Option<Value>,
    error: &'a str,
}

/// Runs one job.
pub struct Runner {
    engine: Engine,
    cfg: JobConfig,
    files: Resume,
    /// Fingerprint of each id met in this shard -> its first line.
    seen: HashMap<u128, u64>,
    pending: HashMap<RequestId, Pending>,
    counters: Counters,
    progress: Progress,
}

impl Runner {
    pub fn new(engine: Engine, cfg: JobConfig, files: Resume, progress: Progress) -> Self {
        Self {
            engine,
            cfg,
            files,
            seen: HashMap::new(),
            pending: HashMap::new(),
            counters: Counters::default(),
            progress,
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.progress.elapsed()
    }

    /// Run to the end of the input, or until Ctrl-C and the in-flight requests are done.
    pub fn run<R: BufRead>(&mut self, mut reader: LineReader<R>) -> anyhow::Result<Outcome> {
        let mut eof = false;
        loop {
            let stopping = super::interrupted();
            if !stopping && !eof {
                eof = self.fill(&mut reader)?;
            }
            if self.pending.is_empty() && (eof || stopping) {
                break;
            }
            if !self.engine.has_unfinished() {
                bail!(
                    "internal: {} requests lost by the engine",
                    self.pending.len()
                );
            }
            self.engine.step().context("engine step failed")?;
            // Step records would grow by one per step for the whole job: drop them.
            drop(self.engine.take_step_records());
            self.drain()?;
            self.progress.tick(&self.counters);
        }
        self.files.out.sync()?;
        self.files.errors.sync()?;
        self.progress.finish();
        Ok(if eof {
            Outcome::Completed
        } else {
            Outcome::Interrupted
        })
    }

    /// Admit lines until the engine holds `max_in_flight` requests. True at EOF.
    fn fill<R: BufRead>(&mut self, reader: &mut LineReader<R>) -> anyhow::Result<bool> {
        while self.pending.len() < self.cfg.max_in_flight {
            if super::interrupted() {
                return Ok(false);
            }
            let next = reader.next_line().context("cannot read the input")?;
            let Some((line, parsed)) = next.map(|(n, b)| (n, input::parse_envelope(n, b))) else {
                return Ok(true);
            };
            self.take_line(line, parsed)?;
            self.progress.tick(&self.counters);
        }
        Ok(false)
    }

    fn take_line(
        &mut self,
        line: u64,
        parsed: Result<Option<Envelope>, BadLine>,
    ) -> anyhow::Result<()> {
        let env = match parsed {
            Ok(Some(env)) if self.cfg.shard.owns_key(&env.key) => env,
            Err(bad) if self.cfg.shard.owns_line(line) => return self.fail(bad),
            _ => {
                self.counters.not_ours += 1;
                return Ok(());
            }
        };
        let fp = fingerprint(&env.key);
        if let Some(first) = self.seen.insert(fp, line) {
            self.seen.insert(fp, first);
            let reason = format!("duplicate id {} (first on line {first})", env.id);
            return self.fail(env.reject(reason));
        }
        if self.files.done.remove(&fp) {
            self.counters.already_done += 1;
            return Ok(());
        }
        match input::into_job(env, &self.cfg.defaults, self.cfg.seed) {
            Ok(job) => self.admit(job),
            Err(bad) => self.fail(bad),
        }
    }

    fn admit(&mut self, job: Job) -> anyhow::Result<()> {
        let logprobs = job.params.logprobs.is_some();
        match self.engine.add_request(job.prompt, job.params) {
            Ok(rid) => {
                let p = Pending {
                    id: job.id,
                    line: job.line,
                    logprobs,
                };
                self.pending.insert(rid, p);
                Ok(())
            }
            Err(e) => self.fail(BadLine {
                line: job.line,
                id: Some(job.id),
                reason: format!("{:#}", anyhow::Error::from(e)),
            }),
        }
    }

    /// Count a failed line; record it unless an earlier run did.
    fn fail(&mut self, bad: BadLine) -> anyhow::Result<()> {
        self.counters.failed += 1;
        if self.files.recorded.insert(bad.line) {
            self.files.errors.append(&ErrorRecord {
                line: bad.line,
                id: &bad.id,
                error: &bad.reason,
            })?;
            self.counters.errors_recorded += 1;
        }
        Ok(())
    }

    /// Write every finished request's result.
    fn drain(&mut self) -> anyhow::Result<()> {
        for o in self.engine.take_finished() {
            let Some(p) = self.pending.remove(&o.id) else {
                continue;
            };
            if o.finish_reason == FinishReason::Abort {
                // Never written: a partial result would count as done on resume.
                continue;
            }
            self.files.out.append(&result_record(&p, &o))?;
            self.counters.written += 1;
            self.counters.prompt_tokens += o.prompt_token_ids.len() as u64;
            self.counters.output_tokens += o.token_ids.len() as u64;
        }
        Ok(())
    }
}

fn result_record<'a>(p: &'a Pending, o: &'a FinalOutput) -> ResultRecord<'a> {
    let t = &o.timeline;
    let logprobs = p.logprobs.then(|| {
        o.logprobs
            .iter()
            .map(|s| TokenLogprob {
                token: s.token,
                logprob: s.logprob,
                top_logprobs: s
                    .top_logprobs
                    .iter()
                    .map(|&(token, logprob)| TopLogprob { token, logprob })
                    .collect(),
            })
            .collect()
    });
    ResultRecord {
        id: &p.id,
        line: p.line,
        text: &o.text,
        prompt_tokens: o.prompt_token_ids.len(),
        output_tokens: o.token_ids.len(),
        finish_reason: o.finish_reason.as_str(),
        timings: Timings {
            queue_s: t.queue_s(),
            ttft_s: t.ttft_s(),
            e2e_s: t.e2e_s(),
        },
        logprobs,
    }
}
