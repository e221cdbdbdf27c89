//! Paging is invisible: the logits of a sequence do not depend on how its KV cache is laid
//! out or how its tokens are scheduled.
//!
//! Against a contiguous run (one block holding the whole sequence, one-shot prefill, then
//! decode), each checked within 1e-5 relative (max |a - b| / max |b| per logit row):
//! - block sizes 1, 16 and 32 with sequential block tables;
//! - blocks scattered through a larger cache (a shuffled block table) whose blocks hold
//!   stale K/V from an earlier sequence;
//! - chunked prefill (7 + 5, and 1 + 6 + 5) followed by decode;
//! - three sequences of different lengths sharing every forward pass (mixing prefill,
//!   chunked prefill with a logits-less first chunk, and decode) vs each run alone.
//!
//! All on three tiny random models: llama (GQA 4/2), mistral with a 5-token sliding
//! window, so window masks meet block and chunk boundaries, and qwen2 (qkv bias). Each
//! runs twice: with candle ops and with the fused kernels (`KernelChoice::Fused`: their
//! CPU ports here), always against the candle contiguous baseline, so the second run
//! checks the fused decoder path (rope and cache writes in place, paged decode with
//! split-K, varlen paged prefill, fused add + norm) end to end. Measured (candle): at
//! most 8.4e-7 relative, i.e. float rounding; printed with `--nocapture`.

mod common;

use anyhow::{ensure, Result};
use common::{tiny_model_dir, ErrStats, Ours, Rng, TempDir};
use engine_model::{Decoder, KernelChoice, SeqInput};
use serde_json::json;
use std::collections::BTreeMap;

const TOL: f32 = 1e-5;
const VOCAB: usize = 256;

/// (name, model dir, candle decoder for baselines, decoder under test).
fn models() -> Result<Vec<(String, TempDir, Decoder, Decoder)>> {
    let llama = json!({
        "model_type": "llama", "vocab_size": VOCAB, "hidden_size": 64,
        "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 256
    });
    let mistral = json!({
        "model_type": "mistral", "vocab_size": VOCAB, "hidden_size": 64,
        "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "sliding_window": 5
    });
    let qwen2 = json!({
        "model_type": "qwen2", "vocab_size": VOCAB, "hidden_size": 64,
        "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 1, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "max_position_embeddings": 256, "tie_word_embeddings": true
    });
    let mut out = Vec::new();
    for (name, cfg, seed) in [
        ("llama", &llama, 21),
        ("mistral-window5", &mistral, 22),
        ("qwen2", &qwen2, 23),
    ] {
        for kernels in [KernelChoice::Candle, KernelChoice::Fused] {
            let dir = tiny_model_dir(name, cfg, seed)?;
            let base = common::load_ours(dir.path())?;
            let mut dec = base.clone();
            dec.set_kernels(kernels)?;
            out.push((format!("{name} ({})", kernels.as_str()), dir, base, dec));
        }
    }
    Ok(out)
}

/// One sequence's schedule: its full token list, split into chunks fed one per step
/// (a chunk of 1 after the prompt is a decode step), starting at step `start`. The first
/// `quiet` chunks ask for no logits.
struct Plan {
    tokens: Vec<u32>,
    chunks: Vec<usize>,
    start: usize,
    quiet: usize,
}

impl Plan {
    /// Prefill in `prefill` chunks, then decode the rest one token at a time.
    fn new(tokens: Vec<u32>, prefill: &[usize], start: usize, quiet: usize) -> Self {
        let done: usize = prefill.iter().sum();
        let mut chunks = prefill.to_vec();
        chunks.extend(std::iter::repeat_n(1, tokens.len() - done));
        Self {
            tokens,
            chunks,
            start,
            quiet,
        }
    }
}

type Logits = BTreeMap<usize, Vec<f32>>; // position of the last token fed -> logits

/// Run the plans together, each step batching every sequence that has a chunk due.
fn run(ours: &mut Ours, plans: &[Plan]) -> Result<Vec<Logits>> {
    let tables: Vec<Vec<u32>> = plans
        .iter()
        .map(|p| ours.alloc(p.tokens.len()))
        .collect::<Result<_>>()?;
    let mut done = vec![0usize; plans.len()]; // tokens computed
    let mut next_chunk = vec![0usize; plans.len()];
    let mut out = vec![Logits::new(); plans.len()];
    for step in 0.. {
        let mut batch = Vec::new();
        let mut who = Vec::new();
        for (i, p) in plans.iter().enumerate() {
            let c = next_chunk[i];
            if step < p.start || c >= p.chunks.len() {
                continue;
            }
            let len = p.chunks[c];
            batch.push(SeqInput {
                tokens: &p.tokens[done[i]..done[i] + len],
                num_computed_tokens: done[i],
                block_table: &tables[i],
                want_logits: c >= p.quiet,
            });
            if c >= p.quiet {
                who.push((i, done[i] + len - 1));
            }
        }
        if batch.is_empty() {
            break;
        }
        let logits = ours.forward(&batch)?;
        ensure!(
            logits.len() == who.len(),
            "one logits row per sequence asking"
        );
        for ((i, pos), row) in who.into_iter().zip(logits) {
            out[i].insert(pos, row);
        }
        for (i, p) in plans.iter().enumerate() {
            if step >= p.start && next_chunk[i] < p.chunks.len() {
                done[i] += p.chunks[next_chunk[i]];
                next_chunk[i] += 1;
            }
        }
    }
    Ok(out)
}

/// Compare the positions both runs produced; there must be at least `min_rows` of them.
fn compare(stats: &mut ErrStats, label: &str, a: &Logits, b: &Logits, min_rows: usize) {
    let mut n = 0;
    for (pos, row) in a {
        if let Some(reference) = b.get(pos) {
            stats.add(|| format!("{label}, position {pos}"), row, reference);
            n += 1;
        }
    }
    assert!(n >= min_rows, "{label}: only {n} positions in common");
}

/// A prompt of `len` random tokens continued greedily for `steps` tokens (contiguous run).
fn sequence(dec: &Decoder, seed: u64, len: usize, steps: usize) -> Result<Vec<u32>> {
    let prompt = Rng::new(seed).tokens(len, VOCAB);
    let mut ours = Ours::new(dec.clone(), 64, 16)?;
    Ok(ours.greedy(&prompt, steps)?.0)
}

/// Contiguous baseline: one block of 128 tokens, one-shot prefill, then decode.
fn baseline(dec: &Decoder, tokens: &[u32], prompt_len: usize) -> Result<Logits> {
    let mut ours = Ours::new(dec.clone(), 1, 128)?;
    Ok(run(
        &mut ours,
        &[Plan::new(tokens.to_vec(), &[prompt_len], 0, 0)],
    )?
    .remove(0))
}

#[test]
fn block_size_and_scattered_blocks_do_not_change_logits() -> Result<()> {
    for (name, _dir, base_dec, dec) in models()? {
        let tokens = sequence(&base_dec, 1, 12, 28)?;
        let base = baseline(&base_dec, &tokens, 12)?;
        let mut stats = ErrStats::default();
        for bs in [1usize, 16, 32] {
            let mut ours = Ours::new(dec.clone(), 64, bs)?;
            let got = run(&mut ours, &[Plan::new(tokens.clone(), &[12], 0, 0)])?.remove(0);
            compare(&mut stats, &format!("block size {bs}"), &got, &base, 29);
        }
        // Scattered: a cache of 64 blocks of 4, first used by another sequence so that
        // the blocks hold stale K/V, then handed out again in a shuffled order.
        let mut ours = Ours::new(dec.clone(), 64, 4)?;
        ours.shuffle_free_blocks(7);
        let decoy = Rng::new(99).tokens(60, VOCAB);
        run(&mut ours, &[Plan::new(decoy, &[60], 0, 0)])?;
        ours.reset();
        ours.shuffle_free_blocks(8);
        let table = ours.alloc(tokens.len())?;
        assert!(
            table.windows(2).any(|w| w[1] != w[0] + 1),
            "table {table:?} is contiguous"
        );
        ours.reset();
        ours.shuffle_free_blocks(8); // the same table again, for `run`
        let got = run(&mut ours, &[Plan::new(tokens.clone(), &[12], 0, 0)])?.remove(0);
        compare(&mut stats, &format!("scattered {table:?}"), &got, &base, 29);
        stats.check(&format!("{name}: paged vs contiguous"), TOL);
    }
    Ok(())
}

#[test]
fn chunked_prefill_equals_one_shot() -> Result<()> {
    for (name, _dir, base_dec, dec) in models()? {
        let tokens = sequence(&base_dec, 2, 12, 20)?;
        let base = baseline(&base_dec, &tokens, 12)?;
        let mut stats = ErrStats::default();
        for chunks in [&[7usize, 5][..], &[1, 6, 5], &[3, 3, 3, 3]] {
            let mut ours = Ours::new(dec.clone(), 64, 4)?;
            let got = run(&mut ours, &[Plan::new(tokens.clone(), chunks, 0, 0)])?.remove(0);
            compare(&mut stats, &format!("chunks {chunks:?}"), &got, &base, 21);
        }
        stats.check(&format!("{name}: chunked vs one-shot prefill"), TOL);
    }
    Ok(())
}

#[test]
fn batched_sequences_equal_each_alone() -> Result<()> {
    for (name, _dir, base_dec, dec) in models()? {
        // Prompts of 5, 12 and 9 tokens, each continued for 12 tokens.
        let seqs: Vec<(Vec<u32>, usize)> = [(5usize, 30u64), (12, 31), (9, 32)]
            .iter()
            .map(|&(len, seed)| Ok((sequence(&base_dec, seed, len, 12)?, len)))
            .collect::<Result<_>>()?;
        let alone: Vec<Logits> = seqs
            .iter()
            .map(|(t, len)| baseline(&base_dec, t, *len))
            .collect::<Result<_>>()?;
        // Step 0: A prefills 5, B prefills 7 (no logits). Step 1: A decodes, B prefills
        // its last 5, C prefills 9. Then all three decode together.
        let plans = [
            Plan::new(seqs[0].0.clone(), &[5], 0, 0),
            Plan::new(seqs[1].0.clone(), &[7, 5], 0, 1),
            Plan::new(seqs[2].0.clone(), &[9], 1, 0),
        ];
        let mut ours = Ours::new(dec.clone(), 64, 4)?;
        ours.shuffle_free_blocks(5);
        let together = run(&mut ours, &plans)?;
        let mut stats = ErrStats::default();
        for (i, (got, want)) in together.iter().zip(&alone).enumerate() {
            compare(&mut stats, &format!("sequence {i}"), got, want, 13);
        }
        stats.check(&format!("{name}: batch of 3 vs each alone"), TOL);
    }
    Ok(())
}
