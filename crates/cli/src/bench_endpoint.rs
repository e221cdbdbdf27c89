//! `engine bench --endpoint URL`: the benchmark against an OpenAI-compatible server.
//! The model is not loaded: `--model` (or `--tokenizer`) only supplies the served
//! model's tokenizer and vocabulary, so that prompts are the in-process bench's.

use crate::bench::{bench_options, output, random_workload, BenchArgs};
use anyhow::Context;
use engine_model::source::tokenizer_from_path;
use engine_model::{open_model, Tokenizer};
use engine_profiler::analysis::{parse_duration, Slo};
use engine_profiler::endpoint::driver::Client;
use engine_profiler::endpoint::http::BaseUrl;
use engine_profiler::endpoint::request::Api;
use engine_profiler::endpoint::EndpointBench;
use engine_profiler::environment;
use engine_profiler::result::Environment;
use engine_profiler::spec::Sweep;
use engine_profiler::workload::Workload;
use std::time::Duration;

pub fn run(
    a: &BenchArgs,
    url: &str,
    sweep: Sweep,
    slo: Slo,
    budget: Option<f64>,
) -> anyhow::Result<()> {
    if a.trace.is_some() {
        anyhow::bail!(
            "--trace needs the engine's step records: in-process runs only, not --endpoint"
        );
    }
    let timeout = parse_duration(&a.request_timeout).context("--request-timeout")?;
    if timeout <= 0.0 {
        anyhow::bail!("--request-timeout {}: must be positive", a.request_timeout);
    }
    let client = Client {
        url: BaseUrl::parse(url).map_err(anyhow::Error::msg)?,
        api: Api::parse(&a.api).map_err(anyhow::Error::msg)?,
        timeout: Duration::from_secs_f64(timeout),
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
    let bench = EndpointBench::connect(client, a.served_model.clone())?;
    crate::say(&format!(
        "benchmarking {} at {} ({} API)",
        bench.model,
        bench.client.url.display(),
        bench.client.api.as_str()
    ));
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
            "tokenizer": a.model.tokenizer.as_ref().map_or(a.model.model.clone(), |p| p.display().to_string()),
        }),
        git_commit: environment::git_commit(),
        date: environment::utc_now_iso8601(),
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        profiler_version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    };
    let opts = bench_options(a, sweep, slo, budget, None);
    let results = bench.run(&workload, &tokenizer, &opts, env);
    output(a, &results)
}
