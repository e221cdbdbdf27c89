//! JSONL request parser: every line of any input becomes a request that passes the
//! sampling checks, a blank line, or a bad line with a reason; reading never panics and
//! the line numbers count up by one.
#![no_main]

use engine_formats::jsonl::{parse_envelope, LineReader};
use engine_scheduler::SamplingParams;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let defaults = SamplingParams::greedy(16);
    let mut reader = LineReader::with_limit(data, 1024);
    let mut expected = 1;
    while let Ok(Some((n, raw))) = reader.next_line() {
        assert_eq!(n, expected);
        expected += 1;
        match parse_envelope(n, raw) {
            Ok(Some(env)) => match env.into_request(&defaults, n) {
                Ok(req) => assert!(req.params.validate().is_ok()),
                Err(bad) => assert!(!bad.reason.is_empty() && bad.id.is_some()),
            },
            Ok(None) => {}
            Err(bad) => assert!(!bad.reason.is_empty() && bad.line == n),
        }
    }
});
