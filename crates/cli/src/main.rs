//! `engine`: run and inspect Llama-family models with our paged-KV decoder.

mod args;
mod bench;
mod bench_endpoint;
mod cuda_visible;
mod device;
mod generate;
mod info;
mod kernels;
mod logging;
mod plan;
mod report;
mod run;
mod serve;
mod tokenize;
mod validate;
mod verify;

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
    /// Benchmark the engine in-process: static batches (--batch), closed-loop
    /// concurrency or open-loop request rates; tables, JSON, CSV, Markdown and plots.
    Bench(Box<bench::BenchArgs>),
    /// Re-render a saved benchmark (one DIR), or compare two (A B) config by config.
    Report(report::ReportArgs),
    /// Measure this machine's ceilings (copy GB/s, matmul FLOP/s) and cache them.
    Device(device::DeviceArgs),
    /// Generate text from a prompt, streamed to stdout; a timing line goes to stderr.
    Generate(generate::GenerateArgs),
    /// Print the resolved architecture, config, sizes and KV-cache cost per token.
    Info(info::InfoArgs),
    /// Capacity planning: KV blocks the engine would allocate on a GPU's memory, the
    /// concurrent users at 1k-128k context, and the concurrency cliff.
    Plan(plan::PlanArgs),
    /// Write a dummy model (a manifest's shape, seeded weights) as a Hugging Face
    /// directory, so other frameworks can load the same weights.
    ExportDummy(verify::ExportArgs),
    /// Dump the logits of a prefill and greedy decode steps (checking against references).
    Logits(verify::LogitsArgs),
    /// Batch job: JSONL prompts in, JSONL results out; resumable, sharded (exit 2: some lines failed).
    Run(run::RunArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (completions, chat, streaming,
    /// /metrics); SIGTERM drains in-flight requests. See docs/serving.md.
    Serve(serve::ServeArgs),
    /// Fused kernels: list, test against references, benchmark against the copy ceiling.
    Kernels(kernels::KernelsArgs),
    /// Token ids, pieces and count of a text as the engine encodes it (--chat: through the
    /// chat template); --decode turns ids back into text.
    Tokenize(tokenize::TokenizeArgs),
}

fn main() {
    // candle's CPU ops ask the OS for the CPU count on every matmul unless
    // RAYON_NUM_THREADS is set (12-14 % of a decode step, #17): set it once, before any
    // thread starts. engine-quant's matmul threads follow it too.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let cli = Cli::parse();
    logging::init();
    let result = match cli.command {
        Command::Bench(a) => bench::run(*a),
        Command::Report(a) => report::run(a),
        Command::Device(a) => device::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Info(a) => info::run(a),
        Command::Plan(a) => plan::run(a),
        Command::ExportDummy(a) => verify::export(a),
        Command::Logits(a) => verify::logits(a),
        Command::Run(a) => run::run(a),
        Command::Kernels(a) => kernels::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Tokenize(a) => tokenize::run(a),
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
        "auto" if candle_core::utils::cuda_is_available() => {
            Ok(engine_core::device::open_cuda(0).unwrap_or(candle_core::Device::Cpu))
        }
        "auto" => Ok(candle_core::Device::Cpu),
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
            let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
            if let Some(note) =
                cuda_visible::check(ordinal, visible.as_deref()).map_err(anyhow::Error::msg)?
            {
                say(&note);
            }
            Ok(engine_core::device::open_cuda(ordinal)?)
        }
        other => anyhow::bail!("--device {other}: expected auto, cpu, cuda or cuda:N"),
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

/// Progress lines (`loading ...`): info events, on stderr (see [`logging`]).
pub fn say(msg: &str) {
    tracing::info!("{msg}");
}
