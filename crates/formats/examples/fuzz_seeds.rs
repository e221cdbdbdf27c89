//! Write the fuzz seed corpus (`fuzz/seeds/TARGET/`) from real files, shrunk.
//!
//! ```text
//! cargo run --release -p engine-formats --example fuzz_seeds -- \
//!     ~/.cache/engine/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     ~/.cache/engine/fixtures/llama-cpp-vocab fuzz/seeds
//! ```
//!
//! Real headers are megabytes (the vocabulary is in them), too big for a fuzzer to mutate
//! quickly, so each seed keeps a real file's metadata with its arrays cut to their first
//! few hundred entries (merges kept only when both halves survive) and, for the model,
//! its real tensor table with tensors shrunk to one block. The SmolLM2 file's first
//! 4 KiB is kept as is (a truncated header).

use engine_formats::gguf::write::Writer;
use engine_formats::gguf::{Array, Gguf, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const KEEP_TOKENS: usize = 400;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [model, vocab_dir, out] = args.as_slice() else {
        return Err("usage: fuzz_seeds MODEL.gguf VOCAB_DIR OUT_DIR".into());
    };
    let gguf_dir = out.join("gguf");
    let vocab_out = out.join("gguf_vocab");
    std::fs::create_dir_all(&gguf_dir)?;
    std::fs::create_dir_all(&vocab_out)?;
    let bytes = std::fs::read(model)?;
    std::fs::write(gguf_dir.join("smollm2-first-4k.gguf"), &bytes[..4096])?;
    let g = Gguf::parse(&bytes)?;
    let mut w = shrunk_metadata(&g);
    for t in g.tensors.iter().take(12) {
        let block = t.ggml_type.block_size;
        let data = vec![0x11u8; t.ggml_type.type_size as usize];
        w = w.tensor(&t.name, t.ggml_type.id, &[block], data);
    }
    std::fs::write(gguf_dir.join("smollm2-shrunk.gguf"), w.to_bytes())?;
    std::fs::write(
        vocab_out.join("smollm2.gguf"),
        shrunk_metadata(&g).to_bytes(),
    )?;
    for name in [
        "llama-spm",
        "llama-bpe",
        "qwen2",
        "gpt-2",
        "gemma-4",
        "phi-3",
    ] {
        let path = vocab_dir.join(format!("ggml-vocab-{name}.gguf"));
        let g = Gguf::parse(&std::fs::read(&path)?)?;
        std::fs::write(
            vocab_out.join(format!("{name}.gguf")),
            shrunk_metadata(&g).to_bytes(),
        )?;
    }
    write_small_seeds(out)?;
    Ok(())
}

/// The metadata with every array cut to [`KEEP_TOKENS`] entries and merges filtered.
fn shrunk_metadata(g: &Gguf) -> Writer {
    let tokens: Vec<String> = g
        .metadata
        .array("tokenizer.ggml.tokens")
        .ok()
        .flatten()
        .and_then(|a| a.as_strings())
        .map(|t| t.iter().take(KEEP_TOKENS).cloned().collect())
        .unwrap_or_default();
    let known: HashSet<&str> = tokens.iter().map(String::as_str).collect();
    let mut keys: Vec<&String> = g.metadata.0.keys().collect();
    keys.sort();
    let mut w = Writer::new();
    for key in keys {
        let value = match &g.metadata.0[key] {
            Value::Array(Array::String(v)) if key == "tokenizer.ggml.merges" => {
                Value::Array(Array::String(
                    v.iter()
                        .filter(|m| {
                            m.split_once(' ')
                                .is_some_and(|(a, b)| known.contains(a) && known.contains(b))
                        })
                        .take(KEEP_TOKENS)
                        .cloned()
                        .collect(),
                ))
            }
            Value::Array(a) => Value::Array(cut(a)),
            Value::U32(id) if key.ends_with("_token_id") => Value::U32(*id % KEEP_TOKENS as u32),
            other => other.clone(),
        };
        w = w.kv(key, value);
    }
    w
}

fn cut(a: &Array) -> Array {
    fn first<T: Clone>(v: &[T]) -> Vec<T> {
        v.iter().take(KEEP_TOKENS).cloned().collect()
    }
    match a {
        Array::String(v) => Array::String(first(v)),
        Array::F32(v) => Array::F32(first(v)),
        Array::I32(v) => Array::I32(first(v)),
        Array::U32(v) => Array::U32(first(v)),
        other => other.clone(),
    }
}

/// Hand-written seeds for the text targets.
fn write_small_seeds(out: &Path) -> std::io::Result<()> {
    let jsonl = out.join("jsonl");
    std::fs::create_dir_all(&jsonl)?;
    let lines: &[(&str, &[u8])] = &[
        ("prompt", b"{\"id\":\"a1\",\"prompt\":\"The capital of France is\",\"max_tokens\":16}\n"),
        ("chat-crlf-bom", b"\xEF\xBB\xBF{\"id\":7,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":0.7,\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,\"seed\":3,\"stop\":[\"\\n\",\".\"],\"ignore_eos\":true,\"logprobs\":2}\r\n{\"id\":8,\"prompt\":\"x\",\"stop\":\"END\"}\r\n"),
        ("bad-lines", b"{not json\n\n[1]\n{\"id\":null}\n{\"id\":1,\"prompt\":\"a\",\"max_tokens\":18446744073709551615}\n"),
    ];
    for (name, bytes) in lines {
        std::fs::write(jsonl.join(format!("{name}.jsonl")), bytes)?;
    }
    let chat = out.join("chat_template");
    std::fs::create_dir_all(&chat)?;
    let templates: &[(&str, &str)] = &[
        ("chatml", "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
        ("llama2", "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"),
        ("macro-loop", "{% macro m(x) %}{{ x|upper }}{% endmacro %}{% for i in range(3) %}{{ m(messages[0].content) ~ i }}{% endfor %}{{ strftime_now('%d') }}{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}"),
    ];
    for (name, t) in templates {
        std::fs::write(chat.join(format!("{name}.jinja")), t)?;
    }
    let st = out.join("safetensors");
    std::fs::create_dir_all(&st)?;
    let header = r#"{"__metadata__":{"format":"pt"},"model.norm.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"lm_head.weight":{"dtype":"BF16","shape":[2,4],"data_offsets":[16,32]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&[0x3f; 32]);
    std::fs::write(st.join("two-tensors.safetensors"), file)
}
