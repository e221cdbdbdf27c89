//! Chat template renderer: any template source renders or fails with an error, within
//! the fuel, recursion and output limits (libFuzzer's -timeout and -rss_limit_mb catch
//! a template that escapes them).
#![no_main]

use engine_formats::chat::{ChatMessage, ChatTemplate};
use engine_formats::limits::TEMPLATE_MAX_OUTPUT_BYTES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data).into_owned();
    let t = ChatTemplate::new(source, "<s>".into(), "</s>".into());
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi {{ there }} <|im_end|>"),
        ChatMessage::new("assistant", "Hello."),
        ChatMessage::new("user", "Ünïcödé ✓"),
    ];
    for gen in [true, false] {
        if let Ok(out) = t.render(&messages, gen) {
            assert!(out.len() <= TEMPLATE_MAX_OUTPUT_BYTES);
        }
    }
});
