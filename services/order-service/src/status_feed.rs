//! Live order status: one Redis subscription per process fanned out to WebSocket clients.
//!
//! Status changes are published by the scripts that make them (`PUBLISH` inside the projection
//! and cancel scripts), so a client connected to any replica sees changes made by every replica.
//! A message is one change (a JSON object) or, from a batch of projection calls, several (a JSON
//! array of them); clients get one message per change either way.
//!
//! A subscription only waits, so a peer that vanished without a word would leave it waiting
//! forever: the subscription is pinged every [`PING_EVERY`], and one that does not answer within
//! [`PING_TIMEOUT`] is dropped and made again. The loop marks its progress for `/healthz`.

use axum::extract::ws::Utf8Bytes;
use fulfillment_core::Redis;
use fulfillment_core::runtime::backoff::Backoff;
use fulfillment_events::keys;
use fulfillment_redis::connection::{COMMAND_TIMEOUT, within};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Messages buffered per slow client before it starts missing some.
const CLIENT_BUFFER: usize = 1024;

/// How often the subscription is pinged.
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// A ping not answered within this long drops the subscription.
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// `/healthz` fails once the loop has not come round for this long (it comes round at every
/// message and ping, and at every attempt to subscribe again).
const STALL_BOUND: Duration = Duration::from_secs(30);

/// One status change as clients get it, with its order's id read once here, so a client
/// following one order compares ids instead of parsing every message.
#[derive(Debug, PartialEq, Eq)]
pub struct Change {
    pub order_id: String,
    /// The change as a JSON object; cloning it shares the bytes (every client sends the same).
    pub text: Utf8Bytes,
}

/// What every client of a process receives: a shared change, not a copy per client.
pub type Feed = broadcast::Sender<Arc<Change>>;

/// The changes one published message holds: itself (as it came), or each element of an array.
fn changes(text: String) -> Vec<Change> {
    let order_id = |change: &serde_json::Value| {
        change
            .get("order_id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let parsed = if text.starts_with('[') {
        serde_json::from_str::<Vec<serde_json::Value>>(&text).map(|all| {
            all.iter()
                .map(|change| Change {
                    order_id: order_id(change),
                    text: change.to_string().into(),
                })
                .collect()
        })
    } else {
        serde_json::from_str::<serde_json::Value>(&text).map(|one| {
            vec![Change {
                order_id: order_id(&one),
                text: text.into(),
            }]
        })
    };
    match parsed {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable status message; dropped");
            Vec::new()
        }
    }
}

pub fn channel() -> Feed {
    broadcast::channel(CLIENT_BUFFER).0
}

/// Forwards every status message from Redis to `sender` until `shutdown`, resubscribing after a
/// lost connection or an unanswered ping.
pub async fn run(redis: Redis, sender: Feed, shutdown: CancellationToken) {
    let mut backoff = Backoff::default();
    let progress = redis.liveness().register("status feed", STALL_BOUND);
    while !shutdown.is_cancelled() {
        progress.mark();
        let pubsub = match redis.pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "status feed cannot connect; retrying");
                backoff.wait(&shutdown).await;
                continue;
            }
        };
        let (mut sink, mut messages) = pubsub.split();
        let subscribed = within(
            COMMAND_TIMEOUT,
            "SUBSCRIBE",
            sink.subscribe(keys::status_channel()),
        );
        if let Err(e) = subscribed.await {
            tracing::warn!(error = %e, "status feed cannot subscribe; retrying");
            backoff.wait(&shutdown).await;
            continue;
        }
        backoff.reset();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            progress.mark();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                message = messages.next() => match message {
                    Some(m) => {
                        if let Ok(text) = m.get_payload::<String>() {
                            for change in changes(text) {
                                let _ = sender.send(Arc::new(change));
                            }
                        }
                    }
                    None => {
                        tracing::warn!("status feed lost its subscription; resubscribing");
                        break;
                    }
                },
                _ = ping.tick() => {
                    let pong = within(PING_TIMEOUT, "PING", sink.ping::<redis::Value>()).await;
                    if let Err(e) = pong {
                        tracing::warn!(error = %e, "status feed's ping got no answer; resubscribing");
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Change, changes};

    #[test]
    fn a_batch_of_changes_is_one_message_each_with_its_order_id() {
        // One change goes out as it came (key order kept).
        let one = r#"{"status":"PAID","order_id":"a"}"#;
        assert_eq!(
            changes(one.to_owned()),
            vec![Change {
                order_id: "a".into(),
                text: one.into()
            }]
        );
        let two = r#"[{"order_id":"a","status":"PAID"},{"order_id":"b","status":"COMPLETED"}]"#;
        let split = changes(two.to_owned());
        assert_eq!(split.len(), 2);
        assert_eq!(split[1].order_id, "b");
        assert!(split[1].text.as_str().contains(r#""order_id":"b""#));
        assert!(changes("[not json".to_owned()).is_empty());
        assert!(changes("not json".to_owned()).is_empty());
    }
}
