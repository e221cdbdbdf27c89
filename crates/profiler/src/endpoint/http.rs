//! A small HTTP/1.1 client on hyper and tokio (the stack `engine serve` already
//! builds): one connection per request (no pooling, so no request waits for another's
//! connection), `TCP_NODELAY`, and the response body handed back as a stream of frames
//! so that the caller can time each one as it arrives. Plain `http://` only.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where the server is: `http://HOST[:PORT][/PREFIX]`, with any trailing `/v1` dropped
/// (requests go to `PREFIX/v1/completions` and `PREFIX/v1/chat/completions`).
#[derive(Debug, Clone, PartialEq)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("--endpoint {s}: {why}");
        if s.starts_with("https://") {
            return Err(bad("https is not supported (the client speaks plain HTTP); use an http:// address, e.g. a local port or a TLS-terminating proxy"));
        }
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| bad("expected http://HOST[:PORT][/PATH]"))?;
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number in 1..65535"))?,
            ),
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let path = path.trim_end_matches('/');
        let prefix = path
            .strip_suffix("v1")
            .unwrap_or(path)
            .trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        };
        Ok(Self {
            host: host.to_string(),
            port,
            prefix,
        })
    }

    /// `http://host:port/prefix`.
    pub fn display(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.prefix)
    }
}

/// A response whose body has not been read yet.
pub struct Response {
    pub status: u16,
    /// `Retry-After` in seconds, when given as a number.
    pub retry_after_s: Option<f64>,
    pub body: Incoming,
}

impl Response {
    /// The next body frame's data; `None` at the end.
    pub async fn next_data(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Err(e) => return Some(Err(format!("reading the response: {e}"))),
            }
        }
    }

    /// The whole body as text (for errors and small answers).
    pub async fn text(self) -> Result<String, String> {
        let bytes = self
            .body
            .collect()
            .await
            .map_err(|e| format!("reading the response: {e}"))?;
        Ok(String::from_utf8_lossy(&bytes.to_bytes()).into_owned())
    }
}

/// Send one request on a new connection; `body` is JSON when given.
pub async fn send(
    url: &BaseUrl,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Response, String> {
    let addr = (url.host.as_str(), url.port);
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {}: {e}", url.display()))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {}: {e}", url.display()))?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", url.prefix))
        .header(HOST, format!("{}:{}", url.host, url.port));
    if body.is_some() {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| format!("building the request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{} {path}: {e}", url.display()))?;
    let retry_after_s = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    Ok(Response {
        status: resp.status().as_u16(),
        retry_after_s,
        body: resp.into_body(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_parse_with_and_without_v1() {
        let u = BaseUrl::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("127.0.0.1", 8000, "")
        );
        assert_eq!(BaseUrl::parse("http://h:1/v1/").unwrap().prefix, "");
        assert_eq!(
            BaseUrl::parse("http://h/api/v1").unwrap(),
            BaseUrl {
                host: "h".into(),
                port: 80,
                prefix: "/api".into()
            }
        );
        assert_eq!(BaseUrl::parse("http://[::1]:9/").unwrap().host, "::1");
        assert!(BaseUrl::parse("https://x")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(BaseUrl::parse("localhost:8000")
            .unwrap_err()
            .contains("expected http://"));
        assert!(BaseUrl::parse("http://h:port")
            .unwrap_err()
            .contains("port"));
    }
}
