//! Sampling in the engine: every row goes through one launch of the sample op per step
//! (engine_kernels::sample; its CPU port here), keyed by the request's seed and output
//! position.
//!
//! On a tiny dummy model, 64 mixed requests (greedy, greedy with logprobs, sampled with
//! temperature / top-k / top-p / min-p alone and combined, some with logprobs), each with
//! its own seed, are run alone, then all together in one batch, then together against a
//! KV cache small enough to preempt (recompute) under a small token budget (chunked
//! prefill), on both op sets (and through the decode-graph path on the fused one). Every
//! request must produce the same tokens in every run. Then the keying itself: each token
//! of the alone runs is replayed by the sample op on the logits recomputed for that
//! position with (seed, output position): a token drawn at the wrong position or with
//! the wrong seed fails here even if it does so in every run alike. Logprobs in the
//! engine's output equal `log_softmax` of the recomputed logits (raw logprobs, the
//! engine's semantics) within `LOGPROB_TOL`.

mod common;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use engine_core::runner::full_logits;
use engine_core::sampler::row_params;
use engine_core::{Engine, EngineConfig, FinalOutput, Prompt, SamplingParams, StepRecord};
use engine_kernels::sample::{params_tensor, sample, unpack};
use engine_model::{load_model, KernelChoice, LoadOptions};

/// |engine logprob - log_softmax(recomputed logits)|: the forward of the batch and of
/// the recomputation differ by f32 rounding only.
const LOGPROB_TOL: f64 = 1e-4;

fn tiny_manifest(tag: &str) -> Result<String> {
    common::tiny_manifest("sampling", tag, serde_json::json!({}))
}

fn engine(spec: &str, kernels: KernelChoice, cfg: EngineConfig) -> Result<Engine> {
    let opts = LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        seed: 5,
        tokenizer: None,
        kernels,
        quant: Default::default(),
    };
    Ok(Engine::new(load_model(spec, &opts, &|_| {})?, cfg)?)
}

fn ample() -> EngineConfig {
    EngineConfig {
        num_blocks: Some(400),
        enable_prefix_caching: false,
        ..EngineConfig::default()
    }
}

/// Request `i` of the mix: its prompt and parameters (every one seeded).
fn request(i: usize) -> (Vec<u32>, SamplingParams) {
    let prompt = (0..4 + (i * 7) % 29)
        .map(|j| (3 + (i * 37 + j * 11) % 310) as u32)
        .collect();
    let base = SamplingParams {
        ignore_eos: true,
        seed: Some(1000 + i as u64),
        ..SamplingParams::greedy(5 + (i * 3) % 16)
    };
    let t = |temperature| SamplingParams {
        temperature,
        ..base.clone()
    };
    let p = match i % 8 {
        0 => base.clone(),
        1 => SamplingParams {
            logprobs: Some(3),
            ..base.clone()
        },
        2 => t(1.0),
        3 => SamplingParams {
            top_p: 0.9,
            logprobs: Some(2),
            ..t(0.7)
        },
        4 => SamplingParams {
            top_k: Some(5),
            ..t(1.3)
        },
        5 => SamplingParams {
            min_p: 0.1,
            logprobs: Some(0),
            ..t(0.9)
        },
        6 => SamplingParams {
            top_k: Some(40),
            top_p: 0.8,
            min_p: 0.02,
            logprobs: Some(5),
            ..t(0.8)
        },
        _ => SamplingParams {
            top_p: 0.5,
            ..t(2.0)
        },
    };
    (prompt, p)
}

fn requests() -> Vec<(Vec<u32>, SamplingParams)> {
    (0..64).map(request).collect()
}

/// Submit all of `reqs`, run to the end; outputs in request order and the step records.
fn run_all(
    e: &mut Engine,
    reqs: &[(Vec<u32>, SamplingParams)],
) -> Result<(Vec<FinalOutput>, Vec<StepRecord>)> {
    let batch = reqs
        .iter()
        .map(|(p, s)| (Prompt::Tokens(p.clone()), s.clone()))
        .collect();
    let outs = e
        .generate(batch)?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok((outs, e.take_step_records()))
}

/// Each request alone, one after another on one engine.
fn run_alone(e: &mut Engine, reqs: &[(Vec<u32>, SamplingParams)]) -> Result<Vec<FinalOutput>> {
    let mut outs = Vec::new();
    for r in reqs {
        outs.extend(run_all(e, std::slice::from_ref(r))?.0);
    }
    Ok(outs)
}

fn same_tokens(label: &str, alone: &[FinalOutput], got: &[FinalOutput]) -> Result<()> {
    ensure!(got.len() == alone.len(), "{label}: {} outputs", got.len());
    for (i, (a, g)) in alone.iter().zip(got).enumerate() {
        ensure!(
            a.token_ids == g.token_ids,
            "{label}: request {i} ({:?}): {:?} vs {:?} alone",
            request(i).1,
            g.token_ids,
            a.token_ids
        );
    }
    Ok(())
}

/// `log_softmax(row)` in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let lse = row
        .iter()
        .map(|&x| (f64::from(x) - max).exp())
        .sum::<f64>()
        .ln();
    row.iter().map(|&x| f64::from(x) - max - lse).collect()
}

/// Replay every token of `outs` with the sample op on the recomputed logits at its
/// position, and check the logprobs the engine returned. Returns the largest logprob
/// difference seen.
fn replay(e: &Engine, outs: &[FinalOutput]) -> Result<f64> {
    let mut max_diff = 0f64;
    for (i, o) in outs.iter().enumerate() {
        let (prompt, p) = request(i);
        let rows = full_logits(e, &prompt, &o.token_ids)?;
        let seed = p.seed.context("seeded")?;
        let want_lp = p.logprobs.is_some();
        ensure!(o.logprobs.len() == if want_lp { o.token_ids.len() } else { 0 });
        for (k, (row, &token)) in rows.iter().zip(&o.token_ids).enumerate() {
            let rp = [row_params(&p, seed, k)];
            let x = Tensor::from_slice(row, (1, row.len()), &Device::Cpu)?;
            let n = rp[0].n_logprobs as usize;
            let got = unpack(&sample(&x, &params_tensor(&rp, n, &Device::Cpu)?, n)?, &rp)?;
            ensure!(
                got[0].token == token,
                "request {i} token {k}: engine drew {token}, the op at (seed {seed}, \
                 position {k}) draws {}",
                got[0].token
            );
            let Some(lp) = o.logprobs.get(k) else {
                continue;
            };
            let want = log_softmax(row);
            ensure!(lp.token == token);
            let n = p.logprobs.unwrap_or(0);
            ensure!(lp.top_logprobs.len() == n, "request {i}: {n} top logprobs");
            let mut sorted = want.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            for &(id, l) in std::iter::once(&(token, lp.logprob)).chain(&lp.top_logprobs) {
                let d = (f64::from(l) - want[id as usize]).abs();
                max_diff = max_diff.max(d);
                ensure!(
                    d <= LOGPROB_TOL,
                    "request {i} token {k}: id {id} logprob {l}"
                );
            }
            for (j, &(_, l)) in lp.top_logprobs.iter().enumerate() {
                ensure!(
                    (f64::from(l) - sorted[j]).abs() <= LOGPROB_TOL,
                    "request {i} token {k}: top {j} is {l}, want {}",
                    sorted[j]
                );
            }
        }
    }
    Ok(max_diff)
}

fn alone_batch_preempted(kernels: KernelChoice, tag: &str) -> Result<()> {
    let spec = tiny_manifest(tag)?;
    let reqs = requests();
    let mut alone_engine = engine(&spec, kernels, ample())?;
    let alone = run_alone(&mut alone_engine, &reqs)?;
    let sampled = reqs.iter().filter(|(_, p)| !p.is_greedy()).count();
    ensure!(sampled == 48, "{sampled} sampled requests");

    let (batch, recs) = run_all(&mut engine(&spec, kernels, ample())?, &reqs)?;
    ensure!(recs.iter().map(|r| r.num_seqs).max() == Some(64));
    same_tokens("batch of 64", &alone, &batch)?;

    let small = EngineConfig {
        num_blocks: Some(20),
        max_num_batched_tokens: 96,
        ..ample()
    };
    let (pre, recs) = run_all(&mut engine(&spec, kernels, small)?, &reqs)?;
    let preempted_sampled = (pre.iter().enumerate())
        .filter(|(i, o)| o.timeline.num_preemptions > 0 && !request(*i).1.is_greedy())
        .count();
    ensure!(
        recs.iter().any(|r| r.num_preempted > 0) && preempted_sampled > 0,
        "no sampled request was preempted"
    );
    same_tokens("small KV cache (preempted)", &alone, &pre)?;

    if kernels == KernelChoice::Fused {
        let graphs = EngineConfig {
            graphs_on_cpu: true,
            ..ample()
        };
        let (g, recs) = run_all(&mut engine(&spec, kernels, graphs)?, &reqs)?;
        ensure!(
            recs.iter().any(|r| r.graph_bucket == 64),
            "no decode graph step"
        );
        same_tokens("decode graphs", &alone, &g)?;
    }

    let diff = replay(&alone_engine, &alone)?;
    let distinct = alone
        .iter()
        .flat_map(|o| &o.token_ids)
        .collect::<std::collections::HashSet<_>>();
    ensure!(
        distinct.len() > 50,
        "too few distinct tokens: {}",
        distinct.len()
    );
    eprintln!(
        "{tag}: 64 requests ({preempted_sampled} sampled ones preempted): same tokens alone, \
         in the batch, preempted; replayed by (seed, position); max |logprob diff| {diff:.1e}"
    );
    Ok(())
}

#[test]
fn same_seed_same_tokens_candle() -> Result<()> {
    alone_batch_preempted(KernelChoice::Candle, "candle")
}

#[test]
fn same_seed_same_tokens_fused() -> Result<()> {
    alone_batch_preempted(KernelChoice::Fused, "fused")
}

/// Requests without a seed get one at admission from the engine's seed: the same engine
/// seed reproduces them, another changes them.
#[test]
fn unseeded_requests_follow_the_engine_seed() -> Result<()> {
    let spec = tiny_manifest("unseeded")?;
    let reqs: Vec<_> = (0..8)
        .map(|i| {
            let (prompt, p) = request(2 + 8 * i);
            (prompt, SamplingParams { seed: None, ..p })
        })
        .collect();
    let with_seed = |seed| -> Result<Vec<Vec<u32>>> {
        let cfg = EngineConfig { seed, ..ample() };
        let outs = run_all(&mut engine(&spec, KernelChoice::Candle, cfg)?, &reqs)?.0;
        Ok(outs.into_iter().map(|o| o.token_ids).collect())
    };
    let a = with_seed(11)?;
    ensure!(a == with_seed(11)?, "engine seed 11 twice");
    ensure!(a != with_seed(12)?, "engine seeds 11 and 12 agree");
    Ok(())
}
