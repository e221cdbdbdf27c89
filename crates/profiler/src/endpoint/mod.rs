//! `engine bench --endpoint URL`: the same workloads, metrics and reports as the
//! in-process benchmark, measured at an OpenAI-compatible server over HTTP (ours or
//! anyone's: vLLM, SGLang, TGI...).
//!
//! Every configuration of the sweep runs as in-process ([`crate::bench`]): the same
//! seeds, hence the same prompts (token ids on `/v1/completions`; their text on
//! `/v1/chat/completions`), warm-ups excluded and counted, static batches sent at once,
//! closed loops and Poisson arrivals as in [`crate::serving`]. Each answered request
//! becomes a [`RequestTimeline`](engine_core::RequestTimeline) from the client's clock:
//! arrival = request sent, token times = chunk arrivals ([`request`] explains how
//! tokens are counted), so TTFT, ITL, TPOT, E2E, throughput and goodput keep their
//! definitions. Rejected (429), failed and timed-out requests are counted in the run
//! record. Queue time, step times, KV-cache use and the roofline need the engine's
//! records, which a client cannot see: they stay empty and the report says so.

pub mod driver;
pub mod http;
pub mod request;
pub mod sse;

use crate::bench::{expected_tokens, plan_runs, planned, BenchOptions};
use crate::error::{ProfilerError, Result};
use crate::progress::Progress;
use crate::result::{BenchResults, ConfigResult, EndpointInfo, Environment, RunRecord, Status};
use crate::run_plan::RunPlan;
use crate::spec::{ConfigSpec, Load};
use crate::summary::summarize;
use crate::workload::Workload;
use driver::{Client, Issue};
use engine_model::Tokenizer;
use request::{Ask, PromptBody, TokenSource};
use std::time::Instant;

/// What a client cannot observe (listed in the report).
pub const NOT_MEASURED: &[&str] = &[
    "queue time and compute time (the server's scheduling is not visible)",
    "prefill and decode step times, and their floors (no step records)",
    "KV-cache blocks, preemptions and prefix-cache hits",
    "the server's GPU/CPU telemetry",
];

/// A connected benchmark client.
pub struct EndpointBench {
    runtime: tokio::runtime::Runtime,
    pub client: Client,
    pub model: String,
}

impl EndpointBench {
    /// Check that the server answers `/v1/models`, and take the served model's name from
    /// it unless `model` is given.
    pub fn connect(client: Client, model: Option<String>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ProfilerError::Invalid(format!("starting the HTTP client: {e}")))?;
        let url = client.url.clone();
        let listed = runtime.block_on(async {
            let resp = http::send(&url, hyper::Method::GET, "/v1/models", None).await?;
            let status = resp.status;
            let text = resp.text().await?;
            if status != 200 {
                return Err(format!("HTTP {status}: {}", request::clip(&text)));
            }
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?;
            Ok(v["data"][0]["id"].as_str().map(String::from))
        });
        let listed = listed
            .map_err(|e| ProfilerError::Invalid(format!("{}/v1/models: {e}", url.display())))?;
        let model = model.or(listed).ok_or_else(|| {
            ProfilerError::Invalid(format!(
                "{}/v1/models lists no model: pass --served-model NAME",
                url.display()
            ))
        })?;
        Ok(Self {
            runtime,
            client,
            model,
        })
    }

    /// Run every configuration of `o.sweep`; `tokenizer` is the served model's (prompt
    /// text for chat, token counts when the server reports no usage) and `context` its
    /// context length (lengths drawn by `--workload` are capped by it, as in-process).
    pub fn run(
        &self,
        workload: &Workload,
        tokenizer: &Tokenizer,
        context: usize,
        o: &BenchOptions,
        mut environment: Environment,
    ) -> BenchResults {
        let t0 = Instant::now();
        let specs = o.sweep.expand();
        let mut progress = Progress::new(
            specs.iter().map(|s| planned(s, o)).collect(),
            o.show_progress,
        );
        let mut sources = Vec::new();
        let mut configs = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let label = format!("config {}/{}: {}", i + 1, specs.len(), spec.label());
            progress.start_config(i);
            let plans = plan_runs(context, o, spec);
            let mut run = RunCtx {
                workload,
                tokenizer,
                progress: &mut progress,
                sources: &mut sources,
            };
            configs.push(self.run_config(&mut run, o, spec, &plans, &label));
        }
        progress.finish();
        environment.endpoint = Some(EndpointInfo {
            url: self.client.url.display(),
            api: self.client.api.as_str().into(),
            served_model: self.model.clone(),
            token_counts: describe(&sources),
            not_measured: NOT_MEASURED.iter().map(|s| s.to_string()).collect(),
        });
        crate::bench::results(o, environment, None, configs, t0)
    }

    fn run_config(
        &self,
        cx: &mut RunCtx,
        o: &BenchOptions,
        spec: &ConfigSpec,
        plans: &[RunPlan],
        label: &str,
    ) -> ConfigResult {
        let mut result = ConfigResult::new(spec.clone());
        // Only what a client can check; the server answers the rest (400: failed).
        if let Some(r) = plans
            .iter()
            .flat_map(|p| &p.requests)
            .find(|r| r.input_len == 0 || r.output_len == 0)
        {
            cx.progress.advance(expected_tokens(spec, o));
            result.status = Status::DoesNotFit {
                reason: format!(
                    "request {}: input and output lengths must be at least 1",
                    r.index
                ),
            };
            return result;
        }
        let tokenizer = cx.tokenizer;
        let count = |text: &str| tokenizer.encode(text, false).map_or(0, |ids| ids.len());
        for (r, plan) in plans.iter().enumerate() {
            let warm = r < o.warmup;
            let what = if warm {
                format!("warm-up {}/{}", r + 1, o.warmup)
            } else {
                format!("run {}/{}", r - o.warmup + 1, plans.len() - o.warmup)
            };
            cx.progress.start_run(format!("{label} {what}"));
            let issue = match (spec.load, warm) {
                (Load::Batch { .. }, _) | (_, true) => Issue::Batch,
                (Load::Concurrency { n }, false) => Issue::Closed(n),
                (Load::Rate { .. }, false) => Issue::Open(plan.arrivals_s.clone()),
            };
            let bodies = match self.bodies(cx.workload, tokenizer, plan, spec, o) {
                Ok(b) => b,
                Err(e) => {
                    result.status = Status::Failed { error: e };
                    return result;
                }
            };
            let epoch = Instant::now();
            let progress = &mut *cx.progress;
            let mut tick =
                |out: &driver::Outcome| progress.advance(driver::output_tokens(out) as f64);
            let outcomes =
                self.runtime
                    .block_on(driver::run(&self.client, bodies, issue, epoch, &mut tick));
            if warm {
                result.warmup_runs += 1;
            } else {
                let rec = driver::run_record(r - o.warmup, outcomes, plan, &count, cx.sources);
                result.runs.push(rec);
            }
        }
        if result.runs.iter().all(|r| r.requests.is_empty()) {
            result.status = Status::Failed {
                error: no_answers(&result.runs),
            };
        } else {
            result.summary = Some(summarize(&result.runs, &o.slo));
        }
        result
    }

    /// The request bodies of one run: the same prompts and seeds as in-process.
    fn bodies(
        &self,
        w: &Workload,
        tok: &Tokenizer,
        plan: &RunPlan,
        spec: &ConfigSpec,
        o: &BenchOptions,
    ) -> std::result::Result<Vec<Vec<u8>>, String> {
        plan.requests
            .iter()
            .map(|r| {
                let ids = w.prompt(plan.run_seed, r.index as u64, r.input_len);
                let prompt = match self.client.api {
                    request::Api::Completions => PromptBody::Tokens(ids),
                    request::Api::Chat => {
                        PromptBody::Text(tok.decode(&ids, false).map_err(|e| e.to_string())?)
                    }
                };
                let ask = Ask {
                    max_tokens: r.output_len,
                    temperature: spec.temperature,
                    top_p: spec.top_p,
                    seed: r.sampling_seed(plan.run_seed),
                    ignore_eos: !o.respect_eos,
                };
                request::body(self.client.api, &self.model, &prompt, &ask)
            })
            .collect()
    }
}

/// What every run of a benchmark shares: the prompts, the tokenizer, the progress bar
/// and the token-count sources seen so far.
struct RunCtx<'a> {
    workload: &'a Workload,
    tokenizer: &'a Tokenizer,
    progress: &'a mut Progress,
    sources: &'a mut Vec<TokenSource>,
}

fn no_answers(runs: &[RunRecord]) -> String {
    let sum = |f: fn(&RunRecord) -> usize| runs.iter().map(f).sum::<usize>();
    let first = runs.iter().flat_map(|r| r.errors.first()).next();
    format!(
        "no request was answered: {} rejected (429), {} failed, {} timed out{}",
        sum(|r| r.rejected),
        sum(|r| r.failed),
        sum(|r| r.timed_out),
        first.map_or(String::new(), |e| format!("; first error: {e}"))
    )
}

fn describe(sources: &[TokenSource]) -> String {
    let one = |s: &TokenSource| match s {
        TokenSource::ChunkUsage => "exact: running usage in every chunk",
        TokenSource::ChunksAndUsage => "one token per text chunk, total from usage",
        TokenSource::ChunksAndTokenizer => {
            "one token per text chunk, total from the local tokenizer (no usage)"
        }
    };
    if sources.is_empty() {
        return "no request answered".into();
    }
    sources.iter().map(one).collect::<Vec<_>>().join("; ")
}
