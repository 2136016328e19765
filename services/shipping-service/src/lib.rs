//! Shipping: prepares the shipment label of a paid order.
//!
//! Invariant: one label per order, ever. Creating the label is one atomic check-and-create in
//! Redis (the order's shipment hash moves from nothing to `labelled` in the same script that
//! publishes `ShipmentPrepared`), so neither a repeated `PaymentProcessed` nor two replicas racing
//! can make a second one. A cancellation that arrives first leaves `cancelled`, and no label is
//! made afterwards (the cancel request itself leaves `cancelled` here, and is refused once a label
//! exists); a cancellation that still meets a label (one recorded before that rule) voids it.

use fulfillment_core::saga::transition::{Recorder, Step, StepOutcome, transition};
use fulfillment_core::{
    Delivery, EventHandler, EventType, Handled, HandlerError, HandlerFuture, Redis, Service,
};
use fulfillment_events::events::{PaymentProcessed, ShipmentPrepared};
use fulfillment_events::keys;
use fulfillment_events::states::ShipmentState;
use uuid::Uuid;

/// The shipping group's handler.
#[derive(Debug, Clone)]
pub struct ShippingHandler {
    redis: Redis,
}

impl ShippingHandler {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    async fn prepare_label(&self, delivery: Delivery<'_>) -> Result<Handled, HandlerError> {
        let event = delivery.event;
        let paid: PaymentProcessed = event.payload_as()?;
        let label_id = Uuid::new_v4().to_string();
        let tracking_number = tracking_number();
        let prepared = delivery.follow_up(&ShipmentPrepared {
            label_id: label_id.clone(),
            tracking_number: tracking_number.clone(),
            customer_email: paid.customer_email,
        });
        let outcome = transition(
            &self.redis,
            delivery.partition,
            &Step {
                order_id: &event.order_id,
                key: delivery.partition.keys.shipment(&event.order_id),
                from: &[None],
                to: ShipmentState::Labelled,
                event: Some(&prepared),
                event_field: "event",
                counter: Some(keys::counter::LABELS_CREATED),
                facts: &[
                    ("label_id", &label_id),
                    ("tracking_number", &tracking_number),
                ],
                guards: &[],
                recorder: Some(Recorder {
                    consumer: delivery.consumer,
                    attempt: delivery.attempt,
                }),
            },
        )
        .await?;
        match outcome {
            StepOutcome::Applied { .. } => tracing::debug!(label_id, "shipment label created"),
            StepOutcome::Repeated => {
                tracing::debug!("label exists; ShipmentPrepared published again unless trimmed")
            }
            StepOutcome::Skipped { state } => {
                tracing::debug!(
                    state = state.map_or("-", ShipmentState::as_str),
                    "order cancelled; no label"
                )
            }
            StepOutcome::Blocked { guard_state } => {
                tracing::debug!(state = guard_state.as_str(), "order cancelled; no label")
            }
            StepOutcome::OrderGone => tracing::debug!("order removed by retention; no label"),
        }
        Ok(Handled::Done)
    }

    async fn cancel(&self, delivery: Delivery<'_>) -> Result<Handled, HandlerError> {
        let order_id = delivery.event.order_id.as_str();
        let step = |from, to| Step {
            order_id,
            key: delivery.partition.keys.shipment(order_id),
            from,
            to,
            event: None,
            event_field: "",
            counter: None,
            facts: &[],
            guards: &[],
            recorder: None,
        };
        let first = transition(
            &self.redis,
            delivery.partition,
            &step(&[None], ShipmentState::Cancelled),
        )
        .await?;
        if first
            == (StepOutcome::Skipped {
                state: Some(ShipmentState::Labelled),
            })
        {
            transition(
                &self.redis,
                delivery.partition,
                &step(&[Some(ShipmentState::Labelled)], ShipmentState::Voided),
            )
            .await?;
            tracing::warn!("order cancelled after its label was made; label voided");
        }
        Ok(Handled::Done)
    }
}

/// What this group does with an event; every event type is named, so a new one must be given
/// a place here. `handles` and `handle` both read this one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Creates the order's one label.
    PrepareLabel,
    /// Cancels the shipment, voiding a label already made.
    Cancel,
}

fn action(event_type: EventType) -> Option<Action> {
    match event_type {
        EventType::PaymentProcessed => Some(Action::PrepareLabel),
        EventType::OrderCancelled => Some(Action::Cancel),
        EventType::OrderPlaced
        | EventType::StockReserved
        | EventType::StockFailed
        | EventType::PaymentFailed
        | EventType::ShipmentPrepared
        | EventType::StockReleased
        | EventType::PaymentRefunded
        | EventType::NotificationSent
        | EventType::NotificationFailed
        | EventType::EventDeadLettered => None,
    }
}

impl EventHandler for ShippingHandler {
    fn service(&self) -> Service {
        Service::Shipping
    }

    fn handles(&self, event_type: EventType) -> bool {
        action(event_type).is_some()
    }

    fn handle<'a>(&'a self, delivery: Delivery<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            match action(delivery.event.event_type) {
                Some(Action::PrepareLabel) => self.prepare_label(delivery).await,
                Some(Action::Cancel) => self.cancel(delivery).await,
                // Never delivered: the consumer passes other types over.
                None => Ok(Handled::Done),
            }
        })
    }
}

/// A carrier-style tracking number: `FUL` and 12 digits.
fn tracking_number() -> String {
    format!("FUL{:012}", rand::random_range(0..1_000_000_000_000u64))
}

/// Builds the handler as the service binary does.
pub fn handler(redis: Redis) -> ShippingHandler {
    ShippingHandler::new(redis)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tracking_numbers_have_a_fixed_shape() {
        let t = super::tracking_number();
        assert_eq!(t.len(), 15);
        assert!(t.starts_with("FUL"));
        assert!(t[3..].bytes().all(|b| b.is_ascii_digit()));
    }
}
