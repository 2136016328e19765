//! The order group's projection: keeps each order's status and history from the events.
//!
//! Invariant: a status never moves backwards, whatever order or how often events arrive (the
//! rules are core's `project.lua`, applied in one step with the history entry). A stock or
//! payment failure cancels the order and publishes `OrderCancelled` in that same step. Entries
//! their producer already projected (`projected`, see `fulfillment_core::saga::projection`) are
//! passed over.
//!
//! Its own crate, below the order service's API, so the retry worker (which must run every
//! group's handler) links the projection and not the whole HTTP API.

use fulfillment_core::saga::projection::{self, Projected};
use fulfillment_core::{
    Delivery, Event, EventHandler, EventType, Handled, HandlerError, HandlerFuture, Redis, Service,
};
use fulfillment_events::events::{EventDeadLettered, OrderCancelled};
use fulfillment_redis::script_batch::{BatchedScript, ScriptCall};
use std::sync::LazyLock;

pub use fulfillment_core::saga::projection::HistoryEntry;
pub use fulfillment_events::states::OrderStatus;

static PROJECT: LazyLock<BatchedScript> = LazyLock::new(|| {
    BatchedScript::with_library(
        "project_order",
        projection::LIBRARY.as_str(),
        include_str!("scripts/project_order.lua"),
    )
});

/// Longest `status_reason` kept from a dead letter's error.
const MAX_REASON_LEN: usize = 200;

/// Records placed → final time in `fulfillment_order_completion_seconds`.
pub fn observe_completion(status: OrderStatus, created_ms: &str) {
    projection::observe_completion(status, created_ms);
}

#[derive(Debug, Clone)]
pub struct OrderProjection {
    redis: Redis,
}

impl OrderProjection {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    async fn project(&self, delivery: Delivery<'_>) -> Result<Handled, HandlerError> {
        let event = delivery.event;
        let reason = reason_of(event)?;
        let cancellation = match event.event_type {
            EventType::StockFailed | EventType::PaymentFailed => {
                Some(self.cancellation(&delivery, &reason).await?)
            }
            EventType::OrderPlaced
            | EventType::StockReserved
            | EventType::PaymentProcessed
            | EventType::ShipmentPrepared
            | EventType::OrderCancelled
            | EventType::StockReleased
            | EventType::PaymentRefunded
            | EventType::NotificationSent
            | EventType::NotificationFailed
            | EventType::EventDeadLettered => None,
        };
        let history = projection::history_json(
            event,
            delivery.stream_id,
            delivery.consumer,
            delivery.attempt,
        );
        let partition = delivery.partition;
        let space = &partition.keys;
        let mut invocation = ScriptCall::new();
        projection::push_keys(&mut invocation, space, &partition.stream, &event.order_id);
        let cancellation = cancellation.map(|c| c.to_fields_json()).unwrap_or_default();
        projection::push_args(&mut invocation, event, &history, &reason, &cancellation);
        let projected: Projected = self.redis.run_script(&PROJECT, space, invocation).await?;
        match projected {
            Projected::Changed { status, created_ms } => {
                tracing::debug!(status = status.as_str(), "order status changed");
                if status.is_final() {
                    observe_completion(status, &created_ms);
                }
            }
            Projected::Unknown => {
                tracing::warn!("event for an order this service never placed; ignored")
            }
            Projected::Unchanged | Projected::Final => {}
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
            .arg(delivery.partition.keys.order(&event.order_id))
            .arg("customer_email")
            .query_async(&mut conn)
            .await?;
        Ok(delivery.follow_up(&OrderCancelled {
            reason: reason.to_owned(),
            customer_email: email.unwrap_or_default(),
        }))
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
        EventType::OrderPlaced
        | EventType::StockReserved
        | EventType::PaymentProcessed
        | EventType::ShipmentPrepared
        | EventType::StockReleased
        | EventType::PaymentRefunded
        | EventType::NotificationSent
        | EventType::NotificationFailed => String::new(),
    })
}

impl EventHandler for OrderProjection {
    fn service(&self) -> Service {
        Service::Order
    }

    fn handles(&self, _event_type: EventType) -> bool {
        true
    }

    fn skips_projected(&self) -> bool {
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

/// Builds the projection as the order service does.
pub fn handler(redis: Redis) -> OrderProjection {
    OrderProjection::new(redis)
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
    fn statuses_round_trip_and_finals_are_final() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert!(OrderStatus::Cancelled.is_final() && !OrderStatus::Failed.is_final());
        assert_eq!(OrderStatus::parse("SHIPPED"), None);
    }

    #[test]
    fn a_cancellation_without_reason_is_permanent() {
        let event = Event::new(EventType::StockFailed, "o", &serde_json::json!({}));
        assert!(matches!(reason_of(&event), Err(HandlerError::Permanent(_))));
    }
}
