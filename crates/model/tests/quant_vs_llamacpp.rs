//! The default model with `--quant native` against llama.cpp on the same GGUF, three
//! ways (all ignored by default: they need the llama.cpp build of
//! benches/cpu-vs-llamacpp.sh; `bash benches/cpu-vs-llamacpp.sh --greedy` builds
//! llama_greedy and runs them with `LLAMA_GREEDY` set to it; LLAMA_KV=f32 gives
//! llama.cpp an f32 cache and plain attention like ours, LLAMA_GGUF another GGUF):
//!
//! - greedy top-1 identical wherever llama.cpp's top-2 logit margin exceeds `MARGIN`,
//!   over 5 prompts x 64 steps (issue #17's acceptance): llama.cpp decodes greedily on
//!   its own (benches/llamacpp/llama_greedy.c, one token per llama_decode), we feed its
//!   tokens to our decoder one decode step at a time and compare our argmax after each;
//! - the full logit rows along the same tokens (a measurement: relative difference and
//!   top-2 margin change, median / p90 / max over the steps);
//! - each quantized matmul fed llama.cpp's own input (asserted to f32 rounding).
//!
//! The first two also run `--quant none` (our f32 path, which matches
//! candle-transformers to 1e-4) for scale.
//!
//! Measured 2026-11-30 (x86-64 AMD EPYC, AVX-512), after engine-quant's activation
//! blocks took llama.cpp's roundings: each matmul matches llama.cpp to 8.3e-7 on its
//! inputs; the criterion is still NOT met, and cannot be by any implementation that is
//! not bit-identical to llama.cpp in every op. With llama.cpp's defaults native agrees
//! at 311/320 steps and 302/306 where its margin exceeds 0.1, the f32 path at 310/320
//! and 302/306 (before: native 308/320, 299/306); with LLAMA_KV=f32 native 304/320 and
//! 294/299, f32 310/320 and 296/299 (before: 293/299). Full rows (LLAMA_KV=f32): native
//! vs llama.cpp median 2.8e-2, f32 vs llama.cpp 2.6e-2; top-2 margin change p90 about
//! 0.25 for both. Why: one f32 ulp of difference before an 8-bit rounding flips a code
//! (one step of max|block| / 127), and the flips multiply layer by layer. Feeding the
//! same 6-token prompt, our layer-0 input norm differs from llama.cpp's by 1.8e-7 and
//! already flips 3 of its 3456 codes; by layer 1, a third of the codes differ. Our own
//! two kernel sets disagree just as much on the native path (quant_native.rs,
//! `native_rounding_amplifies_ulp_differences`).

mod common;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device};
use common::{argmax, top2_margin, Ours, PROMPTS};
use engine_model::{gguf, Decoder, DecoderConfig, QuantMode, SeqInput, Tokenizer, WeightSource};
use engine_quant::reference::{self, Acts};
use engine_quant::{CpuContext, GgmlType, QMatrix};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const STEPS: usize = 64;
const MARGIN: f32 = 0.1;

/// What llama_greedy printed and (with a dump file) its logit rows.
struct Llama {
    /// llama.cpp's pick and top-2 margin after each step, per prompt.
    picks: Vec<Vec<(u32, f32)>>,
    /// Its logits after each step, per prompt (empty unless asked for).
    logits: Vec<Vec<Vec<f32>>>,
}

/// Run llama_greedy on `prompts`; with `dump`, also read back its full logit rows;
/// with `tensors`, have it write its intermediate tensors there.
fn run_llama(
    bin: &str,
    model: &str,
    prompts: &[Vec<u32>],
    dump: bool,
    tensors: Option<&Path>,
) -> Result<Llama> {
    // llama.cpp's defaults (f16 KV cache, flash attention), or with LLAMA_KV=f32 an f32
    // cache and plain attention like ours.
    let kv = std::env::var("LLAMA_KV").unwrap_or_else(|_| "f16".into());
    eprintln!("llama.cpp KV cache: {kv}");
    let file = std::env::temp_dir().join(format!("llama-logits-{}.f32", std::process::id()));
    let mut cmd = Command::new(bin);
    cmd.args([model, &STEPS.to_string(), "2", &kv]);
    if dump {
        cmd.env("LLAMA_LOGITS", &file);
    }
    if let Some(dir) = tensors {
        cmd.env("LLAMA_TENSORS", dir);
    }
    let mut child = cmd
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
    let mut logits = Vec::new();
    if dump {
        let bytes = std::fs::read(&file).with_context(|| format!("reading {file:?}"))?;
        let _ = std::fs::remove_file(&file);
        let all: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let rows = prompts.len() * STEPS;
        ensure!(
            !all.is_empty() && all.len().is_multiple_of(rows),
            "{file:?}: {} floats for {rows} rows",
            all.len()
        );
        let n = all.len() / rows;
        let rows: Vec<Vec<f32>> = all.chunks_exact(n).map(<[f32]>::to_vec).collect();
        logits = rows.chunks(STEPS).map(<[Vec<f32>]>::to_vec).collect();
    }
    Ok(Llama { picks, logits })
}

/// Our logits after the prompt and after each of llama.cpp's tokens.
fn ours_along(dec: &Decoder, prompt: &[u32], picks: &[(u32, f32)]) -> Result<Vec<Vec<f32>>> {
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
        out.push(row.pop().context("no logits")?);
        row = ours.forward(&[SeqInput {
            tokens: std::slice::from_ref(tok),
            num_computed_tokens: prompt.len() + s,
            block_table: &blocks,
            want_logits: true,
        }])?;
    }
    Ok(out)
}

/// The default model (or the GGUF named by LLAMA_GGUF), its tokenizer's ids of
/// `PROMPTS`, and the GGUF path.
fn setup() -> Result<(WeightSource, DecoderConfig, Vec<Vec<u32>>, String)> {
    let path = match std::env::var_os("LLAMA_GGUF") {
        Some(p) => p.into(),
        None => engine_model::fetch::SMOLLM2_135M.ensure(&|m| eprintln!("{m}"))?,
    };
    let model = path.to_str().context("non-UTF-8 path")?.to_string();
    let (weights, cfg) = gguf::open(&path)?;
    let tokenizer = Tokenizer::from_gguf(weights.metadata())?;
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|t| tokenizer.encode(t, true))
        .collect::<engine_model::Result<_>>()?;
    Ok((WeightSource::Gguf(Box::new(weights)), cfg, prompts, model))
}

#[test]
#[ignore = "needs llama.cpp: bash benches/cpu-vs-llamacpp.sh --greedy"]
fn smollm2_native_greedy_matches_llama_cpp() -> Result<()> {
    let bin = std::env::var("LLAMA_GREEDY").context("LLAMA_GREEDY: path to llama_greedy")?;
    let (mut src, cfg, prompts, model) = setup()?;
    let picks = run_llama(&bin, &model, &prompts, false, None)?.picks;
    let mut failures = Vec::new();
    for quant in [QuantMode::Native, QuantMode::None] {
        let dec = Decoder::load_quant(&cfg, &mut src, quant, DType::F32, &Device::Cpu)?;
        let (mut confident, mut agree, mut agree_all) = (0, 0, 0);
        for (k, (prompt, theirs)) in prompts.iter().zip(&picks).enumerate() {
            let ours = ours_along(&dec, prompt, theirs)?;
            let ours = ours.iter().map(|l| (argmax(l), top2_margin(l)));
            for (s, (&(t, m), (o, om))) in theirs.iter().zip(ours).enumerate() {
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

/// Per step: max |ours - llama.cpp| / max |llama.cpp| over the row, and how far our
/// logits move llama.cpp's top-2 margin (|(o[t1] - o[t2]) - (l[t1] - l[t2])| for its
/// two best tokens t1, t2).
fn row_diff(ours: &[f32], theirs: &[f32]) -> (f32, f32) {
    let t1 = argmax(theirs) as usize;
    let t2 = (0..theirs.len())
        .filter(|&i| i != t1)
        .fold(usize::MAX, |b, i| {
            if b == usize::MAX || theirs[i] > theirs[b] {
                i
            } else {
                b
            }
        });
    let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    let diff = ours
        .iter()
        .zip(theirs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let margin = ((ours[t1] - ours[t2]) - (theirs[t1] - theirs[t2])).abs();
    (diff / scale, margin)
}

/// Median, 90th percentile and maximum of `v`.
fn summary(mut v: Vec<f32>) -> (f32, f32, f32) {
    v.sort_by(f32::total_cmp);
    let at = |q: f32| v[((v.len() - 1) as f32 * q).round() as usize];
    (at(0.5), at(0.9), at(1.0))
}

/// Full logit rows against llama.cpp's, along its greedy tokens, for `--quant native` and
/// `--quant none`: prints the median, p90 and max over the 320 steps of the relative row
/// difference and of the top-2 margin change. A measurement (run with LLAMA_KV=f32 so
/// that attention is computed alike); it asserts only that the rows are comparable.
#[test]
#[ignore = "needs llama.cpp: bash benches/cpu-vs-llamacpp.sh --greedy"]
fn smollm2_logits_vs_llama_cpp() -> Result<()> {
    let bin = std::env::var("LLAMA_GREEDY").context("LLAMA_GREEDY: path to llama_greedy")?;
    let (mut src, cfg, prompts, model) = setup()?;
    let llama = run_llama(&bin, &model, &prompts, true, None)?;
    ensure!(
        llama
            .logits
            .iter()
            .flatten()
            .all(|r| r.len() == cfg.vocab_size),
        "llama.cpp's rows are not {} wide",
        cfg.vocab_size
    );
    for quant in [QuantMode::Native, QuantMode::None] {
        let dec = Decoder::load_quant(&cfg, &mut src, quant, DType::F32, &Device::Cpu)?;
        let (mut rel, mut margin) = (Vec::new(), Vec::new());
        for (k, prompt) in prompts.iter().enumerate() {
            let ours = ours_along(&dec, prompt, &llama.picks[k])?;
            for (o, t) in ours.iter().zip(&llama.logits[k]) {
                let (r, m) = row_diff(o, t);
                rel.push(r);
                margin.push(m);
            }
        }
        let (r, m) = (summary(rel), summary(margin));
        eprintln!(
            "--quant {quant} vs llama.cpp, {} steps: max|diff|/max|logit| median {:.2e} \
             p90 {:.2e} max {:.2e}; top-2 margin change median {:.3} p90 {:.3} max {:.3}",
            PROMPTS.len() * STEPS,
            r.0,
            r.1,
            r.2,
            m.0,
            m.1,
            m.2
        );
    }
    Ok(())
}

/// llama_greedy's tensor dump: the first tensor of each name (f32, ggml order).
fn read_tensors(dir: &Path) -> Result<HashMap<String, Vec<f32>>> {
    let mut out = HashMap::new();
    for line in std::fs::read_to_string(dir.join("index.txt"))?.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        ensure!(f.len() >= 6, "bad index line: {line}");
        let (idx, name) = (f[0], f[1..f.len() - 4].join(" "));
        let bytes = std::fs::read(dir.join(format!("{idx}-{name}.f32")))?;
        let v = bytes
            .chunks_exact(4)
            .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.entry(name).or_insert(v);
    }
    Ok(out)
}

/// Every quantized matmul of the default model (30 layers x 7 Q4_1 matrices with Q8_1
/// activations, the Q8_0 head with Q8_0 activations) fed llama.cpp's own input (its
/// intermediate tensors from llama_greedy's LLAMA_TENSORS dump of the first prompt),
/// against llama.cpp's output: within `OP_TOL` relative (max |diff| / max |theirs|),
/// i.e. the same arithmetic up to f32 summation order. With f32 activation scales
/// instead of llama.cpp's f16 ones this was 1e-4 to 1e-3; measured now: at most 8.3e-7
/// (x86-64 AMD EPYC, AVX-512). Our f32 path (dequantized weights, unquantized
/// activations) is printed for scale: 1e-3 to 1.5e-2.
#[test]
#[ignore = "needs llama.cpp: bash benches/cpu-vs-llamacpp.sh --greedy"]
fn smollm2_each_matmul_matches_llama_cpp() -> Result<()> {
    const OP_TOL: f32 = 2e-6;
    let bin = std::env::var("LLAMA_GREEDY").context("LLAMA_GREEDY: path to llama_greedy")?;
    let (_, cfg, prompts, model) = setup()?;
    let dir = common::TempDir::new("llama-tensors")?;
    run_llama(&bin, &model, &prompts[..1], false, Some(dir.path()))?;
    let t = read_tensors(dir.path())?;
    let (weights, _) = gguf::open(Path::new(&model))?;
    let cpu = CpuContext::new(1)?;
    let mut checks = vec![(
        "result_norm".to_string(),
        "token_embd".to_string(),
        "result_output".to_string(),
    )];
    for l in 0..cfg.num_hidden_layers {
        for (x, w, y) in [
            ("attn_norm", "attn_q", "Qcur"),
            ("attn_norm", "attn_k", "Kcur"),
            ("attn_norm", "attn_v", "Vcur"),
            ("kqv_out", "attn_output", "attn_out"),
            ("ffn_norm", "ffn_gate", "ffn_gate"),
            ("ffn_norm", "ffn_up", "ffn_up"),
            ("ffn_swiglu", "ffn_down", "ffn_out"),
        ] {
            checks.push((
                format!("{x}-{l}"),
                format!("blk.{l}.{w}"),
                format!("{y}-{l}"),
            ));
        }
    }
    let (mut worst, mut worst_f32) = ((0f32, String::new()), 0f32);
    for (x_name, w_name, y_name) in &checks {
        let (x, y) = (
            t.get(x_name).context(x_name.clone())?,
            t.get(y_name).context(y_name.clone())?,
        );
        let (info, bytes) = weights.raw(&format!("{w_name}.weight"))?;
        let (ty, shape) = (GgmlType::from_gguf_id(info.ggml_type.id)?, info.shape());
        let (rows, cols) = (shape[0], shape[1]);
        // llama.cpp keeps only the last token's rows after the last layer's attention.
        let m = y.len() / rows;
        let x = &x[x.len() - m * cols..];
        let w = QMatrix::from_ggml(ty, rows, cols, bytes)?;
        let mut ours = vec![0f32; m * rows];
        w.matmul(x, m, &mut ours, &cpu)?;
        let (dense, _) = reference::matmul_with(ty, bytes, rows, cols, x, m, Acts::F32)?;
        let (r, rf) = (rel_diff(&ours, y), rel_diff(&dense, y));
        eprintln!("{w_name} ({ty}, {m} rows): native {r:.1e}, f32 {rf:.1e}");
        worst_f32 = worst_f32.max(rf);
        if r >= worst.0 {
            worst = (r, w_name.clone());
        }
    }
    eprintln!(
        "{} matmuls vs llama.cpp on its inputs: native at most {:.1e} ({}), f32 at most {worst_f32:.1e}",
        checks.len(),
        worst.0,
        worst.1
    );
    ensure!(
        worst.0 <= OP_TOL,
        "{}: {:.2e} > {OP_TOL:.0e}",
        worst.1,
        worst.0
    );
    Ok(())
}

/// max |a - b| / max |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}
