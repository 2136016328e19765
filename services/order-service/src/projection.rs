//! The order group's projection: keeps each order's status and history from the events.
//!
//! Invariant: a status never moves backwards, whatever order or how often events arrive (the
//! rules are in `project_order.lua`, applied in one step with the history entry). A stock or
//! payment failure cancels the order and publishes `OrderCancelled` in that same step.

use crate::SERVICE;
use crate::orders::{HistoryEntry, observe_completion};
use fulfillment_core::events::{EventDeadLettered, OrderCancelled, now_millis};
use fulfillment_core::{
    Delivery, Event, EventHandler, EventType, Handled, HandlerError, HandlerFuture, Redis,
    Settings, keys,
};
use redis::Script;
use std::sync::LazyLock;

static PROJECT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/project_order.lua")));

/// Longest `status_reason` kept from a dead letter's error.
const MAX_REASON_LEN: usize = 200;

#[derive(Debug, Clone)]
pub struct OrderProjection {
    redis: Redis,
    stream: String,
}

impl OrderProjection {
    pub fn new(redis: Redis, settings: &Settings) -> Self {
        Self {
            redis,
            stream: settings.stream.clone(),
        }
    }

    async fn project(&self, delivery: Delivery<'_>) -> Result<Handled, HandlerError> {
        let event = delivery.event;
        let reason = reason_of(event)?;
        let cancellation = match event.event_type {
            EventType::StockFailed | EventType::PaymentFailed => {
                Some(self.cancellation(&delivery, &reason).await?)
            }
            _ => None,
        };
        let entry = HistoryEntry {
            event_id: event.event_id.to_string(),
            event_type: event.event_type.to_string(),
            stream_id: delivery.stream_id.to_owned(),
            occurred_at: event.occurred_at.clone(),
            producer: event.producer.clone(),
            payload: event.payload.clone(),
            recorded_by: delivery.consumer.to_owned(),
            attempt: delivery.attempt,
        };
        let mut conn = self.redis.conn();
        let (outcome, status, created_ms): (String, String, String) = PROJECT
            .key(keys::order(&event.order_id))
            .key(keys::order_history(&event.order_id))
            .key(&self.stream)
            .key(keys::orders_finished())
            .arg(event.event_type.as_str())
            .arg(event.event_id.to_string())
            .arg(serde_json::to_string(&entry).unwrap_or_default())
            .arg(&event.occurred_at)
            .arg(&reason)
            .arg(cancellation.map(|c| c.to_fields_json()).unwrap_or_default())
            .arg(keys::orders_by_status(""))
            .arg(keys::status_channel())
            .arg(now_millis())
            .invoke_async(&mut conn)
            .await?;
        match outcome.as_str() {
            "changed" => {
                tracing::info!(status = status.as_str(), "order status changed");
                if status == "COMPLETED" || status == "CANCELLED" {
                    observe_completion(&status, &created_ms);
                }
            }
            "unknown" => tracing::warn!("event for an order this service never placed; ignored"),
            _ => {}
        }
        Ok(Handled::Done)
    }

    /// The `OrderCancelled` that a stock or payment failure leads to.
    async fn cancellation(
        &self,
        delivery: &Delivery<'_>,
        reason: &str,
    ) -> Result<Event, HandlerError> {
        let event = delivery.event;
        let mut conn = self.redis.conn();
        let email: Option<String> = redis::cmd("HGET")
            .arg(keys::order(&event.order_id))
            .arg("customer_email")
            .query_async(&mut conn)
            .await?;
        Ok(delivery.follow_up(
            EventType::OrderCancelled,
            &OrderCancelled {
                reason: reason.to_owned(),
                customer_email: email.unwrap_or_default(),
            },
        ))
    }
}

/// The status reason an event carries, if any.
fn reason_of(event: &Event) -> Result<String, HandlerError> {
    let reason_field = || {
        event
            .payload
            .get("reason")
            .and_then(|r| r.as_str())
            .map(str::to_owned)
    };
    Ok(match event.event_type {
        EventType::StockFailed | EventType::PaymentFailed | EventType::OrderCancelled => {
            reason_field().ok_or_else(|| {
                HandlerError::Permanent(format!("{} has no reason", event.event_type))
            })?
        }
        EventType::EventDeadLettered => {
            let dead: EventDeadLettered = event.payload_as()?;
            let mut reason = format!("dead_lettered in {}: {}", dead.group, dead.error);
            if reason.len() > MAX_REASON_LEN {
                let cut = (0..=MAX_REASON_LEN)
                    .rev()
                    .find(|i| reason.is_char_boundary(*i))
                    .unwrap_or(0);
                reason.truncate(cut);
            }
            reason
        }
        _ => String::new(),
    })
}

impl EventHandler for OrderProjection {
    fn service(&self) -> &'static str {
        SERVICE
    }

    fn group(&self) -> &'static str {
        keys::group::ORDER
    }

    fn handles(&self, _event_type: EventType) -> bool {
        true
    }

    fn handle<'a>(&'a self, delivery: Delivery<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            if delivery.event.order_id.is_empty() {
                return Ok(Handled::Done);
            }
            self.project(delivery).await
        })
    }
}

/// Builds the projection as the service does.
pub fn handler(redis: Redis, settings: &Settings) -> OrderProjection {
    OrderProjection::new(redis, settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_reason_is_bounded() {
        let long = "x".repeat(1000);
        let event = Event::new(
            EventType::EventDeadLettered,
            "o",
            &EventDeadLettered {
                group: "inventory_group".into(),
                event_id: "e".into(),
                event_type: "OrderPlaced".into(),
                error: long,
                deliveries: 4,
            },
        );
        let reason = reason_of(&event).expect("reason");
        assert!(reason.starts_with("dead_lettered in inventory_group: "));
        assert!(reason.len() <= MAX_REASON_LEN);
    }

    #[test]
    fn a_cancellation_without_reason_is_permanent() {
        let event = Event::new(EventType::StockFailed, "o", &serde_json::json!({}));
        assert!(matches!(reason_of(&event), Err(HandlerError::Permanent(_))));
    }
}
