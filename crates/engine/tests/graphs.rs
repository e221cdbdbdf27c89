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

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device};
use engine_core::{Engine, EngineConfig, FinalOutput, Prompt, SamplingParams, StepRecord};
use engine_model::{load_model, KernelChoice, LoadOptions};

/// A tiny model's manifest in a directory of its own (`tag`: tests run in parallel).
fn tiny_manifest(tag: &str) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("engine-graphs-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("tiny.json");
    let json = serde_json::json!({
        "name": "tiny",
        "config": {
            "model_type": "mistral", "vocab_size": 320, "hidden_size": 64,
            "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "max_position_embeddings": 256, "sliding_window": 24,
            "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2
        }
    });
    std::fs::write(&path, serde_json::to_string(&json)?)?;
    Ok(format!("dummy:{}", path.display()))
}

fn engine(spec: &str, graphs: bool) -> Result<Engine> {
    let opts = LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        seed: 3,
        tokenizer: None,
        kernels: KernelChoice::Fused,
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
    match i % 3 {
        0 => base,
        1 => SamplingParams {
            logprobs: Some(2),
            ..base
        },
        _ => SamplingParams {
            temperature: 0.9,
            seed: Some(i as u64),
            logprobs: Some(1),
            ..base
        },
    }
}

/// 14 requests in 4 waves, each followed by a few steps; then run to the end.
fn run(engine: &mut Engine) -> Result<(Vec<FinalOutput>, Vec<StepRecord>)> {
    let mut ids = Vec::new();
    let mut done = Vec::new();
    for (wave, steps) in [(3usize, 4usize), (5, 3), (4, 6), (2, 0)] {
        for _ in 0..wave {
            let i = ids.len();
            let prompt: Vec<u32> = (0..3 + (i * 7) % 20)
                .map(|j| ((i * 31 + j * 7) % 300) as u32)
                .collect();
            ids.push(engine.add_request(Prompt::Tokens(prompt), params(i))?);
        }
        for _ in 0..steps {
            engine.step()?;
            done.extend(engine.take_finished());
        }
    }
    while engine.has_unfinished() {
        engine.step()?;
        done.extend(engine.take_finished());
    }
    done.extend(engine.take_finished());
    let outs = ids
        .iter()
        .map(|id| {
            done.iter()
                .find(|o| o.id == *id)
                .cloned()
                .with_context(|| format!("request {id} did not finish"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((outs, engine.take_step_records()))
}

#[test]
fn graph_replay_equals_eager_steps() -> Result<()> {
    let spec = tiny_manifest("replay")?;
    let (eager, eager_recs) = run(&mut engine(&spec, false)?)?;
    ensure!(eager_recs.iter().all(|r| r.graph_bucket == 0));
    let mut g = engine(&spec, true)?;
    let report = g.graph_report().context("graphs are on")?.clone();
    ensure!(report.buckets == vec![1, 2, 4, 8, 12], "{report:?}");
    ensure!(report.mode == "replayed eagerly" && report.max_context == 48);
    let (graphs, recs) = run(&mut g)?;
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
