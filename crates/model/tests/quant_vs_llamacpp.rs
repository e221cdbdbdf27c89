//! The default model with `--quant native` against llama.cpp on the same GGUF: greedy
//! top-1 identical wherever llama.cpp's top-2 logit margin exceeds `MARGIN`, over 5
//! prompts x 64 steps (issue #17's acceptance).
//!
//! llama.cpp decodes greedily on its own (benches/llamacpp/llama_greedy.c, one token
//! per llama_decode); we then feed its tokens to our decoder one decode step at a time
//! and compare our argmax after each with its pick. The same comparison runs for
//! `--quant none` (our f32 path, which matches candle-transformers to 1e-4) for scale.
//!
//! Measured 2026-11-30 (x86-64 AMD EPYC, AVX-512): NOT met. With llama.cpp's defaults,
//! native agrees at 308/320 steps and at 299/306 of those where llama.cpp's margin
//! exceeds 0.1 (the worst miss at margin 0.26); our f32 path agrees at 310/320 and
//! 302/306. With LLAMA_KV=f32: native 304/320 and 293/299, f32 310/320 and 296/299. So
//! llama.cpp's own rounding (f16 attention, 8-bit activations) moves margins by more
//! than 0.1: even exact f32 arithmetic misses the criterion.
//!
//! Ignored by default: it needs the
//! llama.cpp build of benches/cpu-vs-llamacpp.sh; `bash benches/cpu-vs-llamacpp.sh
//! --greedy` builds llama_greedy and runs this test with `LLAMA_GREEDY` set to it.

mod common;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device};
use common::{argmax, top2_margin, Ours, PROMPTS};
use engine_model::{gguf, Decoder, QuantMode, SeqInput, Tokenizer, WeightSource};
use std::io::Write;
use std::process::{Command, Stdio};

const STEPS: usize = 64;
const MARGIN: f32 = 0.1;

/// llama.cpp's pick and top-2 margin after each step, per prompt.
fn llama_picks(bin: &str, model: &str, prompts: &[Vec<u32>]) -> Result<Vec<Vec<(u32, f32)>>> {
    // llama.cpp's defaults (f16 KV cache, flash attention), or with LLAMA_KV=f32 an f32
    // cache and plain attention like ours.
    let kv = std::env::var("LLAMA_KV").unwrap_or_else(|_| "f16".into());
    eprintln!("llama.cpp KV cache: {kv}");
    let mut child = Command::new(bin)
        .args([model, &STEPS.to_string(), "2", &kv])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {bin}"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    for p in prompts {
        let ids: Vec<String> = p.iter().map(u32::to_string).collect();
        writeln!(stdin, "{}", ids.join(" "))?;
    }
    drop(stdin);
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "{bin} failed: {}", out.status);
    let mut picks = vec![Vec::new(); prompts.len()];
    for line in String::from_utf8(out.stdout)?.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(f.len() == 4, "bad line from {bin}: {line}");
        let k: usize = f[0].parse()?;
        picks[k].push((f[2].parse()?, f[3].parse()?));
    }
    ensure!(
        picks.iter().all(|p| p.len() == STEPS),
        "{bin}: missing steps"
    );
    Ok(picks)
}

/// Our argmax and margin after the prompt and after each of llama.cpp's tokens.
fn ours_along(dec: &Decoder, prompt: &[u32], picks: &[(u32, f32)]) -> Result<Vec<(u32, f32)>> {
    let mut ours = Ours::new(dec.clone(), 48, 16)?;
    let blocks = ours.alloc(prompt.len() + picks.len())?;
    let mut row = ours.forward(&[SeqInput {
        tokens: prompt,
        num_computed_tokens: 0,
        block_table: &blocks,
        want_logits: true,
    }])?;
    let mut out = Vec::new();
    for (s, (tok, _)) in picks.iter().enumerate() {
        let logits = row.pop().context("no logits")?;
        out.push((argmax(&logits), top2_margin(&logits)));
        row = ours.forward(&[SeqInput {
            tokens: std::slice::from_ref(tok),
            num_computed_tokens: prompt.len() + s,
            block_table: &blocks,
            want_logits: true,
        }])?;
    }
    Ok(out)
}

#[test]
#[ignore = "needs llama.cpp: bash benches/cpu-vs-llamacpp.sh --greedy"]
fn smollm2_native_greedy_matches_llama_cpp() -> Result<()> {
    let bin = std::env::var("LLAMA_GREEDY").context("LLAMA_GREEDY: path to llama_greedy")?;
    let path = engine_model::fetch::SMOLLM2_135M.ensure(&|m| eprintln!("{m}"))?;
    let model = path.to_str().context("non-UTF-8 path")?;
    let (weights, cfg) = gguf::open(&path)?;
    let tokenizer = Tokenizer::from_gguf(weights.metadata())?;
    let mut src = WeightSource::Gguf(Box::new(weights));
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|t| tokenizer.encode(t, true))
        .collect::<engine_model::Result<_>>()?;
    let picks = llama_picks(&bin, model, &prompts)?;
    let mut failures = Vec::new();
    for quant in [QuantMode::Native, QuantMode::None] {
        let dec = Decoder::load_quant(&cfg, &mut src, quant, DType::F32, &Device::Cpu)?;
        let (mut confident, mut agree, mut agree_all) = (0, 0, 0);
        for (k, (prompt, theirs)) in prompts.iter().zip(&picks).enumerate() {
            let ours = ours_along(&dec, prompt, theirs)?;
            for (s, (&(t, m), &(o, om))) in theirs.iter().zip(&ours).enumerate() {
                agree_all += usize::from(o == t);
                if m > MARGIN {
                    confident += 1;
                    agree += usize::from(o == t);
                }
                if o != t {
                    eprintln!(
                        "--quant {quant}: prompt {k} step {s}: llama.cpp {t} (margin {m:.3}), \
                         ours {o} (margin {om:.3})"
                    );
                    if m > MARGIN && quant == QuantMode::Native {
                        failures.push(format!(
                            "prompt {k} step {s}: llama.cpp {t} margin {m}, ours {o}"
                        ));
                    }
                }
            }
        }
        let total = PROMPTS.len() * STEPS;
        eprintln!(
            "--quant {quant}: top-1 equal to llama.cpp at {agree_all}/{total} steps; at \
             {agree}/{confident} steps where its margin > {MARGIN}"
        );
    }
    assert!(failures.is_empty(), "top-1 differs: {failures:#?}");
    Ok(())
}
