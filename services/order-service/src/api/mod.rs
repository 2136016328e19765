//! The public HTTP API of the contract, on one router with the ops endpoints and the console.
//!
//! Every error is JSON with a code ([`crate::error::ApiError`]), including unknown routes, wrong
//! methods, oversized bodies and wrong content types; bad input never publishes anything.

mod dlq;
mod orders;
mod products;
mod ws;

use crate::error::{ApiError, ApiResult};
use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use fulfillment_core::ops_http::ops_router;
use fulfillment_core::service::ops_state;
use fulfillment_core::{Redis, Settings, metrics};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, broadcast};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A body over the limit but under this is read to its end before the 413 goes out, so the
/// client, still sending, receives the answer instead of a reset connection. Larger ones are cut.
const DRAIN_BODY_BYTES: usize = 1024 * 1024;

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    pub redis: Redis,
    pub settings: Arc<Settings>,
    pub status_feed: broadcast::Sender<String>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The whole HTTP surface of the order service.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/orders", post(orders::place).get(orders::list))
        .route("/orders/{id}", get(orders::get_one))
        .route("/orders/{id}/events", get(orders::events))
        .route("/orders/{id}/cancel", post(orders::cancel))
        .route("/products", get(products::list).post(products::create))
        .route(
            "/products/{id}",
            get(products::get_one)
                .put(products::put)
                .delete(products::delete),
        )
        .route("/dlq", get(dlq::list))
        .route("/dlq/{id}", get(dlq::get_one).delete(dlq::delete))
        .route("/dlq/{id}/replay", post(dlq::replay))
        .route("/ws", get(ws::upgrade))
        .route("/stats", get(stats))
        .route("/openapi.json", get(openapi))
        .route("/", get(console))
        .route("/assets/{file}", get(console_asset))
        .with_state(state.clone());
    let limits = Limits {
        in_flight: Arc::new(Semaphore::new(state.settings.http_max_in_flight)),
        timeout: Duration::from_millis(state.settings.http_request_timeout_ms),
    };
    api.merge(ops_router(ops_state(&state.settings, &state.redis)))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(limits, guard))
        .layer(middleware::from_fn(count_requests))
}

/// How much the API takes on: requests at once, and how long one may take.
#[derive(Debug, Clone)]
struct Limits {
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

/// How long a request waits for a turn when `HTTP_MAX_IN_FLIGHT` are being served.
const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// Bounds concurrency and time per request, answering 503 with a JSON error when either runs out.
async fn guard(
    axum::extract::State(limits): axum::extract::State<Limits>,
    request: Request,
    next: Next,
) -> Response {
    let permit = match tokio::time::timeout(QUEUE_WAIT, limits.in_flight.acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            let mut response = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many requests in flight; retry shortly",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return response;
        }
    };
    let response = match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!(
                "the request took longer than {} ms",
                limits.timeout.as_millis()
            ),
        )
        .into_response(),
    };
    drop(permit);
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Counts requests by route template (never the raw path, which would explode the labels).
async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    metrics::http_request(&route, &method, response.status().as_u16());
    response
}

/// The stream's live numbers (what `fulfillment stats --json` prints), for the console.
async fn stats(axum::extract::State(state): axum::extract::State<AppState>) -> ApiResult<Response> {
    let stats = fulfillment_core::stream_stats::collect(&state.redis, &state.settings).await?;
    Ok(axum::Json(stats).into_response())
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../openapi.json"),
    )
        .into_response()
}

/// The web console: one page, its script and stylesheet, embedded in the binary (no build step,
/// no CDN, works offline).
async fn console() -> Html<&'static str> {
    Html(include_str!("../console/index.html"))
}

async fn console_asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "console.js" => (
            include_str!("../console/console.js"),
            "text/javascript; charset=utf-8",
        ),
        "console.css" => (
            include_str!("../console/console.css"),
            "text/css; charset=utf-8",
        ),
        _ => return ApiError::not_found("not_found", "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Parses a JSON body, with the errors the API promises: 413 too large, 415 not JSON, 400
/// malformed JSON, 422 JSON of the wrong shape.
pub async fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> ApiResult<T> {
    let body = read_body(headers, body).await?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
            }
            Category::Data => ApiError::invalid("invalid_body", e.to_string()),
        }
    })
}

/// The body, at most [`MAX_BODY_BYTES`]; a larger one is drained (up to [`DRAIN_BODY_BYTES`])
/// and refused with 413.
async fn read_body(headers: &HeaderMap, body: Body) -> ApiResult<Vec<u8>> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_BODY_BYTES) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut buffer = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("unreadable_body", e.to_string()))?;
        seen += chunk.len();
        if seen <= MAX_BODY_BYTES {
            buffer.extend_from_slice(&chunk);
        } else if seen > DRAIN_BODY_BYTES {
            break;
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(buffer)
}

/// Refuses the request unless it carries the admin token (when one is configured).
pub fn require_admin(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(expected) = state.settings.admin_token.as_deref() else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this action needs Authorization: Bearer <ADMIN_TOKEN>",
        ))
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// A query parameter as a bounded integer, or a 400 naming it.
pub fn limit_param(value: Option<&String>, default: usize, max: usize) -> ApiResult<usize> {
    match value {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("limit must be between 1 and {max}"),
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
