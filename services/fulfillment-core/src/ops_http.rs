//! The small HTTP surface every process has: liveness, readiness and metrics.

use crate::redis_io::Redis;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

/// What the ops endpoints need.
#[derive(Debug, Clone)]
pub struct OpsState {
    pub redis: Redis,
    pub stream: Arc<str>,
    pub dlq_stream: Arc<str>,
}

/// `/healthz` (the process runs), `/readyz` (Redis answers) and `/metrics`.
pub fn ops_router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<OpsState>) -> Response {
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.redis.ping()).await {
        Ok(Ok(())) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Ok(Err(e)) => not_ready(&e.to_string()),
        Err(_) => not_ready("redis did not answer within 2s"),
    }
}

fn not_ready(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "error": {"code": "redis_unavailable", "message": message}
        })),
    )
        .into_response()
}

async fn metrics(State(state): State<OpsState>) -> Response {
    let body = crate::metrics::render(&state.redis, &state.stream, &state.dlq_stream).await;
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}
