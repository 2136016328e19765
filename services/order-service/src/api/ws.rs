//! `/ws`: a JSON message for every order status change; `?order_id=` follows one order.
//!
//! Following one order is the caller tier's, the all-orders feed the admin tier's ([`Tier`]); a
//! browser cannot send headers on a WebSocket, so the token may come as `?access_token=`.
//! Connections are capped (`WS_MAX_CONNECTIONS`, answered 503 `too_many_connections` over it),
//! each with small buffers, and a client that cannot keep up is told how much it missed (the feed
//! is a bounded broadcast ring, never a per-client queue that grows).

use super::{ApiQuery, AppState, Tier, auth};
use crate::error::ApiError;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// Bytes a connection buffers for reading and writing: clients send nothing but control frames,
/// and a status message is a few hundred bytes.
const BUFFER_BYTES: usize = 4 * 1024;
/// Largest message a client may send.
const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// Most bytes queued for a client that does not read; past it the connection is closed.
const MAX_WRITE_BUFFER: usize = 64 * 1024;
/// A client that takes longer than this to take one write of messages is dropped (its slot
/// freed).
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Most messages sent in one write: those already waiting when one arrives, up to this many.
const MAX_MESSAGES_PER_WRITE: usize = 64;
/// Most changes looked at before writing (a follower of one order skips most), so the loop
/// yields even while changes keep arriving.
const MAX_TAKEN: usize = 1024;

#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    order_id: Option<String>,
    access_token: Option<String>,
}

pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<FeedQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let order_id = query.order_id.filter(|id| !id.is_empty());
    let tier = if order_id.is_some() {
        Tier::Caller
    } else {
        Tier::Admin
    };
    let token = auth::bearer(&headers).or(query.access_token.as_deref());
    if !tier.allows(&state.settings, token) {
        return tier.refusal();
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            return ApiError::bad_request("websocket_required", rejection.body_text())
                .into_response();
        }
    };
    let Ok(slot) = state.ws_slots.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!(
                "this server holds its limit of {} live-status connections; retry later",
                state.settings.api.ws_max_connections
            ),
        )
        .into_response();
    };
    upgrade
        .read_buffer_size(BUFFER_BYTES)
        .write_buffer_size(BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| follow(socket, state, order_id, slot))
}

async fn follow(
    mut socket: WebSocket,
    state: AppState,
    order_id: Option<String>,
    _slot: OwnedSemaphorePermit,
) {
    let mut updates = state.status_feed.subscribe();
    loop {
        tokio::select! {
            update = updates.recv() => {
                // This update and those already waiting behind it go out in one write.
                let mut texts: Vec<Utf8Bytes> = Vec::new();
                let mut next = Some(update);
                let mut closed = false;
                let mut taken = 0;
                while let Some(update) = next.take() {
                    taken += 1;
                    match update {
                        Ok(change) => {
                            if order_id.as_deref().is_none_or(|id| id == change.order_id) {
                                texts.push(change.text.clone());
                            }
                        }
                        Err(RecvError::Lagged(missed)) => texts.push(
                            serde_json::json!({"type": "lagged", "missed": missed})
                                .to_string()
                                .into(),
                        ),
                        Err(RecvError::Closed) => closed = true,
                    }
                    if !closed && texts.len() < MAX_MESSAGES_PER_WRITE && taken < MAX_TAKEN {
                        next = match updates.try_recv() {
                            Ok(change) => Some(Ok(change)),
                            Err(TryRecvError::Lagged(missed)) => {
                                Some(Err(RecvError::Lagged(missed)))
                            }
                            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
                        };
                    }
                }
                if !send(&mut socket, texts).await || closed {
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Sends messages and flushes once; false when the client is gone or too slow to take them.
async fn send(socket: &mut WebSocket, texts: Vec<Utf8Bytes>) -> bool {
    if texts.is_empty() {
        return true;
    }
    let sending = async {
        for text in texts {
            socket.feed(Message::Text(text)).await?;
        }
        socket.flush().await
    };
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sending).await,
        Ok(Ok(()))
    )
}
