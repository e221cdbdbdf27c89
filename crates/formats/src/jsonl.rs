//! Request lines of `engine run`: one JSON object per line, read in constant memory.
//!
//! [`LineReader`] yields numbered lines with `\n` or `\r\n` removed and a UTF-8
//! byte-order mark dropped from the first line (editors on Windows add both); a line
//! longer than its limit is skipped to its end without being stored and comes back as
//! [`RawLine::TooLong`]. A line is checked in two stages: [`parse_envelope`] finds its id
//! (all a job loop needs to shard, de-duplicate and skip it), then
//! [`Envelope::into_request`] reads the prompt and sampling fields over job-wide
//! defaults. Either stage's failure is a [`BadLine`] with a reason; it never stops a job.
//! Nesting is bounded by serde_json's recursion limit (128 levels).

use crate::chat::ChatMessage;
use crate::limits::{JSONL_MAX_LINE_BYTES, MAX_STOP_STRINGS, MAX_STOP_STRING_BYTES};
use engine_scheduler::SamplingParams;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::io::BufRead;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One line as read: its bytes, or only its length when it was over the limit (a line
/// too long to store is counted with its `\r`, if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawLine<'a> {
    Text(&'a [u8]),
    TooLong { bytes: u64, limit: usize },
}

/// Input lines, numbered from 1.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    line_no: u64,
    limit: usize,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, JSONL_MAX_LINE_BYTES)
    }

    /// Lines over `limit` bytes (newline excluded) are skipped as [`RawLine::TooLong`].
    pub fn with_limit(inner: R, limit: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            line_no: 0,
            limit,
        }
    }

    /// The next line and its number; `None` at end of input.
    pub fn next_line(&mut self) -> std::io::Result<Option<(u64, RawLine<'_>)>> {
        self.buf.clear();
        let (mut total, mut ended) = (0u64, false);
        while !ended {
            let avail = self.inner.fill_buf()?;
            if avail.is_empty() {
                break;
            }
            let (take, found) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            // Keep at most limit + "\r\n" bytes; beyond that only count.
            let room = (self.limit + 2).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&avail[..take.min(room)]);
            total += take as u64;
            ended = found;
            self.inner.consume(take);
        }
        if total == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        let limit = self.limit;
        if (self.buf.len() as u64) < total {
            // Over limit + 2 bytes: too long whatever its line ending.
            let bytes = total - u64::from(ended);
            return Ok(Some((self.line_no, RawLine::TooLong { bytes, limit })));
        }
        let mut line = self.buf.as_slice();
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.line_no == 1 {
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.len() > limit {
            let bytes = line.len() as u64;
            return Ok(Some((self.line_no, RawLine::TooLong { bytes, limit })));
        }
        Ok(Some((self.line_no, RawLine::Text(line))))
    }
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
    /// The id's canonical JSON text (for sharding and de-duplication).
    pub key: String,
    body: Map<String, Value>,
}

/// Read a line's JSON object and its id. `Ok(None)` for a blank line.
pub fn parse_envelope(line: u64, raw: RawLine) -> Result<Option<Envelope>, BadLine> {
    let bad = |reason: String| BadLine {
        line,
        id: None,
        reason,
    };
    let bytes = match raw {
        RawLine::Text(b) => b,
        RawLine::TooLong { bytes, limit } => {
            return Err(bad(format!("the line has {bytes} bytes (at most {limit})")))
        }
    };
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err(bad(
            "the file looks UTF-16 encoded (byte-order mark); save it as UTF-8".into(),
        ));
    }
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
    // Accepted at their neutral value only: see `check_penalties`.
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    repetition_penalty: Option<f32>,
}

/// Penalties that need the token history are not supported (the device sampler keeps
/// none): a line that sets one to anything but its neutral value is rejected by name,
/// not served as if it were not there.
fn check_penalties(body: &Body) -> Result<(), String> {
    let fields = [
        ("frequency_penalty", body.frequency_penalty, 0.0),
        ("presence_penalty", body.presence_penalty, 0.0),
        ("repetition_penalty", body.repetition_penalty, 1.0),
    ];
    for (name, value, neutral) in fields {
        if let Some(v) = value.filter(|&v| v != neutral) {
            return Err(format!(
                "{name} {v} is not supported (penalties need the token history, which the \
                 engine's sampler does not keep); only {neutral} is accepted"
            ));
        }
    }
    Ok(())
}

/// What a request asks the model to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestPrompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// A line ready for an engine.
#[derive(Debug)]
pub struct Request {
    pub line: u64,
    pub id: Value,
    pub prompt: RequestPrompt,
    pub params: SamplingParams,
}

/// Stop strings within [`MAX_STOP_STRINGS`] and [`MAX_STOP_STRING_BYTES`].
pub fn check_stop_strings(stop: &[String]) -> Result<(), String> {
    if stop.len() > MAX_STOP_STRINGS {
        return Err(format!(
            "{} stop strings (at most {MAX_STOP_STRINGS})",
            stop.len()
        ));
    }
    match stop.iter().position(|s| s.len() > MAX_STOP_STRING_BYTES) {
        Some(i) => Err(format!(
            "stop string {i} has {} bytes (at most {MAX_STOP_STRING_BYTES})",
            stop[i].len()
        )),
        None => Ok(()),
    }
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

    /// Read the prompt and sampling fields over `defaults`; a request without its own
    /// `seed` gets `default_seed`.
    pub fn into_request(
        mut self,
        defaults: &SamplingParams,
        default_seed: u64,
    ) -> Result<Request, BadLine> {
        let fields = Value::Object(std::mem::take(&mut self.body));
        let body: Body = match serde_json::from_value(fields) {
            Ok(b) => b,
            Err(e) => return Err(self.reject(format!("invalid request: {e}"))),
        };
        if let Err(e) = check_penalties(&body) {
            return Err(self.reject(format!("invalid sampling parameters: {e}")));
        }
        let prompt = match (body.prompt, body.messages) {
            (Some(p), None) => RequestPrompt::Text(p),
            (None, Some(m)) if !m.is_empty() => RequestPrompt::Chat(m),
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
            seed: Some(body.seed.unwrap_or(default_seed)),
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
        if let Err(e) = check_stop_strings(&params.stop) {
            return Err(self.reject(format!("invalid sampling parameters: {e}")));
        }
        Ok(Request {
            line: self.line,
            id: self.id,
            prompt,
            params,
        })
    }
}

#[cfg(test)]
mod tests;
