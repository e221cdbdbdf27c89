use super::*;
use axum::http::StatusCode;

fn completion(body: &str) -> Result<Generation, ApiError> {
    parse_completion(body.as_bytes(), "m")
}

fn chat(body: &str) -> Result<Generation, ApiError> {
    parse_chat(body.as_bytes(), "m")
}

fn err(r: Result<Generation, ApiError>) -> ApiError {
    r.expect_err("expected an error")
}

#[test]
fn a_full_completion_request_maps_to_sampling_params() {
    let g = completion(
        r#"{"model":"m","prompt":"hi","max_tokens":7,"temperature":0.5,"top_p":0.9,
            "top_k":5,"min_p":0.1,"seed":-3,"stop":["\n","."],"stream":true,
            "stream_options":{"include_usage":true},"logprobs":2,"ignore_eos":true,
            "frequency_penalty":0,"presence_penalty":0.0,"n":1,"user":"x","extra":1}"#,
    )
    .unwrap();
    assert_eq!(g.prompt, Prompt::Text("hi".into()));
    assert_eq!(g.max_tokens, Some(7));
    let p = &g.params;
    assert_eq!(
        (p.max_tokens, p.temperature, p.top_p, p.top_k, p.min_p),
        (7, 0.5, 0.9, Some(5), 0.1)
    );
    assert_eq!(p.seed, Some((-3i64) as u64));
    assert_eq!(p.stop, vec!["\n".to_string(), ".".to_string()]);
    assert!(p.ignore_eos && g.stream && g.include_usage && !g.continuous_usage);
    assert_eq!((g.logprobs, p.logprobs), (Some(2), Some(2)));
}

#[test]
fn completion_defaults_and_prompt_forms() {
    let g = completion(r#"{"prompt":[1,2,3]}"#).unwrap();
    assert_eq!(g.prompt, Prompt::Tokens(vec![1, 2, 3]));
    assert_eq!(g.max_tokens, Some(16));
    assert_eq!(g.params.temperature, 1.0);
    assert!(!g.stream);
    assert_eq!(
        completion(r#"{"prompt":["a"]}"#).unwrap().prompt,
        Prompt::Text("a".into())
    );
    assert_eq!(
        completion(r#"{"prompt":[[4,5]]}"#).unwrap().prompt,
        Prompt::Tokens(vec![4, 5])
    );
    let e = err(completion(r#"{"prompt":["a","b"]}"#));
    assert!(
        e.message.contains("one prompt per request"),
        "{}",
        e.message
    );
    assert!(err(completion(r#"{"prompt":[1,-2]}"#))
        .message
        .contains("token ids"));
    assert!(err(completion(r#"{}"#))
        .message
        .contains("`prompt` is required"));
}

#[test]
fn chat_messages_content_parts_and_max_completion_tokens() {
    let g = chat(
        r#"{"model":"m","messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
            "max_completion_tokens":9,"max_tokens":3,"logprobs":true,"top_logprobs":4}"#,
    )
    .unwrap();
    match &g.prompt {
        Prompt::Chat(m) => {
            assert_eq!(m.len(), 2);
            assert_eq!((m[1].role.as_str(), m[1].content.as_str()), ("user", "ab"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((g.max_tokens, g.logprobs), (Some(9), Some(4)));
    assert_eq!(
        chat(r#"{"messages":[{"role":"user","content":"x"}]}"#)
            .unwrap()
            .max_tokens,
        None
    );
}

#[test]
fn bad_requests_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("{not json", "", "not valid JSON"),
        ("[1]", "", "must be a JSON object"),
        (
            r#"{"prompt":"x","temperature":-1}"#,
            "",
            "temperature must be >= 0",
        ),
        (
            r#"{"prompt":"x","temperature":"hot"}"#,
            "temperature",
            "`temperature` must be a number, got a string",
        ),
        (
            r#"{"prompt":"x","top_p":1.5}"#,
            "",
            "top_p must be in (0, 1]",
        ),
        (
            r#"{"prompt":"x","max_tokens":-4}"#,
            "max_tokens",
            "`max_tokens` must be >= 0",
        ),
        (
            r#"{"prompt":"x","max_tokens":0}"#,
            "",
            "max_tokens must be >= 1",
        ),
        (
            r#"{"prompt":"x","frequency_penalty":0.5}"#,
            "frequency_penalty",
            "not supported",
        ),
        (
            r#"{"prompt":"x","presence_penalty":-1}"#,
            "presence_penalty",
            "not supported",
        ),
        (
            r#"{"prompt":"x","repetition_penalty":1.2}"#,
            "repetition_penalty",
            "not supported",
        ),
        (r#"{"prompt":"x","n":2}"#, "n", "must be 1"),
        (
            r#"{"prompt":"x","logit_bias":{"5":1}}"#,
            "logit_bias",
            "not supported",
        ),
        (r#"{"prompt":"x","echo":true}"#, "echo", "not supported"),
        (
            r#"{"prompt":"x","logprobs":21}"#,
            "",
            "logprobs must be <= 20",
        ),
        (
            r#"{"prompt":"x","stop":[1]}"#,
            "stop",
            "`stop` must be a string",
        ),
        (
            r#"{"prompt":"x","stop":""}"#,
            "",
            "stop strings must be non-empty",
        ),
        (r#"{"prompt":"x","top_k":-2}"#, "top_k", "`top_k` must be"),
    ];
    for (body, param, needle) in cases {
        let e = err(completion(body));
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(e.message.contains(needle), "{body}: {}", e.message);
        if !param.is_empty() {
            assert_eq!(e.param.as_deref(), Some(*param), "{body}");
        }
    }
}

#[test]
fn bad_chat_requests() {
    let cases: &[(&str, &str)] = &[
        (r#"{"model":"m"}"#, "`messages` is required"),
        (r#"{"messages":[]}"#, "must not be empty"),
        (r#"{"messages":"hi"}"#, "`messages` must be an array"),
        (r#"{"messages":[{"content":"x"}]}"#, "messages[0].role"),
        (
            r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
            "only text parts",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}"#,
            "tool calling",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#,
            "structured output",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"top_logprobs":3}"#,
            "needs `logprobs`",
        ),
    ];
    for (body, needle) in cases {
        let e = err(chat(body));
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(e.message.contains(needle), "{body}: {}", e.message);
    }
}

#[test]
fn an_unknown_model_is_not_found() {
    let e = err(completion(r#"{"model":"gpt-4","prompt":"x"}"#));
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    assert_eq!(e.code, Some("model_not_found"));
    assert!(
        e.message.contains("`gpt-4`") && e.message.contains("`m`"),
        "{}",
        e.message
    );
}
