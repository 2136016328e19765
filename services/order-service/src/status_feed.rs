//! Live order status: one Redis subscription per process fanned out to WebSocket clients.
//!
//! Status changes are published by the scripts that make them (`PUBLISH` inside the projection
//! and cancel scripts), so a client connected to any replica sees changes made by every replica.
//! A message is one change (a JSON object) or, from a batch of projection calls, several (a JSON
//! array of them); clients get one message per change either way.

use fulfillment_core::backoff::Backoff;
use fulfillment_core::{Redis, keys};
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Messages buffered per slow client before it starts missing some.
const CLIENT_BUFFER: usize = 1024;

/// The changes one published message holds: itself, or each element of an array.
fn changes(text: String) -> Vec<String> {
    if !text.starts_with('[') {
        return vec![text];
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(&text) {
        Ok(all) => all.iter().map(|change| change.to_string()).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable status message; dropped");
            Vec::new()
        }
    }
}

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
                            for change in changes(text) {
                                let _ = sender.send(change);
                            }
                        }
                    }
                    None => break,
                },
            }
        }
        tracing::warn!("status feed lost its subscription; resubscribing");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_batch_of_changes_is_one_message_each() {
        let one = r#"{"order_id":"a","status":"PAID"}"#.to_owned();
        assert_eq!(super::changes(one.clone()), vec![one]);
        let two = r#"[{"order_id":"a","status":"PAID"},{"order_id":"b","status":"COMPLETED"}]"#;
        let split = super::changes(two.to_owned());
        assert_eq!(split.len(), 2);
        assert!(split[1].contains(r#""order_id":"b""#));
        assert!(super::changes("[not json".to_owned()).is_empty());
    }
}
