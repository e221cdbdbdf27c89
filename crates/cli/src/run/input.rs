//! Reading the input JSONL one line at a time, and turning a line into a request.
//!
//! Lines are read with a reused buffer, so memory does not grow with the file. A line is
//! checked in two stages: [`parse_envelope`] finds its id (everything the job loop needs
//! to shard, de-duplicate and skip it), then [`Envelope::into_job`] reads the prompt and
//! sampling fields over the job-wide defaults. Either stage's failure is a [`BadLine`]
//! with a human-readable reason; it never stops the job.

use engine_core::Prompt;
use engine_model::chat::ChatMessage;
use engine_scheduler::SamplingParams;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::io::BufRead;

/// Input lines, numbered from 1, with their trailing newline (and `\r`) removed.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    line_no: u64,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            line_no: 0,
        }
    }

    /// The next line and its number; `None` at end of input.
    pub fn next_line(&mut self) -> std::io::Result<Option<(u64, &[u8])>> {
        self.buf.clear();
        if self.inner.read_until(b'\n', &mut self.buf)? == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        let mut line = self.buf.as_slice();
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        Ok(Some((self.line_no, line)))
    }
}

/// Lines in a file (a final line without a newline counts), in constant memory.
pub fn count_lines(path: &std::path::Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    let (mut n, mut last) = (0u64, b'\n');
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[k - 1];
    }
    Ok(n + u64::from(last != b'\n'))
}

/// A line that cannot become a request.
#[derive(Debug, Clone, PartialEq)]
pub struct BadLine {
    pub line: u64,
    /// The id, when the line had a readable one.
    pub id: Option<Value>,
    pub reason: String,
}

/// A JSON object with a valid id; the rest not yet checked.
#[derive(Debug)]
pub struct Envelope {
    pub line: u64,
    pub id: Value,
    /// The id's canonical JSON text (see `shard`).
    pub key: String,
    body: Map<String, Value>,
}

/// Read a line's JSON object and its id. `Ok(None)` for a blank line.
pub fn parse_envelope(line: u64, bytes: &[u8]) -> Result<Option<Envelope>, BadLine> {
    let bad = |reason: String| BadLine {
        line,
        id: None,
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not valid UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err(bad("not a JSON object".into()));
    };
    let id = body
        .remove("id")
        .ok_or_else(|| bad("missing `id`".into()))?;
    if !(id.is_string() || id.is_number()) {
        return Err(bad(format!("`id` must be a string or a number, got {id}")));
    }
    let key = id.to_string();
    Ok(Some(Envelope {
        line,
        id,
        key,
        body,
    }))
}

/// Stop strings: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// The fields a line may carry besides `id`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    prompt: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    min_p: Option<f32>,
    seed: Option<u64>,
    stop: Option<Stop>,
    ignore_eos: Option<bool>,
    logprobs: Option<usize>,
}

/// A line ready for the engine.
#[derive(Debug)]
pub struct Job {
    pub line: u64,
    pub id: Value,
    pub prompt: Prompt,
    pub params: SamplingParams,
}

impl Envelope {
    /// Reject this (valid-id) line with a reason.
    pub fn reject(&self, reason: impl Into<String>) -> BadLine {
        BadLine {
            line: self.line,
            id: Some(self.id.clone()),
            reason: reason.into(),
        }
    }

    /// Read the prompt and sampling fields over `defaults`. A request without its own
    /// seed gets `job_seed` mixed with its id's hash, so that a sampled (temperature > 0)
    /// result does not depend on the order, batch or run it was served in.
    pub fn into_job(mut self, defaults: &SamplingParams, job_seed: u64) -> Result<Job, BadLine> {
        let fields = Value::Object(std::mem::take(&mut self.body));
        let body: Body = match serde_json::from_value(fields) {
            Ok(b) => b,
            Err(e) => return Err(self.reject(format!("invalid request: {e}"))),
        };
        let prompt = match (body.prompt, body.messages) {
            (Some(p), None) => Prompt::Text(p),
            (None, Some(m)) if !m.is_empty() => Prompt::Chat(m),
            (None, Some(_)) => return Err(self.reject("`messages` is empty")),
            (Some(_), Some(_)) => return Err(self.reject("give `prompt` or `messages`, not both")),
            (None, None) => return Err(self.reject("missing `prompt` or `messages`")),
        };
        let d = defaults;
        let params = SamplingParams {
            max_tokens: body.max_tokens.unwrap_or(d.max_tokens),
            temperature: body.temperature.unwrap_or(d.temperature),
            top_k: body.top_k.or(d.top_k),
            top_p: body.top_p.unwrap_or(d.top_p),
            min_p: body.min_p.unwrap_or(d.min_p),
            seed: Some(
                body.seed
                    .unwrap_or_else(|| job_seed ^ crate::run::shard::fnv1a(self.key.as_bytes())),
            ),
            stop: match body.stop {
                Some(Stop::One(s)) => vec![s],
                Some(Stop::Many(v)) => v,
                None => d.stop.clone(),
            },
            ignore_eos: body.ignore_eos.unwrap_or(d.ignore_eos),
            logprobs: body.logprobs.or(d.logprobs),
            ..SamplingParams::default()
        };
        if let Err(e) = params.validate() {
            return Err(self.reject(format!("invalid sampling parameters: {e}")));
        }
        Ok(Job {
            line: self.line,
            id: self.id,
            prompt,
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(text: &str) -> Result<Job, BadLine> {
        let env = parse_envelope(3, text.as_bytes())?.expect("not blank");
        env.into_job(&SamplingParams::greedy(8), 7)
    }

    #[test]
    fn reads_lines_with_numbers_and_strips_newlines() {
        let mut r = LineReader::new(&b"a\r\n\nb"[..]);
        assert_eq!(r.next_line().unwrap(), Some((1, &b"a"[..])));
        assert_eq!(r.next_line().unwrap(), Some((2, &b""[..])));
        assert_eq!(r.next_line().unwrap(), Some((3, &b"b"[..])));
        assert_eq!(r.next_line().unwrap(), None);
    }

    #[test]
    fn line_fields_override_defaults() {
        let j =
            job(r#"{"id":"x","prompt":"hi","max_tokens":3,"temperature":0.5,"stop":"."}"#).unwrap();
        assert_eq!(j.prompt, Prompt::Text("hi".into()));
        assert_eq!((j.params.max_tokens, j.params.temperature), (3, 0.5));
        assert_eq!(j.params.stop, vec![".".to_string()]);
        let j2 = job(r#"{"id":"x","prompt":"hi"}"#).unwrap();
        assert_eq!(j2.params.max_tokens, 8);
        assert_eq!(j.params.seed, j2.params.seed, "seed depends on the id only");
        let chat = job(r#"{"id":5,"messages":[{"role":"user","content":"q"}]}"#).unwrap();
        assert_eq!(chat.id, Value::from(5));
        assert!(matches!(chat.prompt, Prompt::Chat(ref m) if m.len() == 1));
    }

    #[test]
    fn bad_lines_say_why() {
        let reason = |t: &str| job(t).unwrap_err().reason;
        assert!(reason("{not json").starts_with("invalid JSON"));
        assert_eq!(reason("[1,2]"), "not a JSON object");
        assert_eq!(reason(r#"{"prompt":"hi"}"#), "missing `id`");
        assert!(reason(r#"{"id":null,"prompt":"hi"}"#).contains("string or a number"));
        assert_eq!(reason(r#"{"id":1}"#), "missing `prompt` or `messages`");
        assert!(reason(r#"{"id":1,"prompt":"a","top_p":2}"#).contains("top_p must be in (0, 1]"));
        assert!(reason(r#"{"id":1,"prompt":"a","max_tokens":-1}"#).contains("invalid request"));
        assert!(reason(r#"{"id":1,"prompt":"a","max_token":3}"#).contains("unknown field"));
        let bad = job(r#"{"id":1,"prompt":"a","temperature":-1}"#).unwrap_err();
        assert_eq!((bad.line, bad.id), (3, Some(Value::from(1))));
        assert!(parse_envelope(1, b"  ").unwrap().is_none());
        assert!(parse_envelope(1, b"\xff")
            .unwrap_err()
            .reason
            .contains("UTF-8"));
    }
}
