//! `engine bench`: drive the engine in-process over a sweep of static batches,
//! closed-loop concurrencies or open-loop request rates, and report latency,
//! throughput, telemetry and distance from the hardware floor (see docs/metrics.md).
//! With `--endpoint URL` the same sweep runs against an OpenAI-compatible server
//! ([`crate::bench_endpoint`], docs/serving.md).

use crate::args::{EngineArgs, ModelArgs, DEFAULT_MAX_NUM_SEQS};
use anyhow::Context;
use clap::{ArgGroup, Args};
use engine_core::{Engine, EngineConfig};
use engine_model::load_model;
use engine_profiler::analysis::{parse_duration, Slo};
use engine_profiler::bench::{run_bench, BenchOptions};
use engine_profiler::cost::CostSettings;
use engine_profiler::lengths::LengthDist;
use engine_profiler::result::{BenchResults, Environment};
use engine_profiler::spec::{Load, Sweep};
use engine_profiler::traffic::Traffic;
use engine_profiler::workload::Workload;
use engine_profiler::{cost, device, environment, report, telemetry};
use std::path::PathBuf;
use std::time::Duration;

/// Complete examples for `engine bench --help`.
const EXAMPLES: &str = "\
Examples:
  # Static batches of the default model (the README's first command):
  engine bench --batch 1,8,32 --input-len 64 --output-len 32 --runs 3 --out bench-out

  # Serving a chat/code/RAG mix: 64 requests per concurrency level, goodput against
  # SLOs, the load a latency budget allows and what a token costs at $3.50 per GPU-hour:
  engine bench --concurrency 1,4,16 --num-requests 64 --workload mixed \\
      --slo ttft=500ms,itl=50ms,e2e=5s --latency-budget 5s --gpu-cost-per-hour 3.5 --out serve-out

  # The same mix through an OpenAI-compatible server (`engine serve`, vLLM...), then
  # what HTTP and serving add, metric by metric (docs/serving.md):
  engine bench --endpoint http://127.0.0.1:8000 --concurrency 1,4,16 --num-requests 64 \\
      --workload mixed --slo ttft=500ms,itl=50ms,e2e=5s --out served
  engine report serve-out served

  # An 8B model's shapes with seeded dummy weights (nothing downloaded), on a GPU:
  engine bench --model dummy:llama-3.1-8b --device cuda --batch 1,8,32,128 --out llama8b

Results: a compact table on stdout; with --out, results.json (everything),
summary.csv (every column), report.md and SVG plots. `engine report DIR` re-renders.";

/// Engine limits and KV-cache size for the benchmark's engine.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["batch", "concurrency", "request_rate"])))]
#[command(after_help = EXAMPLES)]
pub struct BenchArgs {
    /// Static batch sizes, e.g. 1,8,32,128.
    #[arg(long, value_delimiter = ',', value_parser = crate::validate::batch_size,
        help_heading = "Load (pick one)")]
    pub batch: Vec<usize>,
    /// Closed loop: requests kept in flight, e.g. 1,4,16,64.
    #[arg(long, value_delimiter = ',', value_parser = crate::validate::batch_size,
        help_heading = "Load (pick one)")]
    pub concurrency: Vec<usize>,
    /// Open loop: Poisson arrival rates in requests/s, e.g. 1,2.5.
    #[arg(long, value_delimiter = ',', value_parser = crate::validate::request_rate,
        help_heading = "Load (pick one)")]
    pub request_rate: Vec<f64>,
    /// Requests per serving config (--concurrency / --request-rate).
    #[arg(long, default_value_t = 64, value_parser = crate::validate::request_count,
        help_heading = "Load (pick one)")]
    pub num_requests: usize,
    /// Prompt lengths in tokens (a list sweeps).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "128",
        value_parser = crate::validate::token_count,
        help_heading = "Workload"
    )]
    pub input_len: Vec<usize>,
    /// Output lengths in tokens (a list sweeps).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "128",
        value_parser = crate::validate::token_count,
        help_heading = "Workload"
    )]
    pub output_len: Vec<usize>,
    /// Sampling temperatures (a list sweeps); 0 is greedy.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0",
        allow_negative_numbers = true,
        value_parser = crate::validate::temperature,
        help_heading = "Sampling"
    )]
    pub temperature: Vec<f32>,
    /// Top-p values (a list sweeps).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1.0",
        allow_negative_numbers = true,
        value_parser = crate::validate::top_p,
        help_heading = "Sampling"
    )]
    pub top_p: Vec<f32>,
    /// Measured runs per static-batch config.
    #[arg(long, default_value_t = 5, value_parser = crate::validate::request_count,
        help_heading = "Runs")]
    pub runs: usize,
    /// Warm-up runs per config (excluded from the metrics, counted in the report).
    #[arg(long, default_value_t = 1, value_parser = crate::validate::warmup_runs, help_heading = "Runs")]
    pub warmup: usize,
    /// Prompts from this file (one per line) instead of random token ids.
    #[arg(long, help_heading = "Workload")]
    pub prompts: Option<PathBuf>,
    /// Stop at EOS (default: ignore it and generate exactly --output-len tokens).
    #[arg(long, help_heading = "Workload")]
    pub respect_eos: bool,
    /// SLOs for goodput, e.g. ttft=500ms,itl=50ms,e2e=5s (keys: ttft, itl, tpot, e2e).
    #[arg(long, help_heading = "SLOs and analysis")]
    pub slo: Option<String>,
    /// Latency budget for the batch-size choice, e.g. 2.5s.
    #[arg(long, help_heading = "SLOs and analysis")]
    pub latency_budget: Option<String>,
    /// Write results.json, summary.csv, report.md and SVG plots here.
    #[arg(long, help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Write the steps as a Chrome/Perfetto trace (JSON) to this file.
    #[arg(long, help_heading = "Output")]
    pub trace: Option<PathBuf>,
    /// Telemetry sampling period in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = crate::validate::interval_ms, help_heading = "Output")]
    pub telemetry_interval_ms: u64,
    /// Skip the roofline (no ceilings measured or read).
    #[arg(long, help_heading = "SLOs and analysis")]
    pub no_roofline: bool,
    /// No progress bar.
    #[arg(long, help_heading = "Output")]
    pub quiet: bool,
    /// Realistic traffic: chat, code, long-form, rag, or mixed (0.5 chat, 0.2 code, 0.2
    /// rag, 0.1 long-form); each request draws its use case and lengths (docs/metrics.md).
    #[arg(
        long,
        conflicts_with_all = ["input_len", "output_len", "input_len_dist", "output_len_dist"],
        help_heading = "Workload"
    )]
    pub workload: Option<String>,
    /// Prompt lengths drawn per request: fixed:N, uniform:min=A,max=B,
    /// normal:mean=M,std=S[,min=A,max=B], lognormal:median=M,sigma=S[,min=A,max=B] or
    /// file:PATH (one length per line); seeded by --seed.
    #[arg(long, help_heading = "Workload")]
    pub input_len_dist: Option<String>,
    /// Output lengths drawn per request (same forms as --input-len-dist).
    #[arg(long, help_heading = "Workload")]
    pub output_len_dist: Option<String>,
    /// Multiply every drawn length (--workload, --*-len-dist) by this factor, keeping
    /// the shapes (e.g. 0.05 for a quick run).
    #[arg(long, default_value_t = 1.0, value_parser = crate::validate::scale,
        help_heading = "Workload")]
    pub length_scale: f64,
    /// GPU price in USD per hour: adds cost per 1M output and total tokens and per
    /// concurrent user held at --latency-budget / --slo. Nothing about money without it.
    #[arg(long, value_parser = crate::validate::price,
        help_heading = "Cost")]
    pub gpu_cost_per_hour: Option<f64>,
    /// GPUs the price is paid for (the price is per GPU).
    #[arg(
        long,
        default_value_t = 1,
        requires = "gpu_cost_per_hour",
        value_parser = crate::validate::gpu_count,
        help_heading = "Cost"
    )]
    pub num_gpus: usize,
    #[command(
        flatten,
        next_help_heading = "Endpoint (instead of the engine in-process)"
    )]
    pub endpoint: crate::bench_endpoint::EndpointArgs,
    // Last, so that `--help` lists the load and workload first.
    #[command(flatten, next_help_heading = "Model")]
    pub model: ModelArgs,
    #[command(flatten, next_help_heading = "Engine")]
    pub engine: EngineArgs,
}

/// The traffic of `--workload` or `--input-len-dist` / `--output-len-dist` (a side
/// without a distribution keeps its single fixed length).
fn traffic(a: &BenchArgs) -> anyhow::Result<Option<Traffic>> {
    let side = |dist: &Option<String>, lens: &[usize], name: &str| match (dist, lens) {
        (Some(spec), _) => LengthDist::parse(spec).with_context(|| format!("--{name}-len-dist")),
        (None, [n]) => Ok(LengthDist::Fixed { n: *n }),
        (None, _) => anyhow::bail!(
            "--{name}-len: with a length distribution give one length, or --{name}-len-dist"
        ),
    };
    let t = match (&a.workload, &a.input_len_dist, &a.output_len_dist) {
        (Some(w), _, _) => Traffic::preset(w)?,
        (None, None, None) if a.length_scale != 1.0 => {
            anyhow::bail!(
                "--length-scale applies to --workload or --input-len-dist / --output-len-dist"
            )
        }
        (None, None, None) => return Ok(None),
        (None, i, o) => Traffic::custom(
            side(i, &a.input_len, "input")?,
            side(o, &a.output_len, "output")?,
        ),
    };
    Ok(Some(t.with_length_scale(a.length_scale)?))
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
        enforce_eager: a.engine.enforce_eager,
        disable_overlap: a.engine.disable_overlap,
        ..Default::default()
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

/// `(device name, driver, NVML index)` for the environment and telemetry; the driver of
/// a CPU run is [`environment::NO_GPU`].
pub fn device_identity(device: &candle_core::Device) -> (String, String, Option<u32>) {
    let ordinal = match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id as u32,
        // NVML's state says nothing about a CPU run; its errors belong to GPU runs.
        _ => return (environment::cpu_name(), environment::NO_GPU.into(), None),
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
/// the model's vocabulary) without BOS and EOS. The endpoint bench draws the same.
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
    let traffic = traffic(&a)?;
    let cost = a
        .gpu_cost_per_hour
        .map(|p| CostSettings::new(p, a.num_gpus))
        .transpose()?;
    let sweep = Sweep {
        loads: loads.clone(),
        input_lens: a.input_len.clone(),
        output_lens: a.output_len.clone(),
        temperatures: a.temperature.clone(),
        top_ps: a.top_p.clone(),
        workload: traffic.as_ref().map(Traffic::label),
    };
    let mut bench_opts = BenchOptions {
        sweep,
        runs: a.runs.max(1),
        warmup: a.warmup,
        num_requests: a.num_requests.max(1),
        respect_eos: a.respect_eos,
        seed: a.model.seed,
        slo,
        latency_budget_s: budget,
        gpu_index: None,
        telemetry_period: Duration::from_millis(a.telemetry_interval_ms.max(1)),
        show_progress: !a.quiet,
        prompts_file: a.prompts.as_ref().map(|p| p.display().to_string()),
        traffic,
        cost,
    };
    if let Some(url) = &a.endpoint.endpoint {
        return crate::bench_endpoint::run(&a, url, &bench_opts);
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
        kernels: engine.decoder().kernels_label().to_string(),
        graphs: engine.graph_report().cloned(),
        overlap: engine.overlaps(),
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
    bench_opts.gpu_index = gpu_index;
    let results = run_bench(&mut engine, &workload, &bench_opts, env, ceilings);
    output(&a, &results)
}

/// Print the table, the analysis, cost and traffic lines; write the files asked for.
pub fn output(a: &BenchArgs, results: &BenchResults) -> anyhow::Result<()> {
    print!("{}", report::table::render_text(results));
    for line in report::table::analysis_lines(results) {
        println!("{line}");
    }
    for line in cost::lines(results)
        .into_iter()
        .chain(report::traffic::lines(results))
    {
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
