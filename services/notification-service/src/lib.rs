//! Notification: tells the customer their order is confirmed (on `ShipmentPrepared`) or
//! cancelled (on `OrderCancelled`).
//!
//! Invariant: once per order and kind, however often the event is delivered, and never both kinds
//! for one order: the notification's hash moves from nothing to `sent` in the script that
//! publishes `NotificationSent`, only while no notification of the other kind was sent and, for a
//! confirmation, only while the order's label is live (not voided, not cancelled). Only the
//! delivery that made that move writes the message. No real mail is sent; the message is logged.

use fulfillment_core::saga::transition::{Guard, Recorder, Step, StepOutcome, transition};
use fulfillment_core::{
    Delivery, EventHandler, EventType, Handled, HandlerError, HandlerFuture, Redis, Service,
};
use fulfillment_events::events::{NotificationSent, OrderCancelled, ShipmentPrepared};
use fulfillment_events::keys;

use fulfillment_events::states::{NotificationKind, NotificationState, ShipmentState};

/// The notification group's handler.
#[derive(Debug, Clone)]
pub struct NotificationHandler {
    redis: Redis,
}

impl NotificationHandler {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    async fn notify(&self, delivery: Delivery<'_>) -> Result<Handled, HandlerError> {
        let event = delivery.event;
        let (kind, to) = match kind_of(event.event_type) {
            Some(kind @ NotificationKind::OrderConfirmed) => {
                (kind, event.payload_as::<ShipmentPrepared>()?.customer_email)
            }
            Some(kind @ NotificationKind::OrderCancelled) => {
                (kind, event.payload_as::<OrderCancelled>()?.customer_email)
            }
            // Never delivered: the consumer acknowledges other types unread.
            None => return Ok(Handled::Done),
        };
        let sent = delivery.follow_up(&NotificationSent {
            kind,
            to: to.clone(),
        });
        let counter = keys::counter::notifications(kind.as_str());
        let order_id = event.order_id.as_str();
        let mut guards = vec![Guard::new::<NotificationState>(
            delivery
                .partition
                .keys
                .notification(order_id, kind.other().as_str()),
            &[None],
        )];
        if kind == NotificationKind::OrderConfirmed {
            guards.push(Guard::new(
                delivery.partition.keys.shipment(order_id),
                &[Some(ShipmentState::Labelled)],
            ));
        }
        let outcome = transition(
            &self.redis,
            delivery.partition,
            &Step {
                order_id: &event.order_id,
                key: delivery
                    .partition
                    .keys
                    .notification(&event.order_id, kind.as_str()),
                from: &[None],
                to: NotificationState::Sent,
                event: Some(&sent),
                event_field: "event",
                counter: Some(&counter),
                facts: &[],
                guards: &guards,
                recorder: Some(Recorder {
                    consumer: delivery.consumer,
                    attempt: delivery.attempt,
                }),
            },
        )
        .await?;
        match outcome {
            StepOutcome::Applied { .. } => {
                tracing::debug!(
                    kind = kind.as_str(),
                    to = mask_email(&to).as_str(),
                    "notification sent"
                )
            }
            StepOutcome::Blocked { guard_state } => tracing::warn!(
                kind = kind.as_str(),
                guard_state = guard_state.as_str(),
                "not sent: the customer was told the other outcome, or the label is not live"
            ),
            StepOutcome::Repeated | StepOutcome::Skipped { .. } | StepOutcome::OrderGone => {}
        }
        Ok(Handled::Done)
    }
}

/// What the customer is told on an event; every event type is named, so a new one must be given
/// a place here. `handles` and `handle` both read this one list.
fn kind_of(event_type: EventType) -> Option<NotificationKind> {
    match event_type {
        EventType::ShipmentPrepared => Some(NotificationKind::OrderConfirmed),
        EventType::OrderCancelled => Some(NotificationKind::OrderCancelled),
        EventType::OrderPlaced
        | EventType::StockReserved
        | EventType::StockFailed
        | EventType::PaymentProcessed
        | EventType::PaymentFailed
        | EventType::StockReleased
        | EventType::PaymentRefunded
        | EventType::NotificationSent
        | EventType::EventDeadLettered => None,
    }
}

impl EventHandler for NotificationHandler {
    fn service(&self) -> Service {
        Service::Notification
    }

    fn handles(&self, event_type: EventType) -> bool {
        kind_of(event_type).is_some()
    }

    fn handle<'a>(&'a self, delivery: Delivery<'a>) -> HandlerFuture<'a> {
        Box::pin(self.notify(delivery))
    }
}

/// `alice@example.com` → `a***@example.com`: logs name the recipient without exposing it.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// Builds the handler as the service binary does.
pub fn handler(redis: Redis) -> NotificationHandler {
    NotificationHandler::new(redis)
}

#[cfg(test)]
mod tests {
    #[test]
    fn emails_are_masked() {
        assert_eq!(super::mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(super::mask_email("nonsense"), "***");
    }
}
