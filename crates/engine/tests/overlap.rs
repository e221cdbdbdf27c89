//! Overlapped steps (crates/engine/src/step.rs) checked on the CPU against sequential
//! ones: step n+1 is scheduled, prepared and launched before step n's tokens are read,
//! its decode rows take their pending tokens from step n's sample output on the device,
//! and the results are applied one call later. On the CPU this gains nothing (ops finish
//! as they are launched) but runs the same code path the GPU runs.
//!
//! A tiny dummy model serves 14 requests submitted in waves: greedy, greedy with
//! logprobs, seeded sampled; some end on a stop token (found one step late, after their
//! next row was computed), the rest at max_tokens (never overshot). Every request must
//! produce the tokens of the sequential run, with the fused op set (decode graphs
//! replayed eagerly, so pending tokens are written into a graph bucket's buffer) and
//! with the candle op set (eager batches), with a roomy KV cache and with one so small
//! that requests are preempted while a step is in flight.

mod common;

use anyhow::{ensure, Result};
use candle_core::{DType, Device};
use common::{run_waves, tiny_manifest};
use engine_core::{Engine, EngineConfig, FinalOutput, Prompt, SamplingParams};
use engine_model::{load_model, KernelChoice, LoadOptions};
use engine_scheduler::FinishReason;

#[derive(Clone, Copy, Debug)]
struct Setup {
    kernels: KernelChoice,
    overlap: bool,
    num_blocks: usize,
}

fn engine(spec: &str, s: Setup) -> Result<Engine> {
    let opts = LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        seed: 5,
        tokenizer: None,
        kernels: s.kernels,
        quant: Default::default(),
    };
    let cfg = EngineConfig {
        block_size: 4,
        num_blocks: Some(s.num_blocks),
        max_num_seqs: 12,
        max_num_batched_tokens: 64,
        graphs_on_cpu: true,
        graph_max_context: 64,
        overlap_on_cpu: s.overlap,
        ..EngineConfig::default()
    };
    let e = Engine::new(load_model(spec, &opts, &|_| {})?, cfg)?;
    ensure!(
        e.overlaps() == s.overlap,
        "overlap setting not taken: {s:?}"
    );
    Ok(e)
}

/// Request i's params; `stops[i]` ends it on that token.
fn params(i: usize, stops: &[Option<u32>]) -> SamplingParams {
    let base = SamplingParams {
        ignore_eos: true,
        stop_token_ids: stops.get(i).copied().flatten().into_iter().collect(),
        ..SamplingParams::greedy(5 + (i * 5) % 20)
    };
    common::mixed(i, base)
}

/// A stop token for every other request: one that its unstopped output produces at
/// its third token or later (so it stops mid-run, with steps in flight).
fn stops_from(outs: &[FinalOutput]) -> Vec<Option<u32>> {
    outs.iter()
        .enumerate()
        .map(|(i, o)| {
            let first = |t: &u32| o.token_ids.iter().position(|x| x == t);
            o.token_ids
                .iter()
                .enumerate()
                .skip(2)
                .find(|&(k, t)| first(t) == Some(k))
                .map(|(_, &t)| t)
                .filter(|_| i % 2 == 0)
        })
        .collect()
}

fn same_outputs(what: &str, a: &[FinalOutput], b: &[FinalOutput]) -> Result<f32> {
    let mut max_diff = 0f32;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        ensure!(
            x.token_ids == y.token_ids && x.finish_reason == y.finish_reason,
            "{what}: request {i}: {:?} ({:?}) vs sequential {:?} ({:?})",
            y.token_ids,
            y.finish_reason,
            x.token_ids,
            x.finish_reason
        );
        ensure!(
            x.logprobs.len() == y.logprobs.len(),
            "{what}: request {i} logprobs"
        );
        for (p, q) in x.logprobs.iter().zip(&y.logprobs) {
            max_diff = max_diff.max((p.logprob - q.logprob).abs());
        }
    }
    ensure!(max_diff <= 1e-4, "{what}: logprobs differ by {max_diff}");
    Ok(max_diff)
}

#[test]
fn overlapped_steps_produce_the_sequential_outputs() -> Result<()> {
    let spec = tiny_manifest("overlap", "equal", serde_json::json!({}))?;
    for kernels in [KernelChoice::Fused, KernelChoice::Candle] {
        let seq = |num_blocks| Setup {
            kernels,
            overlap: false,
            num_blocks,
        };
        let (plain, _) = run_waves(&mut engine(&spec, seq(200))?, |i| params(i, &[]))?;
        let stops = stops_from(&plain);
        ensure!(
            stops.iter().flatten().count() >= 5,
            "too few stop tokens: {stops:?}"
        );
        for num_blocks in [200, 24] {
            let (want, _) = run_waves(&mut engine(&spec, seq(num_blocks))?, |i| params(i, &stops))?;
            let stopped = want
                .iter()
                .filter(|o| o.finish_reason == FinishReason::Stop)
                .count();
            ensure!(stopped >= 5, "{kernels:?}: {stopped} requests stopped");
            let over = Setup {
                overlap: true,
                ..seq(num_blocks)
            };
            let (got, recs) = run_waves(&mut engine(&spec, over)?, |i| params(i, &stops))?;
            let what = format!("{kernels:?}, {num_blocks} blocks");
            let diff = same_outputs(&what, &want, &got)?;
            ensure!(recs.iter().all(|r| r.overlapped));
            let preempted: usize = recs.iter().map(|r| r.num_preempted).sum();
            let graphs = recs.iter().filter(|r| r.graph_bucket > 0).count();
            if num_blocks == 24 {
                ensure!(preempted > 0, "{what}: no preemption");
            }
            if kernels == KernelChoice::Fused {
                ensure!(graphs > 0, "{what}: no decode graph steps");
            }
            eprintln!(
                "{what}: {stopped} stopped, {preempted} preemptions, {graphs} graph steps, \
                 max |logprob difference| {diff:.1e}"
            );
        }
    }
    Ok(())
}

/// An abort while a step is in flight keeps the output so far and leaves the others'
/// outputs as they were.
#[test]
fn abort_with_a_step_in_flight() -> Result<()> {
    let spec = tiny_manifest("overlap", "abort", serde_json::json!({}))?;
    let setup = |overlap| Setup {
        kernels: KernelChoice::Fused,
        overlap,
        num_blocks: 200,
    };
    let mut outs = Vec::new();
    for overlap in [false, true] {
        let mut e = engine(&spec, setup(overlap))?;
        let ids: Vec<_> = (0..3u32)
            .map(|i| {
                let prompt = (0..5 + i).map(|j| 10 + 7 * j + i).collect();
                e.add_request(Prompt::Tokens(prompt), params(0, &[]))
            })
            .collect::<engine_core::Result<_>>()?;
        for _ in 0..3 {
            e.step()?;
        }
        e.abort(ids[1]);
        let mut done = e.take_finished();
        while e.has_unfinished() {
            e.step()?;
            done.extend(e.take_finished());
        }
        done.sort_by_key(|o| o.id);
        ensure!(
            done.len() == 3,
            "overlap {overlap}: {} finished",
            done.len()
        );
        ensure!(done[1].finish_reason == FinishReason::Abort);
        ensure!(e.scheduler().kv().num_blocks_in_use() == 0, "blocks leaked");
        outs.push(done);
    }
    // The aborted request lags one token behind with overlap (its in-flight token is
    // dropped); the others are unaffected.
    for k in [0, 2] {
        ensure!(
            outs[0][k].token_ids == outs[1][k].token_ids,
            "request {k} changed"
        );
    }
    ensure!(outs[1][1].token_ids.len() + 1 == outs[0][1].token_ids.len());
    Ok(())
}
