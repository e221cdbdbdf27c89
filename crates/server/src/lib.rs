//! `engine serve`: an OpenAI-compatible HTTP server in front of one engine.
//!
//! ```text
//!   clients ──HTTP──> axum handlers (tokio) ──Submission──> engine thread (owns Engine)
//!                          ^                                   │ step()
//!                          └──────── Event per request ────────┘
//! ```
//! The engine keeps one owner: [`serve`] builds it on its own thread
//! ([`engine_loop`]), which steps while anything is in flight and blocks on the command
//! channel when idle. Handlers ([`routes`]) parse and validate the body
//! ([`protocol`]), submit it ([`messages`]), and stream or collect the request's events
//! into OpenAI's shapes ([`responses`]). No lock guards the engine; [`metrics`] are atomics.
//!
//! Overload: a bounded waiting queue (`max_waiting`) and a bounded command queue answer
//! 429 with `Retry-After`; `request_timeout` aborts a request past its deadline (504,
//! or an error event in a stream); a client that goes away has its request aborted and
//! its KV blocks freed; SIGTERM/SIGINT stop accepting, drain in-flight requests, then
//! return (a second signal stops at once). Errors use OpenAI's error JSON.

pub mod engine_loop;
pub mod error;
pub mod messages;
pub mod metrics;
pub mod protocol;
pub mod responses;
pub mod routes;

pub use error::{ApiError, ServerError};

use engine_core::Engine;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    /// 0 picks a free port (the `listening on` line says which).
    pub port: u16,
    /// The name clients send as `model` (and `/v1/models` lists).
    pub served_model_name: String,
    /// Requests allowed in the engine's waiting queue; more are answered 429.
    pub max_waiting: usize,
    /// Abort requests still running this long after they arrived.
    pub request_timeout: Option<Duration>,
}

/// Submissions the command channel holds between two engine passes.
fn command_capacity(max_waiting: usize) -> usize {
    max_waiting.saturating_mul(2).clamp(64, 1 << 16)
}

/// Serve until SIGTERM/SIGINT, then drain and return. `build` makes the engine on the
/// engine thread; `say` receives progress lines (listening, draining).
pub fn serve<F>(cfg: ServerConfig, build: F, say: &dyn Fn(&str)) -> Result<(), ServerError>
where
    F: FnOnce() -> Result<Engine, String> + Send + 'static,
{
    let addr = format!("{}:{}", cfg.host, cfg.port);
    // Bind first: a busy port fails before minutes of model loading.
    let listener = std::net::TcpListener::bind(&addr).map_err(|source| ServerError::Bind {
        addr: addr.clone(),
        source,
    })?;
    listener.set_nonblocking(true)?;
    let metrics = Arc::new(metrics::Metrics::default());
    let (commands, rx) = tokio::sync::mpsc::channel(command_capacity(cfg.max_waiting));
    let loop_cfg = engine_loop::LoopConfig {
        max_waiting: cfg.max_waiting,
        request_timeout: cfg.request_timeout,
    };
    let (info, engine_thread) =
        engine_loop::spawn(build, loop_cfg, metrics.clone(), rx).map_err(ServerError::Engine)?;
    let draining = Arc::new(AtomicBool::new(false));
    let state = routes::AppState {
        commands,
        metrics,
        model: cfg.served_model_name.as_str().into(),
        max_model_len: info.max_model_len,
        started: routes::unix_now(),
        draining: draining.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        say(&format!(
            "serving {} on http://{} ({} KV blocks, context {} tokens)",
            cfg.served_model_name,
            listener.local_addr()?,
            info.num_blocks,
            info.max_model_len
        ));
        run_until_signalled(listener, routes::router(state), &draining, say).await
    });
    // The router (and its command sender) is gone: the engine thread finishes what it
    // holds, sees the closed channel and returns.
    drop(runtime);
    engine_thread
        .join()
        .map_err(|_| ServerError::EngineThread)?;
    result
}

async fn run_until_signalled(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    draining: &AtomicBool,
    say: &dyn Fn(&str),
) -> Result<(), ServerError> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r.map_err(ServerError::Io),
        s = signal() => s?,
    }
    draining.store(true, Relaxed);
    say(
        "shutting down: no new connections; draining in-flight requests (signal again to stop now)",
    );
    let _ = stop_tx.send(());
    tokio::select! {
        r = &mut server => {
            say("drained; stopped");
            r.map_err(ServerError::Io)
        }
        s = signal() => {
            s?;
            Err(ServerError::Interrupted)
        }
    }
}

/// The next SIGINT or SIGTERM.
async fn signal() -> Result<(), ServerError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signal)?;
        tokio::select! {
            _ = term.recv() => Ok(()),
            _ = int.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(ServerError::Signal)
    }
}
