//! Errors: [`ServerError`] for starting and running the server, [`ApiError`] for one
//! request, answered with an HTTP status and OpenAI's error JSON
//! (`{"error": {"message", "type", "param", "code"}}`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use engine_core::EngineError;
use engine_scheduler::AdmissionError;

/// What stops the server as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("building the engine: {0}")]
    Engine(String),
    #[error("the engine thread stopped unexpectedly")]
    EngineThread,
    #[error("waiting for signals: {0}")]
    Signal(std::io::Error),
    #[error("interrupted again while draining: stopped without finishing in-flight requests")]
    Interrupted,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One request's failure: status, OpenAI error type, message, the offending parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for the `Retry-After` header (429 only).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after_s: None,
        }
    }

    /// 400: the request is malformed or asks for something unsupported.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 naming the parameter at fault.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_string()),
            ..Self::invalid(message)
        }
    }

    /// 400: prompt plus output cannot fit the model's context.
    pub fn context_length(message: impl Into<String>) -> Self {
        Self {
            code: Some("context_length_exceeded"),
            ..Self::invalid(message)
        }
    }

    /// 404: the model named in the request is not the one served (as OpenAI and vLLM).
    pub fn unknown_model(asked: &str, served: &str) -> Self {
        Self {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("the model `{asked}` does not exist: this server serves `{served}`"),
            )
        }
    }

    /// 429 with `Retry-After`: the waiting queue is full.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self {
            retry_after_s: Some(1),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "server_overloaded", message)
        }
    }

    /// 504: the request ran past `--request-timeout` and was aborted.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
    }

    /// 503: the server is shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_shutting_down",
            message,
        )
    }

    /// 500: the engine failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    /// 404 for an unknown path.
    pub fn no_route(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("no route {path}: this server has /v1/completions, /v1/chat/completions, /v1/models, /health and /metrics"))
    }

    /// The OpenAI error object.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// The error for a request the engine refused at `add_request`.
    pub fn from_engine(e: &EngineError) -> Self {
        let message = chain(e);
        match e {
            EngineError::Rejected(AdmissionError::TooLongForContext { .. })
            | EngineError::PromptTooLong { .. } => Self::context_length(message),
            EngineError::Candle(_) | EngineError::Internal(_) | EngineError::Config(_) => {
                Self::internal(message)
            }
            _ => Self::invalid(message),
        }
    }
}

/// An error and its sources on one line, `outer: inner: ...`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_scheduler::SamplingParamsError;

    #[test]
    fn engine_rejections_map_to_statuses_with_their_messages() {
        let e = EngineError::InvalidParams(SamplingParamsError::TopPOutOfRange(1.5));
        let api = ApiError::from_engine(&e);
        assert_eq!(api.status, StatusCode::BAD_REQUEST);
        assert!(
            api.message.contains("top_p must be in (0, 1], got 1.5"),
            "{}",
            api.message
        );
        let e = EngineError::Rejected(AdmissionError::TooLongForContext {
            prompt_tokens: 10,
            max_tokens: 30,
            max_model_len: 32,
        });
        let api = ApiError::from_engine(&e);
        assert_eq!(api.code, Some("context_length_exceeded"));
        assert!(api.message.contains("context of 32"), "{}", api.message);
        let api = ApiError::from_engine(&EngineError::Internal("boom".into()));
        assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn overload_has_retry_after_and_the_openai_shape() {
        let resp = ApiError::overloaded("full").into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let body = ApiError::invalid_param("top_p", "bad").body();
        assert_eq!(body["error"]["param"], "top_p");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["message"], "bad");
    }
}
