//! Build a `tokenizers::Tokenizer` from GGUF metadata, reproducing llama.cpp's tokenization.
//!
//! A GGUF file carries its vocabulary as metadata (`tokenizer.ggml.*`) rather than as a
//! `tokenizer.json`, so serving a GGUF model needs a tokenizer rebuilt from those keys, and
//! it must split text exactly as llama.cpp does or the model sees inputs it was not
//! trained on. Three vocabulary kinds are supported:
//!
//! * `gpt2` — byte-level BPE: the stored merges, llama.cpp's pre-tokenizer regexes for
//!   `tokenizer.ggml.pre` (see [`pre`]), GPT-2 byte mapping and decoder.
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
//!
//! The metadata is read and checked first ([`spec::VocabSpec`]: lengths consistent, ids
//! in range, tokens of sane size), so that building never trusts a count the file gave.

pub mod pre;
pub mod spec;

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

use crate::gguf::Metadata;
use crate::Result;
use spec::*;

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// SentencePiece's whitespace marker.
const SPM_SPACE: &str = "\u{2581}";

/// A tokenizer rebuilt from GGUF metadata, with the special-token settings llama.cpp uses.
pub struct GgufVocab {
    pub tokenizer: Tokenizer,
    /// Ids are `0..num_ids` (the token count; `Tokenizer::get_vocab_size` is smaller when
    /// a token text repeats, as llama.cpp allows).
    pub num_ids: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    /// `tokenizer.chat_template`, when present.
    pub chat_template: Option<String>,
}

/// Build the tokenizer described by a GGUF file's `tokenizer.*` metadata.
pub fn vocab_from_gguf(metadata: &Metadata) -> Result<GgufVocab> {
    let spec = VocabSpec::from_metadata(metadata)?;
    let tokens: Vec<&str> = spec.tokens.iter().map(String::as_str).collect();
    let built = match spec.model {
        "gpt2" => build_gpt2(&spec, &tokens, spec.pre.unwrap_or("default"))?,
        // llama.cpp ignores `tokenizer.ggml.pre` for this model.
        "gemma4" => build_gpt2(&spec, &tokens, "gemma4")?,
        "llama" => Built {
            tokenizer: build_spm(&spec, &tokens)?,
            default_add_bos: true,
            force_add_bos: false,
        },
        other => {
            return Err(vocab_err(format!(
                "unsupported `{KEY_MODEL}` = `{other}` (supported: gpt2, gemma4, llama)"
            )))
        }
    };
    let mut tokenizer = built.tokenizer;
    add_special_tokens(&mut tokenizer, &tokens, &spec.types)?;
    let add_bos = built.force_add_bos || spec.add_bos.unwrap_or(built.default_add_bos);
    let add_eos = spec.add_eos.unwrap_or(false);
    let bos = special_for(add_bos, spec.bos, KEY_BOS, &tokens)?;
    let eos = special_for(add_eos, spec.eos, KEY_EOS, &tokens)?;
    tokenizer.with_post_processor(Some(post_processor(bos, eos)?));
    Ok(GgufVocab {
        tokenizer,
        num_ids: tokens.len(),
        bos_token_id: spec.bos,
        eos_token_id: spec.eos,
        add_bos,
        add_eos,
        chat_template: spec.chat_template.map(str::to_owned),
    })
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
fn build_gpt2(spec: &VocabSpec, tokens: &[&str], pre: &str) -> Result<Built> {
    let pre_spec =
        pre::lookup(pre).ok_or_else(|| vocab_err(format!("unsupported `{KEY_PRE}` = `{pre}`")))?;
    let merges = spec
        .merges
        .ok_or_else(|| vocab_err(format!("missing GGUF metadata key `{KEY_MERGES}`")))?;
    let vocab = vocab_map(tokens);
    let merges = gpt2_merges(merges, &vocab);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre_spec.ignore_merges)
        .byte_fallback(!pre_spec.byte_level)
        .build()
        .map_err(|e| {
            vocab_err(format!(
                "building BPE from `{KEY_TOKENS}`/`{KEY_MERGES}`: {e}"
            ))
        })?;
    let mut tokenizer = Tokenizer::new(bpe);
    let pre_tokenizer = pre::pre_tokenizer(pre_spec.regexes, pre_spec.byte_level)
        .map_err(|e| vocab_err(format!("`{KEY_PRE}` = `{pre}`: {e}")))?;
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    if pre_spec.byte_level {
        tokenizer.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    } else {
        tokenizer
            .with_normalizer(Some(spm_normalizer(false)?))
            .map_err(|e| vocab_err(format!("BPE normalizer: {e}")))?;
        tokenizer.with_decoder(Some(spm_decoder(false)?));
    }
    Ok(Built {
        tokenizer,
        default_add_bos: pre_spec.add_bos,
        force_add_bos: !pre_spec.byte_level,
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
fn gpt2_merges(merges: &[String], vocab: &Vocab) -> Vec<(String, String)> {
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
fn build_spm(spec: &VocabSpec, tokens: &[&str]) -> Result<Tokenizer> {
    let scores = spec
        .scores
        .as_deref()
        .ok_or_else(|| vocab_err(format!("missing GGUF metadata key `{KEY_SCORES}`")))?;
    let vocab = vocab_map(tokens);
    let merges = spm_merges(tokens, scores, &vocab)?;
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = spec.types.iter().position(|&t| t == TYPE_UNKNOWN) {
        builder = builder.unk_token(tokens[unk].to_owned());
    }
    let bpe = builder.build().map_err(|e| {
        vocab_err(format!(
            "building SPM from `{KEY_TOKENS}`/`{KEY_SCORES}`: {e}"
        ))
    })?;
    let add_prefix = spec.add_space_prefix.unwrap_or(true);
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(Some(spm_normalizer(add_prefix)?))
        .map_err(|e| vocab_err(format!("SPM normalizer: {e}")))?;
    tokenizer.with_decoder(Some(spm_decoder(add_prefix)?));
    Ok(tokenizer)
}

/// Bytes hashed while looking for SentencePiece merges (each piece costs its length in
/// characters times its length in bytes): about 25M for a 256k-piece vocabulary, so this
/// bounds time and memory for a hostile one (every prefix of a long piece a piece too).
pub const SPM_MERGE_WORK_LIMIT: u64 = 1 << 28;

/// Every split of every piece into two known pieces, best merged-piece score first.
fn spm_merges(tokens: &[&str], scores: &[f32], vocab: &Vocab) -> Result<Vec<(String, String)>> {
    let mut ranked: Vec<(f32, usize, &str, &str)> = Vec::new();
    let mut work = 0u64;
    for (id, (piece, score)) in tokens.iter().zip(scores).enumerate() {
        work += piece.chars().count() as u64 * piece.len() as u64;
        if work > SPM_MERGE_WORK_LIMIT {
            return Err(vocab_err(format!(
                "`{KEY_TOKENS}`: the pieces are too long to derive SentencePiece merges from \
                 (over {SPM_MERGE_WORK_LIMIT} bytes to compare by piece {id})"
            )));
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(split);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                ranked.push((*score, id, a, b));
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    Ok(ranked
        .into_iter()
        .map(|(_, _, a, b)| (a.to_owned(), b.to_owned()))
        .collect())
}

fn spm_normalizer(add_prefix: bool) -> Result<NormalizerWrapper> {
    let replace = Replace::new(" ", SPM_SPACE).map_err(|e| vocab_err(e.to_string()))?;
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
    let replace = Replace::new(SPM_SPACE, " ").map_err(|e| vocab_err(e.to_string()))?;
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
        .map_err(|e| vocab_err(format!("adding tokens from `{KEY_TYPES}`: {e}")))?;
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
    let id =
        id.ok_or_else(|| vocab_err(format!("the vocabulary adds `{key}` but it is missing")))?;
    // `VocabSpec` has checked the range.
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
        .map_err(|e| vocab_err(format!("post-processor special tokens: {e}")))?;
    TemplateProcessing::builder()
        .try_single(single)
        .and_then(|b| b.try_pair(pair))
        .map_err(|e| vocab_err(format!("post-processor template: {e}")))?
        .special_tokens(specials)
        .build()
        .map_err(|e| vocab_err(format!("post-processor: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{Array, Value};

    fn strings(items: &[&str]) -> Value {
        Value::Array(Array::String(
            items.iter().map(|s| (*s).to_owned()).collect(),
        ))
    }

    fn meta(pairs: Vec<(&str, Value)>) -> Metadata {
        Metadata(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// A five-token byte-level BPE vocabulary plus one control token.
    fn tiny_gpt2() -> Metadata {
        let types = Array::I32(vec![1, 1, 1, 1, 1, 3]);
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
    fn tiny_spm() -> Metadata {
        let tokens = [
            "<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab", "▁ab", "<0x63>",
        ];
        let scores = [0.0, 0.0, 0.0, -5.0, -6.0, -7.0, -3.0, -2.0, -1.0, 0.0];
        let types = [2, 3, 3, 1, 1, 1, 1, 1, 1, 6];
        meta(vec![
            (KEY_MODEL, Value::String("llama".into())),
            (KEY_TOKENS, strings(&tokens)),
            (KEY_SCORES, Value::Array(Array::F32(scores.to_vec()))),
            (KEY_TYPES, Value::Array(Array::I32(types.to_vec()))),
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
        let err = |md: &Metadata| match vocab_from_gguf(md) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        };
        for key in [KEY_MODEL, KEY_TOKENS, KEY_MERGES] {
            let mut md = tiny_gpt2();
            md.0.remove(key);
            assert!(err(&md).contains(key), "{key}: {}", err(&md));
        }
        let mut md = tiny_spm();
        md.0.remove(KEY_SCORES);
        assert!(err(&md).contains(KEY_SCORES));
        let mut md = tiny_spm();
        md.0.insert(KEY_BOS.into(), Value::U32(99));
        assert!(err(&md).contains(KEY_BOS));
        let mut md = tiny_gpt2();
        md.0.insert(KEY_PRE.into(), Value::String("martian".into()));
        assert!(err(&md).contains(KEY_PRE));
        let mut md = tiny_gpt2();
        md.0.insert(KEY_MODEL.into(), Value::String("t5".into()));
        assert!(err(&md).contains(KEY_MODEL));
        let mut md = tiny_gpt2();
        md.0.insert(KEY_TOKENS.into(), Value::U32(3));
        assert!(err(&md).contains(KEY_TOKENS));
    }

    #[test]
    fn inconsistent_arrays_are_rejected() {
        let err = |md: &Metadata| match vocab_from_gguf(md) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        };
        let mut md = tiny_spm();
        md.0.insert(KEY_SCORES.into(), Value::Array(Array::F32(vec![0.0; 3])));
        assert!(
            err(&md).contains("`tokenizer.ggml.scores` has 3 entries"),
            "{}",
            err(&md)
        );
        let mut md = tiny_gpt2();
        md.0.insert(KEY_TYPES.into(), Value::Array(Array::I32(vec![1; 99])));
        assert!(err(&md).contains("has 99 entries"));
        let mut md = tiny_gpt2();
        md.0.insert(KEY_TYPES.into(), Value::Array(Array::F32(vec![1.0; 6])));
        assert!(err(&md).contains("not an array of integers"));
        let mut md = tiny_gpt2();
        md.0.insert(KEY_TOKENS.into(), strings(&[]));
        assert!(err(&md).contains("has 0 tokens"));
        let mut md = tiny_gpt2();
        md.0.insert(KEY_MERGES.into(), Value::Array(Array::U8(vec![1])));
        assert!(err(&md).contains("not an array of strings"));
        let mut md = tiny_gpt2();
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        md.0.insert(KEY_TOKENS.into(), strings(&["a", &long]));
        md.0.remove(KEY_TYPES);
        assert!(err(&md).contains("`tokenizer.ggml.tokens`[1] has 4097 bytes"));
        // Every prefix of a long piece is a piece: the merge search would be quadratic.
        let mut md = tiny_spm();
        let pieces: Vec<String> = (1..=2000).map(|n| "a".repeat(n)).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        md.0.insert(KEY_TOKENS.into(), strings(&refs));
        md.0.insert(KEY_SCORES.into(), Value::Array(Array::F32(vec![0.0; 2000])));
        md.0.remove(KEY_TYPES);
        md.0.remove(KEY_BOS);
        md.0.remove(KEY_EOS);
        assert!(
            err(&md).contains("too long to derive SentencePiece merges"),
            "{}",
            err(&md)
        );
        let mut md = tiny_spm();
        md.0.insert(KEY_EOS.into(), Value::I64(-1));
        assert!(err(&md).contains("-1 is outside the vocabulary"));
        let mut md = tiny_spm();
        md.0.insert(KEY_ADD_BOS.into(), Value::String("yes".into()));
        assert!(err(&md).contains(KEY_ADD_BOS));
    }

    /// Found by fuzzing: a repeated token text maps to its last id, so the tokenizer's
    /// own vocabulary size undercounts the ids; `num_ids` does not.
    #[test]
    fn repeated_token_texts_keep_every_id_counted() {
        let mut md = tiny_gpt2();
        md.0.insert(
            KEY_TOKENS.into(),
            strings(&["a", "b", "a", "b", "ab", "Ġ", "Ġab", "<|end|>"]),
        );
        md.0.insert(
            KEY_TYPES.into(),
            Value::Array(Array::I32(vec![1, 1, 1, 1, 1, 1, 1, 3])),
        );
        md.0.insert(KEY_EOS.into(), Value::U32(7));
        let v = vocab_from_gguf(&md).expect("vocab");
        assert_eq!(v.num_ids, 8);
        assert!(v.tokenizer.get_vocab_size(true) < 8);
        assert_eq!(ids(&v, "ab ab<|end|>", false), [4, 6, 7]);
    }
}
