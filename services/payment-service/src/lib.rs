//! Payment: charges an order once its stock is reserved, refunds it when it is cancelled after
//! the charge.
//!
//! Invariant: one charge per order, ever, and every money movement announced by an event. The
//! order's payment hash moves `charging → charged | failed → refunded` (or straight to `cancelled`
//! when the cancellation comes first), each step in one script with its event; the gateway is
//! called with the order id as idempotency key, so a repeated or racing delivery can call it again
//! without charging twice. Transient gateway failures are retried in-process with exponential
//! backoff and jitter; giving up voids the payment at the gateway first, so a slower attempt still
//! charging (a retry that overtook it, a duplicate `StockReserved`) can no longer charge after
//! `PaymentFailed`, and a charge that went through first turns the outcome into `PaymentProcessed`.

pub mod gateway;

use fulfillment_core::runtime::backoff::Backoff;
use fulfillment_core::saga::transition::{Recorder, Step, StepOutcome, transition};
use fulfillment_core::settings::{Env, SettingsError};
use fulfillment_core::{
    Delivery, EventHandler, EventType, Handled, HandlerError, HandlerFuture, Redis, Service,
};
use fulfillment_events::events::{
    OrderCancelled, PaymentFailed, PaymentProcessed, PaymentRefunded, StockReserved,
};
use fulfillment_events::keys::Partition;
use fulfillment_events::states::PaymentState;
use gateway::{ChargeError, TestGateway, Void};
use std::time::Duration;
use uuid::Uuid;

/// How charges are tried: the test gateway's injected failures, and the in-process retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChargeSettings {
    /// `PAYMENT_FAILURE_RATE`: 0..1, a charge attempt fails transiently. Default 0.
    pub failure_rate: f64,
    /// `PAYMENT_MAX_ATTEMPTS`: charge attempts before the payment is given up. Default 3.
    pub max_attempts: u32,
    /// `PAYMENT_BACKOFF_MS`: base of the exponential backoff between attempts: the first pause is
    /// between it and twice it. Default 50.
    pub backoff_ms: u64,
}

impl Default for ChargeSettings {
    fn default() -> Self {
        Self {
            failure_rate: 0.0,
            max_attempts: 3,
            backoff_ms: 50,
        }
    }
}

impl ChargeSettings {
    pub fn read(env: &Env) -> Result<Self, SettingsError> {
        Ok(Self {
            failure_rate: env.rate("PAYMENT_FAILURE_RATE")?,
            max_attempts: env.ranged("PAYMENT_MAX_ATTEMPTS", 3, 1, 100)?,
            backoff_ms: env.ranged("PAYMENT_BACKOFF_MS", 50, 0, 60_000)?,
        })
    }

    /// A fresh backoff for one charge's attempts.
    fn backoff(&self) -> Backoff {
        let step = Duration::from_millis(self.backoff_ms.saturating_mul(2));
        Backoff::new(step, step.saturating_mul(1024))
    }
}

/// The payment group's handler.
#[derive(Debug, Clone)]
pub struct PaymentHandler {
    redis: Redis,
    gateway: TestGateway,
    charges: ChargeSettings,
}

impl PaymentHandler {
    pub fn new(redis: Redis, charges: ChargeSettings) -> Self {
        Self {
            gateway: TestGateway::new(redis.clone(), charges.failure_rate),
            redis,
            charges,
        }
    }

    async fn step(
        &self,
        partition: &Partition,
        step: Step<'_, PaymentState>,
    ) -> Result<StepOutcome<PaymentState>, HandlerError> {
        Ok(transition(&self.redis, partition, &step).await?)
    }

    /// Publishes the stored event of a finished payment again (a repeated delivery).
    async fn announce_again(
        &self,
        partition: &Partition,
        order_id: &str,
        state: PaymentState,
        field: &str,
    ) -> Result<(), HandlerError> {
        self.step(
            partition,
            Step {
                order_id,
                key: partition.keys.payment(order_id),
                from: &[],
                to: state,
                event: None,
                event_field: field,
                counter: None,
                facts: &[],
                guards: &[],
                recorder: None,
            },
        )
        .await?;
        Ok(())
    }

    async fn charge(&self, delivery: Delivery<'_>) -> Result<Handled, HandlerError> {
        let event = delivery.event;
        let partition = delivery.partition;
        let order_id = event.order_id.as_str();
        let reserved: StockReserved = event.payload_as()?;
        let payment_id = payment_id(order_id);
        let amount = reserved.amount.to_string();
        let begun = self
            .step(
                partition,
                Step {
                    order_id,
                    key: partition.keys.payment(order_id),
                    from: &[None, Some(PaymentState::Charging)],
                    to: PaymentState::Charging,
                    event: None,
                    event_field: "",
                    counter: None,
                    facts: &[("payment_id", &payment_id), ("amount", &amount)],
                    guards: &[],
                    recorder: None,
                },
            )
            .await?;
        if begun == StepOutcome::OrderGone {
            tracing::debug!("order removed by retention; nothing charged");
            return Ok(Handled::Done);
        }
        if let StepOutcome::Skipped { state } = begun {
            match state {
                Some(state @ (PaymentState::Charged | PaymentState::Failed)) => {
                    self.announce_again(partition, order_id, state, "event")
                        .await?;
                }
                Some(PaymentState::Charging | PaymentState::Refunded | PaymentState::Cancelled)
                | None => {}
            }
            tracing::debug!(
                state = state.map_or("-", PaymentState::as_str),
                "payment already settled"
            );
            return Ok(Handled::Done);
        }

        let charged = self
            .charge_with_retries(
                order_id,
                &payment_id,
                reserved.amount,
                &reserved.payment_token,
                delivery.stopping,
            )
            .await;
        // Stopping between attempts: as if the process had crashed there (the payment stays
        // `charging`, and whoever handles the entry next charges it with the same payment id).
        let Some(result) = charged else {
            return Err(HandlerError::Transient(
                "stopping between charge attempts; left pending".into(),
            ));
        };
        let failure = match result {
            Ok(()) => None,
            Err(ChargeError::Unavailable(reason)) => {
                // Give the payment up at the gateway before announcing the failure, so no attempt
                // still under way can charge after it; a charge that went through first wins.
                match self.gateway.void(order_id, &payment_id).await {
                    Ok(Void::Voided) => Some(ChargeError::Unavailable(reason)),
                    Ok(Void::AlreadyCharged) => {
                        tracing::debug!("another attempt's charge went through; payment charged");
                        None
                    }
                    Err(e) => {
                        return Err(HandlerError::Transient(format!(
                            "cannot give the payment up: {e}"
                        )));
                    }
                }
            }
            Err(e) => Some(e),
        };
        let (to, outcome) = match failure {
            None => (
                PaymentState::Charged,
                delivery.follow_up(&PaymentProcessed {
                    payment_id: payment_id.clone(),
                    amount: reserved.amount,
                    customer_email: reserved.customer_email.clone(),
                }),
            ),
            Some(e) => (
                PaymentState::Failed,
                delivery.follow_up(&PaymentFailed {
                    reason: e.reason().to_owned(),
                }),
            ),
        };
        let finished = self
            .step(
                partition,
                Step {
                    order_id,
                    key: partition.keys.payment(order_id),
                    from: &[Some(PaymentState::Charging)],
                    to,
                    event: Some(&outcome),
                    event_field: "event",
                    counter: None,
                    facts: &[],
                    guards: &[],
                    recorder: Some(Recorder {
                        consumer: delivery.consumer,
                        attempt: delivery.attempt,
                    }),
                },
            )
            .await?;
        match finished {
            StepOutcome::Skipped { state } if to == PaymentState::Charged => {
                // The gateway's void makes this impossible; should it happen anyway, the money that
                // moved is given back and announced, never silently.
                tracing::error!(
                    state = state.map_or("-", PaymentState::as_str),
                    "charged after the payment was settled; refunding with PaymentRefunded"
                );
                self.refund_charge(
                    &delivery,
                    order_id,
                    &payment_id,
                    reserved.amount,
                    &[Some(PaymentState::Failed), Some(PaymentState::Cancelled)],
                )
                .await?;
            }
            StepOutcome::Applied { .. }
            | StepOutcome::Repeated
            | StepOutcome::Skipped { .. }
            | StepOutcome::OrderGone
            | StepOutcome::Blocked { .. } => {
                tracing::debug!(outcome = to.as_str(), "payment settled")
            }
        }
        Ok(Handled::Done)
    }

    /// Refunds the order's charge at the gateway and moves its payment from one of `from` to
    /// `refunded` with `PaymentRefunded`, in that order: a failure between them leaves the state,
    /// and the retry refunds again (once, by the idempotency key) and announces it.
    async fn refund_charge(
        &self,
        delivery: &Delivery<'_>,
        order_id: &str,
        payment_id: &str,
        amount: u64,
        from: &[Option<PaymentState>],
    ) -> Result<(), HandlerError> {
        self.gateway
            .refund(order_id, payment_id, amount)
            .await
            .map_err(HandlerError::Transient)?;
        let refunded = delivery.follow_up(&PaymentRefunded {
            payment_id: payment_id.to_owned(),
            amount,
        });
        self.step(
            delivery.partition,
            Step {
                order_id,
                key: delivery.partition.keys.payment(order_id),
                from,
                to: PaymentState::Refunded,
                event: Some(&refunded),
                event_field: "refund_event",
                counter: None,
                facts: &[],
                guards: &[],
                recorder: None,
            },
        )
        .await?;
        tracing::debug!(amount, "payment refunded");
        Ok(())
    }

    async fn charge_with_retries(
        &self,
        order_id: &str,
        payment_id: &str,
        amount: u64,
        token: &str,
        stopping: &tokio_util::sync::CancellationToken,
    ) -> Option<Result<(), ChargeError>> {
        let mut attempt = 1;
        let mut backoff = self.charges.backoff();
        loop {
            match self
                .gateway
                .charge(order_id, payment_id, amount, token)
                .await
            {
                Err(ChargeError::Unavailable(reason)) if attempt < self.charges.max_attempts => {
                    tracing::warn!(
                        attempt,
                        reason = reason.as_str(),
                        "charge failed; backing off"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stopping.cancelled() => return None,
                    }
                    attempt += 1;
                }
                other => return Some(other),
            }
        }
    }

    async fn refund(&self, delivery: Delivery<'_>) -> Result<Handled, HandlerError> {
        let event = delivery.event;
        let partition = delivery.partition;
        let order_id = event.order_id.as_str();
        let _: OrderCancelled = event.payload_as()?;
        let cancelled = self
            .step(
                partition,
                Step {
                    order_id,
                    key: partition.keys.payment(order_id),
                    from: &[None],
                    to: PaymentState::Cancelled,
                    event: None,
                    event_field: "",
                    counter: None,
                    facts: &[],
                    guards: &[],
                    recorder: None,
                },
            )
            .await?;
        let state = match cancelled {
            StepOutcome::Skipped { state } => state,
            StepOutcome::OrderGone => {
                tracing::debug!("order removed by retention; nothing to refund");
                return Ok(Handled::Done);
            }
            StepOutcome::Applied { .. } | StepOutcome::Repeated | StepOutcome::Blocked { .. } => {
                tracing::debug!("cancelled before any charge; nothing to refund");
                return Ok(Handled::Done);
            }
        };
        match state {
            Some(PaymentState::Charging) => Err(HandlerError::Transient(
                "a charge is in progress; refund once it settles".into(),
            )),
            Some(PaymentState::Charged | PaymentState::Refunded) => {
                let mut conn = self.redis.conn();
                let (payment_id, amount): (Option<String>, Option<u64>) = redis::cmd("HMGET")
                    .arg(partition.keys.payment(order_id))
                    .arg("payment_id")
                    .arg("amount")
                    .query_async(&mut conn)
                    .await?;
                let payment_id = payment_id.unwrap_or_else(|| self::payment_id(order_id));
                let amount = amount.unwrap_or_default();
                self.refund_charge(
                    &delivery,
                    order_id,
                    &payment_id,
                    amount,
                    &[Some(PaymentState::Charged)],
                )
                .await?;
                Ok(Handled::Done)
            }
            // Nothing was charged (declined, given up, or cancelled first), or the state is
            // already cancelled: nothing to give back.
            Some(PaymentState::Failed | PaymentState::Cancelled) | None => Ok(Handled::Done),
        }
    }
}

/// What this group does with an event; every event type is named, so a new one must be given
/// a place here. `handles` and `handle` both read this one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Charges the order once.
    Charge,
    /// Refunds (or voids) a charge made.
    Refund,
}

fn action(event_type: EventType) -> Option<Action> {
    match event_type {
        EventType::StockReserved => Some(Action::Charge),
        EventType::OrderCancelled => Some(Action::Refund),
        EventType::OrderPlaced
        | EventType::StockFailed
        | EventType::PaymentProcessed
        | EventType::PaymentFailed
        | EventType::ShipmentPrepared
        | EventType::StockReleased
        | EventType::PaymentRefunded
        | EventType::NotificationSent
        | EventType::NotificationFailed
        | EventType::EventDeadLettered => None,
    }
}

impl EventHandler for PaymentHandler {
    fn service(&self) -> Service {
        Service::Payment
    }

    fn handles(&self, event_type: EventType) -> bool {
        action(event_type).is_some()
    }

    fn handle<'a>(&'a self, delivery: Delivery<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            match action(delivery.event.event_type) {
                Some(Action::Charge) => self.charge(delivery).await,
                Some(Action::Refund) => self.refund(delivery).await,
                // Never delivered: the consumer passes other types over.
                None => Ok(Handled::Done),
            }
        })
    }
}

/// The order's payment id: derived from the order id, so every attempt names the same payment.
pub fn payment_id(order_id: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("payment:{order_id}").as_bytes(),
    )
    .to_string()
}

/// Builds the handler as the service binary does.
pub fn handler(redis: Redis, charges: ChargeSettings) -> PaymentHandler {
    PaymentHandler::new(redis, charges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_backs_off_from_its_base_doubling() {
        let mut backoff = ChargeSettings {
            backoff_ms: 100,
            ..ChargeSettings::default()
        }
        .backoff();
        for range in [100..=200, 200..=400, 400..=800] {
            let d = backoff.next_delay().as_millis() as u64;
            assert!(range.contains(&d), "{d}");
        }
    }

    #[test]
    fn a_payment_id_is_stable_per_order() {
        assert_eq!(payment_id("o-1"), payment_id("o-1"));
        assert_ne!(payment_id("o-1"), payment_id("o-2"));
    }
}
