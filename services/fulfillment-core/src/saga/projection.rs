//! The order projection's rules, shared by the two places that apply them: the order group's
//! handler (`order-projection`), for what it reads, and [`transition`], for the event a step
//! publishes.
//!
//! A step whose event only moves an order forward or records a notice records it in the order's
//! status and history in the same script that publishes it, and marks the entry `projected`; the
//! order group acknowledges such entries without handling them. The API's `place_order.lua`
//! records `OrderPlaced`, inventory's `reserve_stock.lua` (or, as an outbox, its [`transition`])
//! `StockReserved`, and payment, shipping and notification theirs through [`transition`] with a
//! [`Recorder`] (the types of [`recorded_at_source`]). So a completed order needs no projection
//! call of the order group, and the status moves the moment the step happens. Cancellations, dead
//! letters and compensations go through the order group: a stock or payment failure must read the
//! order to publish its `OrderCancelled`.
//!
//! [`Recorder`]: crate::saga::transition::Recorder
//!
//! [`transition`]: crate::saga::transition::transition

use crate::ops::metrics;
use crate::saga::publish;
use fulfillment_events::events::{Event, EventType, now_millis};
use fulfillment_events::keys::{self, KeySpace};
use fulfillment_events::states::OrderStatus;
use fulfillment_redis::script_batch::ScriptCall;
use fulfillment_redis::script_reply::Tagged;
use redis::{FromRedisValue, ParsingError, Value};
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;
use std::time::Duration;

/// `project(KEYS, ARGV)`: the projection as a Lua function (see the script's head for its keys
/// and arguments), for scripts that apply it, after `publish_event()` ([`publish::LIBRARY`]),
/// which it publishes with.
pub static LIBRARY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{}{}",
        publish::LIBRARY.as_str(),
        include_str!("scripts/project.lua")
    )
});

/// Arguments [`push_args`] gives `project()`.
pub const ARG_COUNT: usize = 9;

/// One entry of an order's history, as the projection records it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct HistoryEntry {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub stream_id: String,
    pub occurred_at: String,
    pub producer: Option<String>,
    pub payload: serde_json::Value,
    /// The consumer that recorded it, and at which of its deliveries (2+ = a retry): the
    /// publishing step's consumer for an event recorded as it was published, else the order
    /// group's.
    pub recorded_by: String,
    pub attempt: u64,
}

/// A history entry as [`HistoryEntry`] reads it back, borrowed from the event it records.
#[derive(Serialize)]
struct HistoryEntryOf<'a> {
    event_id: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    stream_id: &'a str,
    occurred_at: &'a str,
    producer: Option<&'a str>,
    payload: &'a serde_json::Value,
    recorded_by: &'a str,
    attempt: u64,
}

/// The history entry recording `event` (entry `stream_id`), as JSON.
pub fn history_json(event: &Event, stream_id: &str, recorded_by: &str, attempt: u64) -> String {
    serde_json::to_string(&HistoryEntryOf {
        event_id: event.event_id.to_string(),
        event_type: event.event_type.as_str(),
        stream_id,
        occurred_at: &event.occurred_at,
        producer: event.producer.as_deref(),
        payload: &event.payload,
        recorded_by,
        attempt,
    })
    .unwrap_or_default()
}

/// [`history_json`] around the stream id, for a script that learns the id only when it publishes
/// the event: `before`, the id, then `after` is the entry.
pub fn history_json_around_id(event: &Event, recorded_by: &str, attempt: u64) -> (String, String) {
    let json = history_json(event, "", recorded_by, attempt);
    // `event_id` (a UUID) and `type` come first and cannot hold the marker.
    const MARKER: &str = "\"stream_id\":\"";
    match json.find(MARKER) {
        Some(at) => {
            let (before, after) = json.split_at(at + MARKER.len());
            (before.to_owned(), after.to_owned())
        }
        None => (json, String::new()),
    }
}

/// Event types a step records in the projection itself as it publishes them: each only moves an
/// order forward or records a notice, so recording it never publishes anything more.
pub fn recorded_at_source(event_type: EventType) -> bool {
    matches!(
        event_type,
        EventType::StockReserved
            | EventType::PaymentProcessed
            | EventType::ShipmentPrepared
            | EventType::NotificationSent
            | EventType::NotificationFailed
    )
}

/// `project()`'s keys for `order_id`, in its order.
pub fn push_keys(call: &mut ScriptCall, space: &KeySpace, stream: &str, order_id: &str) {
    call.key(space.order(order_id))
        .key(space.order_history(order_id))
        .key(stream)
        .key(space.orders_finished())
        .key(space.counters())
        .key(space.completion_samples());
    for index in space.status_indexes() {
        call.key(index);
    }
}

/// `project()`'s arguments ([`ARG_COUNT`] of them) for `event`; `history` is the history entry
/// as JSON (or the part before its stream id, for [`crate::saga::transition`]), `cancellation` the
/// `OrderCancelled` fields as JSON a cancelling event publishes, or empty.
pub fn push_args(
    call: &mut ScriptCall,
    event: &Event,
    history: &str,
    reason: &str,
    cancellation: &str,
) {
    call.arg(event.event_type.as_str())
        .arg(event.event_id.to_string())
        .arg(history)
        .arg(&event.occurred_at)
        .arg(reason)
        .arg(cancellation)
        .arg(keys::status_channel())
        .arg(now_millis())
        .arg(keys::COMPLETION_SAMPLES);
}

/// Records placed → final time in `fulfillment_order_completion_seconds` (`status` is
/// `COMPLETED` or `CANCELLED`, `created_ms` the order's placement in ms since the epoch).
pub fn observe_completion(status: OrderStatus, created_ms: &str) {
    if let Ok(created) = created_ms.parse::<u64>() {
        let took = Duration::from_millis(now_millis().saturating_sub(created));
        metrics::order_completed(status.as_str(), took);
    }
}

/// What the projection's part of a script did (`project.lua`'s answer: a tag, the status, the
/// order's placement in ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projected {
    Changed {
        status: OrderStatus,
        created_ms: String,
    },
    /// Recorded in the history; the status stays.
    Unchanged,
    /// The order is final; recorded in the history only.
    Final,
    /// No such order (never placed here, or removed by retention).
    Unknown,
}

fulfillment_redis::script_tags! {
    /// `project.lua`'s tags.
    enum ProjectedTag ("project.lua") {
        Changed = "changed",
        Unchanged = "unchanged",
        Final = "final",
        Unknown = "unknown",
    }
}

impl Projected {
    /// Reads the projection's answer from `values` (its tag first), as `script` gave it.
    pub fn from_values(script: &str, values: &[Value]) -> Result<Self, ParsingError> {
        let reply = Tagged::from_redis_value(Value::Array(values.to_vec()))?;
        let tag = ProjectedTag::of(&reply).map_err(|_| reply.unknown(script))?;
        Ok(match tag {
            ProjectedTag::Changed => Projected::Changed {
                status: OrderStatus::from_redis_value(
                    reply.rest.first().cloned().unwrap_or(Value::Nil),
                )?,
                created_ms: reply.text(1)?,
            },
            ProjectedTag::Unchanged => Projected::Unchanged,
            ProjectedTag::Final => Projected::Final,
            ProjectedTag::Unknown => Projected::Unknown,
        })
    }
}

impl FromRedisValue for Projected {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        match v {
            Value::Array(values) => Self::from_values("project_order.lua", &values),
            other => Err(format!("project_order.lua answered {other:?}, not an array").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_entry_splits_around_its_stream_id() {
        let event = Event::new(
            EventType::ShipmentPrepared,
            "o-1",
            &serde_json::json!({"label_id": "stream_id", "note": "\"stream_id\":\""}),
        )
        .with_producer("shipping/shipping-1");
        let (before, after) = history_json_around_id(&event, "shipping-1", 2);
        let joined = format!("{before}1-2{after}");
        let back: HistoryEntry = serde_json::from_str(&joined).expect("valid JSON");
        assert_eq!(
            back,
            HistoryEntry {
                event_id: event.event_id.to_string(),
                event_type: "ShipmentPrepared".into(),
                stream_id: "1-2".into(),
                occurred_at: event.occurred_at.clone(),
                producer: Some("shipping/shipping-1".into()),
                payload: event.payload.clone(),
                recorded_by: "shipping-1".into(),
                attempt: 2,
            }
        );
        assert_eq!(joined, history_json(&event, "1-2", "shipping-1", 2));
    }
}
