//! The `tokenizer.ggml.*` metadata of a GGUF file, read and checked for consistency
//! before a tokenizer is built from it.
//!
//! Checked here: the vocabulary is a non-empty array of strings of sane length; token
//! types and scores, when present, have one entry per token; merges are strings; BOS/EOS
//! ids are inside the vocabulary; flags are bools. Every error names the key.

use crate::gguf::{Array, Metadata};
use crate::{FormatError, Result};

pub const KEY_MODEL: &str = "tokenizer.ggml.model";
pub const KEY_PRE: &str = "tokenizer.ggml.pre";
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
pub const KEY_TYPES: &str = "tokenizer.ggml.token_type";
pub const KEY_SCORES: &str = "tokenizer.ggml.scores";
pub const KEY_MERGES: &str = "tokenizer.ggml.merges";
pub const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
pub const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
pub const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
pub const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
pub const KEY_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
pub const KEY_TEMPLATE: &str = "tokenizer.chat_template";

/// Most tokens in a vocabulary (ids must fit in a u32 with room to spare).
pub const MAX_TOKENS: usize = 1 << 22;
/// Most bytes in one token or merge (the longest in llama.cpp's test vocabularies, runs
/// of spaces, have 1024 and 1025).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The checked inputs of a GGUF vocabulary.
#[derive(Debug)]
pub struct VocabSpec<'a> {
    pub model: &'a str,
    pub pre: Option<&'a str>,
    pub tokens: &'a [String],
    /// One per token; all 1 ("normal") when the key is absent.
    pub types: Vec<i64>,
    /// One per token, when present.
    pub scores: Option<Vec<f32>>,
    pub merges: Option<&'a [String]>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    pub chat_template: Option<&'a str>,
}

pub(super) fn vocab_err(msg: impl Into<String>) -> FormatError {
    FormatError::Vocab(msg.into())
}

fn missing(key: &str) -> FormatError {
    vocab_err(format!("missing GGUF metadata key `{key}`"))
}

fn not(key: &str, want: &str, found: &Array) -> FormatError {
    vocab_err(format!(
        "GGUF metadata key `{key}` is not {want} (found an array of {} {})",
        found.len(),
        found.elem_name()
    ))
}

/// An array of strings, each at most [`MAX_TOKEN_BYTES`].
fn strings<'a>(md: &'a Metadata, key: &str) -> Result<Option<&'a [String]>> {
    let Some(a) = md.array(key).map_err(|e| vocab_err(e.to_string()))? else {
        return Ok(None);
    };
    let v = a
        .as_strings()
        .ok_or_else(|| not(key, "an array of strings", a))?;
    if let Some(i) = v.iter().position(|s| s.len() > MAX_TOKEN_BYTES) {
        return Err(vocab_err(format!(
            "`{key}`[{i}] has {} bytes (at most {MAX_TOKEN_BYTES})",
            v[i].len()
        )));
    }
    Ok(Some(v))
}

/// An array with one entry per token, converted by `f`.
fn per_token<T>(
    md: &Metadata,
    key: &str,
    n_tokens: usize,
    want: &str,
    f: impl Fn(&Array) -> Option<Vec<T>>,
) -> Result<Option<Vec<T>>> {
    let Some(a) = md.array(key).map_err(|e| vocab_err(e.to_string()))? else {
        return Ok(None);
    };
    let v = f(a).ok_or_else(|| not(key, want, a))?;
    if v.len() != n_tokens {
        return Err(vocab_err(format!(
            "`{key}` has {} entries but `{KEY_TOKENS}` has {n_tokens}",
            v.len()
        )));
    }
    Ok(Some(v))
}

/// An optional token id, inside the vocabulary.
fn token_id(md: &Metadata, key: &str, n_tokens: usize) -> Result<Option<u32>> {
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    let id = v
        .as_int()
        .ok_or_else(|| vocab_err(format!("GGUF metadata key `{key}` is not an integer")))?;
    match u32::try_from(id) {
        Ok(id) if (id as usize) < n_tokens => Ok(Some(id)),
        _ => Err(vocab_err(format!(
            "GGUF metadata key `{key}` = {id} is outside the vocabulary of {n_tokens} tokens"
        ))),
    }
}

impl<'a> VocabSpec<'a> {
    /// Read and check the vocabulary keys of `md`.
    pub fn from_metadata(md: &'a Metadata) -> Result<Self> {
        let text = |key: &str| md.str(key).map_err(|e| vocab_err(e.to_string()));
        let flag = |key: &str| md.bool(key).map_err(|e| vocab_err(e.to_string()));
        let model = text(KEY_MODEL)?.ok_or_else(|| missing(KEY_MODEL))?;
        let tokens = strings(md, KEY_TOKENS)?.ok_or_else(|| missing(KEY_TOKENS))?;
        if tokens.is_empty() || tokens.len() > MAX_TOKENS {
            return Err(vocab_err(format!(
                "`{KEY_TOKENS}` has {} tokens (expected 1 to {MAX_TOKENS})",
                tokens.len()
            )));
        }
        let n = tokens.len();
        let types = per_token(md, KEY_TYPES, n, "an array of integers", Array::to_i64s)?
            .unwrap_or_else(|| vec![1; n]);
        Ok(Self {
            model,
            pre: text(KEY_PRE)?,
            tokens,
            types,
            scores: per_token(md, KEY_SCORES, n, "an array of numbers", Array::to_f32s)?,
            merges: strings(md, KEY_MERGES)?,
            bos: token_id(md, KEY_BOS, n)?,
            eos: token_id(md, KEY_EOS, n)?,
            add_bos: flag(KEY_ADD_BOS)?,
            add_eos: flag(KEY_ADD_EOS)?,
            add_space_prefix: flag(KEY_SPACE_PREFIX)?,
            chat_template: text(KEY_TEMPLATE)?,
        })
    }
}
