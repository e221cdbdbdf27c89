//! Batch invariance of the engine: a request's greedy output does not depend on what it
//! is batched with, when it arrives, whether it is chunked, preempted and recomputed, or
//! served partly from the prefix cache.
//!
//! - `batch_invariance_default_model`: 24 requests (1..600 prompt tokens of real text,
//!   4..24 output tokens) on SmolLM2-135M, f32 CPU. Each is first run alone; then all
//!   are run submitted together, at staggered steps under a small token budget (chunked
//!   prefill next to decodes), the same staggered run on the fused kernels (their CPU
//!   ports: paged decode, varlen paged prefill, in-place rope and cache writes), with a
//!   KV cache small enough to preempt, and with prefix caching over a shared 200-token
//!   prefix. Every variant must equal the alone runs (candle ops). Last, a batch that
//!   mixes greedy requests, greedy requests with logprobs and sampled ones (all rows of
//!   a step in one launch of the sample op), with preemption and prefix hits, on both op
//!   sets: every greedy request must equal its alone run.
//! - `thousand_requests_with_a_tiny_cache`: 1,000 requests on a tiny dummy model against
//!   a cache that holds about 50 of them all finish, with the outputs of an ample cache,
//!   and the cache does preempt.
//!
//! Exact equality is required, except where the first differing token is a near-tie:
//! the top-2 log-probabilities at that position (in either run) differ by less than
//! `NEAR_TIE`. Such cases are detected and printed, never silently absorbed.

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device};
use engine_core::{Engine, EngineConfig, FinalOutput, Prompt, RequestId, StepRecord};
use engine_model::{load_model, KernelChoice, LoadOptions, LoadedModel};
use engine_scheduler::{FinishReason, SamplingParams};
use std::collections::HashMap;
use std::time::Instant;

/// Top-2 logit margin under which a flipped argmax is accepted as a near-tie.
const NEAR_TIE: f32 = 1e-4;
/// Bound on the log-probability of the same token in two runs: a few times the f32
/// noise between batch shapes (about 1e-5 here: a different GEMM blocking per batch
/// size); a wrong K/V row or mask moves it by far more.
const LOGPROB_TOL: f32 = 1e-4;
thread_local! {
    /// The largest logprob difference `compare` has seen on this test's thread (printed:
    /// how far below LOGPROB_TOL the runs stay).
    static MAX_LOGPROB_DIFF: std::cell::Cell<f32> = const { std::cell::Cell::new(0.0) };
}
/// KV blocks of the preempting variants.
const SMALL_BLOCKS: usize = 40;

fn load(spec: &str, kernels: KernelChoice) -> Result<LoadedModel> {
    let opts = LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        seed: 0,
        tokenizer: None,
        kernels,
        quant: engine_model::QuantMode::None,
    };
    Ok(load_model(spec, &opts, &|m| eprintln!("{m}"))?)
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        ignore_eos: true,
        logprobs: Some(2),
        ..SamplingParams::greedy(max_tokens)
    }
}

/// A request as submitted: prompt tokens, output length and how it picks tokens.
#[derive(Clone)]
struct Req {
    prompt: Vec<u32>,
    max_tokens: usize,
    pick: Pick,
}

/// How a request picks its tokens: greedy with top-2 logprobs, greedy without logprobs,
/// or sampled with its own seed (one sample launch per step serves them all).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Pick {
    GreedyLogprobs,
    Greedy,
    Sampled(u64),
}

impl Req {
    fn params(&self) -> SamplingParams {
        match self.pick {
            Pick::GreedyLogprobs => greedy(self.max_tokens),
            Pick::Greedy => SamplingParams {
                logprobs: None,
                ..greedy(self.max_tokens)
            },
            Pick::Sampled(seed) => SamplingParams {
                temperature: 0.8,
                top_p: 0.9,
                seed: Some(seed),
                ..greedy(self.max_tokens)
            },
        }
    }

    /// The same request with another way of picking tokens.
    fn picking(&self, pick: Pick) -> Req {
        Req {
            pick,
            ..self.clone()
        }
    }
}

/// Top-2 margin at output position `k`, if recorded.
fn margin(o: &FinalOutput, k: usize) -> Option<f32> {
    let top = &o.logprobs.get(k)?.top_logprobs;
    Some(top.first()?.1 - top.get(1)?.1)
}

/// `Ok(None)`: equal. `Ok(Some(note))`: differs only after a near-tie. `Err`: differs.
fn compare(
    label: &str,
    i: usize,
    alone: &FinalOutput,
    other: &FinalOutput,
) -> Result<Option<String>> {
    ensure!(
        other.prompt_token_ids == alone.prompt_token_ids,
        "{label}: request {i}: prompts differ"
    );
    ensure!(
        other.finish_reason == FinishReason::Length
            && other.token_ids.len() == alone.token_ids.len(),
        "{label}: request {i}: {} tokens ({:?}) vs {} alone",
        other.token_ids.len(),
        other.finish_reason,
        alone.token_ids.len()
    );
    let first_diff = alone
        .token_ids
        .iter()
        .zip(&other.token_ids)
        .position(|(a, b)| a != b);
    let same_upto = first_diff.unwrap_or(alone.token_ids.len());
    // A greedy request without logprobs has none to compare (its tokens still are).
    for k in 0..same_upto.min(other.logprobs.len()) {
        let (a, b) = (alone.logprobs[k].logprob, other.logprobs[k].logprob);
        MAX_LOGPROB_DIFF.with(|m| m.set(m.get().max((a - b).abs())));
        ensure!(
            (a - b).abs() <= LOGPROB_TOL,
            "{label}: request {i}: token {k} logprob {b} vs {a} alone"
        );
    }
    let Some(k) = first_diff else {
        return Ok(None);
    };
    let (ma, mb) = (margin(alone, k), margin(other, k));
    let near_tie = ma.is_some_and(|m| m < NEAR_TIE) || mb.is_some_and(|m| m < NEAR_TIE);
    let note = format!(
        "{label}: request {i} ({} prompt tokens) differs at output token {k}: {:?} vs {:?} alone; top-2 margin {mb:?} here, {ma:?} alone",
        alone.prompt_token_ids.len(),
        &other.token_ids[k..],
        &alone.token_ids[k..],
    );
    if near_tie {
        Ok(Some(format!("NEAR-TIE accepted: {note}")))
    } else {
        bail!("{note}")
    }
}

/// Compare every greedy request of a variant with its alone run (greedy with logprobs,
/// for the margins); print near-ties. Sampled requests are only counted.
fn compare_all(label: &str, alone: &[FinalOutput], got: &[FinalOutput]) -> Result<usize> {
    compare_greedy(label, alone, got, &vec![Pick::GreedyLogprobs; got.len()])
}

fn compare_greedy(
    label: &str,
    alone: &[FinalOutput],
    got: &[FinalOutput],
    picks: &[Pick],
) -> Result<usize> {
    ensure!(got.len() == alone.len(), "{label}: {} outputs", got.len());
    let mut ties = 0;
    for (i, (a, g)) in alone.iter().zip(got).enumerate() {
        if let Pick::Sampled(_) = picks[i] {
            ensure!(
                g.token_ids.len() == a.token_ids.len(),
                "{label}: request {i}"
            );
            continue;
        }
        if let Some(note) = compare(label, i, a, g)? {
            eprintln!("{note}");
            ties += 1;
        }
    }
    Ok(ties)
}

/// Submit `reqs` in groups (`(requests to add, steps to run after)`), then run to the
/// end. Returns the outputs in request order and the step records.
fn run_staggered(
    engine: &mut Engine,
    reqs: &[Req],
    plan: &[(usize, usize)],
) -> Result<(Vec<FinalOutput>, Vec<StepRecord>)> {
    let mut ids: Vec<RequestId> = Vec::new();
    let mut done: HashMap<RequestId, FinalOutput> = HashMap::new();
    let mut next = 0;
    let mut collect = |e: &mut Engine| {
        for o in e.take_finished() {
            done.insert(o.id, o);
        }
    };
    for &(add, steps) in plan {
        for r in &reqs[next..(next + add).min(reqs.len())] {
            ids.push(engine.add_request(Prompt::Tokens(r.prompt.clone()), r.params())?);
        }
        next = (next + add).min(reqs.len());
        for _ in 0..steps {
            engine.step()?;
            collect(engine);
        }
    }
    for r in &reqs[next..] {
        ids.push(engine.add_request(Prompt::Tokens(r.prompt.clone()), r.params())?);
    }
    while engine.has_unfinished() {
        engine.step()?;
        collect(engine);
    }
    collect(engine);
    let outs = ids
        .iter()
        .map(|id| {
            done.remove(id)
                .with_context(|| format!("request {id} did not finish"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((outs, engine.take_step_records()))
}

fn engine_with(model: &str, cfg: EngineConfig) -> Result<Engine> {
    Ok(Engine::new(load(model, KernelChoice::Candle)?, cfg)?)
}

/// 24 prompts of real text, 1..600 tokens; those longer than 200 tokens start with the
/// same 200-token prefix. Output lengths 4..24. Submission order mixes long and short.
fn make_requests(engine: &Engine) -> Result<Vec<Req>> {
    const TEXT: &str = "The lighthouse keeper climbed the spiral stairs every evening \
        at dusk, counting the steps as his father had taught him. There were one hundred \
        and twelve of them, worn smooth in the middle by a century of boots. At the top he \
        trimmed the wick, polished the great lens until it caught the last of the light, \
        and wrote the weather in a leather logbook: wind from the north-west, a long swell, \
        three fishing boats returning late. ";
    const MORE: &str = "Engineers who build inference engines care about throughput, \
        latency and memory. A paged key-value cache stores attention state in fixed-size \
        blocks, so that sequences of different lengths can share one pool without \
        fragmentation. The scheduler decides, at every step, which sequences run and how \
        many tokens each computes under a budget; long prompts are split into chunks so \
        that decoding requests keep producing tokens while a prompt is being prefilled. ";
    let mut stream = Vec::new();
    for k in 0..16 {
        let t = if k % 2 == 0 { TEXT } else { MORE };
        stream.extend(
            engine
                .tokenizer()
                .encode(&format!("Chapter {k}. {t}"), false)?,
        );
    }
    ensure!(
        stream.len() > 1400,
        "text too short: {} tokens",
        stream.len()
    );
    // Mostly short prompts with a few long ones (prefill dominates the test's runtime).
    let lens = [
        600, 1, 250, 17, 2, 3, 90, 410, 2, 201, 33, 40, 5, 8, 150, 12, 64, 26, 5, 20, 120, 7, 30,
        300,
    ];
    let prefix = stream[..200].to_vec();
    lens.iter()
        .enumerate()
        .map(|(i, &len)| {
            let off = 200 + (i * 37) % 500;
            let prompt = if len > 200 {
                let mut p = prefix.clone();
                p.extend_from_slice(&stream[off..off + len - 200]);
                p
            } else {
                stream[off..off + len].to_vec()
            };
            Ok(Req {
                prompt,
                max_tokens: 4 + (i * 7) % 21,
                pick: Pick::GreedyLogprobs,
            })
        })
        .collect()
}

#[test]
fn batch_invariance_default_model() -> Result<()> {
    let t0 = Instant::now();
    let base = EngineConfig {
        num_blocks: Some(640),
        enable_prefix_caching: false,
        ..EngineConfig::default()
    };

    // Alone: one engine, one request at a time (stale K/V of earlier requests remains in
    // the cache tensors; it must not matter).
    let mut engine = engine_with(
        "smollm2-135m",
        EngineConfig {
            num_blocks: Some(48),
            ..base.clone()
        },
    )?;
    let reqs = make_requests(&engine)?;
    let mut alone = Vec::new();
    for r in &reqs {
        let mut out = engine.generate(vec![(
            Prompt::Tokens(r.prompt.clone()),
            greedy(r.max_tokens),
        )])?;
        alone.push(out.remove(0)?);
    }
    for (a, r) in alone.iter().zip(&reqs) {
        ensure!(a.token_ids.len() == r.max_tokens && a.finish_reason == FinishReason::Length);
        ensure!(a.logprobs.len() == r.max_tokens && a.logprobs[0].top_logprobs.len() == 2);
    }
    drop(engine);
    eprintln!(
        "alone: {} requests in {:.1}s",
        reqs.len(),
        t0.elapsed().as_secs_f64()
    );
    let mut ties = 0;

    // Together: all 24 at once.
    let t = Instant::now();
    let mut engine = engine_with("smollm2-135m", base.clone())?;
    let (together, recs) = run_staggered(&mut engine, &reqs, &[])?;
    ensure!(
        recs.iter().map(|r| r.num_seqs).max() >= Some(12),
        "requests were batched"
    );
    ensure!(recs.iter().all(|r| r.num_preempted == 0));
    ties += compare_all("together", &alone, &together)?;
    eprintln!(
        "together: {} steps in {:.1}s",
        recs.len(),
        t.elapsed().as_secs_f64()
    );
    drop(engine);

    // Staggered, with a 256-token budget: prompts are chunked and share steps with decodes.
    // On candle ops, then on the fused kernels (their CPU ports: paged decode and varlen
    // paged prefill over chunked prompts, in-place rope and cache writes), then on `auto`
    // (the default: fused decode-only steps, candle steps with prompt tokens, so a
    // request's decode rows switch op sets with the batch).
    for kernels in [
        KernelChoice::Candle,
        KernelChoice::Fused,
        KernelChoice::Auto,
    ] {
        let t = Instant::now();
        let mut engine = Engine::new(
            load("smollm2-135m", kernels)?,
            EngineConfig {
                max_num_batched_tokens: 256,
                ..base.clone()
            },
        )?;
        ensure!(
            kernels == KernelChoice::Auto || engine.decoder().kernels() == kernels,
            "{kernels:?} resolved to {}",
            engine.decoder().kernels_label()
        );
        let (staggered, recs) =
            run_staggered(&mut engine, &reqs, &[(3, 2), (5, 4), (4, 3), (6, 5)])?;
        let mixed = recs
            .iter()
            .filter(|r| r.num_decode_seqs > 0 && r.num_prefill_tokens > 0)
            .count();
        ensure!(mixed > 0, "no step mixed prefill chunks with decodes");
        ensure!(recs.iter().all(|r| r.num_batched_tokens <= 256));
        let label = format!("staggered, {} kernels", kernels.as_str());
        ties += compare_all(&label, &alone, &staggered)?;
        eprintln!(
            "{label}: {} steps ({mixed} mixing prefill and decode) in {:.1}s",
            recs.len(),
            t.elapsed().as_secs_f64()
        );
    }

    // A small KV cache: 40 blocks (640 tokens) for ~2,700 tokens of requests; the longest
    // request alone needs 38. Submitted in reverse order: the short ones fill the pool
    // first and preempt one another as they grow.
    let t = Instant::now();
    let mut engine = engine_with(
        "smollm2-135m",
        EngineConfig {
            num_blocks: Some(SMALL_BLOCKS),
            ..base.clone()
        },
    )?;
    let reversed: Vec<Req> = reqs.iter().rev().cloned().collect();
    let (mut small, recs) = run_staggered(&mut engine, &reversed, &[])?;
    small.reverse();
    let preempted: usize = recs.iter().map(|r| r.num_preempted).sum();
    let per_request: usize = small.iter().map(|o| o.timeline.num_preemptions).sum();
    ensure!(preempted > 0, "the small cache never preempted");
    ensure!(
        per_request == preempted,
        "{per_request} vs {preempted} preemptions"
    );
    ensure!(recs.iter().all(|r| r.blocks_in_use <= SMALL_BLOCKS));
    ties += compare_all("small cache", &alone, &small)?;
    eprintln!(
        "small cache: {} steps, {preempted} preemptions in {:.1}s",
        recs.len(),
        t.elapsed().as_secs_f64()
    );
    drop(engine);

    // Prefix caching: the first request (600 tokens, with the shared 200-token prefix)
    // is prefilled first; the others then find the prefix in the cache.
    let t = Instant::now();
    let mut engine = engine_with(
        "smollm2-135m",
        EngineConfig {
            enable_prefix_caching: true,
            ..base.clone()
        },
    )?;
    let (cached, recs) = run_staggered(&mut engine, &reqs, &[(1, 1), (7, 2)])?;
    let from_records: usize = recs.iter().map(|r| r.cached_prefix_tokens).sum();
    let from_timelines: usize = cached.iter().map(|o| o.timeline.cached_prompt_tokens).sum();
    let sharing = reqs.iter().filter(|r| r.prompt.len() > 200).count();
    ensure!(
        from_timelines >= (sharing - 1) * 192,
        "cached prompt tokens {from_timelines}: the shared prefix was not reused"
    );
    ensure!(
        from_records == from_timelines,
        "{from_records} vs {from_timelines}"
    );
    ties += compare_all("prefix caching", &alone, &cached)?;
    eprintln!(
        "prefix caching: {from_timelines} prompt tokens from the cache, {} steps in {:.1}s",
        recs.len(),
        t.elapsed().as_secs_f64()
    );
    drop(engine);

    // Prefix caching and preemption together, in a batch that mixes greedy requests,
    // greedy requests with logprobs and sampled ones, on both op sets: every greedy
    // request equals its alone run.
    let picks: Vec<Pick> = (0..reqs.len())
        .map(|i| match i % 3 {
            0 => Pick::Greedy,
            1 => Pick::GreedyLogprobs,
            _ => Pick::Sampled(1000 + i as u64),
        })
        .collect();
    let mixed: Vec<Req> = reqs
        .iter()
        .zip(&picks)
        .map(|(r, &p)| r.picking(p))
        .collect();
    for kernels in [KernelChoice::Candle, KernelChoice::Fused] {
        let t = Instant::now();
        let mut engine = Engine::new(
            load("smollm2-135m", kernels)?,
            EngineConfig {
                enable_prefix_caching: true,
                num_blocks: Some(SMALL_BLOCKS),
                ..base.clone()
            },
        )?;
        let (both, recs) = run_staggered(&mut engine, &mixed, &[(1, 1)])?;
        let preempted: usize = recs.iter().map(|r| r.num_preempted).sum();
        let hits: usize = recs.iter().map(|r| r.cached_prefix_tokens).sum();
        ensure!(
            preempted > 0 && hits > 0,
            "{preempted} preemptions, {hits} cached tokens"
        );
        let label = format!(
            "mixed picks, prefix caching + small cache, {} kernels",
            kernels.as_str()
        );
        ties += compare_greedy(&label, &alone, &both, &picks)?;
        eprintln!(
            "{label}: {preempted} preemptions, {hits} cached tokens, {} steps in {:.1}s",
            recs.len(),
            t.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "batch invariance: {ties} near-tie(s) accepted, max |logprob difference| {:.2e} (tolerance {LOGPROB_TOL:.0e}); total {:.1}s",
        MAX_LOGPROB_DIFF.with(|m| m.get()),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A tiny Llama-shaped dummy model's manifest in a temporary directory.
fn tiny_manifest(dir: &std::path::Path) -> Result<String> {
    let path = dir.join("tiny.json");
    let json = serde_json::json!({
        "name": "tiny",
        "config": {
            "model_type": "llama",
            "vocab_size": 320,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "max_position_embeddings": 256,
            "tie_word_embeddings": false,
            "bos_token_id": 1,
            "eos_token_id": 2
        }
    });
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    Ok(format!("dummy:{}", path.display()))
}

/// splitmix64: seeded, dependency-free.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

#[test]
fn thousand_requests_with_a_tiny_cache() -> Result<()> {
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let spec = tiny_manifest(dir.path())?;
    let mut rng = Rng(42);
    let reqs: Vec<Req> = (0..1000)
        .map(|_| Req {
            prompt: (0..8 + rng.below(17))
                .map(|_| rng.below(256) as u32)
                .collect(),
            max_tokens: 4 + rng.below(5) as usize,
            pick: Pick::GreedyLogprobs,
        })
        .collect();
    // At most 32 tokens = 2 blocks of 16 per request: 100 blocks hold about 50 requests.
    let tiny = EngineConfig {
        num_blocks: Some(100),
        enable_prefix_caching: false,
        ..EngineConfig::default()
    };
    let ample = EngineConfig {
        num_blocks: Some(2100),
        ..tiny.clone()
    };
    let mut engine = engine_with(&spec, ample)?;
    let (reference, _) = run_staggered(&mut engine, &reqs, &[])?;
    drop(engine);
    let mut engine = engine_with(&spec, tiny)?;
    let (got, recs) = run_staggered(&mut engine, &reqs, &[])?;
    ensure!(got.len() == 1000);
    for (o, r) in got.iter().zip(&reqs) {
        ensure!(o.token_ids.len() == r.max_tokens && o.finish_reason == FinishReason::Length);
    }
    let preempted: usize = recs.iter().map(|r| r.num_preempted).sum();
    let max_running = recs.iter().map(|r| r.num_seqs).max().unwrap_or(0);
    ensure!(
        preempted > 0,
        "the tiny cache never preempted: the test checks nothing"
    );
    ensure!(recs.iter().all(|r| r.blocks_in_use <= 100));
    ensure!(
        max_running <= 100,
        "{max_running} sequences at once in 100 blocks"
    );
    let ties = compare_all("tiny cache", &reference, &got)?;
    eprintln!(
        "1000 requests: {} steps, at most {max_running} running, {preempted} preemptions, {ties} near-tie(s), max |logprob difference| {:.2e}; {:.1}s",
        recs.len(),
        MAX_LOGPROB_DIFF.with(|m| m.get()),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
