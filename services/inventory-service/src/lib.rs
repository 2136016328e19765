//! Inventory: reserves an order's stock on `OrderPlaced` and releases it on `OrderCancelled`.
//!
//! Invariant: an order's items are reserved all together or not at all, at most once, in one
//! script with the event that announces it (`reserve_stock.lua`); a release happens only after a
//! reservation and only once (`release_stock.lua`). The service is deliberately unstable on demand:
//! `INVENTORY_FAILURE_RATE` fails a delivery before any side effect, `INVENTORY_ACK_LOSS_RATE`
//! reserves and publishes, then withholds the acknowledgement so the entry is delivered again.

use fulfillment_core::events::{OrderPlaced, StockFailed, StockLine, StockReleased, StockReserved};
use fulfillment_core::script_reply::Tagged;
use fulfillment_core::settings::{Env, SettingsError};
use fulfillment_core::{
    Delivery, EventHandler, EventType, Handled, HandlerError, HandlerFuture, Redis, Service,
    Settings, keys,
};
use redis::{FromRedisValue, ParsingError, Script, Value};
use std::collections::BTreeMap;
use std::sync::LazyLock;

static RESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/reserve_stock.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/release_stock.lua")));

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
    stream: String,
    instability: Instability,
}

impl InventoryHandler {
    pub fn new(redis: Redis, settings: &Settings, instability: Instability) -> Self {
        Self {
            redis,
            stream: settings.stream.name.clone(),
            instability,
        }
    }

    async fn reserve(&self, delivery: Delivery<'_>) -> Result<Handled, HandlerError> {
        let event = delivery.event;
        let placed: OrderPlaced = event.payload_as()?;
        let lines = merge_lines(&placed);
        if lines.is_empty() {
            return Err(HandlerError::Permanent("OrderPlaced has no items".into()));
        }
        let reserved = delivery.follow_up(&StockReserved {
            items: lines.clone(),
            amount: placed.total,
            payment_token: placed.payment_token.clone(),
            customer_email: placed.customer_email.clone(),
        });
        // The payload of StockFailed is filled in by the script, which knows the short product.
        let failed = delivery.follow_up_without_payload::<StockFailed>();

        let mut invocation = RESERVE.prepare_invoke();
        invocation
            .key(&self.stream)
            .key(keys::reservation(&event.order_id))
            .key(keys::counters());
        for line in &lines {
            invocation.key(keys::product(&line.product_id));
        }
        invocation.key(keys::order(&event.order_id));
        invocation.arg(lines.len());
        for line in &lines {
            invocation.arg(line.quantity);
        }
        for line in &lines {
            invocation.arg(&line.product_id);
        }
        invocation
            .arg(serde_json::to_string(&lines).unwrap_or_default())
            .arg(reserved.to_fields_json())
            .arg(failed.header_fields_json());
        let mut conn = self.redis.conn();
        match invocation.invoke_async(&mut conn).await? {
            Reservation::Reserved => {
                tracing::info!(items = lines.len(), "stock reserved");
                if roll(self.instability.ack_loss_rate) {
                    return Ok(Handled::KeepPending);
                }
            }
            Reservation::Failed { reason } => {
                tracing::info!(reason = reason.as_str(), "stock not reserved")
            }
            Reservation::Repeated { state } => tracing::info!(
                state = state.as_str(),
                "already handled; outcome published again"
            ),
            Reservation::OrderGone => {
                tracing::info!("order removed by retention; nothing reserved")
            }
            Reservation::CancelledFirst => {
                tracing::info!("order cancelled before its reservation; nothing reserved")
            }
        }
        Ok(Handled::Done)
    }

    async fn release(&self, delivery: Delivery<'_>) -> Result<Handled, HandlerError> {
        let event = delivery.event;
        let released = delivery.follow_up_without_payload::<StockReleased>();
        let mut conn = self.redis.conn();
        let outcome: Release = RELEASE
            .key(&self.stream)
            .key(keys::reservation(&event.order_id))
            .key(keys::order(&event.order_id))
            .arg(keys::product(""))
            .arg(released.header_fields_json())
            .invoke_async(&mut conn)
            .await?;
        tracing::info!(?outcome, "cancellation handled");
        Ok(Handled::Done)
    }
}

/// What `reserve_stock.lua` did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reservation {
    Reserved,
    Failed {
        reason: String,
    },
    /// Already handled: the stored outcome was published again.
    Repeated {
        state: String,
    },
    /// The order was cancelled before its reservation: nothing reserved.
    CancelledFirst,
    /// The order is gone (retention): nothing reserved.
    OrderGone,
}

impl FromRedisValue for Reservation {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let reply = Tagged::from_redis_value(v)?;
        Ok(match reply.tag.as_str() {
            "reserved" => Reservation::Reserved,
            "failed" => Reservation::Failed {
                reason: reply.text(0)?,
            },
            "repeated" => Reservation::Repeated {
                state: reply.text(0)?,
            },
            "cancelled" => Reservation::CancelledFirst,
            "gone" => Reservation::OrderGone,
            _ => return Err(reply.unknown("reserve_stock.lua")),
        })
    }
}

/// What `release_stock.lua` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    Released,
    /// Released before: `StockReleased` published again.
    Repeated,
    /// No reservation yet: a tombstone keeps a late `OrderPlaced` from reserving.
    Tombstoned,
    /// Nothing was reserved (the reservation failed, or was cancelled before).
    NothingHeld,
    /// The order is gone (retention): nothing to do, nothing written.
    OrderGone,
}

impl FromRedisValue for Release {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let reply = Tagged::from_redis_value(v)?;
        Ok(match reply.tag.as_str() {
            "released" => Release::Released,
            "repeated" => Release::Repeated,
            "tombstoned" => Release::Tombstoned,
            "nothing" => Release::NothingHeld,
            "gone" => Release::OrderGone,
            _ => return Err(reply.unknown("release_stock.lua")),
        })
    }
}

impl EventHandler for InventoryHandler {
    fn service(&self) -> Service {
        Service::Inventory
    }

    fn handles(&self, event_type: EventType) -> bool {
        matches!(
            event_type,
            EventType::OrderPlaced | EventType::OrderCancelled
        )
    }

    fn handle<'a>(&'a self, delivery: Delivery<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            if roll(self.instability.failure_rate) {
                return Err(HandlerError::Transient(
                    "injected inventory failure (INVENTORY_FAILURE_RATE)".into(),
                ));
            }
            match delivery.event.event_type {
                EventType::OrderPlaced => self.reserve(delivery).await,
                _ => self.release(delivery).await,
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
pub fn handler(redis: Redis, settings: &Settings, instability: Instability) -> InventoryHandler {
    InventoryHandler::new(redis, settings, instability)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulfillment_core::events::LineItem;

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
