//! `engine serve`: the OpenAI-compatible server (crate `engine-server`) with every model
//! and engine flag of the other subcommands. See docs/serving.md.

use crate::args::{EngineArgs, ModelArgs};
use clap::Args;
use engine_core::Engine;
use engine_model::load_model;
use engine_server::{serve, ServerConfig};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", help_heading = "Server")]
    pub host: String,
    /// Port to listen on (0: any free port; the `serving ... on` line says which).
    #[arg(long, default_value_t = 8000, help_heading = "Server")]
    pub port: u16,
    /// The model name clients send and /v1/models lists (default: the --model value).
    #[arg(long, help_heading = "Server")]
    pub served_model_name: Option<String>,
    /// Requests allowed to wait for the engine; beyond that, 429 with Retry-After.
    #[arg(long, default_value_t = 1024, value_parser = crate::validate::request_count,
        help_heading = "Server")]
    pub max_waiting: usize,
    /// Abort requests still running this long after arrival, e.g. 30s or 500ms
    /// (default: none).
    #[arg(long, value_parser = crate::validate::duration, help_heading = "Server")]
    pub request_timeout: Option<Duration>,
    #[command(flatten, next_help_heading = "Model")]
    pub model: ModelArgs,
    #[command(flatten, next_help_heading = "Engine")]
    pub engine: EngineArgs,
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let device = crate::parse_device(&a.model.device)?;
    let dtype = crate::parse_dtype(a.model.dtype.as_deref(), &device)?;
    let cfg = ServerConfig {
        host: a.host.clone(),
        port: a.port,
        served_model_name: a
            .served_model_name
            .clone()
            .unwrap_or_else(|| a.model.model.clone()),
        max_waiting: a.max_waiting,
        request_timeout: a.request_timeout,
    };
    let spec = a.model.model.clone();
    let opts = a.model.load_options(device, dtype);
    let engine_cfg = a.engine.engine_config(a.model.block_size, a.model.seed);
    let build = move || -> Result<Engine, String> {
        let model =
            load_model(&spec, &opts, &crate::say).map_err(|e| format!("model {spec}: {e}"))?;
        Engine::new(model, engine_cfg).map_err(|e| format!("creating the engine: {e}"))
    };
    serve(cfg, build, &crate::say)?;
    Ok(())
}
