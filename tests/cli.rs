//! End-to-end tests of the `engine` binary: the default model answers sensibly, and bad
//! input gives one clear error line and a non-zero exit, never a panic.

use std::path::Path;
use std::process::{Command, Output};

mod support;
use support::default_model;

fn engine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run engine")
}

/// Assert a failed run (exit 1) with exactly one `error:` line mentioning every needle.
fn assert_clean_error(out: &Output, needles: &[&str]) {
    support::assert_rejected(out, 1, needles);
}

/// A tiny model manifest with a short context, for input checks that need a model.
fn tiny_manifest(dir: &Path) -> String {
    support::tiny_manifest(dir, 32)
}

#[test]
fn default_model_completes_the_capital_of_france() {
    let gguf = default_model();
    let out = engine(&[
        "generate",
        "--model",
        gguf.to_str().unwrap(),
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "16",
        "--temperature",
        "0",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stdout.contains("Paris"), "continuation: {stdout:?}");
    assert!(
        stderr.contains("prompt tokens: 5") && stderr.contains("TTFT"),
        "timing line: {stderr}"
    );
}

/// The chat template at work: the exact f32 path (the default) answers "Paris".
/// `--quant native` (8-bit activations as llama.cpp rounds them) answers as llama.cpp
/// does on the same file ("L'Étoile, ..."; benches/results/2026-11-30-cpu-quant-*),
/// so it is only checked to answer.
#[test]
fn chat_mode_uses_the_template_and_answers() {
    let gguf = default_model();
    for quant in ["none", "native"] {
        let out = engine(&[
            "generate",
            "--model",
            gguf.to_str().unwrap(),
            "--quant",
            quant,
            "--chat",
            "--prompt",
            "What is the capital of France?",
            "--max-tokens",
            "24",
            "--temperature",
            "0",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "--quant {quant}: stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        match quant {
            "none" => assert!(stdout.contains("Paris"), "answer: {stdout:?}"),
            _ => assert!(stdout.trim().len() > 10, "native answer: {stdout:?}"),
        }
    }
}

#[test]
fn info_reports_config_and_sizes_without_loading_weights() {
    let out = engine(&["info", "--model", "dummy:llama-3.1-8b", "--dtype", "bf16"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("parameters:          8030261248"),
        "{stdout}"
    );
    assert!(
        stdout.contains("KV cache per token:  131072 bytes"),
        "{stdout}"
    );
    assert!(stdout.contains("llama3 scaling"), "{stdout}");
    assert!(stdout.contains("rms norm eps:        1e-5\n"), "{stdout}");
}

#[test]
fn info_counts_bytes_per_weight_type_under_quant() {
    let out = engine(&[
        "info",
        "--model",
        "dummy:llama-3.1-8b",
        "--dtype",
        "bf16",
        "--quant",
        "q4_k",
        "--json",
    ]);
    let v = json_of(&out);
    // Layer matrices: 32 x 4096 x (4096 + 2 x 1024 + 4096 + 3 x 14336) values; the untied
    // head 128256 x 4096; Q4_K stores 256 values in 144 bytes.
    let values = 32u64 * 4096 * (4096 + 2 * 1024 + 4096 + 3 * 14336) + 128256 * 4096;
    let q4k = &v["weight_bytes_by_type"]["q4_k"];
    assert_eq!(q4k["tensors"], 32 * 7 + 1, "{v}");
    assert_eq!(q4k["bytes"], values / 256 * 144, "{v}");
    // The embedding and norms stay in the run dtype; only the embedding is not read.
    let bf16 = v["weight_bytes_by_type"]["bf16"]["bytes"].as_u64().unwrap();
    let embed = 128256 * 4096 * 2;
    assert_eq!(
        v["weight_bytes_read_per_decode_step"].as_u64().unwrap(),
        values / 256 * 144 + bf16 - embed
    );
    let out = engine(&["info", "--model", "dummy:llama-3.1-8b", "--quant", "q9"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--quant") && err.contains("q4_k"), "{err}");
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn tokenize_round_trips_and_counts_what_generate_counts() {
    let gguf = default_model();
    let model = gguf.to_str().unwrap();
    let text = "The capital of France is Paris.\n  Ünïcödé 2024 🦀 <b>";
    let v = json_of(&engine(&["tokenize", "--model", model, "--json", text]));
    let ids: Vec<String> = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(v["count"].as_u64(), Some(ids.len() as u64));
    assert_eq!(v["pieces"].as_array().map(Vec::len), Some(ids.len()));
    let back = json_of(&engine(&[
        "tokenize",
        "--model",
        model,
        "--json",
        "--decode",
        &ids.join(","),
    ]));
    assert_eq!(
        back["text"].as_str(),
        Some(text),
        "decode(encode(text)) == text"
    );

    // The count is the engine's: generate reports the same prompt tokens, plain and chat.
    for chat in [false, true] {
        let prompt = "What is the capital of France?";
        let mut args = vec!["tokenize", "--model", model, "--json", prompt];
        let mut gen = vec![
            "generate",
            "--model",
            model,
            "--prompt",
            prompt,
            "--max-tokens",
            "1",
        ];
        if chat {
            args.push("--chat");
            gen.push("--chat");
        }
        let v = json_of(&engine(&args));
        if chat {
            assert!(v["rendered"]
                .as_str()
                .is_some_and(|r| r.contains("<|im_start|>user")));
        }
        let out = engine(&gen);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let needle = format!("prompt tokens: {} |", v["count"]);
        assert!(
            stderr.contains(&needle),
            "chat={chat}: {needle} not in {stderr}"
        );
    }
}

#[test]
fn tokenize_prints_ids_pieces_and_count_and_rejects_bad_ids() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_manifest(dir.path());
    let out = engine(&["tokenize", "--model", &model, "Hi"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // Byte-level fallback: BOS, then one token per byte.
    for line in [
        "256  \"\"",
        "<bos>",
        "72  \"H\"",
        "<0x48>",
        "105  \"i\"",
        "3 tokens",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
    let out = engine(&["tokenize", "--model", &model, "--decode", "72,9999"]);
    assert_clean_error(&out, &["--decode", "9999", "outside the vocabulary"]);
}

#[test]
fn unknown_model_alias() {
    let out = engine(&["generate", "--model", "llama-9000", "--prompt", "hi"]);
    assert_clean_error(&out, &["unknown model `llama-9000`", "dummy:NAME"]);
}

#[test]
fn missing_weight_file() {
    let out = engine(&[
        "generate",
        "--model",
        "/nonexistent/model.gguf",
        "--prompt",
        "hi",
    ]);
    assert_clean_error(&out, &["no such file"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type":"llama","vocab_size":300,"hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"rms_norm_eps":1e-5,"max_position_embeddings":32}"#).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map":{"model.norm.weight":"model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let out = engine(&[
        "generate",
        "--model",
        dir.path().to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert_clean_error(
        &out,
        &["model-00001-of-00002.safetensors", "file not found"],
    );
}

#[test]
fn truncated_gguf() {
    let gguf = default_model();
    let bytes = std::fs::read(&gguf).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = engine(&[
        "generate",
        "--model",
        cut.to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert_clean_error(&out, &["cut.gguf", "truncated"]);
}

#[test]
fn corrupt_weight_files() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("noise.gguf");
    std::fs::write(
        &bad,
        (0..4096u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let out = engine(&[
        "generate",
        "--model",
        bad.to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert_clean_error(&out, &["noise.gguf", "not a valid GGUF file"]);

    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    std::fs::write(hf.join("config.json"), r#"{"model_type":"llama","vocab_size":300,"hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"rms_norm_eps":1e-5,"max_position_embeddings":32}"#).unwrap();
    std::fs::write(
        hf.join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all",
    )
    .unwrap();
    let out = engine(&[
        "generate",
        "--model",
        hf.to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert_clean_error(&out, &["model.safetensors", "not a valid safetensors file"]);
}

#[test]
fn unsupported_architecture() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type":"gpt_neox","vocab_size":300}"#,
    )
    .unwrap();
    let out = engine(&["info", "--model", dir.path().to_str().unwrap()]);
    assert_clean_error(
        &out,
        &["unsupported architecture `gpt_neox`", "config.json"],
    );
}

#[test]
fn prompt_longer_than_the_context() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_manifest(dir.path());
    let prompt = "x".repeat(100);
    let out = engine(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        &prompt,
        "--max-tokens",
        "4",
    ]);
    assert_clean_error(
        &out,
        &["this model's context is 32 tokens; the prompt has 101 and max_tokens asks for 4"],
    );
}

#[test]
fn bad_sampling_values() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_manifest(dir.path());
    let cases: &[(&str, &str, &str)] = &[
        ("--temperature", "-1", "must be a finite number in [0, inf)"),
        ("--top-p", "1.5", "(0, 1]"),
        ("--top-p", "0", "(0, 1]"),
        ("--min-p", "2", "[0, 1]"),
    ];
    for (flag, value, needle) in cases {
        // Range-checked where clap parses the flag: a usage error (exit 2) naming it.
        let out = engine(&["generate", "--model", &model, "--prompt", "hi", flag, value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("");
        for n in [needle, flag, value] {
            assert!(line.contains(n), "{line} lacks {n}");
        }
    }
}

#[test]
fn dummy_model_with_byte_tokenizer_generates() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_manifest(dir.path());
    let out = engine(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        "hello",
        "--max-tokens",
        "8",
        "--ignore-eos",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("output tokens: 8"), "{stderr}");
}

#[test]
fn kernels_test_checks_every_kernel_on_the_cpu() {
    let out = engine(&["kernels", "test", "--device", "cpu", "--dtype", "f32"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for k in [
        "add_rms_norm",
        "rope",
        "silu_mul",
        "reshape_and_cache",
        "paged_decode",
        "paged_prefill",
    ] {
        assert!(stdout.contains(k), "{k} missing: {stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("checks passed"), "{stdout}");
}

#[test]
fn kernels_bad_names_and_shapes() {
    assert_clean_error(
        &engine(&["kernels", "test", "nope"]),
        &["unknown kernel \"nope\"", "silu_mul"],
    );
    assert_clean_error(
        &engine(&["kernels", "test", "silu_mul", "--shapes", "4"]),
        &["shape [4]", "tokens,intermediate"],
    );
    assert_clean_error(
        &engine(&["kernels", "test", "--shapes", "4,4"]),
        &["--shapes needs a kernel name"],
    );
}

#[test]
fn fused_and_candle_kernels_generate_the_same_greedy_text() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_manifest(dir.path());
    let run = |kernels: &str| {
        let out = engine(&[
            "generate",
            "--model",
            &model,
            "--kernels",
            kernels,
            "--prompt",
            "hello",
            "--max-tokens",
            "12",
            "--temperature",
            "0",
            "--ignore-eos",
        ]);
        assert!(
            out.status.success(),
            "--kernels {kernels}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(run("fused"), run("candle"));
    // A usage error: clap's message and exit code 2.
    let out = engine(&[
        "generate",
        "--model",
        &model,
        "--kernels",
        "triton",
        "--prompt",
        "x",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("triton") && stderr.contains("candle, fused or auto"),
        "{stderr}"
    );
}
