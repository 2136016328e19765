//! `/ws`: a JSON message for every order status change; `?order_id=` follows one order.

use super::AppState;
use crate::error::ApiError;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use tokio::sync::broadcast::error::RecvError;

pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            return ApiError::bad_request("websocket_required", rejection.body_text())
                .into_response();
        }
    };
    let order_id = query.get("order_id").filter(|id| !id.is_empty()).cloned();
    upgrade.on_upgrade(move |socket| follow(socket, state, order_id))
}

async fn follow(mut socket: WebSocket, state: AppState, order_id: Option<String>) {
    let mut updates = state.status_feed.subscribe();
    loop {
        tokio::select! {
            update = updates.recv() => match update {
                Ok(text) => {
                    if let Some(id) = &order_id
                        && !concerns(&text, id)
                    {
                        continue;
                    }
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let notice = serde_json::json!({"type": "lagged", "missed": missed}).to_string();
                    if socket.send(Message::Text(notice.into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Whether a status message is about `order_id`.
fn concerns(message: &str, order_id: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(message)
        .ok()
        .and_then(|v| {
            v.get("order_id")
                .and_then(|id| id.as_str())
                .map(|id| id == order_id)
        })
        .unwrap_or(false)
}
