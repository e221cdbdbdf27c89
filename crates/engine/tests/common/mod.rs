//! Shared by the engine's integration tests: a tiny dummy model's manifest, and a run of
//! requests submitted in waves while the engine steps.
#![allow(dead_code)] // each test file uses its share

use anyhow::{Context, Result};
use engine_core::{Engine, FinalOutput, Prompt, SamplingParams, StepRecord};

/// A tiny llama-shaped model's manifest (`extra` merged into its config) in a directory
/// of its own: `test` and `tag` keep parallel tests apart.
pub fn tiny_manifest(test: &str, tag: &str, extra: serde_json::Value) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("engine-{test}-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("tiny.json");
    let mut config = serde_json::json!({
        "model_type": "llama", "vocab_size": 320, "hidden_size": 64,
        "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "tie_word_embeddings": false,
        "bos_token_id": 1, "eos_token_id": 2
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let json = serde_json::json!({ "name": "tiny", "config": config });
    std::fs::write(&path, serde_json::to_string(&json)?)?;
    Ok(format!("dummy:{}", path.display()))
}

/// 14 requests (request i with `params(i)`) in 4 waves, each followed by a few steps;
/// then run to the end. Outputs in request order, and the step records.
pub fn run_waves(
    engine: &mut Engine,
    params: impl Fn(usize) -> SamplingParams,
) -> Result<(Vec<FinalOutput>, Vec<StepRecord>)> {
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
    let mut calls = 0;
    while engine.has_unfinished() {
        engine.step()?;
        done.extend(engine.take_finished());
        calls += 1;
        anyhow::ensure!(calls < 10_000, "requests never finish");
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

/// Request i's variant of `base`: greedy, greedy with 2 logprobs, or sampled at T 0.9
/// with seed i and 1 logprob, in turn.
pub fn mixed(i: usize, base: SamplingParams) -> SamplingParams {
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
