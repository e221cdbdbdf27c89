//! Reading the input JSONL one line at a time, and turning a line into a request.
//!
//! The line format and its checks live in `engine_formats::jsonl` (fuzzed without
//! candle): lines are read with a reused buffer, so memory does not grow with the file;
//! a UTF-8 byte-order mark and CRLF endings are accepted; a line over 16 MiB is skipped
//! to its end and reported. A line is checked in two stages: [`parse_envelope`] finds
//! its id (everything the job loop needs to shard, de-duplicate and skip it), then
//! [`into_job`] reads the prompt and sampling fields over the job-wide defaults. Either
//! stage's failure is a [`BadLine`] with a human-readable reason; it never stops the job.

use engine_core::Prompt;
use engine_formats::jsonl::RequestPrompt;
use engine_scheduler::SamplingParams;
use serde_json::Value;

pub use engine_formats::jsonl::{parse_envelope, BadLine, Envelope, LineReader};

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

/// A line ready for the engine.
#[derive(Debug)]
pub struct Job {
    pub line: u64,
    pub id: Value,
    pub prompt: Prompt,
    pub params: SamplingParams,
}

/// Read a (valid-id) line's prompt and sampling fields over `defaults`. A request
/// without its own seed gets `job_seed` mixed with its id's hash, so that a sampled
/// (temperature > 0) result does not depend on the order, batch or run it was served in.
pub fn into_job(env: Envelope, defaults: &SamplingParams, job_seed: u64) -> Result<Job, BadLine> {
    let seed = job_seed ^ crate::run::shard::fnv1a(env.key.as_bytes());
    let r = env.into_request(defaults, seed)?;
    Ok(Job {
        line: r.line,
        id: r.id,
        prompt: match r.prompt {
            RequestPrompt::Text(t) => Prompt::Text(t),
            RequestPrompt::Chat(m) => Prompt::Chat(m),
        },
        params: r.params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_formats::jsonl::RawLine;

    #[test]
    fn seeds_depend_on_the_id_only_and_prompts_convert() {
        let job = |text: &str| {
            let env = parse_envelope(3, RawLine::Text(text.as_bytes()))
                .unwrap()
                .expect("not blank");
            into_job(env, &SamplingParams::greedy(8), 7).unwrap()
        };
        let a = job(r#"{"id":"x","prompt":"hi","max_tokens":3}"#);
        let b = job(r#"{"id":"x","prompt":"other"}"#);
        let c = job(r#"{"id":"y","prompt":"hi"}"#);
        assert_eq!(a.params.seed, b.params.seed);
        assert_ne!(a.params.seed, c.params.seed);
        assert_eq!(a.prompt, Prompt::Text("hi".into()));
        let chat = job(r#"{"id":5,"messages":[{"role":"user","content":"q"}]}"#);
        assert!(matches!(chat.prompt, Prompt::Chat(ref m) if m.len() == 1));
    }
}
