//! `/dlq`: list, show, replay and delete dead letters. Every action needs the admin token when
//! one is set.

use super::{AppState, limit_param, require_admin};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fulfillment_core::dead_letter::{self, ReplayOutcome, is_entry_id};
use std::collections::HashMap;

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    require_admin(&state, &headers)?;
    let limit = limit_param(query.get("limit"), 100, 1000)?;
    let cursor = match query.get("cursor").map(String::as_str) {
        None | Some("") => None,
        Some(c) if is_entry_id(c) => Some(c),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "cursor must be an entry id",
            ));
        }
    };
    let page = dead_letter::list(&state.redis, &state.settings.dlq_stream, limit, cursor).await?;
    Ok(Json(page).into_response())
}

pub async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require_admin(&state, &headers)?;
    let found = if is_entry_id(&id) {
        dead_letter::get(&state.redis, &state.settings.dlq_stream, &id).await?
    } else {
        None
    };
    let letter = found.ok_or_else(|| {
        ApiError::not_found("dead_letter_not_found", format!("no dead letter {id}"))
    })?;
    Ok(Json(letter).into_response())
}

pub async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require_admin(&state, &headers)?;
    let settings = &state.settings;
    match dead_letter::replay(&state.redis, &settings.stream, &settings.dlq_stream, &id).await? {
        outcome @ ReplayOutcome::Replayed { .. } => {
            Ok((StatusCode::ACCEPTED, Json(outcome)).into_response())
        }
        ReplayOutcome::NotFound => Err(ApiError::not_found(
            "dead_letter_not_found",
            format!("no dead letter {id}"),
        )),
    }
}

pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require_admin(&state, &headers)?;
    if dead_letter::delete(&state.redis, &state.settings.dlq_stream, &id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(
            "dead_letter_not_found",
            format!("no dead letter {id}"),
        ))
    }
}
