//! The HTTP routes: `/v1/completions` and `/v1/chat/completions` (whole or streamed
//! over server-sent events), `/v1/models`, `/health` and `/metrics`.
//!
//! A generation handler validates the body, hands a [`Submission`] to the engine thread
//! (a full command queue is a 429 at once: a handler never waits for room) and waits
//! for its admission. It then either collects the request's events into one answer or
//! turns them into SSE chunks. Dropping the handler or the stream (a client that goes
//! away) drops the event receiver, which the engine thread sees and aborts the request.

use crate::error::ApiError;
use crate::messages::{Admitted, Delta, Event, Submission};
use crate::metrics::{Metrics, Outcome};
use crate::protocol::{parse_chat, parse_completion, Api, Generation};
use crate::responses::{logprobs, usage, Reply};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub commands: mpsc::Sender<Submission>,
    pub metrics: Arc<Metrics>,
    pub model: Arc<str>,
    pub max_model_len: usize,
    pub started: u64,
    /// Set on SIGTERM/SIGINT: `/health` answers 503 while in-flight requests drain.
    pub draining: Arc<AtomicBool>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|uri: Uri| async move { ApiError::no_route(uri.path()) })
        .with_state(state)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn completions(State(app): State<AppState>, body: Bytes) -> Response {
    let received = Instant::now();
    let parsed = parse_completion(&body, &app.model);
    generate(app, parsed, received).await
}

async fn chat_completions(State(app): State<AppState>, body: Bytes) -> Response {
    let received = Instant::now();
    let parsed = parse_chat(&body, &app.model);
    generate(app, parsed, received).await
}

async fn generate(
    app: AppState,
    parsed: Result<Generation, ApiError>,
    received: Instant,
) -> Response {
    let mut g = match parsed {
        Ok(g) => g,
        Err(e) => {
            app.metrics.count(Outcome::Invalid);
            return e.into_response();
        }
    };
    let (events_tx, events) = mpsc::unbounded_channel();
    let (reply_tx, reply) = oneshot::channel();
    let submission = Submission {
        prompt: std::mem::replace(&mut g.prompt, engine_core::Prompt::Tokens(Vec::new())),
        params: g.params.clone(),
        max_tokens: g.max_tokens,
        received,
        events: events_tx,
        reply: reply_tx,
    };
    if let Err(e) = app.commands.try_send(submission) {
        let err = match e {
            mpsc::error::TrySendError::Full(_) => {
                app.metrics.count(Outcome::Rejected);
                ApiError::overloaded(
                    "the server is overloaded: its command queue is full; retry later",
                )
            }
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::unavailable("the server is shutting down")
            }
        };
        return err.into_response();
    }
    let admitted = match reply.await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return e.into_response(),
        Err(_) => return ApiError::internal("the engine thread stopped").into_response(),
    };
    let prefix = match g.api {
        Api::Completions => "cmpl",
        Api::Chat => "chatcmpl",
    };
    let reply = Reply {
        api: g.api,
        id: format!("{prefix}-{}", admitted.id),
        created: unix_now(),
        model: app.model.to_string(),
    };
    if g.stream {
        stream_response(reply, g, admitted, events).into_response()
    } else {
        collect(reply, g, admitted, events).await
    }
}

/// Wait for the whole answer.
async fn collect(
    reply: Reply,
    g: Generation,
    a: Admitted,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Response {
    let (mut text, mut tokens, mut lps) = (String::new(), 0, Vec::new());
    loop {
        match events.recv().await {
            Some(Event::Delta(d)) => {
                text.push_str(&d.text);
                tokens += d.num_tokens;
                lps.extend(d.logprobs);
                if d.finish.is_some() {
                    let lp = g.logprobs.map(|_| logprobs(g.api, &lps, &mut 0));
                    let body = reply.full(&text, lp, d.finish, usage(a.prompt_tokens, tokens));
                    return axum::Json(body).into_response();
                }
            }
            Some(Event::Failed(e)) => return e.into_response(),
            None => return ApiError::internal("the engine dropped the request").into_response(),
        }
    }
}

/// Where a stream is: the role chunk (chat), deltas, the usage chunk, `[DONE]`.
enum Phase {
    Start,
    Deltas,
    Usage,
    Done,
    End,
}

struct StreamState {
    reply: Reply,
    g: Generation,
    a: Admitted,
    events: mpsc::UnboundedReceiver<Event>,
    phase: Phase,
    tokens: usize,
    text_offset: usize,
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

impl StreamState {
    fn delta_chunk(&mut self, d: Delta) -> Value {
        self.tokens += d.num_tokens;
        let lp = self
            .g
            .logprobs
            .map(|_| logprobs(self.g.api, &d.logprobs, &mut self.text_offset));
        let running = self
            .g
            .continuous_usage
            .then(|| usage(self.a.prompt_tokens, self.tokens));
        if d.finish.is_some() {
            self.phase = if self.g.include_usage {
                Phase::Usage
            } else {
                Phase::Done
            };
        }
        self.reply.chunk(&d.text, lp, d.finish, running)
    }

    /// The next SSE event, `None` at the end.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            match self.phase {
                Phase::Start => {
                    self.phase = Phase::Deltas;
                    if self.g.api == Api::Chat {
                        return Some(data(&self.reply.role_chunk()));
                    }
                }
                Phase::Deltas => {
                    return match self.events.recv().await {
                        Some(Event::Delta(d)) => Some(data(&self.delta_chunk(d))),
                        Some(Event::Failed(e)) => {
                            self.phase = Phase::Done;
                            Some(data(&e.body()))
                        }
                        None => {
                            self.phase = Phase::Done;
                            Some(data(
                                &ApiError::internal("the engine dropped the request").body(),
                            ))
                        }
                    };
                }
                Phase::Usage => {
                    self.phase = Phase::Done;
                    return Some(data(
                        &self
                            .reply
                            .usage_chunk(usage(self.a.prompt_tokens, self.tokens)),
                    ));
                }
                Phase::Done => {
                    self.phase = Phase::End;
                    return Some(SseEvent::default().data("[DONE]"));
                }
                Phase::End => return None,
            }
        }
    }
}

fn stream_response(
    reply: Reply,
    g: Generation,
    a: Admitted,
    events: mpsc::UnboundedReceiver<Event>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let state = StreamState {
        reply,
        g,
        a,
        events,
        phase: Phase::Start,
        tokens: 0,
        text_offset: 0,
    };
    let s = stream::unfold(state, |mut st| async move {
        let ev = st.next().await?;
        Some((Ok(ev), st))
    });
    // Comments every few seconds keep proxies open and reveal dead clients of queued
    // requests (a failed write drops the stream, which aborts the request).
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(2)))
}

async fn models(State(app): State<AppState>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": &*app.model,
            "object": "model",
            "created": app.started,
            "owned_by": "engine",
            "max_model_len": app.max_model_len,
        }],
    }))
    .into_response()
}

async fn health(State(app): State<AppState>) -> Response {
    if app.draining.load(Relaxed) {
        ApiError::unavailable("draining: the server is shutting down").into_response()
    } else {
        StatusCode::OK.into_response()
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}
