//! A whole benchmark invocation: for each configuration of the sweep, check it fits,
//! run the warm-up runs (excluded, counted), run the measured runs under background
//! telemetry, then summarize, compute the roofline, and finally analyse each group.
//!
//! One engine serves every configuration; runs are separated by draining it, and each
//! run takes its own step records, so nothing leaks between runs.

use crate::analysis::{analyse, Slo};
use crate::device::Ceilings;
use crate::error::Result;
use crate::progress::Progress;
use crate::result::{
    BenchResults, ConfigResult, Environment, ModelFacts, RunRecord, Settings, Status,
    SCHEMA_VERSION,
};
use crate::roofline::roofline;
use crate::serving::{run_serving, Arrivals};
use crate::spec::{ConfigSpec, Load, Sweep};
use crate::static_batch::{fits, run_batch, RequestShape};
use crate::summary::summarize;
use crate::telemetry::Sampler;
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
    }
}

pub(crate) fn expected_tokens(spec: &ConfigSpec, o: &BenchOptions) -> f64 {
    let per = spec.output_len as f64;
    match spec.load {
        Load::Batch { size } => (o.runs + o.warmup) as f64 * size as f64 * per,
        _ => (o.num_requests + o.warmup * warm_batch(spec, o)) as f64 * per,
    }
}

/// Requests per warm-up run of a serving config: a static batch of its concurrency
/// (at most `num_requests`), or one request for open loop.
pub(crate) fn warm_batch(spec: &ConfigSpec, o: &BenchOptions) -> usize {
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
    let total: f64 = specs.iter().map(|s| expected_tokens(s, o)).sum();
    let mut progress = Progress::new(total, o.show_progress);
    let facts = model_facts(engine);
    let mut configs = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let label = format!("config {}/{}: {}", i + 1, specs.len(), spec.label());
        let mut c = run_config(engine, workload, o, spec, &label, &mut progress);
        if let (Some(ceil), true) = (&ceilings, c.status.is_ok()) {
            c.roofline = Some(roofline(&c.runs, &facts, ceil));
        }
        configs.push(c);
    }
    progress.finish();
    BenchResults {
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
        },
        ceilings,
        analysis: analyse(&configs, o.latency_budget_s),
        configs,
        total_wall_s: t0.elapsed().as_secs_f64(),
    }
}

fn run_config(
    engine: &mut Engine,
    workload: &Workload,
    o: &BenchOptions,
    spec: &ConfigSpec,
    label: &str,
    progress: &mut Progress,
) -> ConfigResult {
    let mut result = ConfigResult {
        spec: spec.clone(),
        status: Status::Ok,
        warmup_runs: 0,
        runs: Vec::new(),
        summary: None,
        telemetry: Default::default(),
        roofline: None,
    };
    let fit_batch = match spec.load {
        Load::Batch { size } => size,
        _ => 1,
    };
    if let Err(reason) = fits(engine, fit_batch, spec.input_len, spec.output_len) {
        progress.advance(expected_tokens(spec, o));
        result.status = Status::DoesNotFit { reason };
        return result;
    }
    let shape = RequestShape {
        input_len: spec.input_len,
        output_len: spec.output_len,
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

/// The seed of run `r` (warm-ups first) of a config: distinct per config and run, so
/// prompts are fresh (no prefix-cache hits), and the same for every driver.
pub(crate) fn run_seed(o: &BenchOptions, spec: &ConfigSpec, r: usize) -> u64 {
    let base = o.seed
        ^ ((spec.input_len as u64) << 32)
        ^ (((spec.load.value() * 1000.0) as u64) << 8)
        ^ (spec.output_len as u64);
    base.wrapping_add(r as u64 * 0x1_0000_0001)
}

/// Measured runs of a config: `o.runs` static batches, or one serving run.
pub(crate) fn measured_runs(spec: &ConfigSpec, o: &BenchOptions) -> usize {
    if matches!(spec.load, Load::Batch { .. }) {
        o.runs
    } else {
        1
    }
}

#[allow(clippy::too_many_arguments)]
fn measure(
    engine: &mut Engine,
    workload: &Workload,
    o: &BenchOptions,
    spec: &ConfigSpec,
    shape: &RequestShape,
    label: &str,
    progress: &mut Progress,
    warmups_done: &mut usize,
) -> Result<Vec<RunRecord>> {
    let mut runs = Vec::new();
    let n_runs = measured_runs(spec, o);
    for r in 0..o.warmup + n_runs {
        let warm = r < o.warmup;
        let what = if warm {
            format!("warm-up {}/{}", r + 1, o.warmup)
        } else {
            format!("run {}/{n_runs}", r - o.warmup + 1)
        };
        progress.set_label(format!("{label} {what}"));
        let seed = run_seed(o, spec, r);
        let mut tick = |n: usize| progress.advance(n as f64);
        let rec = match (spec.load, warm) {
            (Load::Batch { size }, _) => {
                run_batch(engine, workload, r, seed, size, shape, &mut tick)?
            }
            (_, true) => run_batch(
                engine,
                workload,
                r,
                seed,
                warm_batch(spec, o),
                shape,
                &mut tick,
            )?,
            (Load::Concurrency { n }, false) => run_serving(
                engine,
                workload,
                r,
                seed,
                o.num_requests,
                Arrivals::Closed { concurrency: n },
                shape,
                &mut tick,
            )?,
            (Load::Rate { requests_per_s }, false) => run_serving(
                engine,
                workload,
                r,
                seed,
                o.num_requests,
                Arrivals::Poisson {
                    rate_per_s: requests_per_s,
                },
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
