//! Chat templates: the model's Jinja template rendered with minijinja.
//!
//! Hugging Face and GGUF models ship a Jinja2 template that turns a list of messages into
//! the prompt text the model was trained on. Python-isms that templates rely on
//! (`.strip()`, `.startswith()`, ...) come from minijinja-contrib's pycompat layer, and
//! `raise_exception` / `strftime_now` are provided as transformers does.
//!
//! A template comes with the model file, so it is untrusted: it renders under limits
//! (source size, minijinja fuel, recursion depth, output size; see [`crate::limits`]), so
//! that a template that loops or recurses for too long, or writes too much, ends quickly
//! with an error that says which limit it hit. It cannot read files (no loader).

use crate::limits::{
    TEMPLATE_FUEL, TEMPLATE_MAX_OUTPUT_BYTES, TEMPLATE_MAX_RECURSION, TEMPLATE_MAX_SOURCE_BYTES,
};
use crate::{FormatError, Result};
use serde::{Deserialize, Serialize};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A compiled chat template with the special-token strings it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub fn new(source: String, bos_token: String, eos_token: String) -> Self {
        Self {
            source,
            bos_token,
            eos_token,
        }
    }

    /// Render `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        if self.source.len() > TEMPLATE_MAX_SOURCE_BYTES {
            return Err(template_err(format!(
                "the template has {} bytes (at most {TEMPLATE_MAX_SOURCE_BYTES})",
                self.source.len()
            )));
        }
        let mut env = minijinja::Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_recursion_limit(TEMPLATE_MAX_RECURSION);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_function("strftime_now", |_fmt: String| "26 Jul 2024".to_string());
        env.add_template("chat", &self.source)
            .map_err(|e| template_err(format!("cannot parse: {e}")))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| template_err(e.to_string()))?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        let mut out = Capped(Vec::new());
        let rendered = tmpl.render_captured_to(ctx, &mut out).map(drop);
        match rendered {
            Ok(_) => String::from_utf8(out.0)
                .map_err(|_| template_err("the output is not valid UTF-8".to_string())),
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(template_err(format!(
                "ran over its budget of {TEMPLATE_FUEL} instructions (a loop that runs too long?)"
            ))),
            Err(_) if out.0.len() >= TEMPLATE_MAX_OUTPUT_BYTES => Err(template_err(format!(
                "the output is over the limit of {TEMPLATE_MAX_OUTPUT_BYTES} bytes"
            ))),
            Err(e) => Err(template_err(format!("cannot render: {e}"))),
        }
    }
}

fn template_err(msg: String) -> FormatError {
    FormatError::Template(msg)
}

/// Output that refuses to grow past [`TEMPLATE_MAX_OUTPUT_BYTES`].
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > TEMPLATE_MAX_OUTPUT_BYTES {
            self.0.resize(TEMPLATE_MAX_OUTPUT_BYTES, 0);
            return Err(std::io::Error::other("output limit"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'].strip() + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_with_default_system_prompt() {
        let t = ChatTemplate::new(CHATML.into(), "<|im_start|>".into(), "<|im_end|>".into());
        let out = t.render(&[ChatMessage::new("user", " Hi ")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_becomes_an_error() {
        let t = ChatTemplate::new(
            "{{ raise_exception('roles must alternate') }}".into(),
            String::new(),
            String::new(),
        );
        let err = t.render(&[], true).unwrap_err();
        assert!(err.to_string().contains("roles must alternate"), "{err}");
    }

    fn err(source: &str) -> String {
        let t = ChatTemplate::new(source.into(), String::new(), String::new());
        t.render(&[ChatMessage::new("user", "hi")], true)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn long_loops_deep_recursion_and_huge_output_end_with_errors() {
        let e =
            err("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
        assert!(e.contains("budget of"), "{e}");
        let e = err("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
        assert!(e.contains("recursion"), "{e}");
        let e = err("{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}");
        assert!(e.contains("over the limit of"), "{e}");
        assert!(err("{% for %}").contains("cannot parse"));
        assert!(err(&"x".repeat(TEMPLATE_MAX_SOURCE_BYTES + 1)).contains("the template has"));
        assert!(err("{% include 'other' %}").contains("cannot render"));
    }
}
