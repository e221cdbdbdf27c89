//! Text in and out: a Hugging Face `tokenizer.json`, one built from GGUF metadata, or a
//! byte-level fallback for dummy models.
//!
//! The byte-level fallback (used by `dummy:` models without `--tokenizer`) maps byte `b`
//! to id `b`, and reserves id 256 for BOS and 257 for EOS; ids above 257 decode to nothing.

/// The GGUF vocabulary builder (in `engine_formats`, fuzzed without candle).
pub use engine_formats::vocab as gguf;

use crate::chat::{ChatMessage, ChatTemplate};
use crate::{ModelError, Result};
use std::path::Path;

enum Kind {
    /// A `tokenizers` tokenizer and the number of ids it can produce (for a GGUF
    /// vocabulary, its token count: `get_vocab_size` misses repeated token texts).
    Hf(Box<tokenizers::Tokenizer>, usize),
    Bytes,
}

/// A tokenizer with its special tokens and chat template.
pub struct Tokenizer {
    kind: Kind,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    chat_template: Option<ChatTemplate>,
}

/// Byte-level fallback's BOS and EOS ids.
pub const BYTE_BOS: u32 = 256;
pub const BYTE_EOS: u32 = 257;

fn tk_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

/// A special token in tokenizer_config.json is a string or `{"content": ...}`.
fn special_str(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(String::from),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of `{name, template}` (we take "default").
fn template_str(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => items
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| items.first())
            .and_then(|t| t.get("template")?.as_str().map(String::from)),
        _ => None,
    }
}

impl Tokenizer {
    /// Load `tokenizer.json`, and `tokenizer_config.json` beside it when present (chat
    /// template, BOS/EOS strings).
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::Tokenizer(format!(
                "{}: file not found",
                path.display()
            )));
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        let cfg_path = path.with_file_name("tokenizer_config.json");
        let tcfg: serde_json::Value = match std::fs::read_to_string(&cfg_path) {
            Ok(s) => serde_json::from_str(&s)
                .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", cfg_path.display())))?,
            Err(_) => serde_json::Value::Null,
        };
        let bos = special_str(tcfg.get("bos_token"));
        let eos = special_str(tcfg.get("eos_token"));
        let id = |s: &Option<String>| s.as_deref().and_then(|s| inner.token_to_id(s));
        let num_ids = inner.get_vocab_size(true);
        let chat_template = template_str(tcfg.get("chat_template")).map(|t| {
            ChatTemplate::new(
                t,
                bos.clone().unwrap_or_default(),
                eos.clone().unwrap_or_default(),
            )
        });
        Ok(Self {
            bos_token_id: id(&bos),
            eos_token_ids: id(&eos).into_iter().collect(),
            kind: Kind::Hf(Box::new(inner), num_ids),
            chat_template,
        })
    }

    /// Build from GGUF metadata (`tokenizer.ggml.*`), checked first for consistency.
    pub fn from_gguf(md: &engine_formats::gguf::Metadata) -> Result<Self> {
        let v = gguf::vocab_from_gguf(md).map_err(tk_err)?;
        let name = |id: Option<u32>| {
            id.and_then(|i| v.tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        let chat_template = v
            .chat_template
            .map(|t| ChatTemplate::new(t, name(v.bos_token_id), name(v.eos_token_id)));
        Ok(Self {
            bos_token_id: v.bos_token_id,
            eos_token_ids: v.eos_token_id.into_iter().collect(),
            kind: Kind::Hf(Box::new(v.tokenizer), v.num_ids),
            chat_template,
        })
    }

    /// The documented byte-level fallback (see the module docs).
    pub fn byte_level() -> Self {
        Self {
            kind: Kind::Bytes,
            bos_token_id: Some(BYTE_BOS),
            eos_token_ids: vec![BYTE_EOS],
            chat_template: None,
        }
    }

    /// Largest id this tokenizer can produce, plus one.
    pub fn vocab_size(&self) -> usize {
        match &self.kind {
            Kind::Hf(_, n) => *n,
            Kind::Bytes => 258,
        }
    }

    /// Encode text; `add_special_tokens` adds BOS/EOS as the tokenizer is configured to.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        match &self.kind {
            Kind::Hf(t, _) => Ok(t
                .encode(text, add_special_tokens)
                .map_err(tk_err)?
                .get_ids()
                .to_vec()),
            Kind::Bytes => {
                let bos = add_special_tokens.then_some(BYTE_BOS);
                Ok(bos.into_iter().chain(text.bytes().map(u32::from)).collect())
            }
        }
    }

    /// Decode ids to text, optionally skipping special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        match &self.kind {
            Kind::Hf(t, _) => t.decode(ids, skip_special_tokens).map_err(tk_err),
            Kind::Bytes => {
                let bytes: Vec<u8> = ids.iter().filter(|&&i| i < 256).map(|&i| i as u8).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }

    /// The vocabulary entry of `id` as stored (`Ġthe`, `<|im_start|>`; byte tokens of
    /// the fallback as `<0x41>`), or `None` outside the vocabulary.
    pub fn token_piece(&self, id: u32) -> Option<String> {
        match &self.kind {
            Kind::Hf(t, _) => t.id_to_token(id),
            Kind::Bytes => match id {
                0..=255 => Some(format!("<0x{id:02X}>")),
                BYTE_BOS => Some("<bos>".into()),
                BYTE_EOS => Some("<eos>".into()),
                _ => None,
            },
        }
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Render messages with the model's chat template (ending at the assistant's turn).
    pub fn apply_chat_template(&self, messages: &[ChatMessage]) -> Result<String> {
        let t = self.chat_template.as_ref().ok_or_else(|| {
            ModelError::ChatTemplate("this model's tokenizer has no chat template".to_string())
        })?;
        Ok(t.render(messages, true)?)
    }
}

/// Turns a growing list of token ids into text deltas without splitting a multi-byte
/// character or a word-piece join: it re-decodes a short window and emits the new suffix
/// once the text no longer ends in an incomplete character (U+FFFD).
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one token; returns the newly completed text, possibly empty.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let full = tok.decode(&self.ids[self.prefix_offset..], true)?;
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            let delta = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_round_trips_and_streams_utf8() {
        let t = Tokenizer::byte_level();
        let ids = t.encode("héllo ✓", true).unwrap();
        assert_eq!(ids[0], BYTE_BOS);
        assert_eq!(t.decode(&ids, true).unwrap(), "héllo ✓");
        let mut s = StreamDecoder::new();
        let mut out = String::new();
        for &id in &ids[1..] {
            let delta = s.push(&t, id).unwrap();
            assert!(!delta.contains('\u{FFFD}'));
            out.push_str(&delta);
        }
        assert_eq!(out, "héllo ✓");
    }
}
