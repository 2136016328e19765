//! Typed extractors whose every refusal is the API's JSON error: a path, a query and a JSON body.
//!
//! axum's own extractors answer a bad path segment (`/orders/%FF`) or query with plain text;
//! these wrap them so every error is `{"error": {...}}`. [`ApiJson`] also bounds the body: at most
//! [`MAX_BODY_BYTES`], read within [`BODY_TIMEOUT`] (a client that sends headers and then trickles
//! or withholds its body is cut off long before the whole request's timeout), and a body over the
//! limit is drained (up to [`DRAIN_BODY_BYTES`]) before the 413, so a client still sending reads
//! the answer instead of a reset connection.

use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A body over the limit but under this is read to its end before the 413 goes out. Larger ones
/// are cut.
const DRAIN_BODY_BYTES: usize = 1024 * 1024;
/// Longest a request body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// A path parameter; a segment that is not valid UTF-8 (or not the type) is a 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))
    }
}

/// The query string as `T`; one that does not parse is a 400.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
    }
}

/// A JSON body, with the errors the API promises: 413 too large, 408 too slow, 415 not JSON,
/// 400 malformed JSON, 422 JSON of the wrong shape.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let is_json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let bytes = match tokio::time::timeout(BODY_TIMEOUT, read_body(declared, body)).await {
            Ok(read) => read?,
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the request body did not arrive within {} s",
                        BODY_TIMEOUT.as_secs()
                    ),
                ));
            }
        };
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                    "malformed_json",
                    format!("the body is not valid JSON: {e}"),
                ),
                Category::Data => ApiError::invalid("invalid_body", e.to_string()),
            }
        })
    }
}

/// The body, at most [`MAX_BODY_BYTES`]; a larger one is drained (up to [`DRAIN_BODY_BYTES`])
/// and refused with 413.
async fn read_body(declared: Option<usize>, body: axum::body::Body) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
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
