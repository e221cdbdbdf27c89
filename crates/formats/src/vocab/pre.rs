//! llama.cpp's byte-level BPE pre-tokenizers, keyed by the GGUF `tokenizer.ggml.pre` value.
//!
//! llama.cpp splits text with a list of regexes applied one after the other: each regex
//! splits every fragment left by the previous one, and the text between matches is kept
//! as fragments too. That is exactly a `tokenizers` sequence of `Split` pre-tokenizers in
//! `Isolated` mode, followed by the GPT-2 byte-to-unicode mapping (`ByteLevel` without
//! its own regex). The regexes below are copied from llama.cpp's `llm_tokenizer_bpe`
//! (the `(?i:...)` forms already expanded to character classes, as llama.cpp does).

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

/// How llama.cpp pre-tokenizes one `tokenizer.ggml.pre` family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreSpec {
    /// Regexes applied in order, each splitting the fragments of the previous one.
    pub regexes: &'static [&'static str],
    /// A pre-tokenized word that is itself a vocabulary entry becomes one token (no merges).
    pub ignore_merges: bool,
    /// llama.cpp's default for `add_bos` when `tokenizer.ggml.add_bos_token` is absent.
    pub add_bos: bool,
    /// GPT-2 byte mapping; when false, BPE runs on raw UTF-8 with spaces as `▁` and
    /// `<0xXX>` byte fallback, and llama.cpp forces `add_bos` (Gemma 4).
    pub byte_level: bool,
}

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DEEPSEEK3_WORDS: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##;
const DEEPSEEK_LLM_LETTERS: &str = "\\s?[A-Za-z\u{b5}\u{c0}-\u{d6}\u{d8}-\u{f6}\u{f8}-\u{1ba}\u{1bc}-\u{1bf}\u{1c4}-\u{293}\u{295}-\u{2af}\u{370}-\u{373}\u{376}\u{377}\u{37b}-\u{37d}\u{37f}\u{386}\u{388}-\u{38a}\u{38c}\u{38e}-\u{3a1}\u{3a3}-\u{3f5}\u{3f7}-\u{481}\u{48a}-\u{52f}\u{531}-\u{556}\u{10a0}-\u{10c5}\u{13a0}-\u{13f5}\u{13f8}-\u{13fd}\u{1c90}-\u{1cba}\u{1cbd}-\u{1cbf}\u{1d00}-\u{1d2b}\u{1d6b}-\u{1d77}\u{1d79}-\u{1d9a}\u{1e00}-\u{1f15}\u{1f18}-\u{1f1d}\u{1f20}-\u{1f45}\u{1f48}-\u{1f4d}\u{1f50}-\u{1f57}\u{1f59}\u{1f5b}\u{1f5d}\u{1f5f}-\u{1f7d}\u{1f80}-\u{1fb4}\u{1fb6}-\u{1fbc}\u{1fbe}\u{1fc2}-\u{1fc4}\u{1fc6}-\u{1fcc}\u{1fd0}-\u{1fd3}\u{1fd6}-\u{1fdb}\u{1fe0}-\u{1fec}\u{1ff2}-\u{1ff4}\u{1ff6}-\u{1ffc}\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}\u{214e}\u{2183}\u{2184}\u{2c00}-\u{2c7b}\u{2c7e}-\u{2ce4}\u{2ceb}-\u{2cee}\u{2cf2}\u{2cf3}\u{a640}-\u{a66d}\u{a680}-\u{a69b}\u{a722}-\u{a76f}\u{a771}-\u{a787}\u{a78b}-\u{a78e}\u{ab70}-\u{abbf}\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+";
const CJK: &str = "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+";
const PORO: &str = " ?[^(\\s|.,!?\u{2026}\u{3002}\u{ff0c}\u{3001}\u{964}\u{6d4}\u{60c})]+";

const DEFAULT_RES: &[&str] = &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"];
const GPT2_RES: &[&str] = &[GPT2];
const STARCODER_RES: &[&str] = &[r"\p{N}", GPT2];
const FALCON_RES: &[&str] = &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"];
const LLAMA3_RES: &[&str] = &[LLAMA3];
const QWEN2_RES: &[&str] = &[QWEN2];
const QWEN35_RES: &[&str] = &[QWEN35];
const GPT4O_RES: &[&str] = &[GPT4O];
const TEKKEN_RES: &[&str] = &[TEKKEN];
const DEEPSEEK3_RES: &[&str] = &[
    r"\p{N}{1,3}",
    "[\u{4e00}-\u{9fa5}\u{3040}-\u{309f}\u{30a0}-\u{30ff}]+",
    DEEPSEEK3_WORDS,
];
const DEEPSEEK_CODER_RES: &[&str] = &[r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK, r"\p{N}"];
// llama.cpp's `\s+$` anchors at the end of the fragment: `\z` in Oniguruma.
const DEEPSEEK_LLM_RES: &[&str] = &[
    r"[\r\n]",
    DEEPSEEK_LLM_LETTERS,
    "\\s?[!-/:-~\u{ff01}-\u{ff0f}\u{ff1a}-\u{ff5e}\u{2018}-\u{201f}\u{3000}-\u{3002}]+",
    r"\s+\z",
    CJK,
    r"\p{N}+",
];
const PORO_RES: &[&str] = &[PORO];
const VIKING_RES: &[&str] = &[PORO, r"\p{N}"];
const LINES_RES: &[&str] = &[r"[^\n]+|[\n]+"];

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre = pre` (`None`: not supported).
pub fn lookup(pre: &str) -> Option<PreSpec> {
    let spec = |regexes, ignore_merges, add_bos| PreSpec {
        regexes,
        ignore_merges,
        add_bos,
        byte_level: true,
    };
    Some(match pre {
        "default" => spec(DEFAULT_RES, false, false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => spec(LLAMA3_RES, true, true),
        "dbrx" | "smaug-bpe" => spec(LLAMA3_RES, false, false),
        "deepseek-llm" => spec(DEEPSEEK_LLM_RES, false, false),
        "deepseek-coder" => spec(DEEPSEEK_CODER_RES, false, false),
        "deepseek-v3" | "hunyuan-dense" | "hy_v4" | "joyai-llm" => {
            spec(DEEPSEEK3_RES, false, false)
        }
        "falcon" => spec(FALCON_RES, false, false),
        "gpt-2" | "mpt" | "olmo" | "jais" | "phi-2" | "gigachat" | "a.x-4.0" | "mellum"
        | "exaone4" | "trillion" | "granite-docling" => spec(GPT2_RES, false, false),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => spec(STARCODER_RES, false, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan"
        | "solar-open" | "grok-2" | "laguna" => spec(QWEN2_RES, false, false),
        "qwen35" => spec(QWEN35_RES, false, false),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => spec(GPT4O_RES, false, false),
        "tekken" => spec(TEKKEN_RES, true, true),
        "poro-chat" | "bloom" | "gpt3-finnish" => spec(PORO_RES, false, false),
        "viking" => spec(VIKING_RES, false, false),
        // llama.cpp looks whole newline runs up in the vocabulary; other lines go through
        // the merges, which give the same result for any line that is itself a token.
        "gemma4" => PreSpec {
            byte_level: false,
            ..spec(LINES_RES, true, true)
        },
        _ => return None,
    })
}

/// `Split` (isolated) for each regex, then the GPT-2 byte mapping when `byte_level`.
pub fn pre_tokenizer(regexes: &[&str], byte_level: bool) -> Result<PreTokenizerWrapper, String> {
    let mut steps = Vec::with_capacity(regexes.len() + 1);
    for re in regexes {
        let split = Split::new(
            SplitPattern::Regex((*re).to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| format!("pre-tokenizer regex `{re}`: {e}"))?;
        steps.push(PreTokenizerWrapper::Split(split));
    }
    if byte_level {
        steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
            false, false, false,
        )));
    }
    Ok(PreTokenizerWrapper::Sequence(Sequence::new(steps)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_regex_compiles() {
        let all = [
            DEFAULT_RES,
            GPT2_RES,
            STARCODER_RES,
            FALCON_RES,
            LLAMA3_RES,
            QWEN2_RES,
            QWEN35_RES,
            GPT4O_RES,
            TEKKEN_RES,
            DEEPSEEK3_RES,
            DEEPSEEK_CODER_RES,
            DEEPSEEK_LLM_RES,
            PORO_RES,
            VIKING_RES,
            LINES_RES,
        ];
        for regexes in all {
            if let Err(e) = pre_tokenizer(regexes, true) {
                panic!("{e}");
            }
        }
        assert!(lookup("no-such-pre").is_none());
        assert_eq!(lookup("llama-bpe").map(|s| s.ignore_merges), Some(true));
    }
}
