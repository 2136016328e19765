//! The public HTTP API of the contract, on one router with the ops endpoints and the console.
//!
//! Every error is JSON with a code ([`crate::error::ApiError`]), including unknown routes, wrong
//! methods, oversized bodies and wrong content types; bad input never publishes anything. Routes
//! come in three groups: the caller tier and the admin tier (the `auth` module), each behind its
//! token check, and the open routes. The API's in-flight limit and timeout (tower's global
//! concurrency limit, load shedding and timeout; `guard_refusal` turns their errors into the
//! API's) cover the tiers, `/ws` and `/stats`, never health, readiness, metrics or the console's
//! static files, so a flood of slow requests cannot make a healthy pod look dead to its probes.

mod auth;
mod dlq;
mod extract;
mod idempotency;
mod orders;
mod products;
mod ws;

pub use auth::Tier;
pub use extract::{ApiJson, ApiPath, ApiQuery, MAX_BODY_BYTES};
pub use ws::{LiveFeed, LiveFeedConfig, Peer};

use crate::error::{ApiError, ApiResult};
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use fulfillment_core::ops::metrics;
use fulfillment_core::ops::ops_http::ops_router;
use fulfillment_core::runtime::startup::ops_state;
use fulfillment_core::{Redis, Settings};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    pub redis: Redis,
    pub settings: Arc<Settings>,
    pub status_feed: crate::status_feed::Feed,
    /// The rooms of `/ws` and their timings.
    pub live_feed: Arc<LiveFeed>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The whole HTTP surface of the order service.
pub fn router(state: AppState) -> Router {
    let caller = Router::new()
        .route("/orders", post(orders::place))
        .route("/orders/{id}", get(orders::get_one))
        .route("/orders/{id}/events", get(orders::events))
        .route("/orders/{id}/messages", get(orders::messages))
        .route("/products", get(products::list))
        .route("/products/{id}", get(products::get_one))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::caller));
    let admin = Router::new()
        .route("/orders", get(orders::list))
        .route("/orders/{id}/cancel", post(orders::cancel))
        .route("/products", post(products::create))
        .route(
            "/products/{id}",
            put(products::put).delete(products::delete),
        )
        .route("/products/{id}/stock", post(products::adjust_stock))
        .route("/dlq", get(dlq::list))
        .route("/dlq/{id}", get(dlq::get_one).delete(dlq::delete))
        .route("/dlq/{id}/replay", post(dlq::replay))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::admin));
    // One semaphore for every route (a plain ConcurrencyLimitLayer would give each its own); a
    // request over the limit is shed at once with 503 overloaded.
    let timeout = Duration::from_millis(state.settings.api.request_timeout_ms);
    let guard = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |e| guard_refusal(e, timeout)))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(
            state.settings.api.max_in_flight,
        ))
        .timeout(timeout);
    let limited = caller
        .merge(admin)
        // `/ws` checks its own tier: following one order is the caller's, every order the admin's.
        .route("/ws", get(ws::upgrade))
        .route("/stats", get(stats))
        .with_state(state.clone())
        // Inside the guard: the arrival is when the timeout started.
        .layer(middleware::from_fn(record_arrival))
        .layer(guard);
    let open = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/", get(console))
        .route("/assets/{file}", get(console_asset))
        .merge(ops_router(ops_state(&state.redis)));
    limited
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(count_requests))
}

/// When a request reached the API's guard: its timeout (`HTTP_REQUEST_TIMEOUT_MS`) counts from
/// then, so a write's deadline ([`write_deadline`]) does too, however long its body took to come.
/// Recorded by [`record_arrival`] right inside the timeout; a handler takes it as an extractor
/// (now, where no guard recorded it).
#[derive(Debug, Clone, Copy)]
pub struct Arrival(tokio::time::Instant);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Arrival {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Arrival>()
            .copied()
            .unwrap_or_else(|| Arrival(tokio::time::Instant::now())))
    }
}

/// Records the request's [`Arrival`].
async fn record_arrival(mut request: Request, next: Next) -> Response {
    request
        .extensions_mut()
        .insert(Arrival(tokio::time::Instant::now()));
    next.run(request).await
}

/// When a write stops waiting for Redis and answers 503 `outcome_unknown`: half a second before
/// the request's own timeout (`HTTP_REQUEST_TIMEOUT_MS`, which would answer a vaguer
/// `request_timeout`), at least 100 ms after its arrival. Counted from the request's
/// [`Arrival`], as the timeout is, so the time its body took to come and reads before the write
/// count against it too.
pub(crate) fn write_deadline(state: &AppState, arrival: Arrival) -> tokio::time::Instant {
    let budget = Duration::from_millis(state.settings.api.request_timeout_ms)
        .saturating_sub(Duration::from_millis(500))
        .max(Duration::from_millis(100));
    arrival.0 + budget
}

/// The API's answer when the guard refuses a request: over `HTTP_MAX_IN_FLIGHT` (503 `overloaded`,
/// retry after a second) or longer than `HTTP_REQUEST_TIMEOUT_MS` (503 `request_timeout`).
async fn guard_refusal(error: BoxError, timeout: Duration) -> Response {
    if error.is::<tower::load_shed::error::Overloaded>() {
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
    if error.is::<tower::timeout::error::Elapsed>() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!("the request took longer than {} ms", timeout.as_millis()),
        )
        .into_response();
    }
    tracing::error!(error = %error, "request failed in the API's guard");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the request failed",
    )
    .into_response()
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

/// Counts and times requests by route template (never the raw path, which would explode the
/// labels) and method (only the standard ones; any other is `other`, so a caller inventing methods
/// cannot grow the series without end).
async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::http_request(
        &route,
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The `method` label: a standard method's name, or `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The stream's live numbers (what `fulfillment stats --json` prints), for the console.
async fn stats(axum::extract::State(state): axum::extract::State<AppState>) -> ApiResult<Response> {
    let stats = fulfillment_core::ops::stream_stats::collect(&state.redis).await?;
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

/// `?limit=&cursor=` of a paged list.
#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

impl PageQuery {
    /// The page size (`default` when absent, else 1..=`max`) and the cursor (when `is_cursor`
    /// accepts its shape, so a made-up one is a 400, not a Redis error); a 400 naming the bad one.
    pub fn read(
        &self,
        default: usize,
        max: usize,
        is_cursor: impl Fn(&str) -> bool,
    ) -> ApiResult<(usize, Option<&str>)> {
        let limit = match &self.limit {
            None => default,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("limit must be between 1 and {max}"),
                    )
                })?,
        };
        let cursor = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(c) if is_cursor(c) => Some(c),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "cursor is not one this API gave",
                ));
            }
        };
        Ok((limit, cursor))
    }
}

#[cfg(test)]
mod tests {
    use super::method_label;
    use axum::http::Method;

    #[test]
    fn only_standard_methods_get_their_own_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let invented = Method::from_bytes(b"XAB12").expect("method");
        assert_eq!(method_label(&invented), "other");
    }
}
