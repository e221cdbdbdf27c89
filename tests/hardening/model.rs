//! A tiny model to break: a complete llama GGUF (f32 weights, a
//! byte-level BPE vocabulary, a ChatML template) whose metadata and tensors a case can
//! change before it is written.

use engine_formats::gguf::write::Writer;
use engine_formats::gguf::{Array, Value};
use std::path::Path;

/// The metadata and tensors of a GGUF file, editable before writing.
pub struct Spec {
    pub kvs: Vec<(String, Value)>,
    /// (name, ggml type id, ggml-order dims, bytes)
    pub tensors: Vec<(String, u32, Vec<u64>, Vec<u8>)>,
}

impl Spec {
    pub fn set(&mut self, key: &str, v: Value) {
        self.kvs.retain(|(k, _)| k != key);
        self.kvs.push((key.to_string(), v));
    }

    pub fn set_str(&mut self, key: &str, s: &str) {
        self.set(key, Value::String(s.to_string()));
    }

    pub fn remove(&mut self, key: &str) {
        self.kvs.retain(|(k, _)| k != key);
    }

    pub fn tensor(&mut self, name: &str) -> &mut (String, u32, Vec<u64>, Vec<u8>) {
        self.tensors
            .iter_mut()
            .find(|t| t.0 == name)
            .expect("tensor")
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for (k, v) in &self.kvs {
            w = w.kv(k, v.clone());
        }
        for (name, ty, dims, data) in &self.tensors {
            w = w.tensor(name, *ty, dims, data.clone());
        }
        w.to_bytes()
    }
}

/// GPT-2's byte-to-unicode map: the 256 single-character tokens of a byte-level BPE.
fn byte_tokens() -> Vec<String> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            char::from_u32(c).unwrap().to_string()
        })
        .collect()
}

/// An f32 tensor with row-major `shape`, filled with small deterministic values.
fn f32_tensor(name: &str, shape: &[u64], norm: bool) -> (String, u32, Vec<u64>, Vec<u8>) {
    let n: u64 = shape.iter().product();
    let data = (0..n)
        .flat_map(|i| {
            let x = if norm {
                1.0
            } else {
                ((i * 7919 % 101) as f32 - 50.0) * 0.002
            };
            x.to_le_bytes()
        })
        .collect();
    (
        name.to_string(),
        0,
        shape.iter().rev().copied().collect(),
        data,
    )
}

/// hidden 32, 4 heads (2 KV) of 8, FFN 64, 2 layers, context 64, 257 tokens.
pub fn tiny_gguf() -> Spec {
    let mut tokens = byte_tokens();
    tokens.push("<|im_end|>".to_string());
    let n_vocab = tokens.len() as u64;
    let mut types = vec![1i32; tokens.len()];
    types[256] = 3;
    let s = |v: &str| Value::String(v.to_string());
    let kvs = vec![
        ("general.architecture", s("llama")),
        ("llama.block_count", Value::U32(2)),
        ("llama.context_length", Value::U32(64)),
        ("llama.embedding_length", Value::U32(32)),
        ("llama.feed_forward_length", Value::U32(64)),
        ("llama.attention.head_count", Value::U32(4)),
        ("llama.attention.head_count_kv", Value::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s("gpt-2")),
        ("tokenizer.ggml.tokens", Value::Array(Array::String(tokens))),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
        ("tokenizer.ggml.merges", Value::Array(Array::String(vec![]))),
        ("tokenizer.ggml.eos_token_id", Value::U32(256)),
        (
            "tokenizer.chat_template",
            s("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"),
        ),
    ];
    let mut tensors = vec![
        f32_tensor("token_embd.weight", &[n_vocab, 32], false),
        f32_tensor("output_norm.weight", &[32], true),
    ];
    for l in 0..2 {
        let t = |n: &str| format!("blk.{l}.{n}.weight");
        tensors.extend([
            f32_tensor(&t("attn_norm"), &[32], true),
            f32_tensor(&t("ffn_norm"), &[32], true),
            f32_tensor(&t("attn_q"), &[32, 32], false),
            f32_tensor(&t("attn_k"), &[16, 32], false),
            f32_tensor(&t("attn_v"), &[16, 32], false),
            f32_tensor(&t("attn_output"), &[32, 32], false),
            f32_tensor(&t("ffn_gate"), &[64, 32], false),
            f32_tensor(&t("ffn_up"), &[64, 32], false),
            f32_tensor(&t("ffn_down"), &[32, 64], false),
        ]);
    }
    Spec {
        kvs: kvs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        tensors,
    }
}

/// Write the tiny GGUF, changed by `edit`, to `path`.
pub fn write_gguf(path: &Path, edit: impl FnOnce(&mut Spec)) {
    let mut spec = tiny_gguf();
    edit(&mut spec);
    std::fs::write(path, spec.bytes()).unwrap();
}
