//! The small HTTP surface every process has: liveness, readiness and metrics, and the listener
//! every process serves HTTP on.
//!
//! Liveness means the process makes progress: every loop it registered ([`crate::ops::liveness`]:
//! stream readers, the retry loop, the live feed) came round within its bound. A stuck loop fails
//! `/healthz` with 503 `stuck`, naming it, so Kubernetes restarts what cannot heal itself.
//! Readiness means Redis takes writes (a ping is not enough: a Redis out of memory answers pings
//! and refuses every write). `/metrics` never waits long on Redis: the Redis-read figures are
//! left out when Redis does not answer in time, and the process's own are always served.

use crate::store::Redis;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Longest readiness waits for Redis.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the ops endpoints need.
#[derive(Debug, Clone)]
pub struct OpsState {
    pub redis: Redis,
}

/// `/healthz` (the process makes progress), `/readyz` (Redis takes writes) and `/metrics`.
pub fn ops_router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(state): State<OpsState>) -> Response {
    let stuck = state.redis.liveness().stuck();
    if stuck.is_empty() {
        return axum::Json(serde_json::json!({"status": "ok"})).into_response();
    }
    let names: Vec<&str> = stuck.iter().map(|s| s.name.as_str()).collect();
    tracing::error!(stuck = ?names, "a loop made no progress within its bound; /healthz fails");
    let details: Vec<serde_json::Value> = stuck
        .iter()
        .map(|s| serde_json::json!({"loop": s.name, "for_ms": s.for_ms, "bound_ms": s.bound_ms}))
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "error": {
                "code": "stuck",
                "message": format!("no progress within the bound: {}", names.join(", ")),
                "details": details,
            }
        })),
    )
        .into_response()
}

async fn readyz(State(state): State<OpsState>) -> Response {
    match state.redis.check_writable(READY_TIMEOUT).await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) if e.is_timeout() => not_ready("redis did not answer within 2s"),
        Err(e) => not_ready(&e.to_string()),
    }
}

fn not_ready(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "error": {"code": "redis_unavailable", "message": message, "details": null}
        })),
    )
        .into_response()
}

async fn metrics(State(state): State<OpsState>) -> Response {
    let body = crate::ops::metrics::render(&state.redis).await;
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Serves `app` on `listener` until `shutdown`, letting requests in flight finish; every process
/// serves HTTP through here, with hyper's own parse errors answered as JSON ([`JsonParseErrors`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> io::Result<()> {
    axum::serve(JsonParseErrors(listener), app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// A TCP listener whose connections answer hyper's own parse errors (400 for a request that is not
/// HTTP, 414 for a URI too long, 431 for headers too large) with the API's JSON error instead of
/// an empty body. hyper writes those responses itself, before any router runs; they are the only
/// 4xx responses anywhere in this project with an empty body, which is how they are recognised.
#[derive(Debug)]
pub struct JsonParseErrors(pub TcpListener);

impl axum::serve::Listener for JsonParseErrors {
    type Io = ParseErrorsAsJson<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (ParseErrorsAsJson::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection that rewrites hyper's body-less parse-error responses into JSON ones.
#[derive(Debug)]
pub struct ParseErrorsAsJson<T> {
    inner: T,
    /// The JSON response being written in place of hyper's, and how many bytes of hyper's it
    /// stands for.
    replacement: Option<(Vec<u8>, usize, usize)>,
}

impl<T> ParseErrorsAsJson<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            replacement: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ParseErrorsAsJson<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ParseErrorsAsJson<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_none()
            && let Some(json) = json_parse_error(buf)
        {
            this.replacement = Some((json, 0, buf.len()));
        }
        if let Some((json, written, covers)) = this.replacement.as_mut() {
            while *written < json.len() {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &json[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            let covers = (*covers).min(buf.len());
            this.replacement = None;
            return Poll::Ready(Ok(covers));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The JSON response standing in for `head`, when `head` is one of hyper's parse-error responses:
/// a whole response head with status 400, 414 or 431 and `content-length: 0`.
fn json_parse_error(head: &[u8]) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(head).ok()?.strip_suffix("\r\n\r\n")?;
    let (status_line, headers) = head.split_once("\r\n")?;
    let status = status_line.split(' ').nth(1)?;
    let (code, message) = match status {
        "400" => ("bad_request", "the request is not valid HTTP/1.1"),
        "414" => ("uri_too_long", "the request's URI is too long"),
        "431" => (
            "headers_too_large",
            "the request's header fields are too large",
        ),
        _ => return None,
    };
    let mut kept = Vec::new();
    let mut empty_body = false;
    for line in headers.split("\r\n") {
        if line.eq_ignore_ascii_case("content-length: 0") {
            empty_body = true;
        } else {
            kept.push(line);
        }
    }
    if !empty_body {
        return None;
    }
    let body = serde_json::json!({
        "error": {"code": code, "message": message, "details": null}
    })
    .to_string();
    let mut out = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for line in kept {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::json_parse_error;

    #[test]
    fn only_hypers_empty_parse_errors_become_json() {
        let head =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(json_parse_error(head).expect("rewritten")).expect("utf8");
        let (top, body) = out.split_once("\r\n\r\n").expect("head and body");
        assert!(top.starts_with("HTTP/1.1 431 "));
        assert!(top.contains("content-type: application/json"));
        assert!(top.contains(&format!("content-length: {}", body.len())));
        assert!(top.contains("date: x"));
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["error"]["code"], "headers_too_large");

        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n";
        assert!(json_parse_error(ours).is_none(), "a JSON 400 of the API");
        assert!(json_parse_error(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(json_parse_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n").is_none());
    }
}
