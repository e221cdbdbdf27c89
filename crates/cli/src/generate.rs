//! `engine generate`: one prompt, streamed.

use crate::args::{EngineArgs, ModelArgs};
use anyhow::Context;
use clap::Args;
use engine_core::{Engine, Prompt};
use engine_model::chat::ChatMessage;
use engine_model::load_model;
use engine_scheduler::SamplingParams;
use std::io::Write;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Render the prompt as a user message with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat (default: the template's own default, if any).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 128, value_parser = crate::validate::token_count)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.7, allow_negative_numbers = true, value_parser = crate::validate::temperature)]
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability, in (0, 1].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = crate::validate::top_p)]
    pub top_p: f32,
    /// Keep only the K most likely tokens (0: off).
    #[arg(long, default_value_t = 0, value_parser = crate::validate::top_k)]
    pub top_k: usize,
    /// Drop tokens less likely than min_p times the most likely one, in [0, 1].
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = crate::validate::min_p)]
    pub min_p: f32,
    /// Stop when this string appears (repeatable); it is not printed.
    #[arg(long, value_parser = crate::validate::stop_string)]
    pub stop: Vec<String>,
    /// Keep generating after the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
}

pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    let device = crate::parse_device(&a.model.device)?;
    let dtype = crate::parse_dtype(a.model.dtype.as_deref(), &device)?;
    let params = SamplingParams {
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        top_k: (a.top_k > 0).then_some(a.top_k),
        top_p: a.top_p,
        min_p: a.min_p,
        seed: Some(a.model.seed),
        stop: a.stop.clone(),
        ignore_eos: a.ignore_eos,
        ..SamplingParams::default()
    };
    params.validate().context("invalid sampling parameters")?;
    let opts = a.model.load_options(device, dtype);
    let model = load_model(&a.model.model, &opts, &crate::say)
        .with_context(|| format!("model {}", a.model.model))?;
    let prompt = if a.chat {
        let mut messages = Vec::new();
        if let Some(system) = &a.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", &a.prompt));
        Prompt::Chat(messages)
    } else {
        Prompt::Text(a.prompt.clone())
    };
    let mut engine = Engine::new(
        model,
        a.engine.engine_config(a.model.block_size, a.model.seed),
    )?;
    let id = engine.add_request(prompt, params)?;
    let mut stdout = std::io::stdout().lock();
    while engine.has_unfinished() {
        for o in engine.step()? {
            let _ = stdout.write_all(o.text_delta.as_bytes());
            let _ = stdout.flush();
        }
    }
    let _ = writeln!(stdout);
    let out = engine
        .take_finished()
        .into_iter()
        .find(|o| o.id == id)
        .context("the request did not finish")?;
    let t = &out.timeline;
    let decode = match (t.tpot_s(), t.e2e_s()) {
        (Some(tpot), _) if tpot > 0.0 => format!("{:.1} tok/s", 1.0 / tpot),
        _ => "n/a".to_string(),
    };
    eprintln!(
        "prompt tokens: {} | output tokens: {} | TTFT: {:.1} ms | decode: {decode} | total: {:.2} s | finish: {}",
        out.prompt_token_ids.len(),
        out.token_ids.len(),
        t.ttft_s().unwrap_or(0.0) * 1e3,
        t.e2e_s().unwrap_or(0.0),
        out.finish_reason.as_str()
    );
    Ok(())
}
