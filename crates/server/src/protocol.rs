//! OpenAI request bodies -> one [`Generation`]: the prompt, the engine's
//! [`SamplingParams`] and how to answer (streamed or not, usage, logprobs).
//!
//! Bodies are read as JSON objects field by field, so that every bad value gets a 400
//! naming its field. Unknown fields are ignored (clients send extras, as for OpenAI),
//! but fields that would change the output and that the engine cannot honour
//! (penalties, logit_bias, n > 1, echo, tools, structured output) are refused rather
//! than silently dropped. Extensions accepted as in vLLM: `top_k`, `min_p`,
//! `ignore_eos`, `repetition_penalty` (1 only), `stream_options.continuous_usage_stats`.

use crate::error::ApiError;
use engine_core::Prompt;
use engine_model::chat::ChatMessage;
use engine_scheduler::SamplingParams;
use serde_json::{Map, Value};

/// Which endpoint a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

/// One request, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub api: Api,
    pub prompt: Prompt,
    /// `max_tokens` is a placeholder when [`Generation::max_tokens`] is `None`.
    pub params: SamplingParams,
    /// `None`: as many as the context leaves (chat's default).
    pub max_tokens: Option<usize>,
    pub stream: bool,
    /// Streamed: a last chunk with the usage.
    pub include_usage: bool,
    /// Streamed: the usage so far in every chunk (vLLM's `continuous_usage_stats`).
    pub continuous_usage: bool,
    /// Top log-probabilities per token (`Some(0)`: the chosen token's only).
    pub logprobs: Option<usize>,
}

/// Completions' default `max_tokens` (OpenAI's).
pub const DEFAULT_COMPLETION_MAX_TOKENS: usize = 16;

struct Body(Map<String, Value>);

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(key: &str, want: &str, got: &Value) -> ApiError {
    ApiError::invalid_param(key, format!("`{key}` must be {want}, got {}", kind(got)))
}

impl Body {
    fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(m)) => Ok(Self(m)),
            Ok(v) => Err(ApiError::invalid(format!(
                "the request body must be a JSON object, got {}",
                kind(&v)
            ))),
            Err(e) => Err(ApiError::invalid(format!(
                "the request body is not valid JSON: {e}"
            ))),
        }
    }

    /// The field, `None` when absent or null.
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn f32(&self, key: &str) -> Result<Option<f32>, ApiError> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .map(|x| x as f32)
                    .ok_or_else(|| wrong(key, "a number", v))
            })
            .transpose()
    }

    fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| v.as_i64().ok_or_else(|| wrong(key, "an integer", v)))
            .transpose()
    }

    fn count(&self, key: &str) -> Result<Option<usize>, ApiError> {
        match self.int(key)? {
            Some(n) if n < 0 => Err(ApiError::invalid_param(
                key,
                format!("`{key}` must be >= 0, got {n}"),
            )),
            n => Ok(n.map(|n| n as usize)),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| wrong(key, "a boolean", v)))
            .transpose()
    }

    /// Refuse `key` unless absent or equal to its neutral value.
    fn unsupported_unless(&self, key: &str, neutral: f64) -> Result<(), ApiError> {
        match self.f32(key)? {
            Some(v) if (v as f64 - neutral).abs() > 1e-9 => Err(ApiError::invalid_param(
                key,
                format!(
                    "`{key}` is not supported by this engine (got {v}); omit it or send {neutral}"
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// The served model check: absent is fine, anything else must match.
fn check_model(b: &Body, served: &str) -> Result<(), ApiError> {
    match b.get("model") {
        None => Ok(()),
        Some(Value::String(m)) if m == served => Ok(()),
        Some(Value::String(m)) => Err(ApiError::unknown_model(m, served)),
        Some(v) => Err(wrong("model", "a string", v)),
    }
}

fn stop_strings(b: &Body) -> Result<Vec<String>, ApiError> {
    match b.get("stop") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| wrong("stop", "a string or an array of strings", v))
            })
            .collect(),
        Some(v) => Err(wrong("stop", "a string or an array of strings", v)),
    }
}

/// Fields shared by both endpoints: sampling, stream options, unsupported knobs.
fn common(b: &Body, api: Api) -> Result<Generation, ApiError> {
    for key in ["frequency_penalty", "presence_penalty"] {
        b.unsupported_unless(key, 0.0)?;
    }
    b.unsupported_unless("repetition_penalty", 1.0)?;
    for key in ["n", "best_of"] {
        if let Some(n) = b.count(key)?.filter(|&n| n != 1) {
            return Err(ApiError::invalid_param(
                key,
                format!("`{key}` must be 1 (one completion per request), got {n}"),
            ));
        }
    }
    if b.get("logit_bias")
        .is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty()))
    {
        return Err(ApiError::invalid_param(
            "logit_bias",
            "`logit_bias` is not supported by this engine",
        ));
    }
    let top_k = match b.int("top_k")? {
        None | Some(-1) | Some(0) => None,
        Some(k) if k < 0 => {
            return Err(ApiError::invalid_param(
                "top_k",
                format!("`top_k` must be -1 or 0 (off) or positive, got {k}"),
            ))
        }
        Some(k) => Some(k as usize),
    };
    let params = SamplingParams {
        max_tokens: DEFAULT_COMPLETION_MAX_TOKENS,
        temperature: b.f32("temperature")?.unwrap_or(1.0),
        top_k,
        top_p: b.f32("top_p")?.unwrap_or(1.0),
        min_p: b.f32("min_p")?.unwrap_or(0.0),
        seed: b.int("seed")?.map(|s| s as u64),
        stop: stop_strings(b)?,
        ignore_eos: b.bool("ignore_eos")?.unwrap_or(false),
        ..SamplingParams::default()
    };
    params
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let stream = b.bool("stream")?.unwrap_or(false);
    let options = match b.get("stream_options") {
        None => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(v) => return Err(wrong("stream_options", "an object", v)),
    };
    let options = Body(options);
    Ok(Generation {
        api,
        prompt: Prompt::Tokens(Vec::new()),
        params,
        max_tokens: None,
        stream,
        include_usage: options.bool("include_usage")?.unwrap_or(false),
        continuous_usage: options.bool("continuous_usage_stats")?.unwrap_or(false),
        logprobs: None,
    })
}

fn completion_prompt(b: &Body) -> Result<Prompt, ApiError> {
    let one = "send one prompt per request (batched prompts are not supported)";
    let ids = |items: &[Value]| -> Option<Vec<u32>> {
        items
            .iter()
            .map(|v| v.as_u64().and_then(|t| u32::try_from(t).ok()))
            .collect()
    };
    match b.get("prompt") {
        None => Err(ApiError::invalid_param("prompt", "`prompt` is required")),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => Ok(Prompt::Text(s.clone())),
            [Value::Array(inner)] => ids(inner)
                .map(Prompt::Tokens)
                .ok_or_else(|| wrong("prompt", "text or token ids", &items[0])),
            [] => Err(ApiError::invalid_param("prompt", "`prompt` is empty")),
            [Value::Number(_), ..] => ids(items).map(Prompt::Tokens).ok_or_else(|| {
                ApiError::invalid_param("prompt", "`prompt` token ids must be integers in 0..2^32")
            }),
            _ if items.len() > 1 => Err(ApiError::invalid_param("prompt", one)),
            _ => Err(wrong(
                "prompt",
                "a string, an array of token ids, or a one-element array of either",
                &items[0],
            )),
        },
        Some(v) => Err(wrong("prompt", "a string or an array of token ids", v)),
    }
}

/// `POST /v1/completions`.
pub fn parse_completion(bytes: &[u8], served: &str) -> Result<Generation, ApiError> {
    let b = Body::parse(bytes)?;
    check_model(&b, served)?;
    if b.bool("echo")?.unwrap_or(false) {
        return Err(ApiError::invalid_param(
            "echo",
            "`echo` is not supported by this engine",
        ));
    }
    if b.get("suffix")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::invalid_param(
            "suffix",
            "`suffix` is not supported by this engine",
        ));
    }
    let mut g = common(&b, Api::Completions)?;
    g.prompt = completion_prompt(&b)?;
    g.max_tokens = Some(
        b.count("max_tokens")?
            .unwrap_or(DEFAULT_COMPLETION_MAX_TOKENS),
    );
    g.logprobs = b.count("logprobs")?;
    finish(g)
}

fn message_content(i: usize, v: Option<&Value>) -> Result<String, ApiError> {
    let param = format!("messages[{i}].content");
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for p in parts {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (ty, _) => {
                        return Err(ApiError::invalid_param(
                            &param,
                            format!(
                                "`{param}`: only text parts are supported, got type {}",
                                ty.unwrap_or("(none)")
                            ),
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(v) => Err(wrong(&param, "a string or an array of text parts", v)),
    }
}

fn chat_messages(b: &Body) -> Result<Vec<ChatMessage>, ApiError> {
    let items = match b.get("messages") {
        None => {
            return Err(ApiError::invalid_param(
                "messages",
                "`messages` is required",
            ))
        }
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::invalid_param(
                "messages",
                "`messages` must not be empty",
            ))
        }
        Some(Value::Array(items)) => items,
        Some(v) => return Err(wrong("messages", "an array of messages", v)),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid_param(
                    &format!("messages[{i}].role"),
                    format!("`messages[{i}].role` is required (system, user or assistant)"),
                )
            })?;
            Ok(ChatMessage::new(
                role,
                &message_content(i, m.get("content"))?,
            ))
        })
        .collect()
}

/// `POST /v1/chat/completions`.
pub fn parse_chat(bytes: &[u8], served: &str) -> Result<Generation, ApiError> {
    let b = Body::parse(bytes)?;
    check_model(&b, served)?;
    for key in ["tools", "functions"] {
        if b.get(key)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            return Err(ApiError::invalid_param(
                key,
                format!("`{key}` (tool calling) is not supported by this engine"),
            ));
        }
    }
    if let Some(f) = b.get("response_format") {
        if f.get("type").and_then(Value::as_str) != Some("text") {
            return Err(ApiError::invalid_param(
                "response_format",
                "only `response_format` {\"type\": \"text\"} is supported (no structured output)",
            ));
        }
    }
    let mut g = common(&b, Api::Chat)?;
    g.prompt = Prompt::Chat(chat_messages(&b)?);
    g.max_tokens = match b.count("max_completion_tokens")? {
        Some(n) => Some(n),
        None => b.count("max_tokens")?,
    };
    let top = b.count("top_logprobs")?;
    g.logprobs = match (b.bool("logprobs")?.unwrap_or(false), top) {
        (true, top) => Some(top.unwrap_or(0)),
        (false, Some(n)) if n > 0 => {
            return Err(ApiError::invalid_param(
                "top_logprobs",
                "`top_logprobs` needs `logprobs`: true",
            ))
        }
        (false, _) => None,
    };
    finish(g)
}

/// Checks that need the final `max_tokens` and `logprobs`.
fn finish(mut g: Generation) -> Result<Generation, ApiError> {
    if let Some(m) = g.max_tokens {
        g.params.max_tokens = m;
    }
    g.params.logprobs = g.logprobs;
    g.params
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(g)
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
