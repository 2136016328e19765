//! `/dlq`: list, show, replay and delete dead letters (the admin tier). Deleting a dead letter
//! resolves it for its order (an operator decided it needs no replay).
//!
//! Both are safe to retry: a replay takes the letter off the DLQ in the same step that puts its
//! entry back on the stream, and a delete removes it, so a letter is replayed or deleted at most
//! once; a second call answers 404 `dead_letter_not_found`. After a 503 `outcome_unknown`, a retry
//! answers 202 or 204 if the first did not land, 404 if it did.

use super::{ApiPath, ApiQuery, AppState, Arrival, PageQuery};
use crate::error::{ApiError, ApiResult, confirmed};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fulfillment_core::runtime::dead_letter::{self, DlqId, ReplayOutcome};
use serde_json::json;

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
    arrival: Arrival,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let deadline = super::write_deadline(&state, arrival);
    let letter = dlq_id(&state, &id)?;
    let replaying = dead_letter::replay(&state.redis, &letter);
    let outcome = confirmed("replaying a dead letter", deadline, replaying, || {
        unknown(&id, "replay", "202")
    })
    .await?;
    match outcome {
        outcome @ ReplayOutcome::Replayed { .. } => {
            Ok((StatusCode::ACCEPTED, Json(outcome)).into_response())
        }
        ReplayOutcome::NotFound => Err(not_found(&id)),
    }
}

pub async fn delete(
    State(state): State<AppState>,
    arrival: Arrival,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let deadline = super::write_deadline(&state, arrival);
    let letter = dlq_id(&state, &id)?;
    let deleting = dead_letter::delete(&state.redis, &letter);
    let deleted = confirmed("deleting a dead letter", deadline, deleting, || {
        unknown(&id, "delete", "204")
    })
    .await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(&id))
    }
}

/// No such letter: never one, or replayed or deleted already (both take it off the DLQ).
fn not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "dead_letter_not_found",
        format!("no dead letter {id} (a replayed or deleted one leaves the DLQ)"),
    )
}

/// 503 for a replay or delete Redis did not confirm.
fn unknown(id: &str, action: &str, done: &str) -> ApiError {
    ApiError::outcome_unknown(format!(
        "the event store did not confirm the {action} in time: dead letter {id} may or may not \
         have been taken; a retry is safe: {done} if this one did not land, 404 \
         dead_letter_not_found if it did"
    ))
    .with_details(json!({"dlq_id": id}))
}
