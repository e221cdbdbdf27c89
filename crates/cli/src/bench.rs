//! `engine bench`: drive the engine in-process over a sweep of static batches,
//! closed-loop concurrencies or open-loop request rates, and report latency,
//! throughput, telemetry and distance from the hardware floor (see docs/metrics.md).

use crate::args::{EngineArgs, ModelArgs, DEFAULT_MAX_NUM_SEQS};
use anyhow::Context;
use clap::{ArgGroup, Args};
use engine_core::{Engine, EngineConfig};
use engine_model::load_model;
use engine_profiler::analysis::{parse_duration, Slo};
use engine_profiler::bench::{run_bench, BenchOptions};
use engine_profiler::result::Environment;
use engine_profiler::spec::{Load, Sweep};
use engine_profiler::workload::Workload;
use engine_profiler::{device, environment, report, telemetry};
use std::path::PathBuf;
use std::time::Duration;

/// Engine limits and KV-cache size for the benchmark's engine.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["batch", "concurrency", "request_rate"])))]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Static batch sizes, e.g. 1,8,32,128.
    #[arg(long, value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Closed loop: requests kept in flight, e.g. 1,4,16,64.
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Open loop: Poisson arrival rates in requests/s, e.g. 1,2.5.
    #[arg(long, value_delimiter = ',')]
    pub request_rate: Vec<f64>,
    /// Requests per serving config (--concurrency / --request-rate).
    #[arg(long, default_value_t = 64)]
    pub num_requests: usize,
    /// Prompt lengths in tokens (a list sweeps).
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub input_len: Vec<usize>,
    /// Output lengths in tokens (a list sweeps).
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub output_len: Vec<usize>,
    /// Sampling temperatures (a list sweeps); 0 is greedy.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0",
        allow_negative_numbers = true
    )]
    pub temperature: Vec<f32>,
    /// Top-p values (a list sweeps).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1.0",
        allow_negative_numbers = true
    )]
    pub top_p: Vec<f32>,
    /// Measured runs per static-batch config.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Warm-up runs per config (excluded from the metrics, counted in the report).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Prompts from this file (one per line) instead of random token ids.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Stop at EOS (default: ignore it and generate exactly --output-len tokens).
    #[arg(long)]
    pub respect_eos: bool,
    /// SLOs for goodput, e.g. ttft=500ms,itl=50ms,e2e=5s (keys: ttft, itl, tpot, e2e).
    #[arg(long)]
    pub slo: Option<String>,
    /// Latency budget for the batch-size choice, e.g. 2.5s.
    #[arg(long)]
    pub latency_budget: Option<String>,
    /// Write results.json, summary.csv, report.md and SVG plots here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the steps as a Chrome/Perfetto trace (JSON) to this file.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Telemetry sampling period in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub telemetry_interval_ms: u64,
    /// Skip the roofline (no ceilings measured or read).
    #[arg(long)]
    pub no_roofline: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Benchmark an OpenAI-compatible server at this URL (http://HOST:PORT) instead of
    /// the engine in-process: same workloads, metrics and reports (`engine serve`, vLLM,
    /// SGLang...). --model/--tokenizer then name the served model's tokenizer only.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// With --endpoint: `completions` (prompts sent as token ids) or `chat` (as text).
    #[arg(long, default_value = "completions", requires = "endpoint")]
    pub api: String,
    /// With --endpoint: the model name to send (default: the first of /v1/models).
    #[arg(long, requires = "endpoint")]
    pub served_model: Option<String>,
    /// With --endpoint: give up on a request after this long (counted as timed out).
    #[arg(long, default_value = "600s", requires = "endpoint")]
    pub request_timeout: String,
}

fn loads(a: &BenchArgs) -> anyhow::Result<Vec<Load>> {
    let loads: Vec<Load> = if !a.batch.is_empty() {
        a.batch.iter().map(|&size| Load::Batch { size }).collect()
    } else if !a.concurrency.is_empty() {
        a.concurrency
            .iter()
            .map(|&n| Load::Concurrency { n })
            .collect()
    } else {
        a.request_rate
            .iter()
            .map(|&requests_per_s| Load::Rate { requests_per_s })
            .collect()
    };
    for l in &loads {
        if !(l.value() > 0.0 && l.value().is_finite()) {
            anyhow::bail!("{}: loads must be positive", l.label());
        }
    }
    Ok(loads)
}

fn engine_config(a: &BenchArgs, loads: &[Load]) -> EngineConfig {
    let biggest = loads
        .iter()
        .map(|l| l.value().ceil() as usize)
        .max()
        .unwrap_or(1);
    EngineConfig {
        block_size: a.model.block_size,
        num_blocks: a.engine.num_blocks,
        kv_cache_memory_bytes: a.engine.kv_cache_memory,
        max_num_seqs: a
            .engine
            .max_num_seqs
            .unwrap_or(biggest.max(DEFAULT_MAX_NUM_SEQS)),
        max_num_batched_tokens: a.engine.max_num_batched_tokens,
        enable_prefix_caching: !a.engine.no_prefix_caching,
        gpu_memory_utilization: a.engine.gpu_memory_utilization,
        seed: a.model.seed,
    }
}

/// `cpu` or `cuda:N`: what `--device` resolved to (`auto` included).
pub fn device_label(device: &candle_core::Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// `(device name, driver, NVML index)` for the environment and telemetry.
pub fn device_identity(device: &candle_core::Device) -> (String, String, Option<u32>) {
    let ordinal = match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id as u32,
        _ => {
            let driver = telemetry::nvml_info(0).map_or_else(|e| format!("NVML {e}"), |(_, d)| d);
            return (environment::cpu_name(), driver, None);
        }
    };
    match telemetry::nvml_info(ordinal) {
        Ok((name, driver)) => (name, driver, Some(ordinal)),
        Err(e) => (
            format!("CUDA device {ordinal}"),
            format!("NVML {e}"),
            Some(ordinal),
        ),
    }
}

/// Random prompts as the in-process bench draws them: the tokenizer's ids (capped at
/// the model's vocabulary) without BOS and EOS.
pub fn random_workload(
    tok: &engine_model::Tokenizer,
    cfg: &engine_model::DecoderConfig,
    seed: u64,
) -> anyhow::Result<Workload> {
    let vocab = tok.vocab_size().min(cfg.vocab_size);
    let mut special: Vec<u32> = tok.eos_token_ids.clone();
    special.extend(tok.bos_token_id);
    special.extend(cfg.eos_token_ids.iter().copied());
    Ok(Workload::random(vocab, &special, seed)?)
}

/// Everything but the engine: shared by the in-process and the endpoint benchmarks.
pub fn bench_options(
    a: &BenchArgs,
    sweep: Sweep,
    slo: Slo,
    budget: Option<f64>,
    gpu_index: Option<u32>,
) -> BenchOptions {
    BenchOptions {
        sweep,
        runs: a.runs.max(1),
        warmup: a.warmup,
        num_requests: a.num_requests.max(1),
        respect_eos: a.respect_eos,
        seed: a.model.seed,
        slo,
        latency_budget_s: budget,
        gpu_index,
        telemetry_period: Duration::from_millis(a.telemetry_interval_ms.max(1)),
        show_progress: !a.quiet,
        prompts_file: a.prompts.as_ref().map(|p| p.display().to_string()),
    }
}

/// Print the table and the analysis; write the files asked for.
pub fn output(
    a: &BenchArgs,
    results: &engine_profiler::result::BenchResults,
) -> anyhow::Result<()> {
    print!("{}", report::table::render_text(results));
    for line in report::table::analysis_lines(results) {
        println!("{line}");
    }
    if let Some(dir) = &a.out {
        report::write_all(results, dir).with_context(|| format!("writing {}", dir.display()))?;
        crate::say(&format!(
            "wrote results.json, summary.csv, report.md and plots to {}",
            dir.display()
        ));
    }
    if let Some(path) = &a.trace {
        report::write_trace(results, path)?;
        crate::say(&format!("wrote trace to {}", path.display()));
    }
    Ok(())
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let loads = loads(&a)?;
    let slo = a
        .slo
        .as_deref()
        .map(Slo::parse)
        .transpose()
        .context("--slo")?
        .unwrap_or_default();
    let budget = a
        .latency_budget
        .as_deref()
        .map(parse_duration)
        .transpose()
        .context("--latency-budget")?;
    let sweep = Sweep {
        loads: loads.clone(),
        input_lens: a.input_len.clone(),
        output_lens: a.output_len.clone(),
        temperatures: a.temperature.clone(),
        top_ps: a.top_p.clone(),
    };
    if let Some(url) = &a.endpoint {
        return crate::bench_endpoint::run(&a, url, sweep, slo, budget);
    }
    let device = crate::parse_device(&a.model.device)?;
    let dtype = crate::parse_dtype(a.model.dtype.as_deref(), &device)?;
    let cfg = engine_config(&a, &loads);
    let opts = a.model.load_options(device.clone(), dtype);
    let model = load_model(&a.model.model, &opts, &crate::say)
        .with_context(|| format!("model {}", a.model.model))?;
    let (model_name, model_source) = (model.name.clone(), model.source.clone());
    let mut engine = Engine::new(model, cfg).context("creating the engine")?;
    let workload = match &a.prompts {
        Some(p) => Workload::from_file(p, engine.tokenizer())?,
        None => random_workload(engine.tokenizer(), engine.decoder().config(), a.model.seed)?,
    };
    let label = device_label(&device);
    let (device_name, driver, gpu_index) = device_identity(&device);
    let ceilings = if a.no_roofline {
        None
    } else {
        let (c, cached) = device::load_or_measure(&device, &label, &device_name, dtype, false)?;
        crate::say(&format!(
            "ceilings ({}): copy {:.1} GB/s, matmul {:.1} GFLOP/s",
            if cached {
                "cached; `engine device` re-measures"
            } else {
                "measured now, cached"
            },
            c.copy_bytes_per_s / 1e9,
            c.matmul_flops_per_s / 1e9
        ));
        Some(c)
    };
    let env = Environment {
        model: model_name,
        model_source,
        model_facts: engine_profiler::bench::model_facts(&engine),
        dtype: format!("{dtype:?}").to_lowercase(),
        kernels: engine.decoder().kernels().as_str().to_string(),
        device: label,
        device_name,
        driver,
        cpu: environment::cpu_name(),
        num_cpus: environment::num_cpus(),
        engine_config: serde_json::to_value(engine.config())?,
        git_commit: environment::git_commit(),
        date: environment::utc_now_iso8601(),
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        profiler_version: env!("CARGO_PKG_VERSION").to_string(),
        endpoint: None,
    };
    let bench_opts = bench_options(&a, sweep, slo, budget, gpu_index);
    let results = run_bench(&mut engine, &workload, &bench_opts, env, ceilings);
    output(&a, &results)
}

#[cfg(test)]
mod tests {
    use crate::args::parse_bytes;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").is_err());
    }
}
