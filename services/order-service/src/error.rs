//! API errors: every error is JSON `{"error": {"code", "message", "details"}}` with its status.
//!
//! A write that failed is one of two things, and the answer says which ([`confirmed`]): 503
//! `redis_unavailable` when the command certainly never reached Redis (nothing was written, a
//! plain retry is safe), 503 `outcome_unknown` when it may have (a timeout, a connection lost
//! after sending, replicas that did not confirm): the caller must find out, or retry in a way that
//! cannot apply twice.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::future::Future;
use tokio::time::Instant;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

/// Whether a failed write certainly never reached Redis (so nothing was written): the connection
/// was refused, or Redis answered with an error. That holds because every write here is one step
/// that refuses before it writes: a script makes every check that can fail (its keys' TTL
/// included) before its first write (Redis keeps what a script wrote before an error; a `MULTI`
/// too keeps the commands of its `EXEC` that did not err, so the one here, a product's delete,
/// holds only `SREM` and `DEL` of keys of their own type, which cannot err once run). The wait for replicas after a write never answers with a
/// code or a refusal (`replica_wait.rs`). Otherwise (a timeout, a dropped connection, replicas
/// that did not acknowledge) the write may have happened.
pub fn never_reached_redis(error: &redis::RedisError) -> bool {
    error.is_connection_refusal() || error.code().is_some()
}

/// Waits for `write` until `deadline` (never starting it once the deadline has passed: 503
/// `request_timeout`, nothing written), and classifies its failure: `redis_unavailable` (the
/// [`From`] below) when it [`never_reached_redis`], else the `unknown` answer (an
/// [`ApiError::outcome_unknown`] saying what may have happened and how to retry safely). `what`
/// names the write in the log.
pub async fn confirmed<T>(
    what: &str,
    deadline: Instant,
    write: impl Future<Output = redis::RedisResult<T>>,
    unknown: impl FnOnce() -> ApiError,
) -> ApiResult<T> {
    if Instant::now() >= deadline {
        // Not started (a future does nothing until polled): certainly nothing written.
        tracing::warn!("{what}: not started, the request's time was up");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            "the request took too long before its write began; nothing was written; retry",
        ));
    }
    match tokio::time::timeout_at(deadline, write).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) if never_reached_redis(&e) => Err(e.into()),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "{what}: outcome unknown");
            Err(unknown())
        }
        Err(_) => {
            tracing::error!("{what}: outcome unknown (no reply in time)");
            Err(unknown())
        }
    }
}

impl ApiError {
    /// 503 `outcome_unknown`: the write may or may not have happened; `message` says how to find
    /// out and how to retry without applying it twice.
    pub fn outcome_unknown(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown", message)
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        tracing::error!(error = %e, "redis error while serving a request");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "redis_unavailable",
            "the event store is unavailable; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {"code": self.code, "message": self.message, "details": self.details}
        });
        (self.status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ErrorKind, RedisError};
    use std::time::Duration;

    fn io(kind: std::io::ErrorKind) -> RedisError {
        RedisError::from(std::io::Error::from(kind))
    }

    async fn answer(result: redis::RedisResult<()>) -> &'static str {
        let deadline = Instant::now() + Duration::from_secs(5);
        let unknown = || ApiError::outcome_unknown("may have happened");
        match confirmed("test write", deadline, async { result }, unknown).await {
            Ok(()) => "ok",
            Err(e) => e.code,
        }
    }

    #[tokio::test]
    async fn a_write_is_unknown_unless_it_certainly_never_reached_redis() {
        assert_eq!(answer(Ok(())).await, "ok");
        // Refused: nothing was sent.
        assert_eq!(
            answer(Err(io(std::io::ErrorKind::ConnectionRefused))).await,
            "redis_unavailable"
        );
        // Redis answered with an error: nothing was applied.
        let script_error = RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "ERR",
        ));
        assert!(script_error.code().is_some());
        assert_eq!(answer(Err(script_error)).await, "redis_unavailable");
        // Sent, then the reply never came or the connection went: it may have been applied.
        for kind in [
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::UnexpectedEof,
        ] {
            assert_eq!(answer(Err(io(kind))).await, "outcome_unknown", "{kind:?}");
        }
        // Replicas that did not acknowledge: written on the master.
        let not_replicated =
            RedisError::from((ErrorKind::Io, "not acknowledged by replicas", "x".into()));
        assert_eq!(answer(Err(not_replicated)).await, "outcome_unknown");
        // No reply before the deadline.
        let deadline = Instant::now() + Duration::from_millis(20);
        let never = std::future::pending::<redis::RedisResult<()>>();
        let unknown = || ApiError::outcome_unknown("may have happened");
        let e = confirmed("test write", deadline, never, unknown)
            .await
            .expect_err("timed out");
        assert_eq!(e.code, "outcome_unknown");
    }

    #[tokio::test]
    async fn a_write_whose_time_is_up_before_it_starts_is_never_started() {
        let deadline = Instant::now() - Duration::from_millis(1);
        let started = std::sync::atomic::AtomicBool::new(false);
        let write = async {
            started.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        };
        let unknown = || ApiError::outcome_unknown("may have happened");
        let e = confirmed("test write", deadline, write, unknown)
            .await
            .expect_err("too late");
        assert_eq!(e.code, "request_timeout");
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst));
    }
}
