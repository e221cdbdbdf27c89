//! The decode-graph path (crates/engine/src/graphs.rs) replayed eagerly on the CPU: the
//! same bucketing, padding and one-copy refill that the CUDA graphs read, checked
//! against plain eager steps of the same fused op set.
//!
//! A tiny dummy model serves 14 requests submitted at staggered steps, so decode-only
//! steps run with 1..12 sequences (buckets 1, 2, 4, 8 and 12, padded rows included)
//! next to eager prefill steps. Greedy requests (with and without logprobs) and seeded
//! sampled ones must produce the tokens of the eager run; logprobs agree within f32
//! noise. A padded row that wrote its K/V anywhere, or attended to anything, would
//! change some request's tokens (the cache is small enough that every block is used).

mod common;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device};
use common::run_waves;
use engine_core::{Engine, EngineConfig, SamplingParams};
use engine_model::{load_model, KernelChoice, LoadOptions};

/// The mistral-shaped tiny model (a 24-token window) in a directory of its own.
fn tiny_manifest(tag: &str) -> Result<String> {
    let window = serde_json::json!({ "model_type": "mistral", "sliding_window": 24 });
    common::tiny_manifest("graphs", tag, window)
}

fn engine(spec: &str, graphs: bool) -> Result<Engine> {
    let opts = LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        seed: 3,
        tokenizer: None,
        kernels: KernelChoice::Fused,
        quant: Default::default(),
    };
    let cfg = EngineConfig {
        num_blocks: Some(40),
        max_num_seqs: 12,
        enable_prefix_caching: false,
        graphs_on_cpu: graphs,
        graph_max_context: 48,
        ..EngineConfig::default()
    };
    Ok(Engine::new(load_model(spec, &opts, &|_| {})?, cfg)?)
}

fn params(i: usize) -> SamplingParams {
    let base = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(6 + (i * 5) % 30)
    };
    common::mixed(i, base)
}

#[test]
fn graph_replay_equals_eager_steps() -> Result<()> {
    let spec = tiny_manifest("replay")?;
    let (eager, eager_recs) = run_waves(&mut engine(&spec, false)?, params)?;
    ensure!(eager_recs.iter().all(|r| r.graph_bucket == 0));
    let mut g = engine(&spec, true)?;
    let report = g.graph_report().context("graphs are on")?.clone();
    ensure!(report.buckets == vec![1, 2, 4, 8, 12], "{report:?}");
    ensure!(report.mode == "replayed eagerly" && report.max_context == 48);
    let (graphs, recs) = run_waves(&mut g, params)?;
    // Decode-only steps of every size ran in a bucket; prefill steps eagerly.
    let mut sizes: Vec<(usize, usize)> = recs
        .iter()
        .filter(|r| r.graph_bucket > 0)
        .map(|r| (r.num_seqs, r.graph_bucket))
        .collect();
    sizes.sort();
    sizes.dedup();
    ensure!(sizes
        .iter()
        .all(|&(n, b)| n <= b && (b == 12 || b.is_power_of_two())));
    ensure!(
        sizes.iter().any(|&(n, b)| n < b),
        "no padded bucket: {sizes:?}"
    );
    ensure!(
        sizes.len() >= 5,
        "too few distinct batch sizes in graphs: {sizes:?}"
    );
    ensure!(recs
        .iter()
        .any(|r| r.graph_bucket == 0 && r.num_prefill_tokens > 0));
    // Contexts past graph_max_context ran eagerly: some decode-only steps are eager.
    ensure!(recs
        .iter()
        .any(|r| r.graph_bucket == 0 && r.is_decode_only()));
    let mut max_diff = 0f32;
    for (i, (a, b)) in eager.iter().zip(&graphs).enumerate() {
        ensure!(
            a.token_ids == b.token_ids,
            "request {i}: {:?} vs eager {:?}",
            b.token_ids,
            a.token_ids
        );
        for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
            max_diff = max_diff.max((x.logprob - y.logprob).abs());
        }
    }
    ensure!(max_diff <= 1e-4, "logprobs differ by {max_diff}");
    eprintln!("graphs {sizes:?}: tokens equal, max |logprob difference| {max_diff:.2e}");
    Ok(())
}

#[test]
fn enforce_eager_and_the_candle_op_set_turn_graphs_off() -> Result<()> {
    let spec = tiny_manifest("off")?;
    let opts = |kernels| LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        seed: 3,
        tokenizer: None,
        kernels,
        quant: Default::default(),
    };
    let cfg = EngineConfig {
        num_blocks: Some(40),
        graphs_on_cpu: true,
        enforce_eager: true,
        ..EngineConfig::default()
    };
    let e = Engine::new(
        load_model(&spec, &opts(KernelChoice::Fused), &|_| {})?,
        cfg.clone(),
    )?;
    ensure!(e.graph_report().is_none());
    let cfg = EngineConfig {
        enforce_eager: false,
        ..cfg
    };
    let e = Engine::new(
        load_model(&spec, &opts(KernelChoice::Candle), &|_| {})?,
        cfg,
    )?;
    ensure!(e.graph_report().is_none());
    Ok(())
}
