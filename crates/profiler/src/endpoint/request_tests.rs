use super::*;

fn ask() -> Ask {
    Ask {
        max_tokens: 8,
        temperature: 0.0,
        top_p: 1.0,
        seed: 5,
        ignore_eos: true,
    }
}

#[test]
fn bodies_stream_with_usage_and_carry_the_prompt() {
    let b: Value = serde_json::from_slice(
        &body(
            Api::Completions,
            "m",
            &PromptBody::Tokens(vec![1, 2]),
            &ask(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(b["prompt"], json!([1, 2]));
    assert_eq!(b["stream"], true);
    assert_eq!(b["stream_options"]["include_usage"], true);
    assert_eq!(b["ignore_eos"], true);
    assert_eq!(
        (b["max_tokens"].as_u64(), b["model"].as_str()),
        (Some(8), Some("m"))
    );
    let b: Value = serde_json::from_slice(
        &body(
            Api::Chat,
            "m",
            &PromptBody::Text("hi".into()),
            &Ask {
                ignore_eos: false,
                ..ask()
            },
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(b["messages"][0]["content"], "hi");
    assert!(b.get("ignore_eos").is_none());
    assert!(body(Api::Chat, "m", &PromptBody::Tokens(vec![1]), &ask()).is_err());
}

fn completion_chunk(text: &str, finish: Option<&str>, usage: Option<(usize, usize)>) -> String {
    let mut v = json!({"choices": [{"index": 0, "text": text, "finish_reason": finish}]});
    if let Some((p, c)) = usage {
        v["usage"] = json!({"prompt_tokens": p, "completion_tokens": c});
    }
    v.to_string()
}

#[test]
fn continuous_usage_times_every_token_exactly() {
    let mut log = StreamLog::default();
    log.on_event(&completion_chunk("a", None, Some((4, 1))), 1.0);
    log.on_event(&completion_chunk("", None, Some((4, 2))), 1.5); // a token with no text yet
    log.on_event(&completion_chunk("bc", Some("length"), Some((4, 4))), 2.0); // two tokens at once
    log.on_event(
        &json!({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 4}}).to_string(),
        2.1,
    );
    log.on_event("[DONE]", 2.2);
    let (times, source) = log.token_times(&|_| 99);
    assert_eq!(source, TokenSource::ChunkUsage);
    assert_eq!(times, vec![1.0, 1.5, 2.0, 2.0]);
    assert_eq!(
        (
            log.text.as_str(),
            log.prompt_tokens,
            log.finish_reason.as_deref()
        ),
        ("abc", Some(4), Some("length"))
    );
    assert!(log.done && log.error.is_none());
}

#[test]
fn without_running_usage_chunks_are_matched_to_the_final_count() {
    let chat = |text: &str| {
        json!({"choices": [{"delta": {"content": text}, "finish_reason": null}]}).to_string()
    };
    let mut log = StreamLog::default();
    log.on_event(
        &json!({"choices": [{"delta": {"role": "assistant", "content": ""}}]}).to_string(),
        0.5,
    );
    log.on_event(&chat("a"), 1.0);
    log.on_event(&chat("b"), 2.0);
    log.on_event(&chat("c"), 3.0);
    let (times, source) = log.token_times(&|t| t.len());
    assert_eq!(
        (times, source),
        (vec![1.0, 2.0, 3.0], TokenSource::ChunksAndTokenizer)
    );
    let mut more = log.clone();
    more.completion_tokens = Some(5);
    assert_eq!(
        more.token_times(&|_| 0),
        (vec![1.0, 2.0, 3.0, 3.0, 3.0], TokenSource::ChunksAndUsage)
    );
    let mut fewer = log.clone();
    fewer.completion_tokens = Some(2);
    assert_eq!(fewer.token_times(&|_| 0).0, vec![1.0, 3.0]);
}

#[test]
fn error_events_and_garbage_are_reported() {
    let mut log = StreamLog::default();
    log.on_event(
        r#"{"error": {"message": "ran past the timeout", "type": "timeout"}}"#,
        1.0,
    );
    assert_eq!(log.error.as_deref(), Some("ran past the timeout"));
    let mut log = StreamLog::default();
    log.on_event("not json", 1.0);
    assert!(log
        .error
        .as_deref()
        .is_some_and(|e| e.contains("unparseable")));
}
