//! Live order status: one Redis subscription per process fanned out to WebSocket clients.
//!
//! Status changes are published by the scripts that make them (`PUBLISH` inside the projection
//! and cancel scripts), so a client connected to any replica sees changes made by every replica.

use fulfillment_core::backoff::Backoff;
use fulfillment_core::{Redis, keys};
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Messages buffered per slow client before it starts missing some.
const CLIENT_BUFFER: usize = 1024;

pub fn channel() -> broadcast::Sender<String> {
    broadcast::channel(CLIENT_BUFFER).0
}

/// Forwards every status message from Redis to `sender` until `shutdown`, resubscribing after a
/// lost connection.
pub async fn run(redis: Redis, sender: broadcast::Sender<String>, shutdown: CancellationToken) {
    let mut backoff = Backoff::default();
    while !shutdown.is_cancelled() {
        let mut pubsub = match redis.pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "status feed cannot connect; retrying");
                backoff.wait(&shutdown).await;
                continue;
            }
        };
        if let Err(e) = pubsub.subscribe(keys::status_channel()).await {
            tracing::warn!(error = %e, "status feed cannot subscribe; retrying");
            backoff.wait(&shutdown).await;
            continue;
        }
        backoff.reset();
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                message = messages.next() => match message {
                    Some(m) => {
                        if let Ok(text) = m.get_payload::<String>() {
                            let _ = sender.send(text);
                        }
                    }
                    None => break,
                },
            }
        }
        tracing::warn!("status feed lost its subscription; resubscribing");
    }
}
