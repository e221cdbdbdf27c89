//! `engine`: run and inspect Llama-family models with our paged-KV decoder.

mod args;
mod generate;
mod info;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "engine",
    version,
    about = "In-process LLM inference engine with a built-in profiler"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate text from a prompt, streamed to stdout; a timing line goes to stderr.
    Generate(generate::GenerateArgs),
    /// Print the resolved architecture, config, sizes and KV-cache cost per token.
    Info(info::InfoArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => generate::run(a),
        Command::Info(a) => info::run(a),
    };
    if let Err(e) = result {
        // One line, the whole cause chain, no backtrace.
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

/// Parse `--device`.
pub fn parse_device(s: &str) -> anyhow::Result<candle_core::Device> {
    match s {
        "cpu" => Ok(candle_core::Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal: usize = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--device {s}: bad GPU index"))?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                anyhow::bail!(
                    "--device {s}: this build has no CUDA support (rebuild with --features cuda)"
                );
            }
            Ok(candle_core::Device::new_cuda(ordinal)?)
        }
        other => anyhow::bail!("--device {other}: expected cpu, cuda or cuda:N"),
    }
}

/// Parse `--dtype` (default f32 on CPU, bf16 on CUDA).
pub fn parse_dtype(
    s: Option<&str>,
    device: &candle_core::Device,
) -> anyhow::Result<candle_core::DType> {
    use candle_core::DType;
    match s {
        None if device.is_cuda() => Ok(DType::BF16),
        None => Ok(DType::F32),
        Some("f32") => Ok(DType::F32),
        Some("f16") => Ok(DType::F16),
        Some("bf16") => Ok(DType::BF16),
        Some(other) => anyhow::bail!("--dtype {other}: expected f32, f16 or bf16"),
    }
}

/// Progress lines go to stderr.
pub fn say(msg: &str) {
    eprintln!("{msg}");
}
