//! `engine tokenize`: the token ids a prompt becomes, with each token's text and
//! vocabulary piece and the count, exactly as the engine would encode it (plain text
//! with the tokenizer's special tokens; `--chat` renders the chat template first and
//! encodes the result without adding more). `--decode` turns ids back into text. People
//! use it to size prompts and to debug chat templates; it reads no weights.

use anyhow::Context;
use clap::{ArgGroup, Args};
use engine_model::chat::ChatMessage;
use engine_model::open_model;
use engine_model::source::tokenizer_from_path;
use engine_model::tokenizer::Tokenizer;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["text", "file", "decode"])))]
pub struct TokenizeArgs {
    /// The text to tokenize.
    pub text: Option<String>,
    /// Read the text from this file (`-` for stdin).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Decode these comma-separated token ids instead, e.g. 1,504,3.
    #[arg(long, value_delimiter = ',', conflicts_with = "chat")]
    pub decode: Vec<u32>,
    /// Model whose tokenizer to use (as for `generate`; no weights are read).
    #[arg(long, default_value = engine_model::DEFAULT_MODEL)]
    pub model: String,
    /// A tokenizer.json or .gguf to use instead of the model's.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Render the text as a user message with the model's chat template first.
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat (default: the template's own, if any).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Print {"ids", "pieces", "count"} (and "rendered" with --chat) as JSON.
    #[arg(long)]
    pub json: bool,
}

fn tokenizer(a: &TokenizeArgs) -> anyhow::Result<Tokenizer> {
    if let Some(path) = &a.tokenizer {
        return tokenizer_from_path(path)
            .with_context(|| format!("--tokenizer {}", path.display()));
    }
    let opened =
        open_model(&a.model, 0, &crate::say).with_context(|| format!("model {}", a.model))?;
    Ok(opened.tokenizer.unwrap_or_else(Tokenizer::byte_level))
}

fn input_text(a: &TokenizeArgs) -> anyhow::Result<String> {
    match (&a.text, &a.file) {
        (Some(t), _) => Ok(t.clone()),
        (None, Some(p)) if p.as_os_str() == "-" => {
            std::io::read_to_string(std::io::stdin()).context("reading stdin")
        }
        (None, Some(p)) => {
            std::fs::read_to_string(p).with_context(|| format!("--file {}", p.display()))
        }
        (None, None) => anyhow::bail!("give a TEXT, --file F or --decode IDS"),
    }
}

pub fn run(a: TokenizeArgs) -> anyhow::Result<()> {
    let tok = tokenizer(&a)?;
    if !a.decode.is_empty() {
        if let Some(bad) = a.decode.iter().find(|&&id| id as usize >= tok.vocab_size()) {
            anyhow::bail!(
                "--decode: id {bad} is outside the vocabulary (0..{})",
                tok.vocab_size()
            );
        }
        let text = tok.decode(&a.decode, false)?;
        if a.json {
            println!("{}", serde_json::json!({ "text": text }));
        } else {
            println!("{text}");
        }
        return Ok(());
    }
    let text = input_text(&a)?;
    let (rendered, ids) = if a.chat {
        let mut messages = Vec::new();
        if let Some(system) = &a.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", &text));
        let rendered = tok.apply_chat_template(&messages).context("--chat")?;
        let ids = tok.encode(&rendered, false)?;
        (Some(rendered), ids)
    } else {
        (None, tok.encode(&text, true)?)
    };
    let pieces: Vec<String> = ids
        .iter()
        .map(|&id| tok.token_piece(id).unwrap_or_default())
        .collect();
    if a.json {
        let mut v = serde_json::json!({ "ids": ids, "pieces": pieces, "count": ids.len() });
        if let Some(r) = rendered {
            v["rendered"] = r.into();
        }
        println!("{v}");
        return Ok(());
    }
    if let Some(r) = &rendered {
        println!("rendered prompt:\n{r}\n");
    }
    let width = ids
        .iter()
        .map(|i| i.to_string().len())
        .max()
        .unwrap_or(2)
        .max(2);
    println!("{:>width$}  {:<20}  piece", "id", "text");
    for (&id, piece) in ids.iter().zip(&pieces) {
        let text = format!("{:?}", tok.decode(&[id], false)?);
        println!("{id:>width$}  {text:<20}  {piece}");
    }
    println!("{} tokens", ids.len());
    Ok(())
}
