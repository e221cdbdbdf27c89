//! A whole benchmark invocation: for each configuration of the sweep, check it fits,
//! run the warm-up runs (excluded, counted), run the measured runs under background
//! telemetry, then summarize, compute the roofline, and finally analyse each group.
//!
//! One engine serves every configuration; runs are separated by draining it, and each
//! run takes its own step records, so nothing leaks between runs.

use crate::analysis::{analyse, Slo};
use crate::device::Ceilings;
use crate::error::Result;
use crate::eta::Planned;
use crate::progress::Progress;
use crate::result::{
    BenchResults, ConfigResult, Environment, ModelFacts, RunRecord, Settings, Status,
    SCHEMA_VERSION,
};
use crate::roofline::roofline;
use crate::run_plan::{plan_run, run_seed, RunPlan};
use crate::serving::{run_serving, Arrivals};
use crate::spec::{ConfigSpec, Load, Sweep};
use crate::static_batch::{capacity, run_batch, RequestShape};
use crate::summary::summarize;
use crate::telemetry::Sampler;
use crate::traffic::Traffic;
use crate::workload::Workload;
use engine_core::Engine;
use std::time::{Duration, Instant};

/// Everything a benchmark needs besides the engine and the prompts.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub sweep: Sweep,
    /// Measured runs per static-batch config (serving configs run once).
    pub runs: usize,
    pub warmup: usize,
    /// Requests per serving config.
    pub num_requests: usize,
    pub respect_eos: bool,
    pub seed: u64,
    pub slo: Slo,
    pub latency_budget_s: Option<f64>,
    /// NVML device to sample (CUDA runs), and the sampling period.
    pub gpu_index: Option<u32>,
    pub telemetry_period: Duration,
    pub show_progress: bool,
    pub prompts_file: Option<String>,
    /// Per-request lengths from a traffic mix (`--workload`, length distributions).
    pub traffic: Option<Traffic>,
    /// The GPU's price, for the cost figures (`--gpu-cost-per-hour`).
    pub cost: Option<crate::cost::CostSettings>,
}

/// Model facts the roofline needs, read from the engine's decoder.
pub fn model_facts(engine: &Engine) -> ModelFacts {
    let d = engine.decoder();
    let c = d.config();
    ModelFacts {
        num_parameters: c.num_parameters(),
        weight_bytes: d.weight_bytes(),
        kv_bytes_per_token: c.kv_bytes_per_token(d.dtype()),
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        num_hidden_layers: c.num_hidden_layers,
        q_dim: c.num_attention_heads * c.head_dim,
        tie_word_embeddings: c.tie_word_embeddings,
        weight_bytes_read: d.weight_stats().read_per_step,
        weight_bytes_by_type: (d.weight_stats().by_type.iter())
            .map(|(ty, t)| (ty.clone(), t.bytes))
            .collect(),
    }
}

pub(crate) fn expected_tokens(spec: &ConfigSpec, o: &BenchOptions) -> f64 {
    let per = match &o.traffic {
        Some(t) => t.mean_output_len(),
        None => spec.output_len as f64,
    };
    match spec.load {
        Load::Batch { size } => (o.runs + o.warmup) as f64 * size as f64 * per,
        _ => (o.num_requests + o.warmup * warm_batch(spec, o)) as f64 * per,
    }
}

/// What the progress bar's ETA needs to know of a config.
pub(crate) fn planned(spec: &ConfigSpec, o: &BenchOptions) -> Planned {
    let (width, min_s) = match spec.load {
        Load::Batch { size } => (size as f64, 0.0),
        Load::Concurrency { n } => (n.min(o.num_requests) as f64, 0.0),
        Load::Rate { requests_per_s } => (1.0, o.num_requests as f64 / requests_per_s),
    };
    Planned {
        tokens: expected_tokens(spec, o),
        width,
        min_s,
    }
}

/// Requests per warm-up run of a serving config: a static batch of its concurrency
/// (at most `num_requests`), or one request for open loop.
fn warm_batch(spec: &ConfigSpec, o: &BenchOptions) -> usize {
    match spec.load {
        Load::Batch { size } => size,
        Load::Concurrency { n } => n.min(o.num_requests).max(1),
        Load::Rate { .. } => 1,
    }
}

/// Run every configuration of `o.sweep`.
pub fn run_bench(
    engine: &mut Engine,
    workload: &Workload,
    o: &BenchOptions,
    environment: Environment,
    ceilings: Option<Ceilings>,
) -> BenchResults {
    let t0 = Instant::now();
    let specs = o.sweep.expand();
    let plan = specs.iter().map(|s| planned(s, o)).collect();
    let mut progress = Progress::new(plan, o.show_progress);
    let facts = model_facts(engine);
    let mut configs = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let label = format!("config {}/{}: {}", i + 1, specs.len(), spec.label());
        progress.start_config(i);
        let mut c = run_config(engine, workload, o, spec, &label, &mut progress);
        if let (Some(ceil), true) = (&ceilings, c.status.is_ok()) {
            c.roofline = Some(roofline(&c.runs, &facts, ceil));
        }
        configs.push(c);
    }
    progress.finish();
    results(o, environment, ceilings, configs, t0)
}

/// The whole benchmark's results from its configs (analysis and cost included); shared
/// with the endpoint benchmark.
pub(crate) fn results(
    o: &BenchOptions,
    environment: Environment,
    ceilings: Option<Ceilings>,
    configs: Vec<ConfigResult>,
    t0: Instant,
) -> BenchResults {
    let mut results = BenchResults {
        schema_version: SCHEMA_VERSION,
        environment,
        settings: Settings {
            runs: o.runs,
            warmup: o.warmup,
            num_requests: o.num_requests,
            respect_eos: o.respect_eos,
            seed: o.seed,
            prompts_file: o.prompts_file.clone(),
            slo: o.slo.clone(),
            latency_budget_s: o.latency_budget_s,
            knee_method: crate::analysis::KNEE_METHOD.into(),
            percentile_method: crate::metrics::PERCENTILE_METHOD.into(),
            traffic: o.traffic.clone(),
            cost: o.cost.clone(),
        },
        ceilings,
        analysis: analyse(&configs, o.latency_budget_s),
        configs,
        total_wall_s: t0.elapsed().as_secs_f64(),
    };
    crate::cost::apply(&mut results);
    results
}

/// The plans of every run of `spec`, warm-ups first, for a model of `context` tokens
/// (the same plans whether the engine runs in-process or behind an endpoint).
pub(crate) fn plan_runs(context: usize, o: &BenchOptions, spec: &ConfigSpec) -> Vec<RunPlan> {
    let measured = match spec.load {
        Load::Batch { .. } => o.runs,
        _ => 1,
    };
    (0..o.warmup + measured)
        .map(|r| {
            let warm = r < o.warmup;
            let n = match spec.load {
                Load::Batch { size } => size,
                _ if warm => warm_batch(spec, o),
                _ => o.num_requests,
            };
            let open_loop = !warm && matches!(spec.load, Load::Rate { .. });
            let seed = run_seed(o.seed, spec, r);
            plan_run(spec, o.traffic.as_ref(), seed, n, context, open_loop)
        })
        .collect()
}

fn run_config(
    engine: &mut Engine,
    workload: &Workload,
    o: &BenchOptions,
    spec: &ConfigSpec,
    label: &str,
    progress: &mut Progress,
) -> ConfigResult {
    let mut result = ConfigResult::new(spec.clone());
    let plans = plan_runs(engine.decoder().config().max_position_embeddings, o, spec);
    let cap = capacity(engine);
    // A static batch must hold its sequences at once; a serving config's requests
    // (and its warm-up batches) must each fit alone: the scheduler queues the rest.
    let at_once = matches!(spec.load, Load::Batch { .. });
    for plan in &plans {
        if let Err(reason) = plan.fits(&cap, at_once) {
            progress.advance(expected_tokens(spec, o));
            result.status = Status::DoesNotFit { reason };
            return result;
        }
    }
    let shape = RequestShape {
        temperature: spec.temperature,
        top_p: spec.top_p,
        respect_eos: o.respect_eos,
    };
    let sampler = Sampler::start(o.gpu_index, o.telemetry_period);
    let runs = measure(
        engine,
        workload,
        o,
        spec,
        &plans,
        &shape,
        label,
        progress,
        &mut result.warmup_runs,
    );
    result.telemetry = sampler.finish();
    match runs {
        Ok(runs) => {
            result.summary = Some(summarize(&runs, &o.slo));
            result.runs = runs;
        }
        Err(e) => {
            result.status = Status::Failed {
                error: e.to_string(),
            }
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn measure(
    engine: &mut Engine,
    workload: &Workload,
    o: &BenchOptions,
    spec: &ConfigSpec,
    plans: &[RunPlan],
    shape: &RequestShape,
    label: &str,
    progress: &mut Progress,
    warmups_done: &mut usize,
) -> Result<Vec<RunRecord>> {
    let mut runs = Vec::new();
    for (r, plan) in plans.iter().enumerate() {
        let warm = r < o.warmup;
        let what = if warm {
            format!("warm-up {}/{}", r + 1, o.warmup)
        } else {
            format!("run {}/{}", r - o.warmup + 1, plans.len() - o.warmup)
        };
        progress.start_run(format!("{label} {what}"));
        let mut tick = |n: usize| progress.advance(n as f64);
        let rec = match (spec.load, warm) {
            (Load::Batch { .. }, _) | (_, true) => {
                run_batch(engine, workload, r, plan, shape, &mut tick)?
            }
            (Load::Concurrency { n }, false) => run_serving(
                engine,
                workload,
                r,
                plan,
                Arrivals::Closed { concurrency: n },
                shape,
                &mut tick,
            )?,
            (Load::Rate { .. }, false) => run_serving(
                engine,
                workload,
                r,
                plan,
                Arrivals::Poisson,
                shape,
                &mut tick,
            )?,
        };
        if warm {
            *warmups_done += 1;
        } else {
            runs.push(rec);
        }
    }
    Ok(runs)
}
