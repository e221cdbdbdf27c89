//! `engine bench --endpoint URL`: the benchmark against an OpenAI-compatible server.
//! The model is not loaded: `--model` (or `--tokenizer`) only supplies the served
//! model's tokenizer, vocabulary and context length, so that prompts are the
//! in-process bench's.

use crate::bench::{output, random_workload, BenchArgs};
use anyhow::Context;
use clap::Args;
use engine_model::source::tokenizer_from_path;
use engine_model::{open_model, Tokenizer};
use engine_profiler::bench::BenchOptions;
use engine_profiler::endpoint::driver::Client;
use engine_profiler::endpoint::http::BaseUrl;
use engine_profiler::endpoint::request::Api;
use engine_profiler::endpoint::EndpointBench;
use engine_profiler::environment;
use engine_profiler::result::Environment;
use engine_profiler::workload::Workload;
use std::time::Duration;

/// The flags of `engine bench --endpoint`.
#[derive(Debug, Args)]
pub struct EndpointArgs {
    /// Benchmark an OpenAI-compatible server at this URL (http://HOST:PORT) instead of
    /// the engine in-process: same workloads, metrics and reports (`engine serve`, vLLM,
    /// SGLang...). --model/--tokenizer then only name the served model's tokenizer.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// `completions` (prompts sent as token ids) or `chat` (as text).
    #[arg(long, default_value = "completions", requires = "endpoint",
        value_parser = ["completions", "chat"])]
    pub api: String,
    /// The model name to send (default: the first of the server's /v1/models).
    #[arg(long, requires = "endpoint")]
    pub served_model: Option<String>,
    /// Give up on a request after this long (counted as timed out), e.g. 30s.
    #[arg(long, default_value = "600s", requires = "endpoint",
        value_parser = crate::validate::duration)]
    pub request_timeout: Duration,
}

pub fn run(a: &BenchArgs, url: &str, opts: &BenchOptions) -> anyhow::Result<()> {
    if a.trace.is_some() {
        anyhow::bail!(
            "--trace needs the engine's step records: in-process runs only, not --endpoint"
        );
    }
    let e = &a.endpoint;
    let client = Client {
        url: BaseUrl::parse(url).map_err(|m| anyhow::anyhow!("--endpoint {url}: {m}"))?,
        api: Api::parse(&e.api).map_err(anyhow::Error::msg)?,
        timeout: e.request_timeout,
    };
    let opened = open_model(&a.model.model, a.model.seed, &crate::say)
        .with_context(|| format!("model {} (for its tokenizer)", a.model.model))?;
    let tokenizer = match (&a.model.tokenizer, opened.tokenizer) {
        (Some(path), _) => tokenizer_from_path(path)?,
        (None, Some(t)) => t,
        (None, None) => Tokenizer::byte_level(),
    };
    let workload = match &a.prompts {
        Some(p) => Workload::from_file(p, &tokenizer)?,
        None => random_workload(&tokenizer, &opened.config, a.model.seed)?,
    };
    let bench = EndpointBench::connect(client, e.served_model.clone())?;
    crate::say(&format!(
        "benchmarking {} at {} ({} API)",
        bench.model,
        bench.client.url.display(),
        bench.client.api.as_str()
    ));
    let tokenizer_name = match &a.model.tokenizer {
        Some(p) => p.display().to_string(),
        None => a.model.model.clone(),
    };
    let env = Environment {
        model: bench.model.clone(),
        model_source: bench.client.url.display(),
        device: "endpoint".into(),
        device_name: "remote server (not observable)".into(),
        driver: "-".into(),
        dtype: "-".into(),
        cpu: environment::cpu_name(),
        num_cpus: environment::num_cpus(),
        engine_config: serde_json::json!({
            "endpoint": bench.client.url.display(),
            "api": bench.client.api.as_str(),
            "tokenizer": tokenizer_name,
        }),
        git_commit: environment::git_commit(),
        date: environment::utc_now_iso8601(),
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        profiler_version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    };
    let context = opened.config.max_position_embeddings;
    let results = bench.run(&workload, &tokenizer, context, opts, env);
    output(a, &results)
}
