//! Build a `tokenizers::Tokenizer` from GGUF metadata, reproducing llama.cpp's tokenization.
//!
//! A GGUF file carries its vocabulary as metadata (`tokenizer.ggml.*`) rather than as a
//! `tokenizer.json`, so serving a GGUF model needs a tokenizer rebuilt from those keys, and
//! it must split text exactly as llama.cpp does or the model sees inputs it was not
//! trained on. Two vocabulary kinds are supported:
//!
//! * `gpt2` — byte-level BPE: the stored merges, llama.cpp's pre-tokenizer regexes for
//!   `tokenizer.ggml.pre` (see [`super::gguf_pre`]), GPT-2 byte mapping and decoder.
//! * `gemma4` — the same BPE on raw UTF-8, spaces written `▁`, `<0xXX>` byte fallback.
//! * `llama` — SentencePiece (llama.cpp's SPM tokenizer): repeatedly merging the adjacent
//!   pair whose concatenation is the highest-scoring vocabulary piece is the same as a BPE
//!   whose merges are every two-piece split of every piece, ranked by that piece's score
//!   (the transformers SentencePiece converter does the same). Unknown characters fall
//!   back to `<0xXX>` byte tokens; spaces become `▁` with one prepended, as llama.cpp does.
//!
//! Control, user-defined and unknown tokens become added tokens, matched in text before
//! the model runs (llama.cpp's `parse_special`); control and unknown tokens are "special"
//! and can be skipped when decoding. A template post-processor adds BOS/EOS as llama.cpp
//! does when `add_special_tokens` is true.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace, Sequence as NormSequence};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, Tokenizer};

use super::gguf_pre;
use crate::{ModelError, Result};

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const KEY_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
const KEY_TEMPLATE: &str = "tokenizer.chat_template";

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// SentencePiece's whitespace marker.
const SPM_SPACE: &str = "\u{2581}";

/// A tokenizer rebuilt from GGUF metadata, with the special-token settings llama.cpp uses.
pub struct GgufVocab {
    pub tokenizer: Tokenizer,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    /// `tokenizer.chat_template`, when present.
    pub chat_template: Option<String>,
}

/// Build the tokenizer described by a GGUF file's `tokenizer.*` metadata.
pub fn vocab_from_gguf(metadata: &HashMap<String, Value>) -> Result<GgufVocab> {
    let md = Meta(metadata);
    let model = md.str(KEY_MODEL)?;
    let tokens = md.str_array(KEY_TOKENS)?;
    let types = md.token_types(tokens.len())?;
    let built = match model {
        "gpt2" => build_gpt2(&md, &tokens, md.opt_str(KEY_PRE)?.unwrap_or("default"))?,
        // llama.cpp ignores `tokenizer.ggml.pre` for this model.
        "gemma4" => build_gpt2(&md, &tokens, "gemma4")?,
        "llama" => Built {
            tokenizer: build_spm(&md, &tokens, &types)?,
            default_add_bos: true,
            force_add_bos: false,
        },
        other => {
            return Err(tok_err(format!(
                "unsupported `{KEY_MODEL}` = `{other}` (supported: gpt2, gemma4, llama)"
            )))
        }
    };
    let mut tokenizer = built.tokenizer;
    add_special_tokens(&mut tokenizer, &tokens, &types)?;
    let bos_token_id = md.token_id(KEY_BOS, tokens.len())?;
    let eos_token_id = md.token_id(KEY_EOS, tokens.len())?;
    let add_bos = built.force_add_bos || md.opt_bool(KEY_ADD_BOS)?.unwrap_or(built.default_add_bos);
    let add_eos = md.opt_bool(KEY_ADD_EOS)?.unwrap_or(false);
    let bos = special_for(add_bos, bos_token_id, KEY_BOS, &tokens)?;
    let eos = special_for(add_eos, eos_token_id, KEY_EOS, &tokens)?;
    tokenizer.with_post_processor(Some(post_processor(bos, eos)?));
    Ok(GgufVocab {
        tokenizer,
        bos_token_id,
        eos_token_id,
        add_bos,
        add_eos,
        chat_template: md.opt_str(KEY_TEMPLATE)?.map(str::to_owned),
    })
}

fn tok_err(msg: impl Into<String>) -> ModelError {
    ModelError::Tokenizer(msg.into())
}

/// A tokenizer and llama.cpp's rule for `add_bos` with it.
struct Built {
    tokenizer: Tokenizer,
    /// The value when `tokenizer.ggml.add_bos_token` is absent.
    default_add_bos: bool,
    /// llama.cpp adds BOS whatever the key says (Gemma 4).
    force_add_bos: bool,
}

/// BPE with stored merges: byte-level, or on raw UTF-8 with `▁` spaces (Gemma 4).
fn build_gpt2(md: &Meta, tokens: &[&str], pre: &str) -> Result<Built> {
    let spec = gguf_pre::lookup(pre)
        .ok_or_else(|| tok_err(format!("unsupported `{KEY_PRE}` = `{pre}`")))?;
    let vocab = vocab_map(tokens);
    let merges = gpt2_merges(&md.str_array(KEY_MERGES)?, &vocab);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(spec.ignore_merges)
        .byte_fallback(!spec.byte_level)
        .build()
        .map_err(|e| {
            tok_err(format!(
                "building BPE from `{KEY_TOKENS}`/`{KEY_MERGES}`: {e}"
            ))
        })?;
    let mut tokenizer = Tokenizer::new(bpe);
    let pre_tokenizer = gguf_pre::pre_tokenizer(spec.regexes, spec.byte_level)
        .map_err(|e| tok_err(format!("`{KEY_PRE}` = `{pre}`: {e}")))?;
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    if spec.byte_level {
        tokenizer.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    } else {
        tokenizer
            .with_normalizer(Some(spm_normalizer(false)?))
            .map_err(|e| tok_err(format!("BPE normalizer: {e}")))?;
        tokenizer.with_decoder(Some(spm_decoder(false)?));
    }
    Ok(Built {
        tokenizer,
        default_add_bos: spec.add_bos,
        force_add_bos: !spec.byte_level,
    })
}

/// Token text to id; a repeated text maps to its last id, as in llama.cpp.
fn vocab_map(tokens: &[&str]) -> Vocab {
    (0u32..)
        .zip(tokens)
        .map(|(id, t)| ((*t).to_owned(), id))
        .collect()
}

/// `"a b"` merge strings, dropping any whose parts or result are not in the vocabulary.
fn gpt2_merges(merges: &[&str], vocab: &Vocab) -> Vec<(String, String)> {
    merges
        .iter()
        .filter_map(|m| {
            // llama.cpp searches for the separator from the second byte on.
            let first_len = m.chars().next()?.len_utf8();
            let pos = first_len + m.get(first_len..)?.find(' ')?;
            let (a, b) = (&m[..pos], &m[pos + 1..]);
            let known = vocab.contains_key(a)
                && vocab.contains_key(b)
                && vocab.contains_key(&format!("{a}{b}"));
            known.then(|| (a.to_owned(), b.to_owned()))
        })
        .collect()
}

/// SentencePiece emulation: score-ranked merges, byte fallback, `▁` for spaces.
fn build_spm(md: &Meta, tokens: &[&str], types: &[i64]) -> Result<Tokenizer> {
    let scores = md.f32_array(KEY_SCORES)?;
    if scores.len() != tokens.len() {
        return Err(tok_err(format!(
            "`{KEY_SCORES}` has {} entries but `{KEY_TOKENS}` has {}",
            scores.len(),
            tokens.len()
        )));
    }
    let vocab = vocab_map(tokens);
    let merges = spm_merges(tokens, &scores, &vocab);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = types.iter().position(|&t| t == TYPE_UNKNOWN) {
        builder = builder.unk_token(tokens[unk].to_owned());
    }
    let bpe = builder.build().map_err(|e| {
        tok_err(format!(
            "building SPM from `{KEY_TOKENS}`/`{KEY_SCORES}`: {e}"
        ))
    })?;
    let add_prefix = md.opt_bool(KEY_SPACE_PREFIX)?.unwrap_or(true);
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(Some(spm_normalizer(add_prefix)?))
        .map_err(|e| tok_err(format!("SPM normalizer: {e}")))?;
    tokenizer.with_decoder(Some(spm_decoder(add_prefix)?));
    Ok(tokenizer)
}

/// Every split of every piece into two known pieces, best merged-piece score first.
fn spm_merges(tokens: &[&str], scores: &[f32], vocab: &Vocab) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, usize, &str, &str)> = Vec::new();
    for (id, (piece, score)) in tokens.iter().zip(scores).enumerate() {
        for (split, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(split);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                ranked.push((*score, id, a, b));
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    ranked
        .into_iter()
        .map(|(_, _, a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

fn spm_normalizer(add_prefix: bool) -> Result<NormalizerWrapper> {
    let replace = Replace::new(" ", SPM_SPACE).map_err(|e| tok_err(e.to_string()))?;
    let mut steps = Vec::new();
    if add_prefix {
        steps.push(NormalizerWrapper::Prepend(Prepend::new(
            SPM_SPACE.to_owned(),
        )));
    }
    steps.push(NormalizerWrapper::Replace(replace));
    Ok(NormalizerWrapper::Sequence(NormSequence::new(steps)))
}

fn spm_decoder(add_prefix: bool) -> Result<DecoderWrapper> {
    let replace = Replace::new(SPM_SPACE, " ").map_err(|e| tok_err(e.to_string()))?;
    let mut steps = vec![
        DecoderWrapper::Replace(replace),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_prefix {
        steps.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    Ok(DecoderWrapper::Sequence(DecoderSequence::new(steps)))
}

/// Control and unknown tokens as special added tokens, user-defined ones as plain added
/// tokens; all matched on the raw text, before normalization.
fn add_special_tokens(tokenizer: &mut Tokenizer, tokens: &[&str], types: &[i64]) -> Result<()> {
    let added = |wanted: &[i64], special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(types)
            .filter(|(t, ty)| !t.is_empty() && wanted.contains(ty))
            .map(|(t, _)| AddedToken::from(*t, special).normalized(false))
            .collect()
    };
    let special = added(&[TYPE_CONTROL, TYPE_UNKNOWN], true);
    let user = added(&[TYPE_USER_DEFINED], false);
    tokenizer
        .add_special_tokens(special)
        .and_then(|_| tokenizer.add_tokens(user))
        .map_err(|e| tok_err(format!("adding tokens from `{KEY_TYPES}`: {e}")))?;
    Ok(())
}

/// The `(text, id)` of a BOS/EOS token that must be added, or `None` when it is not.
fn special_for(
    wanted: bool,
    id: Option<u32>,
    key: &str,
    tokens: &[&str],
) -> Result<Option<(String, u32)>> {
    if !wanted {
        return Ok(None);
    }
    let id = id.ok_or_else(|| tok_err(format!("the vocabulary adds `{key}` but it is missing")))?;
    // `token_id` has checked the range.
    Ok(tokens.get(id as usize).map(|t| ((*t).to_owned(), id)))
}

/// `[BOS] $A [EOS]` (and `$A $B` for pairs) with the wanted special tokens.
fn post_processor(
    bos: Option<(String, u32)>,
    eos: Option<(String, u32)>,
) -> Result<TemplateProcessing> {
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Vec::new();
    let mut push = |name: &str, tok: (String, u32)| {
        specials.push(SpecialToken::new(name.to_owned(), vec![tok.1], vec![tok.0]));
    };
    if let Some(tok) = bos {
        single.push("bos".to_owned());
        pair.push("bos".to_owned());
        push("bos", tok);
    }
    single.push("$A".to_owned());
    pair.extend(["$A".to_owned(), "$B:1".to_owned()]);
    if let Some(tok) = eos {
        single.push("eos".to_owned());
        pair.push("eos".to_owned());
        push("eos", tok);
    }
    let specials = specials
        .into_iter()
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tok_err(format!("post-processor special tokens: {e}")))?;
    TemplateProcessing::builder()
        .try_single(single)
        .and_then(|b| b.try_pair(pair))
        .map_err(|e| tok_err(format!("post-processor template: {e}")))?
        .special_tokens(specials)
        .build()
        .map_err(|e| tok_err(format!("post-processor: {e}")))
}

/// Typed access to the metadata map; every error names the key.
struct Meta<'a>(&'a HashMap<String, Value>);

impl<'a> Meta<'a> {
    fn get(&self, key: &str) -> Result<&'a Value> {
        self.0
            .get(key)
            .ok_or_else(|| tok_err(format!("missing GGUF metadata key `{key}`")))
    }

    fn bad(key: &str, want: &str) -> ModelError {
        tok_err(format!("GGUF metadata key `{key}` is not {want}"))
    }

    fn str(&self, key: &str) -> Result<&'a str> {
        match self.get(key)? {
            Value::String(s) => Ok(s),
            _ => Err(Self::bad(key, "a string")),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        self.0.get(key).map(|_| self.str(key)).transpose()
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => as_i64(v)
                .map(|n| Some(n != 0))
                .ok_or_else(|| Self::bad(key, "a bool")),
        }
    }

    fn array(&self, key: &str) -> Result<&'a [Value]> {
        match self.get(key)? {
            Value::Array(items) => Ok(items),
            _ => Err(Self::bad(key, "an array")),
        }
    }

    fn str_array(&self, key: &str) -> Result<Vec<&'a str>> {
        self.array(key)?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(Self::bad(key, "an array of strings")),
            })
            .collect()
    }

    fn f32_array(&self, key: &str) -> Result<Vec<f32>> {
        self.array(key)?
            .iter()
            .map(|v| match v {
                Value::F32(x) => Ok(*x),
                Value::F64(x) => Ok(*x as f32),
                _ => as_i64(v)
                    .map(|n| n as f32)
                    .ok_or_else(|| Self::bad(key, "an array of numbers")),
            })
            .collect()
    }

    /// Token types, one per token; all "normal" when the key is absent.
    fn token_types(&self, n_tokens: usize) -> Result<Vec<i64>> {
        if !self.0.contains_key(KEY_TYPES) {
            return Ok(vec![1; n_tokens]);
        }
        let types = self.array(KEY_TYPES)?;
        if types.len() != n_tokens {
            return Err(tok_err(format!(
                "`{KEY_TYPES}` has {} entries but `{KEY_TOKENS}` has {n_tokens}",
                types.len()
            )));
        }
        let bad = || Self::bad(KEY_TYPES, "an array of integers");
        types.iter().map(|v| as_i64(v).ok_or_else(bad)).collect()
    }

    /// An optional token id, checked to be inside the vocabulary.
    fn token_id(&self, key: &str, n_tokens: usize) -> Result<Option<u32>> {
        let Some(v) = self.0.get(key) else {
            return Ok(None);
        };
        let id = as_i64(v).ok_or_else(|| Self::bad(key, "an integer"))?;
        match u32::try_from(id) {
            Ok(id) if (id as usize) < n_tokens => Ok(Some(id)),
            _ => Err(tok_err(format!(
                "GGUF metadata key `{key}` = {id} is outside the vocabulary of {n_tokens} tokens"
            ))),
        }
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => i64::from(*x),
        Value::I8(x) => i64::from(*x),
        Value::U16(x) => i64::from(*x),
        Value::I16(x) => i64::from(*x),
        Value::U32(x) => i64::from(*x),
        Value::I32(x) => i64::from(*x),
        Value::U64(x) => i64::try_from(*x).ok()?,
        Value::I64(x) => *x,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Value {
        Value::Array(
            items
                .iter()
                .map(|s| Value::String((*s).to_owned()))
                .collect(),
        )
    }

    fn meta(pairs: Vec<(&str, Value)>) -> HashMap<String, Value> {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// A five-token byte-level BPE vocabulary plus one control token.
    fn tiny_gpt2() -> HashMap<String, Value> {
        let types = [1, 1, 1, 1, 1, 3].map(Value::I32).to_vec();
        meta(vec![
            (KEY_MODEL, Value::String("gpt2".into())),
            (KEY_PRE, Value::String("gpt-2".into())),
            (
                KEY_TOKENS,
                strings(&["a", "b", "ab", "Ġ", "Ġab", "<|end|>"]),
            ),
            (KEY_TYPES, Value::Array(types)),
            (KEY_MERGES, strings(&["a b", "Ġ ab"])),
            (KEY_EOS, Value::U32(5)),
            (KEY_ADD_EOS, Value::Bool(true)),
        ])
    }

    /// A SentencePiece vocabulary where `▁ab` outranks `ab`, which outranks `▁a`.
    fn tiny_spm() -> HashMap<String, Value> {
        let tokens = [
            "<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab", "▁ab", "<0x63>",
        ];
        let scores = [0.0, 0.0, 0.0, -5.0, -6.0, -7.0, -3.0, -2.0, -1.0, 0.0];
        let types = [2, 3, 3, 1, 1, 1, 1, 1, 1, 6];
        meta(vec![
            (KEY_MODEL, Value::String("llama".into())),
            (KEY_TOKENS, strings(&tokens)),
            (KEY_SCORES, Value::Array(scores.map(Value::F32).to_vec())),
            (KEY_TYPES, Value::Array(types.map(Value::I32).to_vec())),
            (KEY_BOS, Value::U32(1)),
            (KEY_EOS, Value::U32(2)),
        ])
    }

    fn ids(vocab: &GgufVocab, text: &str, special: bool) -> Vec<u32> {
        let enc = vocab.tokenizer.encode(text, special).expect("encode");
        enc.get_ids().to_vec()
    }

    #[test]
    fn gpt2_merges_specials_and_eos() {
        let v = vocab_from_gguf(&tiny_gpt2()).expect("vocab");
        assert!(!v.add_bos && v.add_eos);
        assert_eq!(ids(&v, "ab ab", false), [2, 4]);
        assert_eq!(ids(&v, "ab<|end|>ab", false), [2, 5, 2]);
        assert_eq!(ids(&v, "ab", true), [2, 5]);
        let dec = |skip| v.tokenizer.decode(&[2, 5, 4], skip).expect("decode");
        assert_eq!(dec(false), "ab<|end|> ab");
        assert_eq!(dec(true), "ab ab");
    }

    #[test]
    fn spm_score_merges_prefix_bos_and_byte_fallback() {
        let v = vocab_from_gguf(&tiny_spm()).expect("vocab");
        assert!(v.add_bos && !v.add_eos);
        assert_eq!((v.bos_token_id, v.eos_token_id), (Some(1), Some(2)));
        assert_eq!(ids(&v, "ab", false), [8]);
        assert_eq!(ids(&v, "ab", true), [1, 8]);
        assert_eq!(ids(&v, "ab ba", false), [8, 3, 5, 4]);
        assert_eq!(ids(&v, "c", false), [3, 9]);
        assert_eq!(
            v.tokenizer.decode(&[8, 3, 5, 4, 9], true).expect("decode"),
            "ab bac"
        );
        assert_eq!(ids(&v, "", true), [1]);
    }

    #[test]
    fn missing_or_bad_keys_are_named() {
        let err = |md: &HashMap<String, Value>| match vocab_from_gguf(md) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        };
        for key in [KEY_MODEL, KEY_TOKENS, KEY_MERGES] {
            let mut md = tiny_gpt2();
            md.remove(key);
            assert!(err(&md).contains(key), "{key}: {}", err(&md));
        }
        let mut md = tiny_spm();
        md.remove(KEY_SCORES);
        assert!(err(&md).contains(KEY_SCORES));
        let mut md = tiny_spm();
        md.insert(KEY_BOS.into(), Value::U32(99));
        assert!(err(&md).contains(KEY_BOS));
        let mut md = tiny_gpt2();
        md.insert(KEY_PRE.into(), Value::String("martian".into()));
        assert!(err(&md).contains(KEY_PRE));
        let mut md = tiny_gpt2();
        md.insert(KEY_MODEL.into(), Value::String("t5".into()));
        assert!(err(&md).contains(KEY_MODEL));
        let mut md = tiny_gpt2();
        md.insert(KEY_TOKENS.into(), Value::U32(3));
        assert!(err(&md).contains(KEY_TOKENS));
    }
}
