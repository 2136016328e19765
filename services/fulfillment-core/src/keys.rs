//! Names of the Redis keys that hold the pipeline's state, besides the streams.
//!
//! Every key starts with `fulfillment:` so an operator can tell them apart in a shared Redis.
//! Scripts that touch several keys assume one Redis (not Redis Cluster).

/// Prefix of every state key.
pub const PREFIX: &str = "fulfillment:";

/// The consumer groups on the event stream, one per service (`Service::group`; every one:
/// `service::all_groups`).
pub mod group {
    pub const ORDER: &str = "order_group";
    pub const INVENTORY: &str = "inventory_group";
    pub const PAYMENT: &str = "payment_group";
    pub const SHIPPING: &str = "shipping_group";
    pub const NOTIFICATION: &str = "notification_group";
}

/// Set of every product id in the catalog.
pub fn products() -> String {
    format!("{PREFIX}products")
}

/// Hash of one product: name, price (cents), stock.
pub fn product(product_id: &str) -> String {
    format!("{PREFIX}product:{product_id}")
}

/// Hash of one order as the order projection sees it.
pub fn order(order_id: &str) -> String {
    format!("{PREFIX}order:{order_id}")
}

/// Hash of the order's events, `event_id` → JSON, deduplicated by event id.
pub fn order_history(order_id: &str) -> String {
    format!("{PREFIX}order:{order_id}:events")
}

/// Sorted set (all scores 0, lexicographic) of `created_ms:order_id`, every order.
pub fn orders_index() -> String {
    format!("{PREFIX}orders")
}

/// Like [`orders_index`], for the orders currently in `status`.
pub fn orders_by_status(status: &str) -> String {
    format!("{PREFIX}orders:status:{status}")
}

/// Sorted set of finished (`COMPLETED`, `CANCELLED`) orders, order id scored by when it finished
/// (ms since the epoch): what the retention sweep removes once `ORDER_RETENTION_MS` has passed.
pub fn orders_finished() -> String {
    format!("{PREFIX}orders:finished")
}

/// Set of the order's dead letters not yet resolved, members `<group> <event_id>`: written with
/// the dead letter, emptied when the replayed entry is handled by its group or the dead letter is
/// deleted. While it has members the order is flagged (its hash's `dead_letters`) and the
/// retention sweep keeps it.
pub fn order_dead_letters(order_id: &str) -> String {
    format!("{PREFIX}order:{order_id}:dead_letters")
}

/// Set of the ids of orders with unresolved dead letters (what `fulfillment stats` counts).
pub fn orders_dead_lettered() -> String {
    format!("{PREFIX}orders:dead_lettered")
}

/// Every key that holds state of one order, the projection's and each service's, for the
/// retention sweep. Add a key here when a service starts keeping per-order state. The order hash
/// comes first (the sweep script reads it).
pub fn order_state(order_id: &str) -> Vec<String> {
    let mut all = vec![
        order(order_id),
        order_history(order_id),
        order_dead_letters(order_id),
        reservation(order_id),
        payment(order_id),
        shipment(order_id),
    ];
    all.extend(
        notification_kind::ALL
            .iter()
            .map(|kind| notification(order_id, kind)),
    );
    all
}

/// The kinds of notification, each sent at most once per order.
pub mod notification_kind {
    pub const ORDER_CONFIRMED: &str = "order_confirmed";
    pub const ORDER_CANCELLED: &str = "order_cancelled";
    pub const ALL: &[&str] = &[ORDER_CONFIRMED, ORDER_CANCELLED];
}

/// An `Idempotency-Key` seen by `POST /orders`.
pub fn idempotency(key: &str) -> String {
    format!("{PREFIX}idempotency:{key}")
}

/// Hash of inventory's reservation for one order: state, items, the published events.
pub fn reservation(order_id: &str) -> String {
    format!("{PREFIX}inventory:reservation:{order_id}")
}

/// Hash of payment's state for one order.
pub fn payment(order_id: &str) -> String {
    format!("{PREFIX}payment:{order_id}")
}

/// Hash of the test payment gateway's charges, idempotency key → charge JSON.
pub fn gateway_charges() -> String {
    format!("{PREFIX}gateway:charges")
}

/// Hash of the test payment gateway's refunds, idempotency key → refund JSON.
pub fn gateway_refunds() -> String {
    format!("{PREFIX}gateway:refunds")
}

/// Hash of the test payment gateway's voided payments, idempotency key → void JSON: a payment
/// given up as failed, after which no charge under that key goes through.
pub fn gateway_voids() -> String {
    format!("{PREFIX}gateway:voids")
}

/// Hash of shipping's label for one order; its `state` is one of [`shipment_state`].
pub fn shipment(order_id: &str) -> String {
    format!("{PREFIX}shipping:{order_id}")
}

/// States of [`shipment`], read beyond shipping: notification confirms only a `labelled` order,
/// and a cancel request (`cancel_order.lua`) is refused once `labelled` and leaves `cancelled`.
pub mod shipment_state {
    pub const LABELLED: &str = "labelled";
    pub const CANCELLED: &str = "cancelled";
    pub const VOIDED: &str = "voided";
}

/// Hash of one notification of one kind for one order.
pub fn notification(order_id: &str, kind: &str) -> String {
    format!("{PREFIX}notification:{order_id}:{kind}")
}

/// Hash of counters that must outlive any process: retries and dead letters per group,
/// labels created, notifications sent. Exported as metrics by the long-running services.
pub fn counters() -> String {
    format!("{PREFIX}counters")
}

/// Hash of a group's consumers, consumer name → when it last read (ms since the epoch). Redis
/// (before 7.2) reports a consumer's idle time from its last read that returned entries, so a
/// live consumer on a quiet stream looks idle; this heartbeat tells live from gone.
pub fn heartbeats(group: &str) -> String {
    format!("{PREFIX}heartbeats:{group}")
}

/// Hash of a group's consumers, consumer name → entries it acknowledged (read, handled or passed
/// over): each consumer's share of the group's work, for the console. A consumer removed from its
/// group leaves it too.
pub fn handled(group: &str) -> String {
    format!("{PREFIX}handled:{group}")
}

/// List of the last [`COMPLETION_SAMPLES`] completion times (ms from placement to `COMPLETED` or
/// `CANCELLED`), newest first, for the console's latency figures.
pub fn completion_samples() -> String {
    format!("{PREFIX}completion_ms")
}

/// How many completion times [`completion_samples`] keeps.
pub const COMPLETION_SAMPLES: usize = 1000;

/// Marks an undecodable entry as dead-lettered once, whichever group saw it first.
pub fn poison_seen(stream_id: &str) -> String {
    format!("{PREFIX}poison:{stream_id}")
}

/// What readiness writes (and lets expire) to learn that Redis takes writes.
pub fn readiness_probe() -> String {
    format!("{PREFIX}readiness")
}

/// Pub/sub channel carrying every order status change as JSON.
pub fn status_channel() -> String {
    format!("{PREFIX}order-status")
}

/// Counter names inside [`counters`].
pub mod counter {
    pub fn retries(group: &str) -> String {
        format!("retries:{group}")
    }
    pub fn dead_letters(group: &str) -> String {
        format!("dead_letters:{group}")
    }
    pub const LABELS_CREATED: &str = "labels_created";
    /// Orders placed, and orders that finished `COMPLETED` or `CANCELLED`.
    pub const ORDERS_PLACED: &str = "orders_placed";
    pub const ORDERS_COMPLETED: &str = "orders_completed";
    pub const ORDERS_CANCELLED: &str = "orders_cancelled";
    /// When the retry worker last finished a pass (ms since the epoch; a value, not a count).
    pub const RETRY_WORKER_LAST_PASS_MS: &str = "retry_worker_last_pass_ms";
    pub const RESERVATIONS: &str = "reservations";
    pub fn notifications(kind: &str) -> String {
        format!("notifications:{kind}")
    }
}
