//! One benchmark request over an OpenAI-compatible API: its JSON body, and what its
//! streamed answer said and when.
//!
//! Token times: TTFT and ITL come from when chunks arrived. A chunk's token count is
//! exact when the server sends the running usage in every chunk (vLLM's and `engine
//! serve`'s `continuous_usage_stats`); otherwise each chunk with text counts one token
//! (servers that stream one chunk per token) and the total is corrected to the final
//! usage (or, without usage, the tokenizer's count of the text): missing tokens are
//! timed at the last chunk, surplus chunks are merged into it. [`StreamLog::token_times`]
//! says which source it used.

use serde_json::{json, Value};

/// Which OpenAI API to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

impl Api {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "completions" => Ok(Self::Completions),
            "chat" => Ok(Self::Chat),
            other => Err(format!("--api {other}: expected completions or chat")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completions => "completions",
            Self::Chat => "chat",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Self::Completions => "/v1/completions",
            Self::Chat => "/v1/chat/completions",
        }
    }
}

/// What to ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    /// Send `ignore_eos: true` (vLLM, SGLang and `engine serve` accept it).
    pub ignore_eos: bool,
}

/// The prompt as sent: token ids (completions) or text (chat, or when asked).
#[derive(Debug, Clone, PartialEq)]
pub enum PromptBody {
    Tokens(Vec<u32>),
    Text(String),
}

/// The request body: always streamed, with usage in every chunk and at the end. The
/// chat API takes text only.
pub fn body(api: Api, model: &str, prompt: &PromptBody, ask: &Ask) -> Result<Vec<u8>, String> {
    let mut v = json!({
        "model": model,
        "max_tokens": ask.max_tokens,
        "temperature": ask.temperature,
        "top_p": ask.top_p,
        "seed": ask.seed as i64,
        "stream": true,
        "stream_options": {"include_usage": true, "continuous_usage_stats": true},
    });
    if ask.ignore_eos {
        v["ignore_eos"] = json!(true);
    }
    match (api, prompt) {
        (Api::Completions, PromptBody::Tokens(ids)) => v["prompt"] = json!(ids),
        (Api::Completions, PromptBody::Text(t)) => v["prompt"] = json!(t),
        (Api::Chat, PromptBody::Text(t)) => v["messages"] = json!([{"role": "user", "content": t}]),
        (Api::Chat, PromptBody::Tokens(_)) => {
            return Err("the chat API takes text prompts, not token ids".into())
        }
    }
    Ok(v.to_string().into_bytes())
}

/// One chunk that carried choices.
#[derive(Debug, Clone, PartialEq)]
struct Chunk {
    t: f64,
    has_text: bool,
    /// Completion tokens so far, when the chunk says (continuous usage).
    completion_tokens: Option<usize>,
}

/// Everything a streamed answer said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamLog {
    chunks: Vec<Chunk>,
    pub text: String,
    pub prompt_tokens: Option<usize>,
    pub completion_tokens: Option<usize>,
    pub finish_reason: Option<String>,
    /// An error event's message.
    pub error: Option<String>,
    /// `[DONE]` was seen.
    pub done: bool,
}

/// Where the token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// Running usage in every chunk: exact per chunk.
    ChunkUsage,
    /// One token per chunk with text, total matched to the final usage.
    ChunksAndUsage,
    /// One token per chunk with text, total from the tokenizer.
    ChunksAndTokenizer,
}

impl StreamLog {
    /// Record one SSE event's data, received at `t` seconds.
    pub fn on_event(&mut self, data: &str, t: f64) {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            self.error
                .get_or_insert_with(|| format!("unparseable event: {}", clip(data)));
            return;
        };
        if let Some(e) = v.get("error") {
            let msg = e
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| e.to_string(), String::from);
            self.error.get_or_insert(msg);
            return;
        }
        let usage = v.get("usage").filter(|u| u.is_object());
        if let Some(u) = usage {
            let n = |k: &str| u.get(k).and_then(Value::as_u64).map(|x| x as usize);
            self.prompt_tokens = n("prompt_tokens").or(self.prompt_tokens);
            self.completion_tokens = n("completion_tokens").or(self.completion_tokens);
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        let text = choice
            .get("text")
            .or_else(|| choice.get("delta").and_then(|d| d.get("content")))
            .and_then(Value::as_str)
            .unwrap_or("");
        self.text.push_str(text);
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(r.to_string());
        }
        self.chunks.push(Chunk {
            t,
            has_text: !text.is_empty(),
            completion_tokens: usage.and(self.completion_tokens),
        });
    }

    /// Per output token, when it arrived; `count` counts tokens of text (used when the
    /// server reports no usage).
    pub fn token_times(&self, count: &dyn Fn(&str) -> usize) -> (Vec<f64>, TokenSource) {
        if self.chunks.iter().any(|c| c.completion_tokens.is_some()) {
            let mut times = Vec::new();
            let mut seen = 0;
            for c in &self.chunks {
                if let Some(n) = c.completion_tokens {
                    times.extend(std::iter::repeat_n(c.t, n.saturating_sub(seen)));
                    seen = seen.max(n);
                }
            }
            return (times, TokenSource::ChunkUsage);
        }
        let mut times: Vec<f64> = self
            .chunks
            .iter()
            .filter(|c| c.has_text)
            .map(|c| c.t)
            .collect();
        let (n, source) = match self.completion_tokens {
            Some(n) => (n, TokenSource::ChunksAndUsage),
            None => (count(&self.text), TokenSource::ChunksAndTokenizer),
        };
        if let Some(&last) = times.last() {
            if n > times.len() {
                times.resize(n, last);
            } else if n < times.len() {
                times.truncate(n.max(1));
                if let Some(l) = times.last_mut() {
                    *l = last;
                }
            }
        }
        (times, source)
    }
}

/// At most 200 characters of `s`, for messages.
pub fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(200).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
