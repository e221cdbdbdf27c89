//! Response bodies in OpenAI's shapes: whole completions, streamed chunks, usage and
//! log-probabilities, for `/v1/completions` (`text_completion`) and
//! `/v1/chat/completions` (`chat.completion`, `chat.completion.chunk`).

use crate::messages::TokenLogprob;
use crate::protocol::Api;
use engine_core::FinishReason;
use serde_json::{json, Value};

/// What every body of one request shares.
#[derive(Debug, Clone)]
pub struct Reply {
    pub api: Api,
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// `usage` for `prompt` and `completion` tokens.
pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

pub fn finish_str(r: Option<FinishReason>) -> Value {
    r.map_or(Value::Null, |r| Value::from(r.as_str()))
}

/// JSON has no -inf: a token the model calls impossible gets -9999, as in vLLM.
fn lp(x: f32) -> f64 {
    if x.is_finite() {
        x as f64
    } else {
        -9999.0
    }
}

/// Log-probabilities of `tokens`; `offset` is the completion's text length so far
/// (completions' `text_offset`), advanced past them.
pub fn logprobs(api: Api, tokens: &[TokenLogprob], offset: &mut usize) -> Value {
    match api {
        Api::Chat => {
            let entry = |token: &str, logprob: f32| json!({"token": token, "logprob": lp(logprob), "bytes": token.as_bytes()});
            let content: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    let mut e = entry(&t.token, t.logprob);
                    let top: Vec<Value> = t.top.iter().map(|(s, l)| entry(s, *l)).collect();
                    e["top_logprobs"] = Value::Array(top);
                    e
                })
                .collect();
            json!({ "content": content })
        }
        Api::Completions => {
            let mut text_offset = Vec::with_capacity(tokens.len());
            for t in tokens {
                text_offset.push(*offset);
                *offset += t.token.len();
            }
            let top: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    let m: serde_json::Map<String, Value> = t
                        .top
                        .iter()
                        .map(|(s, l)| (s.clone(), json!(lp(*l))))
                        .collect();
                    Value::Object(m)
                })
                .collect();
            json!({
                "tokens": tokens.iter().map(|t| t.token.as_str()).collect::<Vec<_>>(),
                "token_logprobs": tokens.iter().map(|t| lp(t.logprob)).collect::<Vec<_>>(),
                "top_logprobs": top,
                "text_offset": text_offset,
            })
        }
    }
}

impl Reply {
    fn head(&self, object: &str) -> Value {
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model})
    }

    /// The whole answer of a non-streamed request.
    pub fn full(
        &self,
        text: &str,
        logprobs: Option<Value>,
        finish: Option<FinishReason>,
        usage: Value,
    ) -> Value {
        let lp = logprobs.unwrap_or(Value::Null);
        let choice = match self.api {
            Api::Completions => json!({
                "index": 0, "text": text, "logprobs": lp, "finish_reason": finish_str(finish),
            }),
            Api::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": lp,
                "finish_reason": finish_str(finish),
            }),
        };
        let object = match self.api {
            Api::Completions => "text_completion",
            Api::Chat => "chat.completion",
        };
        let mut v = self.head(object);
        v["choices"] = json!([choice]);
        v["usage"] = usage;
        v
    }

    fn chunk_object(&self) -> &'static str {
        match self.api {
            Api::Completions => "text_completion",
            Api::Chat => "chat.completion.chunk",
        }
    }

    /// A streamed chunk carrying `text`; `usage` only with continuous usage stats.
    pub fn chunk(
        &self,
        text: &str,
        logprobs: Option<Value>,
        finish: Option<FinishReason>,
        usage: Option<Value>,
    ) -> Value {
        let lp = logprobs.unwrap_or(Value::Null);
        let choice = match self.api {
            Api::Completions => json!({
                "index": 0, "text": text, "logprobs": lp, "finish_reason": finish_str(finish),
            }),
            Api::Chat => json!({
                "index": 0, "delta": {"content": text}, "logprobs": lp,
                "finish_reason": finish_str(finish),
            }),
        };
        let mut v = self.head(self.chunk_object());
        v["choices"] = json!([choice]);
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    }

    /// Chat's first chunk: the assistant role, no content yet.
    pub fn role_chunk(&self) -> Value {
        let mut v = self.head(self.chunk_object());
        v["choices"] = json!([{
            "index": 0, "delta": {"role": "assistant", "content": ""},
            "logprobs": null, "finish_reason": null,
        }]);
        v
    }

    /// The last chunk when `stream_options.include_usage`: no choices, the usage.
    pub fn usage_chunk(&self, usage: Value) -> Value {
        let mut v = self.head(self.chunk_object());
        v["choices"] = json!([]);
        v["usage"] = usage;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(api: Api) -> Reply {
        Reply {
            api,
            id: "x-1".into(),
            created: 7,
            model: "m".into(),
        }
    }

    #[test]
    fn whole_answers_have_openai_shapes() {
        let c = reply(Api::Completions).full("hi", None, Some(FinishReason::Length), usage(3, 2));
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["choices"][0]["text"], "hi");
        assert_eq!(c["choices"][0]["finish_reason"], "length");
        assert_eq!(c["usage"]["total_tokens"], 5);
        let c = reply(Api::Chat).full("hi", None, Some(FinishReason::Stop), usage(3, 2));
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["choices"][0]["message"]["role"], "assistant");
        assert_eq!(c["choices"][0]["message"]["content"], "hi");
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn chunks_and_usage_chunk() {
        let r = reply(Api::Chat);
        assert_eq!(r.role_chunk()["choices"][0]["delta"]["role"], "assistant");
        let c = r.chunk("a", None, None, None);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["choices"][0]["delta"]["content"], "a");
        assert!(c["choices"][0]["finish_reason"].is_null() && c.get("usage").is_none());
        let u = r.usage_chunk(usage(1, 1));
        assert_eq!(u["choices"].as_array().map(Vec::len), Some(0));
        assert_eq!(u["usage"]["completion_tokens"], 1);
    }

    #[test]
    fn logprobs_in_both_shapes() {
        let toks = vec![
            TokenLogprob {
                token: "ab".into(),
                logprob: -0.5,
                top: vec![("ab".into(), -0.5), ("c".into(), -1.5)],
            },
            TokenLogprob {
                token: "d".into(),
                logprob: f32::NEG_INFINITY,
                top: vec![],
            },
        ];
        let mut off = 10;
        let c = logprobs(Api::Completions, &toks, &mut off);
        assert_eq!(off, 13);
        assert_eq!(c["text_offset"], json!([10, 12]));
        assert_eq!(c["token_logprobs"], json!([-0.5, -9999.0]));
        assert_eq!(c["top_logprobs"][0]["c"], json!(-1.5));
        let ch = logprobs(Api::Chat, &toks, &mut off);
        assert_eq!(ch["content"][0]["token"], "ab");
        assert_eq!(ch["content"][0]["bytes"], json!([97, 98]));
        assert_eq!(ch["content"][0]["top_logprobs"][1]["token"], "c");
    }
}
