//! Inventory: reserves an order's stock on `OrderPlaced` and releases it on `OrderCancelled`.
//!
//! Invariant: an order's items are reserved all together or not at all, at most once, in one
//! script that records the outcome with the reservation (`reserve_stock.lua`); a release happens
//! only after a reservation and only once (`release_stock.lua`); no outcome is published without
//! its effect, and none is lost. On one Redis with plain names the scripts publish the outcome in
//! the same step. Otherwise stock (the catalog) and the order live in different slots, and
//! inventory is an outbox: the script records the outcome where the stock is, the outcome is on
//! enough replicas (`REDIS_WAIT_REPLICAS`), then it is published on the order's partition; a
//! redelivery gets the stored outcome back and publishes it again (once, by its event id, for
//! every reader downstream). The service is deliberately unstable on demand:
//! `INVENTORY_FAILURE_RATE` fails a delivery before any side effect, `INVENTORY_ACK_LOSS_RATE`
//! reserves and publishes, then withholds the acknowledgement so the entry is delivered again.

use fulfillment_core::saga::projection;
use fulfillment_core::saga::transition::{Recorder, Step, StepOutcome, transition};
use fulfillment_core::settings::{Env, SettingsError};
use fulfillment_core::{
    Delivery, Event, EventHandler, EventType, Handled, HandlerError, HandlerFuture, Redis, Service,
};
use fulfillment_events::events::{
    OrderPlaced, StockFailed, StockLine, StockReleased, StockReserved,
};
use fulfillment_events::keys;
use fulfillment_events::keys::Partition;
use fulfillment_events::states::ReservationState;
use fulfillment_redis::script_batch::{BatchedScript, ScriptCall};
use fulfillment_redis::script_reply::Tagged;
use redis::{FromRedisValue, ParsingError, Script, Value};
use std::collections::BTreeMap;
use std::sync::LazyLock;

static RESERVE: LazyLock<BatchedScript> = LazyLock::new(|| {
    BatchedScript::with_library(
        "reserve_stock",
        projection::LIBRARY.as_str(),
        include_str!("scripts/reserve_stock.lua"),
    )
});
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}\n{}",
        fulfillment_core::saga::publish::LIBRARY.as_str(),
        include_str!("scripts/release_stock.lua")
    ))
});

/// The failure injection of the seed's unstable inventory service.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Instability {
    /// Share of deliveries that fail before any side effect.
    pub failure_rate: f64,
    /// Share of fresh reservations whose acknowledgement is lost.
    pub ack_loss_rate: f64,
}

impl Instability {
    /// `INVENTORY_FAILURE_RATE` and `INVENTORY_ACK_LOSS_RATE`, each 0..1, default 0.
    pub fn read(env: &Env) -> Result<Self, SettingsError> {
        Ok(Self {
            failure_rate: env.rate("INVENTORY_FAILURE_RATE")?,
            ack_loss_rate: env.rate("INVENTORY_ACK_LOSS_RATE")?,
        })
    }
}

/// The inventory group's handler.
#[derive(Debug, Clone)]
pub struct InventoryHandler {
    redis: Redis,
    instability: Instability,
}

impl InventoryHandler {
    pub fn new(redis: Redis, instability: Instability) -> Self {
        Self { redis, instability }
    }

    /// Whether the script publishes itself (one Redis, plain names: catalog and order together).
    fn publishes_in_script(&self) -> bool {
        self.redis.layout().is_plain()
    }

    async fn reserve(&self, delivery: Delivery<'_>) -> Result<Handled, HandlerError> {
        let event = delivery.event;
        let partition = delivery.partition;
        let placed: OrderPlaced = event.payload_as()?;
        let lines = merge_lines(&placed);
        if lines.is_empty() {
            return Err(HandlerError::Permanent("OrderPlaced has no items".into()));
        }
        let in_script = self.publishes_in_script();
        if !in_script && !self.order_exists(partition, &event.order_id).await? {
            tracing::debug!("order removed by retention; nothing reserved");
            return Ok(Handled::Done);
        }
        let mut reserved = delivery.follow_up(&StockReserved {
            items: lines.clone(),
            amount: placed.total,
            payment_token: placed.payment_token.clone(),
            customer_email: placed.customer_email.clone(),
        });
        // Publishing in the script, it records a StockReserved in the order's status and history
        // too (see `fulfillment_core::saga::projection`); the outbox's transition does that otherwise.
        reserved.projected = in_script;
        // The payload of StockFailed is filled in by the script, which knows the short product.
        let failed = delivery.follow_up_without_payload::<StockFailed>();

        let catalog = &self.redis.layout().catalog;
        let mut invocation = ScriptCall::new();
        invocation.key(catalog.reservation(&event.order_id));
        for line in &lines {
            invocation.key(catalog.product(&line.product_id));
        }
        if in_script {
            invocation
                .key(&partition.stream)
                .key(partition.keys.counters())
                .key(partition.keys.order(&event.order_id));
            projection::push_keys(
                &mut invocation,
                &partition.keys,
                &partition.stream,
                &event.order_id,
            );
        }
        invocation.arg(lines.len());
        for line in &lines {
            invocation.arg(line.quantity);
        }
        for line in &lines {
            invocation.arg(&line.product_id);
        }
        let reserved_fields = reserved.to_fields();
        // Publishing in the script, the ledger keeps the entry's id; the outbox needs the event.
        let stored = if in_script {
            String::new()
        } else {
            fulfillment_events::events::fields_json(&reserved_fields)
        };
        invocation
            .arg(serde_json::to_string(&lines).unwrap_or_default())
            .arg(stored)
            .arg(failed.header_fields_json());
        if in_script {
            let (before, after) =
                projection::history_json_around_id(&reserved, delivery.consumer, delivery.attempt);
            invocation.arg(projection::ARG_COUNT + 1);
            projection::push_args(&mut invocation, &reserved, &before, "", "");
            invocation.arg(after);
        } else {
            invocation.arg(0);
        }
        for (name, value) in &reserved_fields {
            invocation.arg(*name).arg(value);
        }
        let reservation: Reservation = self.redis.run_script(&RESERVE, catalog, invocation).await?;
        let outcome = match &reservation {
            Reservation::Reserved { event } => {
                tracing::debug!(items = lines.len(), "stock reserved");
                Some((ReservationState::Reserved, event.as_str()))
            }
            Reservation::Failed { reason, event } => {
                tracing::debug!(reason = reason.as_str(), "stock not reserved");
                Some((ReservationState::Failed, event.as_str()))
            }
            Reservation::Repeated { state, event } => {
                tracing::debug!(
                    state = state.as_str(),
                    "already handled; outcome published again"
                );
                // A ledger released since is announced as the reservation it was (the
                // order's own state has moved on, so the step is skipped there).
                let recorded = match state {
                    ReservationState::Failed => ReservationState::Failed,
                    ReservationState::Reserved | ReservationState::Released => {
                        ReservationState::Reserved
                    }
                };
                (!event.is_empty()).then_some((recorded, event.as_str()))
            }
            Reservation::OrderGone => {
                tracing::debug!("order removed by retention; nothing reserved");
                None
            }
            Reservation::CancelledFirst => {
                tracing::debug!("order cancelled before its reservation; nothing reserved");
                None
            }
        };
        if !in_script && let Some((state, event)) = outcome {
            self.publish(
                &delivery,
                &[None],
                state,
                "event",
                event,
                (state == ReservationState::Reserved).then_some(keys::counter::RESERVATIONS),
            )
            .await?;
        }
        if matches!(reservation, Reservation::Reserved { .. })
            && roll(self.instability.ack_loss_rate)
        {
            return Ok(Handled::KeepPending);
        }
        Ok(Handled::Done)
    }

    async fn release(&self, delivery: Delivery<'_>) -> Result<Handled, HandlerError> {
        let event = delivery.event;
        let partition = delivery.partition;
        let in_script = self.publishes_in_script();
        if !in_script && !self.order_exists(partition, &event.order_id).await? {
            tracing::debug!("order removed by retention; nothing to release");
            return Ok(Handled::Done);
        }
        let released = delivery.follow_up_without_payload::<StockReleased>();
        let catalog = &self.redis.layout().catalog;
        let ledger = catalog.reservation(&event.order_id);
        let mut conn = self.redis.conn();
        // The reservation's products (fixed once reserved), so the script names every key it
        // touches; a reservation made between this read and the script is read again.
        let outcome = loop {
            let items: Option<String> = redis::cmd("HGET")
                .arg(&ledger)
                .arg("items")
                .query_async(&mut conn)
                .await?;
            let products: Vec<String> = items
                .and_then(|json| serde_json::from_str::<Vec<StockLine>>(&json).ok())
                .unwrap_or_default()
                .into_iter()
                .map(|line| line.product_id)
                .collect();
            let mut invocation = RELEASE.prepare_invoke();
            invocation.key(&ledger);
            for product in &products {
                invocation.key(catalog.product(product));
            }
            if in_script {
                invocation
                    .key(&partition.stream)
                    .key(partition.keys.order(&event.order_id));
            }
            invocation.arg(products.len());
            for product in &products {
                invocation.arg(product);
            }
            invocation.arg(released.header_fields_json());
            match invocation.invoke_async(&mut conn).await? {
                Release::StaleItems => continue,
                outcome => break outcome,
            }
        };
        tracing::debug!(?outcome, "cancellation handled");
        if !in_script {
            let stored = match &outcome {
                Release::Released { event } | Release::Repeated { event } => event.as_str(),
                Release::Tombstoned
                | Release::NothingHeld
                | Release::OrderGone
                | Release::StaleItems => "",
            };
            if !stored.is_empty() {
                self.publish(
                    &delivery,
                    &[None, Some(ReservationState::Reserved)],
                    ReservationState::Released,
                    "release_event",
                    stored,
                    None,
                )
                .await?;
            }
        }
        Ok(Handled::Done)
    }

    async fn order_exists(
        &self,
        partition: &Partition,
        order_id: &str,
    ) -> redis::RedisResult<bool> {
        redis::cmd("EXISTS")
            .arg(partition.keys.order(order_id))
            .query_async(&mut self.redis.conn())
            .await
    }

    /// The outbox's second half: once the outcome recorded with the stock is on enough replicas,
    /// records it in the order's partition and publishes it there, or publishes it again. A
    /// `StockReserved` is recorded in the order's status and history in the same step.
    async fn publish(
        &self,
        delivery: &Delivery<'_>,
        from: &[Option<ReservationState>],
        to: ReservationState,
        event_field: &str,
        stored: &str,
        counter: Option<&str>,
    ) -> Result<(), HandlerError> {
        self.redis.replicated(&self.redis.layout().catalog).await?;
        let event = Event::from_fields_json(stored)
            .map_err(|e| HandlerError::Permanent(format!("stored outcome unreadable: {e}")))?;
        let partition = delivery.partition;
        let order_id = delivery.event.order_id.as_str();
        let outcome = transition(
            &self.redis,
            partition,
            &Step {
                order_id,
                key: partition.keys.reservation(order_id),
                from,
                to,
                event: Some(&event),
                event_field,
                counter,
                facts: &[],
                guards: &[],
                recorder: Some(Recorder {
                    consumer: delivery.consumer,
                    attempt: delivery.attempt,
                }),
            },
        )
        .await?;
        if let StepOutcome::Skipped { state } = outcome {
            tracing::debug!(
                state = state.map_or("-", ReservationState::as_str),
                to = to.as_str(),
                "outcome not published: the order moved on"
            );
        }
        Ok(())
    }
}

/// What `reserve_stock.lua` did; each outcome with the event it recorded (fields as JSON; empty
/// for a StockReserved the script published itself, whose ledger keeps the entry's id).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reservation {
    Reserved {
        event: String,
    },
    Failed {
        reason: String,
        event: String,
    },
    /// Already handled: the stored outcome (published again when the script publishes).
    Repeated {
        state: ReservationState,
        event: String,
    },
    /// The order was cancelled before its reservation: nothing reserved.
    CancelledFirst,
    /// The order is gone (retention): nothing reserved.
    OrderGone,
}

fulfillment_redis::script_tags! {
    /// What `reserve_stock.lua` answers.
    enum ReserveTag ("reserve_stock.lua") {
        Reserved = "reserved",
        Failed = "failed",
        Repeated = "repeated",
        Cancelled = "cancelled",
        Gone = "gone",
    }
}

fulfillment_redis::script_tags! {
    /// What `release_stock.lua` answers.
    enum ReleaseTag ("release_stock.lua") {
        Released = "released",
        Repeated = "repeated",
        Tombstoned = "tombstoned",
        Nothing = "nothing",
        Gone = "gone",
        StaleItems = "stale_items",
    }
}

impl FromRedisValue for Reservation {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let reply = Tagged::from_redis_value(v)?;
        Ok(match ReserveTag::of(&reply)? {
            ReserveTag::Reserved => Reservation::Reserved {
                event: reply.text(1)?,
            },
            ReserveTag::Failed => Reservation::Failed {
                reason: reply.text(0)?,
                event: reply.text(1)?,
            },
            ReserveTag::Repeated => Reservation::Repeated {
                state: {
                    let state = reply.text(0)?;
                    ReservationState::parse(&state).ok_or_else(|| {
                        ParsingError::from(format!(
                            "reserve_stock.lua: reservation state {state:?}"
                        ))
                    })?
                },
                event: reply.text(1)?,
            },
            ReserveTag::Cancelled => Reservation::CancelledFirst,
            ReserveTag::Gone => Reservation::OrderGone,
        })
    }
}

/// What `release_stock.lua` did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Release {
    Released {
        event: String,
    },
    /// Released before: the stored `StockReleased` (published again when the script publishes).
    Repeated {
        event: String,
    },
    /// No reservation yet: a tombstone keeps a late `OrderPlaced` from reserving.
    Tombstoned,
    /// Nothing was reserved (the reservation failed, or was cancelled before).
    NothingHeld,
    /// The order is gone (retention): nothing to do, nothing written.
    OrderGone,
    /// The products named were not the reservation's (it was made meanwhile): read again.
    StaleItems,
}

impl FromRedisValue for Release {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let reply = Tagged::from_redis_value(v)?;
        Ok(match ReleaseTag::of(&reply)? {
            ReleaseTag::Released => Release::Released {
                event: reply.text(0)?,
            },
            ReleaseTag::Repeated => Release::Repeated {
                event: reply.text(0)?,
            },
            ReleaseTag::Tombstoned => Release::Tombstoned,
            ReleaseTag::Nothing => Release::NothingHeld,
            ReleaseTag::Gone => Release::OrderGone,
            ReleaseTag::StaleItems => Release::StaleItems,
        })
    }
}

/// What this group does with an event; every event type is named, so a new one must be given
/// a place here. `handles` and `handle` both read this one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Reserves the order's stock.
    Reserve,
    /// Releases what was reserved.
    Release,
}

fn action(event_type: EventType) -> Option<Action> {
    match event_type {
        EventType::OrderPlaced => Some(Action::Reserve),
        EventType::OrderCancelled => Some(Action::Release),
        EventType::StockReserved
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

impl EventHandler for InventoryHandler {
    fn service(&self) -> Service {
        Service::Inventory
    }

    fn handles(&self, event_type: EventType) -> bool {
        action(event_type).is_some()
    }

    fn handle<'a>(&'a self, delivery: Delivery<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            if roll(self.instability.failure_rate) {
                return Err(HandlerError::Transient(
                    "injected inventory failure (INVENTORY_FAILURE_RATE)".into(),
                ));
            }
            match action(delivery.event.event_type) {
                Some(Action::Reserve) => self.reserve(delivery).await,
                Some(Action::Release) => self.release(delivery).await,
                // Never delivered: the consumer passes other types over.
                None => Ok(Handled::Done),
            }
        })
    }
}

/// One line per product, quantities added up, so a product listed twice is checked as a whole.
fn merge_lines(placed: &OrderPlaced) -> Vec<StockLine> {
    let mut merged: BTreeMap<&str, u32> = BTreeMap::new();
    for item in &placed.items {
        let q = merged.entry(item.product_id.as_str()).or_default();
        *q = q.saturating_add(item.quantity);
    }
    merged
        .into_iter()
        .map(|(product_id, quantity)| StockLine {
            product_id: product_id.to_owned(),
            quantity,
        })
        .collect()
}

fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

/// Builds the handler as the service binary does.
pub fn handler(redis: Redis, instability: Instability) -> InventoryHandler {
    InventoryHandler::new(redis, instability)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulfillment_events::events::LineItem;

    #[test]
    fn lines_of_one_product_are_added_up() {
        let placed = OrderPlaced {
            customer_id: "c".into(),
            customer_email: "c@example.com".into(),
            items: vec![
                LineItem {
                    product_id: "b".into(),
                    quantity: 1,
                    unit_price: 1,
                },
                LineItem {
                    product_id: "a".into(),
                    quantity: 2,
                    unit_price: 1,
                },
                LineItem {
                    product_id: "b".into(),
                    quantity: 3,
                    unit_price: 1,
                },
            ],
            total: 6,
            payment_token: "tok_visa".into(),
        };
        let lines = merge_lines(&placed);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].product_id, "b");
        assert_eq!(lines[1].quantity, 4);
    }

    #[test]
    fn a_zero_rate_never_fires_and_a_full_rate_always_does() {
        assert!((0..1000).all(|_| !roll(0.0)));
        assert!((0..1000).all(|_| roll(1.0)));
    }
}
