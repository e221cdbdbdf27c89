//! Hostile model files: GGUF headers, GGUF metadata and tensors, safetensors headers,
//! `config.json` and weight indexes. Each error line must name the file and the field.

use crate::model::{tiny_gguf, write_gguf, Spec};
use crate::{assert_rejected, engine};
use engine_formats::gguf::write::put_string;
use engine_formats::gguf::{Array, Value};
use std::path::{Path, PathBuf};

fn info(path: &Path) -> std::process::Output {
    engine(&["info", "--model", path.to_str().unwrap()])
}

fn generate(path: &Path) -> std::process::Output {
    let p = path.to_str().unwrap();
    engine(&[
        "generate",
        "--model",
        p,
        "--prompt",
        "hi",
        "--max-tokens",
        "2",
    ])
}

/// Header start: magic, version 3, tensor and key counts.
fn head(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

/// One tensor info (name, dims, type, offset), padded with zeros to look like data.
fn one_tensor(dims: &[u64], type_id: u32, offset: u64) -> Vec<u8> {
    let mut b = head(1, 0);
    put_string(&mut b, "token_embd.weight");
    b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    dims.iter()
        .for_each(|d| b.extend_from_slice(&d.to_le_bytes()));
    b.extend_from_slice(&type_id.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.resize(b.len() + 256, 0);
    b
}

/// One metadata pair whose value is `value_bytes` after the type id.
fn one_kv(type_id: u32, value_bytes: &[u8]) -> Vec<u8> {
    let mut b = head(0, 1);
    put_string(&mut b, "general.name");
    b.extend_from_slice(&type_id.to_le_bytes());
    b.extend_from_slice(value_bytes);
    b.resize(b.len() + 64, 0);
    b
}

#[test]
fn gguf_headers_that_lie_are_rejected_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let mut be = head(0, 0);
    be[4..8].copy_from_slice(&3u32.to_be_bytes());
    let mut v1 = head(0, 0);
    v1[4] = 1;
    let mut long_key = head(0, 1);
    long_key.extend_from_slice(&u64::MAX.to_le_bytes());
    long_key.resize(64, 0);
    let mut huge_array = 8u32.to_le_bytes().to_vec();
    huge_array.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let nested: Vec<u8> = (0..8)
        .flat_map(|_| {
            [9u32.to_le_bytes(), [1, 0, 0, 0]]
                .concat()
                .into_iter()
                .chain([0; 4])
        })
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "needs 4 bytes"),
        (
            "noise",
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
            "no GGUF magic",
        ),
        ("v1", v1, "version 1 is not supported"),
        ("big-endian", be, "big-endian"),
        ("tensors", head(u64::MAX, 0), "18446744073709551615 tensors"),
        ("keys", head(0, 1 << 40), "metadata key/value pairs"),
        (
            "long-key",
            long_key,
            "key claims 18446744073709551615 bytes",
        ),
        (
            "long-string",
            one_kv(8, &(1u64 << 62).to_le_bytes()),
            "string claims",
        ),
        (
            "huge-array",
            one_kv(9, &huge_array),
            "1099511627776 array elements",
        ),
        ("value-type", one_kv(77, &[]), "unknown value type 77"),
        ("nested", one_kv(9, &nested), "nested deeper than 4"),
        ("dims", one_tensor(&[1, 2, 3, 4, 5], 0, 0), "5 dimensions"),
        (
            "ggml-type",
            one_tensor(&[32], 99, 0),
            "unknown ggml type 99",
        ),
        (
            "overflow",
            one_tensor(&[1 << 40, 1 << 40], 0, 0),
            "overflow",
        ),
        (
            "block",
            one_tensor(&[33], 2, 0),
            "not a multiple of the q4_0 block size 32",
        ),
        (
            "misaligned",
            one_tensor(&[4], 0, 3),
            "not a multiple of the alignment 32",
        ),
        (
            "past-end",
            one_tensor(&[4], 0, 1 << 50),
            "ends past the end of the file",
        ),
    ];
    for (name, bytes, why) in cases {
        let path = dir.path().join(format!("{name}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        assert_rejected(
            &info(&path),
            1,
            &[&format!("{name}.gguf"), "not a valid GGUF file", why],
        );
    }
}

fn gguf_case(dir: &Path, name: &str, edit: impl FnOnce(&mut Spec)) -> PathBuf {
    let path = dir.join(format!("{name}.gguf"));
    write_gguf(&path, edit);
    path
}

#[test]
fn gguf_metadata_and_tensors_are_checked_against_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = gguf_case(d, "ok", |_| {});
    let out = generate(&ok);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let set = |k: &'static str, v: Value| move |s: &mut Spec| s.set(k, v);
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            gguf_case(d, "arch", |s| s.remove("general.architecture")),
            "missing GGUF metadata `general.architecture`",
        ),
        (
            gguf_case(
                d,
                "heads0",
                set("llama.attention.head_count", Value::U32(0)),
            ),
            "`num_attention_heads` = 0 must be positive",
        ),
        (
            gguf_case(
                d,
                "gqa",
                set("llama.attention.head_count_kv", Value::U32(3)),
            ),
            "`num_key_value_heads` = 3",
        ),
        (
            gguf_case(
                d,
                "theta",
                set("llama.rope.freq_base", Value::F32(f32::NAN)),
            ),
            "`rope_theta` = NaN",
        ),
        (
            gguf_case(
                d,
                "eps",
                set("llama.attention.layer_norm_rms_epsilon", Value::F32(-1.0)),
            ),
            "`rms_norm_eps` = -1",
        ),
        (
            gguf_case(d, "ctx", set("llama.context_length", Value::I32(-1))),
            "`llama.context_length`: -1 is negative",
        ),
        (
            gguf_case(d, "layers", set("llama.block_count", Value::U32(3))),
            "`num_hidden_layers` = 3 but the weights have no tensors for layer 2",
        ),
        (
            gguf_case(
                d,
                "typed",
                set("llama.block_count", Value::String("2".into())),
            ),
            "`llama.block_count`: expected an integer, found a string",
        ),
        (
            gguf_case(d, "hidden", set("llama.embedding_length", Value::U32(48))),
            "`token_embd.weight` has shape [257, 32], expected [vocab, 48]",
        ),
        (
            gguf_case(
                d,
                "eos",
                set("tokenizer.ggml.eos_token_id", Value::U32(5000)),
            ),
            "`eos_token_id` = 5000 is outside the vocabulary (`vocab_size` = 257)",
        ),
        (
            gguf_case(
                d,
                "types",
                set(
                    "tokenizer.ggml.token_type",
                    Value::Array(Array::I32(vec![1; 3])),
                ),
            ),
            "`tokenizer.ggml.token_type` has 3 entries but `tokenizer.ggml.tokens` has 257",
        ),
        (
            gguf_case(
                d,
                "pre",
                set("tokenizer.ggml.pre", Value::String("martian".into())),
            ),
            "unsupported `tokenizer.ggml.pre` = `martian`",
        ),
    ];
    for (path, why) in cases {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        assert_rejected(&info(&path), 1, &[&name, why]);
    }
    // Tensor-level problems surface when the weights load.
    let extra = gguf_case(d, "extra-layer", |s| {
        let t = tiny_gguf().tensors.remove(2);
        s.tensors
            .push(("blk.2.attn_norm.weight".into(), t.1, t.2, t.3));
    });
    assert_rejected(
        &info(&extra),
        1,
        &["extra-layer.gguf", "tensors for layer 2"],
    );
    let swapped = gguf_case(d, "shape", |s| s.tensor("blk.1.ffn_up.weight").2.reverse());
    assert_rejected(
        &generate(&swapped),
        1,
        &[
            "shape.gguf",
            "`blk.1.ffn_up.weight` has shape [32, 64], expected [64, 32]",
        ],
    );
    let iq = gguf_case(d, "iq", |s| {
        let t = s.tensor("blk.0.ffn_down.weight");
        (t.1, t.3) = (20, vec![0; 32 * 2 * 18]);
    });
    assert_rejected(
        &generate(&iq),
        1,
        &["iq.gguf", "type iq4_nl, which this engine cannot load yet"],
    );
    let bytes = std::fs::read(&ok).unwrap();
    let cut = d.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    assert_rejected(&info(&cut), 1, &["cut.gguf", "truncated or corrupt"]);
}

/// A model directory with this config.json and these safetensors files.
fn hf_dir(root: &Path, name: &str, config: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    for (f, bytes) in files {
        std::fs::write(dir.join(f), bytes).unwrap();
    }
    dir
}

fn safetensors(json: &str, data_len: usize) -> Vec<u8> {
    let mut b = (json.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(json.as_bytes());
    b.resize(b.len() + data_len, 0);
    b
}

const CONFIG: &str = r#"{"model_type":"llama","vocab_size":300,"hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"rms_norm_eps":1e-5,"max_position_embeddings":32}"#;

#[test]
fn safetensors_headers_and_configs_are_checked() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let st = |json: &str, n: usize| vec![("model.safetensors", safetensors(json, n))];
    let norm = |l: u32| {
        format!(
            r#""model.layers.{l}.input_layernorm.weight":{{"dtype":"F32","shape":[32],"data_offsets":[{},{}]}}"#,
            l * 128,
            l * 128 + 128
        )
    };
    let layers3 = format!("{{{},{},{}}}", norm(0), norm(1), norm(2));
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    let cases: Vec<(PathBuf, &str)> = vec![
        (hf_dir(r, "huge", CONFIG, &[("model.safetensors", huge)]), "header length 18446744073709551615 is over the limit"),
        (hf_dir(r, "past", CONFIG, &[("model.safetensors", safetensors("{}", 0)[..9].to_vec())]), "past the end of the file"),
        (hf_dir(r, "json", CONFIG, &st("{not json", 0)), "header JSON"),
        (hf_dir(r, "dtype", CONFIG, &st(r#"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#, 1)), "tensor `a`: unknown dtype `Q4`"),
        (hf_dir(r, "span", CONFIG, &st(r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,4]}}"#, 4)), "needs 16 bytes"),
        (hf_dir(r, "overlap", CONFIG, &st(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8)), "overlaps"),
        (hf_dir(r, "layers", CONFIG, &st(&layers3, 384)), "`num_hidden_layers` = 2 but the weights have tensors for layer 2"),
        (hf_dir(r, "strheads", &CONFIG.replace(r#""num_attention_heads":4"#, r#""num_attention_heads":"4""#), &st("{}", 0)), "`num_attention_heads` = \"4\" is not a non-negative integer"),
        (hf_dir(r, "negvocab", &CONFIG.replace(r#""vocab_size":300"#, r#""vocab_size":-1"#), &st("{}", 0)), "`vocab_size` = -1 is not a non-negative integer"),
        (hf_dir(r, "divide", &CONFIG.replace(r#""hidden_size":32"#, r#""hidden_size":30"#), &st("{}", 0)), "hidden_size (30) is not a multiple of num_attention_heads (4)"),
        (hf_dir(r, "rope", &CONFIG.replace(r#""max_position_embeddings""#, r#""rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":4.0,"high_freq_factor":1.0,"original_max_position_embeddings":8192},"max_position_embeddings""#), &st("{}", 0)), "`rope_scaling.high_freq_factor` = 1 must be greater"),
        (hf_dir(r, "bos", &CONFIG.replace(r#""max_position_embeddings""#, r#""bos_token_id":4294967296,"max_position_embeddings""#), &st("{}", 0)), "`bos_token_id` = 4294967296 is not a token id"),
        (hf_dir(r, "escape", CONFIG, &[("model.safetensors.index.json", br#"{"weight_map":{"a":"../../etc/passwd"}}"#.to_vec())]), "`weight_map` entry `a` = \"../../etc/passwd\" is not a file name"),
    ];
    for (dir, why) in cases {
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        assert_rejected(&info(&dir), 1, &[&name, why]);
    }
    // A tensor of the wrong shape surfaces at load (embed_tokens is read first).
    let shaped = format!(
        r#"{{"model.embed_tokens.weight":{{"dtype":"F32","shape":[32,300],"data_offsets":[0,38400]}},{},{}}}"#,
        norm(0).replace("[0,128]", "[38400,38528]"),
        norm(1).replace("[128,256]", "[38528,38656]")
    );
    let shaped = hf_dir(r, "shaped", CONFIG, &st(&shaped, 38656));
    let out = generate(&shaped);
    assert_rejected(
        &out,
        1,
        &[
            "shaped",
            "`model.embed_tokens.weight` has shape [32, 300], expected [300, 32]",
        ],
    );
    // A manifest whose weights cannot fit in memory is refused before allocating.
    let m = r.join("giant.json");
    std::fs::write(
        &m,
        CONFIG
            .replace(r#""vocab_size":300"#, r#""vocab_size":16000000"#)
            .replace(r#""hidden_size":32"#, r#""hidden_size":131072"#)
            .replace(
                r#""num_attention_heads":4"#,
                r#""num_attention_heads":1024"#,
            )
            .replace("\"model_type\"", "\"config\":{\"model_type\"")
            + "}",
    )
    .unwrap();
    let spec = format!("dummy:{}", m.display());
    let out = engine(&["generate", "--model", &spec, "--prompt", "hi"]);
    assert_rejected(&out, 1, &["giant.json", "GB of memory available"]);
}
