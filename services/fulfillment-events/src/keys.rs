//! Where everything lives: the stream's partitions, and the names of the Redis keys that hold the
//! pipeline's state.
//!
//! Every key starts with `fulfillment:` so an operator can tell them apart in a shared Redis. With
//! one partition on one Redis (the default) the names are the plain ones (`order_events`,
//! `fulfillment:order:<id>`). With several partitions, or on Redis Cluster, every key belongs to a
//! [`KeySpace`] with a hash tag: an order's state, its history, every service's state of it, its
//! stream partition, its status indexes and the partition's counters share their partition's tag
//! (`fulfillment:{p3.17}:order:<id>`, stream `order_events:{p3.17}`), so every script touches keys
//! of one slot only. What is global by nature has a tag of its own: the catalog's stock
//! (`{catalog}`) and the test gateway's ledger (`{gateway}`). The tags of N partitions are chosen
//! so their slots are spread evenly over the 16,384 slots, and so over the cluster's masters.
//! An order's partition is fixed for its life: a hash of its id ([`Layout::of_order`]).

use crate::states::NotificationKind;
use std::sync::Arc;

/// Prefix of every state key.
pub const PREFIX: &str = "fulfillment:";

/// Hash slots of Redis Cluster.
const SLOTS: u32 = 16_384;

/// The consumer groups on the event stream, one per service (`Service::group`; every one:
/// `service::all_groups`).
pub mod group {
    pub const ORDER: &str = "order_group";
    pub const INVENTORY: &str = "inventory_group";
    pub const PAYMENT: &str = "payment_group";
    pub const SHIPPING: &str = "shipping_group";
    pub const NOTIFICATION: &str = "notification_group";
}

/// Counter names inside [`KeySpace::counters`].
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
    /// When the retry worker last finished a pass (ms since the epoch; a value, not a count), in
    /// the global key space's counters.
    pub const RETRY_WORKER_LAST_PASS_MS: &str = "retry_worker_last_pass_ms";
    pub const RESERVATIONS: &str = "reservations";
    /// Notifications of `kind` the relay refused for good.
    pub fn notifications_failed(kind: &str) -> String {
        format!("notifications_failed:{kind}")
    }
    /// Notifications of `kind` sent again after an attempt that was not recorded.
    pub fn notifications_resent(kind: &str) -> String {
        format!("notifications_resent:{kind}")
    }
    pub fn notifications(kind: &str) -> String {
        format!("notifications:{kind}")
    }
}

/// The statuses that have an index of their own ([`KeySpace::orders_by_status`]): where an order
/// stays (`PENDING` until inventory sees it, the final ones, `FAILED` until an operator acts).
/// `RESERVED` and `PAID` last milliseconds; an index of them would cost two writes per order and
/// status for lists nobody pages through, so `GET /orders?status=` finds those by reading the
/// index of every order.
pub const INDEXED_STATUSES: [&str; 4] = ["PENDING", "COMPLETED", "CANCELLED", "FAILED"];

/// How many completion times [`KeySpace::completion_samples`] keeps.
pub const COMPLETION_SAMPLES: usize = 1000;

/// Pub/sub channel carrying every order status change as JSON (not a key: a cluster broadcasts
/// it to every node).
pub fn status_channel() -> String {
    format!("{PREFIX}order-status")
}

/// Names of the keys that share one hash tag (or, with none, the plain names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    prefix: String,
}

impl KeySpace {
    /// The plain names, `fulfillment:<name>`.
    pub fn plain() -> Self {
        Self {
            prefix: PREFIX.to_owned(),
        }
    }

    /// Names under a hash tag, `fulfillment:{<tag>}:<name>`.
    pub fn tagged(tag: &str) -> Self {
        Self {
            prefix: format!("{PREFIX}{{{tag}}}:"),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// What every key of this space starts with (`fulfillment:` or `fulfillment:{<tag>}:`): one
    /// hash slot per prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Hash of one order as the order projection sees it.
    pub fn order(&self, order_id: &str) -> String {
        self.key(&format!("order:{order_id}"))
    }

    /// Hash of the order's events, `event_id` → JSON, deduplicated by event id.
    pub fn order_history(&self, order_id: &str) -> String {
        self.key(&format!("order:{order_id}:events"))
    }

    /// Set of the order's dead letters not yet resolved, members `<group> <event_id>`: written with
    /// the dead letter, emptied when the replayed entry is handled by its group or the dead letter
    /// is deleted. While it has members the order is flagged (its hash's `dead_letters`) and the
    /// retention sweep keeps it.
    pub fn order_dead_letters(&self, order_id: &str) -> String {
        self.key(&format!("order:{order_id}:dead_letters"))
    }

    /// Sorted set (all scores 0, lexicographic) of `<entry id>:<order id>`, every order.
    pub fn orders_index(&self) -> String {
        self.key("orders")
    }

    /// Like [`KeySpace::orders_index`], for the orders currently in `status` (one of
    /// [`INDEXED_STATUSES`]).
    pub fn orders_by_status(&self, status: &str) -> String {
        self.key(&format!("orders:status:{status}"))
    }

    /// Every status index ([`INDEXED_STATUSES`]), for the scripts that move statuses.
    pub fn status_indexes(&self) -> Vec<String> {
        INDEXED_STATUSES
            .iter()
            .map(|s| self.orders_by_status(s))
            .collect()
    }

    /// Sorted set of finished (`COMPLETED`, `CANCELLED`) orders, order id scored by when it
    /// finished (ms since the epoch): what the retention sweep removes once `ORDER_RETENTION_MS`
    /// has passed.
    pub fn orders_finished(&self) -> String {
        self.key("orders:finished")
    }

    /// Set of the ids of orders with unresolved dead letters (what `fulfillment stats` counts).
    pub fn orders_dead_lettered(&self) -> String {
        self.key("orders:dead_lettered")
    }

    /// An `Idempotency-Key` seen by `POST /orders`.
    pub fn idempotency(&self, key: &str) -> String {
        self.key(&format!("idempotency:{key}"))
    }

    /// Hash of inventory's reservation for one order: state, items, the published events. On a
    /// partition it is what the order's partition knows; in the catalog's key space it is the
    /// ledger next to the stock (the same key when both are plain).
    pub fn reservation(&self, order_id: &str) -> String {
        self.key(&format!("inventory:reservation:{order_id}"))
    }

    /// Hash of payment's state for one order.
    pub fn payment(&self, order_id: &str) -> String {
        self.key(&format!("payment:{order_id}"))
    }

    /// Hash of shipping's label for one order; its `state` is a [`crate::states::ShipmentState`].
    pub fn shipment(&self, order_id: &str) -> String {
        self.key(&format!("shipping:{order_id}"))
    }

    /// Hash of one notification of one kind for one order.
    pub fn notification(&self, order_id: &str, kind: &str) -> String {
        self.key(&format!("notification:{order_id}:{kind}"))
    }

    /// Every key of an order in this key space, the projection's and each service's, for the
    /// retention sweep. Add a key here when a service starts keeping per-order state. The order
    /// hash comes first (the sweep script reads it).
    pub fn order_state(&self, order_id: &str) -> Vec<String> {
        let mut all = vec![
            self.order(order_id),
            self.order_history(order_id),
            self.order_dead_letters(order_id),
            self.reservation(order_id),
            self.payment(order_id),
            self.shipment(order_id),
        ];
        all.extend(
            NotificationKind::ALL
                .iter()
                .map(|kind| self.notification(order_id, kind.as_str())),
        );
        all
    }

    /// Hash of counters that must outlive any process: retries and dead letters per group,
    /// labels created, notifications sent, orders placed and finished. Exported as metrics by the
    /// long-running services (summed over the partitions).
    pub fn counters(&self) -> String {
        self.key("counters")
    }

    /// Hash of a group's consumers, consumer name → when it last read (ms since the epoch). Redis
    /// (before 7.2) reports a consumer's idle time from its last read that returned entries, so a
    /// live consumer on a quiet stream looks idle; this heartbeat tells live from gone.
    pub fn heartbeats(&self, group: &str) -> String {
        self.key(&format!("heartbeats:{group}"))
    }

    /// Hash of a group's consumers, consumer name → entries it acknowledged (read, handled or
    /// passed over): each consumer's share of the group's work, for the console. A consumer
    /// removed from its group leaves it too.
    pub fn handled(&self, group: &str) -> String {
        self.key(&format!("handled:{group}"))
    }

    /// List of the last [`COMPLETION_SAMPLES`] completion times (ms from placement to
    /// `COMPLETED` or `CANCELLED`), newest first, for the console's latency figures.
    pub fn completion_samples(&self) -> String {
        self.key("completion_ms")
    }

    /// Marks an undecodable entry as dead-lettered once, whichever group saw it first.
    pub fn poison_seen(&self, stream_id: &str) -> String {
        self.key(&format!("poison:{stream_id}"))
    }

    /// Set of every product id in the catalog (the catalog's key space).
    pub fn products(&self) -> String {
        self.key("products")
    }

    /// Hash of one product: name, price (cents), stock, revision (the catalog's key space).
    pub fn product(&self, product_id: &str) -> String {
        self.key(&format!("product:{product_id}"))
    }

    /// Hash of the test payment gateway's charges, idempotency key → charge JSON (the gateway's
    /// key space).
    pub fn gateway_charges(&self) -> String {
        self.key("gateway:charges")
    }

    /// Hash of the test payment gateway's refunds, idempotency key → refund JSON.
    pub fn gateway_refunds(&self) -> String {
        self.key("gateway:refunds")
    }

    /// Hash of the test payment gateway's voided payments, idempotency key → void JSON: a payment
    /// given up as failed, after which no charge under that key goes through.
    pub fn gateway_voids(&self) -> String {
        self.key("gateway:voids")
    }

    /// Set of orders the retention sweep removed whose lines in the catalog's and the gateway's
    /// ledgers (other slots) are not removed yet: the sweep's outbox, emptied by the same pass.
    pub fn orders_swept(&self) -> String {
        self.key("orders:swept")
    }

    /// What readiness writes (and lets expire) to learn that Redis takes writes.
    pub fn readiness_probe(&self) -> String {
        self.key("readiness")
    }

    /// What the replica wait writes in this key space's slot before its `WAIT`
    /// (`REDIS_WAIT_REPLICAS`).
    pub fn replica_marker(&self) -> String {
        self.key("replica_wait")
    }
}

/// One partition of the stream: its stream, its dead-letter stream and its key space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub index: usize,
    pub stream: String,
    pub dlq: String,
    pub keys: KeySpace,
}

/// The pipeline's partitions and the key spaces of what is global.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `STREAM` and `DLQ_STREAM`: the names, or what every partition's names start with.
    stream: Arc<str>,
    dlq: Arc<str>,
    partitions: Arc<[Partition]>,
    /// Stock and the catalog's reservation ledger.
    pub catalog: KeySpace,
    /// The test gateway's ledger.
    pub gateway: KeySpace,
    /// What belongs to no order: readiness, the retry worker's last pass.
    pub global: KeySpace,
}

impl Layout {
    /// `count` partitions of `stream` (dead letters on `dlq`). With one partition and not
    /// `tagged` (one Redis), the plain names: `stream`, `dlq`, `fulfillment:<name>`. Otherwise
    /// every partition and the global key spaces carry hash tags (Redis Cluster requires it, and
    /// several partitions on one Redis use the same names).
    pub fn new(stream: &str, dlq: &str, count: usize, tagged: bool) -> Self {
        let count = count.max(1);
        if count == 1 && !tagged {
            return Self {
                stream: stream.into(),
                dlq: dlq.into(),
                partitions: Arc::from([Partition {
                    index: 0,
                    stream: stream.to_owned(),
                    dlq: dlq.to_owned(),
                    keys: KeySpace::plain(),
                }]),
                catalog: KeySpace::plain(),
                gateway: KeySpace::plain(),
                global: KeySpace::plain(),
            };
        }
        let partitions: Vec<Partition> = (0..count)
            .map(|index| {
                let tag = partition_tag(index, count);
                Partition {
                    index,
                    stream: format!("{stream}:{{{tag}}}"),
                    dlq: format!("{dlq}:{{{tag}}}"),
                    keys: KeySpace::tagged(&tag),
                }
            })
            .collect();
        Self {
            stream: stream.into(),
            dlq: dlq.into(),
            partitions: partitions.into(),
            catalog: KeySpace::tagged("catalog"),
            gateway: KeySpace::tagged("gateway"),
            global: KeySpace::plain(),
        }
    }

    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// `STREAM`: the stream, or the name every partition stream starts with.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// `DLQ_STREAM`: the dead-letter stream, or the name every partition's starts with.
    pub fn dlq(&self) -> &str {
        &self.dlq
    }

    /// Whether catalog and partition keys can meet in one script (one Redis, plain names).
    pub fn is_plain(&self) -> bool {
        self.partitions.len() == 1 && self.partitions[0].keys == KeySpace::plain()
    }

    /// The partition of an order: fixed for its life, a hash of its id.
    pub fn of_order(&self, order_id: &str) -> &Partition {
        &self.partitions[self.index_of(order_id)]
    }

    /// The partition index `key` (an order id, an Idempotency-Key) hashes to.
    pub fn index_of(&self, key: &str) -> usize {
        (fnv1a(key.as_bytes()) % self.partitions.len() as u64) as usize
    }

    /// The partition holding `stream` (one of this layout's partition streams).
    pub fn of_stream(&self, stream: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.stream == stream)
    }
}

/// The hash tag of partition `index` of `count`: the first `p<index>.<n>` whose slot falls in the
/// partition's share of the slots, so partitions spread evenly over the cluster's masters.
fn partition_tag(index: usize, count: usize) -> String {
    let low = (index as u32 * SLOTS) / count as u32;
    let high = ((index as u32 + 1) * SLOTS) / count as u32;
    (0u32..)
        .map(|n| format!("p{index}.{n}"))
        .find(|tag| (low..high).contains(&slot_of(tag.as_bytes())))
        .unwrap_or_else(|| format!("p{index}"))
}

/// The Redis Cluster slot of a key (or of a hash tag's text): CRC16 (XMODEM) of its hash tag
/// mod 16384, with the CRC redis-rs's cluster client routes by (redis-rs 1.8 computes the slot
/// but does not expose its number).
pub fn slot_of(key: &[u8]) -> u32 {
    let hashed = match key.iter().position(|b| *b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|b| *b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    u32::from(crc16::State::<crc16::XMODEM>::calculate(hashed)) % SLOTS
}

/// FNV-1a, 64 bits: a stable hash (the same in every process and version) for partitioning.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_cluster_slots() {
        // From the Redis Cluster specification: CRC16 of "123456789" is 0x31C3.
        assert_eq!(slot_of(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_eq!(slot_of(b"order_events:{p0.3}"), slot_of(b"p0.3"));
    }

    #[test]
    fn one_partition_on_one_redis_keeps_the_plain_names() {
        let layout = Layout::new("order_events", "order_events:dlq", 1, false);
        let p = &layout.partitions()[0];
        assert_eq!(p.stream, "order_events");
        assert_eq!(p.dlq, "order_events:dlq");
        assert_eq!(p.keys.order("o1"), "fulfillment:order:o1");
        assert_eq!(layout.catalog.product("a"), "fulfillment:product:a");
        assert!(layout.is_plain());
    }

    #[test]
    fn partitions_spread_over_the_slots_and_keep_an_orders_keys_together() {
        let layout = Layout::new("order_events", "order_events:dlq", 12, true);
        assert!(!layout.is_plain());
        for (i, p) in layout.partitions().iter().enumerate() {
            let slot = slot_of(p.stream.as_bytes());
            assert!((i as u32 * SLOTS / 12..(i as u32 + 1) * SLOTS / 12).contains(&slot));
            assert!(p.stream.starts_with("order_events:{"));
            assert!(p.dlq.contains("dlq"));
            for key in p.keys.order_state("o1") {
                assert_eq!(slot_of(key.as_bytes()), slot, "{key}");
            }
            assert_eq!(slot_of(p.dlq.as_bytes()), slot);
            assert_eq!(slot_of(p.keys.counters().as_bytes()), slot);
        }
        // Three masters with the default split each get four partitions.
        let per_master: Vec<usize> = (0..3)
            .map(|m| {
                layout
                    .partitions()
                    .iter()
                    .filter(|p| slot_of(p.stream.as_bytes()) * 3 / SLOTS == m)
                    .count()
            })
            .collect();
        assert_eq!(per_master, [4, 4, 4]);
        let a = layout.of_order("8f14e45f-ceea-467a-9575-3f5a8e2e5a10");
        assert_eq!(a, layout.of_order("8f14e45f-ceea-467a-9575-3f5a8e2e5a10"));
        assert_ne!(
            slot_of(layout.catalog.product("x").as_bytes()),
            slot_of(layout.gateway.gateway_charges().as_bytes())
        );
    }
}
