use super::*;

fn job(text: &str) -> Result<Request, BadLine> {
    let env = parse_envelope(3, RawLine::Text(text.as_bytes()))?.expect("not blank");
    env.into_request(&SamplingParams::greedy(8), 7)
}

fn lines(input: &[u8], limit: usize) -> Vec<(u64, Result<String, u64>)> {
    let mut r = LineReader::with_limit(input, limit);
    let mut out = Vec::new();
    while let Some((n, raw)) = r.next_line().unwrap() {
        out.push((
            n,
            match raw {
                RawLine::Text(b) => Ok(String::from_utf8_lossy(b).into_owned()),
                RawLine::TooLong { bytes, .. } => Err(bytes),
            },
        ));
    }
    out
}

#[test]
fn reads_lines_with_numbers_and_strips_newlines_and_bom() {
    let got = lines(b"\xEF\xBB\xBFa\r\n\nb", 100);
    assert_eq!(
        got,
        [(1, Ok("a".into())), (2, Ok("".into())), (3, Ok("b".into()))]
    );
    // Only the first line's BOM is a BOM.
    let got = lines(b"a\n\xEF\xBB\xBFb\n", 100);
    assert_eq!(got[1], (2, Ok("\u{feff}b".into())));
}

#[test]
fn long_lines_are_skipped_whole_and_the_next_line_survives() {
    // A line too long to store is counted with its `\r`.
    let mut input = vec![b'x'; 50];
    input.extend_from_slice(b"\r\nok\n");
    input.extend_from_slice(&[b'y'; 11]);
    let got = lines(&input, 10);
    assert_eq!(got, [(1, Err(51)), (2, Ok("ok".into())), (3, Err(11))]);
    // Exactly at the limit is fine, with or without CRLF.
    let got = lines(b"0123456789\r\n0123456789", 10);
    assert!(got.iter().all(|(_, l)| l.is_ok()), "{got:?}");
    let bad = parse_envelope(
        1,
        RawLine::TooLong {
            bytes: 50,
            limit: 10,
        },
    )
    .unwrap_err();
    assert_eq!(bad.reason, "the line has 50 bytes (at most 10)");
}

#[test]
fn line_fields_override_defaults() {
    let j = job(r#"{"id":"x","prompt":"hi","max_tokens":3,"temperature":0.5,"stop":"."}"#).unwrap();
    assert_eq!(j.prompt, RequestPrompt::Text("hi".into()));
    assert_eq!((j.params.max_tokens, j.params.temperature), (3, 0.5));
    assert_eq!(j.params.stop, vec![".".to_string()]);
    assert_eq!(j.params.seed, Some(7));
    let j2 = job(r#"{"id":"x","prompt":"hi","seed":9}"#).unwrap();
    assert_eq!((j2.params.max_tokens, j2.params.seed), (8, Some(9)));
    let chat = job(r#"{"id":5,"messages":[{"role":"user","content":"q"}]}"#).unwrap();
    assert_eq!(chat.id, Value::from(5));
    assert!(matches!(chat.prompt, RequestPrompt::Chat(ref m) if m.len() == 1));
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
    assert!(reason(r#"{"id":1,"prompt":"a","temperature":1e39}"#).contains("finite"));
    assert_eq!(
        reason(r#"{"id":1,"prompt":"a","repetition_penalty":1.2}"#),
        "invalid sampling parameters: repetition_penalty 1.2 is not supported (penalties \
         need the token history, which the engine's sampler does not keep); only 1 is accepted"
    );
    assert!(reason(r#"{"id":1,"prompt":"a","presence_penalty":-1}"#)
        .starts_with("invalid sampling parameters: presence_penalty -1 is not supported"));
    assert!(reason(r#"{"id":1,"prompt":"a","frequency_penalty":0.5}"#)
        .starts_with("invalid sampling parameters: frequency_penalty 0.5 is not supported"));
    let neutral = r#"{"id":1,"prompt":"a","frequency_penalty":0,"presence_penalty":0.0,"repetition_penalty":1}"#;
    assert!(job(neutral).is_ok(), "neutral penalties are accepted");
    let many: Vec<String> = (0..65).map(|i| format!("\"s{i}\"")).collect();
    let line = format!(r#"{{"id":1,"prompt":"a","stop":[{}]}}"#, many.join(","));
    assert!(reason(&line).contains("65 stop strings"));
    let deep = format!(
        r#"{{"id":1,"prompt":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert!(
        reason(&deep).contains("recursion limit"),
        "{}",
        reason(&deep)
    );
    let bad = job(r#"{"id":1,"prompt":"a","temperature":-1}"#).unwrap_err();
    assert_eq!((bad.line, bad.id), (3, Some(Value::from(1))));
    assert!(parse_envelope(1, RawLine::Text(b"  ")).unwrap().is_none());
    let utf = |b: &[u8]| parse_envelope(1, RawLine::Text(b)).unwrap_err().reason;
    assert!(utf(b"\xff").contains("UTF-8"));
    assert!(utf(b"\xff\xfe{\0").contains("UTF-16"));
}
