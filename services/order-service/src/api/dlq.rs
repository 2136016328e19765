//! `/dlq`: list, show, replay and delete dead letters (the admin tier). Deleting a dead letter
//! resolves it for its order (an operator decided it needs no replay).

use super::{ApiPath, ApiQuery, AppState, PageQuery};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fulfillment_core::dead_letter::{self, DlqId, ReplayOutcome};

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let layout = state.redis.layout();
    let (limit, cursor) = query.read(100, 1000, |c| DlqId::parse(layout, c).is_some())?;
    let cursor = cursor.and_then(|c| DlqId::parse(layout, c));
    let page = dead_letter::list(&state.redis, limit, cursor.as_ref()).await?;
    Ok(Json(page).into_response())
}

/// The dead letter `id` names, or 404 (an id of no shape this API gives is none).
fn dlq_id(state: &AppState, id: &str) -> ApiResult<DlqId> {
    DlqId::parse(state.redis.layout(), id).ok_or_else(|| not_found(id))
}

pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let letter = dead_letter::get(&state.redis, &dlq_id(&state, &id)?)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(letter).into_response())
}

pub async fn replay(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    match dead_letter::replay(&state.redis, &dlq_id(&state, &id)?).await? {
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
    if dead_letter::delete(&state.redis, &dlq_id(&state, &id)?).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(&id))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("dead_letter_not_found", format!("no dead letter {id}"))
}
