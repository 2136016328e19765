//! `/dlq`: list, show, replay and delete dead letters (the admin tier). Deleting a dead letter
//! resolves it for its order (an operator decided it needs no replay).

use super::{ApiPath, ApiQuery, AppState, PageQuery};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fulfillment_core::dead_letter::{self, ReplayOutcome};
use fulfillment_core::stream_entry::is_entry_id;

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let (limit, cursor) = query.read(100, 1000, is_entry_id)?;
    let page = dead_letter::list(&state.redis, &state.settings.stream.dlq, limit, cursor).await?;
    Ok(Json(page).into_response())
}

pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let found = if is_entry_id(&id) {
        dead_letter::get(&state.redis, &state.settings.stream.dlq, &id).await?
    } else {
        None
    };
    let letter = found.ok_or_else(|| not_found(&id))?;
    Ok(Json(letter).into_response())
}

pub async fn replay(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let settings = &state.settings;
    match dead_letter::replay(
        &state.redis,
        &settings.stream.name,
        &settings.stream.dlq,
        &id,
    )
    .await?
    {
        outcome @ ReplayOutcome::Replayed { .. } => {
            Ok((StatusCode::ACCEPTED, Json(outcome)).into_response())
        }
        ReplayOutcome::NotFound => Err(not_found(&id)),
    }
}

pub async fn delete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    if dead_letter::delete(&state.redis, &state.settings.stream.dlq, &id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(&id))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("dead_letter_not_found", format!("no dead letter {id}"))
}
