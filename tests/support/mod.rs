//! Helpers shared by the end-to-end tests (each test file includes this module).
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;

/// The default model's GGUF, fetched once per test process.
pub fn default_model() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    engine_model::fetch::SMOLLM2_135M
        .ensure(&|m| eprintln!("{m}"))
        .expect("fetch the default model")
}

/// A tiny seeded llama manifest (hidden 32, 2 layers, the byte-level tokenizer: prompts
/// are bytes) with this context length; returns its `dummy:` spec.
pub fn tiny_manifest(dir: &Path, context: usize) -> String {
    let path = dir.join("tiny.json");
    let cfg = r#"{"name":"tiny","config":{"model_type":"llama","vocab_size":300,"hidden_size":32,
      "intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
      "rms_norm_eps":1e-5,"max_position_embeddings":CONTEXT,"bos_token_id":256,"eos_token_id":257}}"#;
    std::fs::write(&path, cfg.replace("CONTEXT", &context.to_string())).unwrap();
    format!("dummy:{}", path.display())
}

/// A failed run: exit `code`, no panic or backtrace, exactly one `error:` line, and it
/// contains every needle.
pub fn assert_rejected(out: &Output, code: i32, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "Aborted"] {
        assert!(!stderr.contains(bad), "{bad}: {stderr}");
    }
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got: {stderr}");
    for n in needles {
        assert!(
            errors[0].contains(n),
            "error line lacks {n:?}: {}",
            errors[0]
        );
    }
}
