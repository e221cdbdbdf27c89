//! The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) with its weights kept quantized
//! (`--quant native`: engine-quant's kernels on the file's Q4_1 layers and Q8_0 tied head)
//! against the same file dequantized to f32 (`--quant none`, the path the reference tests
//! pin to candle-transformers).
//!
//! Both run the same weights; the quantized path also rounds the activations to 8-bit
//! blocks before each matmul (as llama.cpp does), so logits differ by that rounding only.
//! Checks, over 5 prompts x 64 greedy steps each: the loaded weights are what the plan
//! (`engine info`) says, by type; logits within `TOL` relative (max |native - none| /
//! max |none| per row) at every position where both fed the same tokens; and the greedy
//! token identical wherever the f32 model's top-2 margin exceeds `MARGIN`.

mod common;

use anyhow::Result;
use candle_core::{DType, Device};
use common::{argmax, top2_margin, ErrStats, Ours, PROMPTS};
use engine_model::linear::weight_plan;
use engine_model::KernelChoice;
use engine_model::{gguf, Decoder, QuantMode, Tokenizer, WeightSource};

const STEPS: usize = 64;
/// Measured: 6.1e-2 (abs 2.0 on logits up to 32) on x86-64 (AMD EPYC, AVX-512), 94
/// positions; with llama.cpp's f16 activation scales (engine-quant's act.rs) 6.5e-2, 135
/// positions. The greedy tokens first differed where the f32 margin was 0.005 to 0.22.
const TOL: f32 = 1e-1;
const MARGIN: f32 = 0.5;

fn load(quant: QuantMode) -> Result<(Decoder, Tokenizer)> {
    let path = engine_model::fetch::SMOLLM2_135M.ensure(&|m| eprintln!("{m}"))?;
    let (weights, cfg) = gguf::open(&path)?;
    let tokenizer = Tokenizer::from_gguf(weights.metadata())?;
    let mut src = WeightSource::Gguf(Box::new(weights));
    let plan = weight_plan(&cfg, &src, quant, DType::F32)?;
    let dec = Decoder::load_quant(&cfg, &mut src, quant, DType::F32, &Device::Cpu)?;
    assert_eq!(
        &plan,
        dec.weight_stats(),
        "plan vs loaded weights ({quant})"
    );
    Ok((dec, tokenizer))
}

#[test]
fn smollm2_native_quantized_matches_dequantized_f32() -> Result<()> {
    let (none, tokenizer) = load(QuantMode::None)?;
    let (native, _) = load(QuantMode::Native)?;
    let (n, q) = (none.weight_stats(), native.weight_stats());
    eprintln!("none: {}\nnative: {}", n.summary(), q.summary());
    // 30 layers x 7 matrices in Q4_1; the tied head as a Q8_0 matrix; the rest f32.
    assert_eq!(q.by_type["q4_1"].tensors, 30 * 7);
    assert_eq!(q.by_type["q8_0"].tensors, 1);
    assert_eq!(q.by_type["q8_0"].bytes, 49152 * 576 / 32 * 34);
    assert_eq!(n.by_type.keys().collect::<Vec<_>>(), ["f32"]);
    assert!(q.read_per_step * 4 < n.read_per_step, "{q:?} vs {n:?}");

    let mut stats = ErrStats::default();
    let (mut compared, mut mismatches) = (0, Vec::new());
    for (k, text) in PROMPTS.iter().enumerate() {
        let prompt = tokenizer.encode(text, true)?;
        let (want_tokens, want) = Ours::new(none.clone(), 48, 16)?.greedy(&prompt, STEPS)?;
        let (got_tokens, got) = Ours::new(native.clone(), 48, 16)?.greedy(&prompt, STEPS)?;
        // Row p follows tokens[..=p]: comparable while both fed the same tokens.
        for p in 0..want.len() {
            if want_tokens[..=p] != got_tokens[..=p] {
                break;
            }
            stats.add(|| format!("prompt {k}, position {p}"), &got[p], &want[p]);
            compared += 1;
            if p + 1 >= prompt.len() && argmax(&got[p]) != argmax(&want[p]) {
                let margin = top2_margin(&want[p]);
                eprintln!("prompt {k}, position {p}: greedy differs, f32 margin {margin:.3}");
                if margin > MARGIN {
                    mismatches.push(format!("prompt {k}, position {p}: f32 margin {margin}"));
                }
            }
        }
        let text = tokenizer.decode(&got_tokens[prompt.len()..], false)?;
        eprintln!("prompt {k}: native -> {text:?}");
    }
    eprintln!("{compared} positions compared");
    assert!(compared >= PROMPTS.len() * 16, "too few positions compared");
    stats.check("SmolLM2 --quant native vs --quant none", TOL);
    assert!(mismatches.is_empty(), "greedy differs: {mismatches:#?}");
    Ok(())
}

/// `--quant q8_0|q4_k|q4_0` on a tiny Qwen2 safetensors model (q/k/v biases, tied
/// embedding; 64-wide rows, so q4_k falls back to q5_0 and 128-wide down_proj rows too)
/// against the same model dense: logits within a tolerance that grows with the bits
/// thrown away, and the errors in that order. Measured (x86-64, AVX-512): max relative
/// error 3.7e-2 (q8_0), 1.7e-1 (q4_k -> q5_0), 3.6e-1 (q4_0) on logits up to ~2.3; a
/// misplaced row or bias gives errors of order 1.
#[test]
fn tiny_qwen2_quantized_at_load_matches_dense() -> Result<()> {
    let config = serde_json::json!({
        "model_type": "qwen2", "vocab_size": 256, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "hidden_act": "silu", "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "max_position_embeddings": 128,
        "sliding_window": 128, "max_window_layers": 2, "use_sliding_window": false,
        "tie_word_embeddings": true
    });
    let dir = common::tiny_model_dir("qwen2-quant", &config, 21)?;
    let load = |quant: QuantMode| -> Result<Decoder> {
        let spec = dir.path().to_str().unwrap_or_default();
        let mut opened = engine_model::open_model(spec, 0, &|_| {})?;
        let plan = weight_plan(&opened.config, &opened.weights, quant, DType::F32)?;
        let dec = Decoder::load_quant(
            &opened.config,
            &mut opened.weights,
            quant,
            DType::F32,
            &Device::Cpu,
        )?;
        assert_eq!(
            &plan,
            dec.weight_stats(),
            "plan vs loaded weights ({quant})"
        );
        Ok(dec)
    };
    let prompt: Vec<u32> = (0..20).map(|i| (i * 37 + 5) % 256).collect();
    let (tokens, want) = Ours::new(load(QuantMode::None)?, 128, 8)?.greedy(&prompt, 8)?;
    let mut errors = Vec::new();
    for (quant, types, tol) in [
        ("q8_0", vec!["f32", "q8_0"], 6e-2),
        ("q4_0", vec!["f32", "q4_0"], 6e-1),
        ("q4_k", vec!["f32", "q5_0"], 3e-1),
    ] {
        let dec = load(quant.parse()?)?;
        let got_types: Vec<&str> = dec
            .weight_stats()
            .by_type
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(got_types, types, "--quant {quant}");
        // Teacher-forced on the dense model's tokens: all rows in one prefill.
        let mut ours = Ours::new(dec, 128, 8)?;
        let (_, got) = ours.greedy(&tokens, 0)?;
        assert_eq!(got.len(), want.len());
        let mut stats = ErrStats::default();
        for (p, (g, w)) in got.iter().zip(&want).enumerate() {
            stats.add(|| format!("position {p}"), g, w);
        }
        stats.check(&format!("tiny qwen2 --quant {quant} vs none"), tol);
        errors.push(stats.max_rel);
    }
    // 8 bits < 5 bits < 4 bits.
    assert!(errors[0] < errors[2] && errors[2] < errors[1], "{errors:?}");
    Ok(())
}

/// Why no reimplementation can track llama.cpp's quantized logits closely: the 8-bit
/// activation rounding turns differences of one f32 ulp into whole 8-bit steps. Our two
/// kernel sets (candle ops, and the fused ops' CPU ports: the same math, other f32
/// summation orders) give the same logits to ~1e-6 on the f32 path; on the native path a
/// one-ulp difference before a rounding flips a code (a step of max|block| / 127), and
/// the flips multiply layer by layer. Measured 2026-11-30 (x86-64 AMD EPYC, AVX-512),
/// 320 rows: f32 max|diff|/max|logit| median 1.4e-6; native median 2.6e-2, p90 3.7e-2,
/// top-2 margin change p90 0.24 -- as large as native vs llama.cpp and our f32 path vs
/// llama.cpp (quant_vs_llamacpp.rs) -- and the greedy token differs at one step whose
/// margin exceeds 0.1 (0.20): issue #17's criterion fails between our own two kernel
/// sets. Prints; asserts only that the f32 path agrees.
#[test]
#[ignore = "a measurement (about 3 minutes): cargo test --release -p engine-model --test quant_native -- --ignored"]
fn native_rounding_amplifies_ulp_differences() -> Result<()> {
    for quant in [QuantMode::Native, QuantMode::None] {
        let (dec, tokenizer) = load(quant)?;
        let mut fused = dec.clone();
        fused.set_kernels(KernelChoice::Fused)?;
        let (mut rel, mut margin, mut flips) = (Vec::new(), Vec::new(), Vec::new());
        for text in PROMPTS {
            let prompt = tokenizer.encode(text, true)?;
            let (tokens, want) = Ours::new(dec.clone(), 48, 16)?.greedy(&prompt, STEPS)?;
            // Teacher-forced on the same tokens: every prefix in one prefill.
            let (_, got) = Ours::new(fused.clone(), 600, 16)?.greedy(&tokens, 0)?;
            for p in prompt.len() - 1..tokens.len() - 1 {
                let mut one = ErrStats::default();
                one.add(String::new, &got[p], &want[p]);
                rel.push(one.max_rel);
                let (t1, m) = (argmax(&want[p]) as usize, top2_margin(&want[p]));
                let t2 = (0..want[p].len())
                    .filter(|&i| i != t1)
                    .max_by(|&i, &j| want[p][i].total_cmp(&want[p][j]))
                    .unwrap_or(t1);
                margin.push(((got[p][t1] - got[p][t2]) - m).abs());
                if argmax(&got[p]) as usize != t1 && m > 0.1 {
                    flips.push(m);
                }
            }
        }
        let q = |v: &mut Vec<f32>, f: f32| {
            v.sort_by(f32::total_cmp);
            v[((v.len() - 1) as f32 * f).round() as usize]
        };
        eprintln!(
            "--quant {quant}, fused vs candle kernels, {} rows: max|diff|/max|logit| median \
             {:.1e} p90 {:.1e} max {:.1e}; top-2 margin change median {:.3} p90 {:.3} max \
             {:.3}; greedy differs at margins > 0.1: {flips:?}",
            rel.len(),
            q(&mut rel, 0.5),
            q(&mut rel, 0.9),
            q(&mut rel, 1.0),
            q(&mut margin, 0.5),
            q(&mut margin, 0.9),
            q(&mut margin, 1.0),
        );
        if quant == QuantMode::None {
            assert!(
                q(&mut rel, 1.0) < 1e-4,
                "the f32 path's kernel sets disagree"
            );
        }
    }
    Ok(())
}
