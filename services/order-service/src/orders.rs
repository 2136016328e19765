//! Orders as stored by the order service: placing one with its event, reading, listing, history
//! and cancelling.
//!
//! An order lives in its partition (a hash of its id, see [`new_order_id`]): its hash, its
//! history, and its entries in the partition's indexes, sorted sets with every score 0 whose
//! members (`<OrderPlaced entry id, zero-padded>:<order_id>`) sort lexicographically in stream
//! order, so pages are exact and newest-first even for orders placed in the same millisecond
//! (`ZRANGE ... BYLEX REV`). A page over several partitions merges theirs by the same order, and
//! its cursor (the last member) stays valid whatever is placed meanwhile.
//!
//! With `REDIS_WAIT_REPLICAS`, an order is reported placed or cancelled only once that is on
//! enough replicas.

use fulfillment_core::saga::projection;
use fulfillment_core::{Event, Redis};
use fulfillment_events::events::{LineItem, OrderCancelled, OrderPlaced, now_millis, now_rfc3339};
use fulfillment_events::keys;
use fulfillment_events::keys::{Layout, Partition};
use fulfillment_events::states::{NotificationKind, NotificationState};
use fulfillment_redis::script_batch::{BatchedScript, ScriptCall};
use fulfillment_redis::script_reply::Tagged;
use fulfillment_redis::stream_entry::entry_id_order;
pub use order_projection::{HistoryEntry, OrderStatus, observe_completion};
use redis::{FromRedisValue, ParsingError, RedisResult, Script, Value};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::LazyLock;

static PLACE: LazyLock<BatchedScript> = LazyLock::new(|| {
    BatchedScript::with_library(
        "place_order",
        fulfillment_core::saga::publish::LIBRARY.as_str(),
        include_str!("scripts/place_order.lua"),
    )
});
static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{}\n{}",
        fulfillment_redis::script_batch::PLAIN_PRELUDE,
        fulfillment_core::saga::projection::LIBRARY.as_str(),
        include_str!("scripts/cancel_order.lua")
    ))
});

/// An order as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Order {
    pub id: String,
    pub status: OrderStatus,
    pub status_reason: Option<String>,
    pub customer_id: String,
    pub customer_email: String,
    pub items: Vec<LineItem>,
    /// Integer cents.
    pub total: u64,
    pub payment_token: String,
    pub created_at: String,
    pub updated_at: String,
    /// Dead letters of this order's events not yet resolved (replayed and handled, or deleted): an
    /// operator has something to do while it is above 0, whatever the status.
    pub dead_letters: u64,
}

impl Order {
    fn from_hash(hash: &HashMap<String, String>) -> Option<Self> {
        let text = |k: &str| hash.get(k).cloned().unwrap_or_default();
        Some(Self {
            id: hash.get("id")?.clone(),
            status: OrderStatus::parse(hash.get("status")?)?,
            status_reason: hash.get("status_reason").filter(|r| !r.is_empty()).cloned(),
            customer_id: text("customer_id"),
            customer_email: text("customer_email"),
            items: serde_json::from_str(hash.get("items")?).ok()?,
            total: hash.get("total")?.parse().ok()?,
            payment_token: text("payment_token"),
            created_at: text("created_at"),
            updated_at: text("updated_at"),
            dead_letters: hash
                .get("dead_letters")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        })
    }
}

/// A validated, priced order ready to be placed.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub customer_id: String,
    pub customer_email: String,
    pub items: Vec<LineItem>,
    pub total: u64,
    pub payment_token: String,
}

/// The idempotency key of a request and the fingerprint of its body.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Placed {
    /// A new order; its `OrderPlaced` entry id.
    Created {
        order: Box<Order>,
        stream_id: String,
    },
    /// The key was used before for this order; `same_request` tells whether the body matched.
    Existing {
        order_id: String,
        same_request: bool,
    },
}

/// What `place_order.lua` did.
enum Placement {
    Created {
        stream_id: String,
    },
    /// The Idempotency-Key was used before: the first order, and the fingerprint it was placed with.
    Existing {
        order_id: String,
        fingerprint: String,
    },
}

fulfillment_redis::script_tags! {
    /// What `place_order.lua` answers.
    enum PlaceTag ("place_order.lua") { Created = "created", Existing = "existing" }
}

fulfillment_redis::script_tags! {
    /// What `cancel_order.lua` answers.
    enum CancelTag ("cancel_order.lua") {
        NotFound = "not_found",
        Cancelled = "cancelled",
        Conflict = "conflict",
        Shipped = "shipped",
    }
}

impl FromRedisValue for Placement {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let reply = Tagged::from_redis_value(v)?;
        Ok(match PlaceTag::of(&reply)? {
            PlaceTag::Created => Placement::Created {
                stream_id: reply.text(0)?,
            },
            PlaceTag::Existing => Placement::Existing {
                order_id: reply.text(0)?,
                fingerprint: reply.text(1)?,
            },
        })
    }
}

/// A new order id (a UUID v4). With several partitions and an `Idempotency-Key`, one in the
/// key's partition, so a retried POST finds the key where its order lives; that takes as many
/// tries as there are partitions, on average (microseconds).
pub fn new_order_id(layout: &Layout, idempotency_key: Option<&str>) -> String {
    let wanted = idempotency_key.map(|key| layout.index_of(key));
    loop {
        let id = uuid::Uuid::new_v4().to_string();
        if wanted.is_none_or(|p| layout.index_of(&id) == p) {
            return id;
        }
    }
}

/// Writes the order `order_id` and its `OrderPlaced` in one script, in the order's partition,
/// and returns once that is on enough replicas.
pub async fn place(
    redis: &Redis,
    order_id: &str,
    new: NewOrder,
    idempotency: Option<&IdempotencyKey>,
    traceparent: Option<String>,
    recorded_by: &str,
) -> RedisResult<Placed> {
    let order_id = order_id.to_owned();
    let created_ms = now_millis();
    let now = now_rfc3339();
    let items_json = serde_json::to_string(&new.items).unwrap_or_default();
    let order_fields: Vec<(&str, String)> = vec![
        ("id", order_id.clone()),
        ("status", OrderStatus::Pending.as_str().into()),
        ("status_reason", String::new()),
        ("customer_id", new.customer_id.clone()),
        ("customer_email", new.customer_email.clone()),
        ("items", items_json),
        ("total", new.total.to_string()),
        ("payment_token", new.payment_token.clone()),
        ("created_at", now.clone()),
        ("updated_at", now.clone()),
        ("created_ms", created_ms.to_string()),
        ("progress", "0".into()),
        ("failed", "0".into()),
    ];
    let mut event = Event::of(
        &order_id,
        &OrderPlaced {
            customer_id: new.customer_id.clone(),
            customer_email: new.customer_email.clone(),
            items: new.items.clone(),
            total: new.total,
            payment_token: new.payment_token.clone(),
        },
    )
    .with_producer("order/api");
    event.occurred_at = now.clone();
    event.traceparent = traceparent;
    // Recorded in the order's history by the script that publishes it (see
    // `fulfillment_core::saga::projection`): the order group skips it.
    event.projected = true;
    let (history_before_id, history_after_id) =
        projection::history_json_around_id(&event, recorded_by, 1);

    let partition = redis.layout().of_order(&order_id);
    let space = &partition.keys;
    let mut invocation = ScriptCall::new();
    invocation
        .key(&partition.stream)
        .key(space.order(&order_id))
        .key(space.orders_index())
        .key(space.orders_by_status(OrderStatus::Pending.as_str()))
        .key(space.idempotency(idempotency.map(|i| i.key.as_str()).unwrap_or("-")))
        .key(space.counters())
        .key(space.order_history(&order_id))
        .arg(&order_id)
        .arg(if idempotency.is_some() { "1" } else { "0" })
        .arg(idempotency.map(|i| i.fingerprint.as_str()).unwrap_or(""))
        .arg(idempotency.map(|i| i.ttl_secs).unwrap_or(1))
        .arg(order_fields.len() * 2)
        .arg(event.event_id.to_string())
        .arg(history_before_id)
        .arg(history_after_id);
    for (k, v) in &order_fields {
        invocation.arg(*k).arg(v);
    }
    for (k, v) in event.to_fields() {
        invocation.arg(k).arg(v);
    }
    let placement: Placement = redis.run_script(&PLACE, space, invocation).await?;
    // The first order of a reused key may be another process's write: the wait covers it too.
    redis.replicated(space).await?;
    let id = match placement {
        Placement::Existing {
            order_id,
            fingerprint,
        } => {
            return Ok(Placed::Existing {
                order_id,
                same_request: idempotency.is_some_and(|i| i.fingerprint == fingerprint),
            });
        }
        Placement::Created { stream_id } => stream_id,
    };
    Ok(Placed::Created {
        order: Box::new(Order {
            id: order_id,
            status: OrderStatus::Pending,
            status_reason: None,
            customer_id: new.customer_id,
            customer_email: new.customer_email,
            items: new.items,
            total: new.total,
            payment_token: new.payment_token,
            created_at: now.clone(),
            updated_at: now,
            dead_letters: 0,
        }),
        stream_id: id,
    })
}

pub async fn get(redis: &Redis, order_id: &str) -> RedisResult<Option<Order>> {
    let partition = redis.layout().of_order(order_id);
    let mut conn = redis.conn();
    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(partition.keys.order(order_id))
        .query_async(&mut conn)
        .await?;
    Ok(Order::from_hash(&hash))
}

/// The order's status alone (one `HGET`), `None` when there is no such order.
pub async fn status(redis: &Redis, order_id: &str) -> RedisResult<Option<OrderStatus>> {
    let partition = redis.layout().of_order(order_id);
    let status: Option<String> = redis::cmd("HGET")
        .arg(partition.keys.order(order_id))
        .arg("status")
        .query_async(&mut redis.conn())
        .await?;
    Ok(status.as_deref().and_then(OrderStatus::parse))
}

/// A page of orders, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct OrderPage {
    pub orders: Vec<Order>,
    pub next_cursor: Option<String>,
}

/// Orders newest first, optionally of one status, after `cursor` (from a previous page): each
/// partition's newest after the cursor, merged. A status without an index of its own
/// (`RESERVED`, `PAID`: see [`keys::INDEXED_STATUSES`]) is found by reading the index of every
/// order, at most [`UNINDEXED_SCAN`] orders a page: such a page may hold fewer orders than asked
/// (even none) and still have a cursor to go on from.
pub async fn list(
    redis: &Redis,
    status: Option<OrderStatus>,
    limit: usize,
    cursor: Option<&str>,
) -> RedisResult<OrderPage> {
    let indexed = status.is_none_or(|s| keys::INDEXED_STATUSES.contains(&s.as_str()));
    if !indexed && let Some(status) = status {
        return list_unindexed(redis, status, limit, cursor).await;
    }
    let mut members = newest_members(redis, status, cursor, limit + 1).await?;
    let next_cursor = if members.len() > limit {
        members.truncate(limit);
        members.last().cloned()
    } else {
        None
    };
    Ok(OrderPage {
        orders: orders_of(redis, &members).await?,
        next_cursor,
    })
}

/// Most orders one page of an unindexed status reads.
pub const UNINDEXED_SCAN: usize = 2_000;
/// Index members read at a time while scanning for an unindexed status.
const SCAN_CHUNK: usize = 200;

async fn list_unindexed(
    redis: &Redis,
    status: OrderStatus,
    limit: usize,
    cursor: Option<&str>,
) -> RedisResult<OrderPage> {
    // Members of the orders in `status`, one more than the page when there is one.
    let mut matching: Vec<String> = Vec::new();
    let mut after = cursor.map(str::to_owned);
    let mut scanned = 0;
    let mut exhausted = false;
    while matching.len() <= limit && scanned < UNINDEXED_SCAN {
        let chunk = newest_members(redis, None, after.as_deref(), SCAN_CHUNK).await?;
        scanned += chunk.len();
        // Only each order's status is read to choose; whole orders for the page alone.
        for (member, current) in chunk.iter().zip(statuses_of(redis, &chunk).await?) {
            if current.as_deref() == Some(status.as_str()) {
                matching.push(member.clone());
            }
        }
        // A short chunk is the end of every partition's index.
        exhausted = chunk.len() < SCAN_CHUNK;
        if let Some(last) = chunk.last() {
            after = Some(last.clone());
        }
        if exhausted {
            break;
        }
    }
    let next_cursor = if matching.len() > limit {
        matching.truncate(limit);
        matching.last().cloned()
    } else if exhausted {
        None
    } else {
        // The scan stopped at its bound: go on from what it read.
        after
    };
    Ok(OrderPage {
        orders: orders_of(redis, &matching).await?,
        next_cursor,
    })
}

/// Each index member's order status, `None` where the order is gone.
async fn statuses_of(redis: &Redis, members: &[String]) -> RedisResult<Vec<Option<String>>> {
    let reads = members.iter().map(|member| {
        let key = order_key(redis, member);
        async move {
            redis::cmd("HGET")
                .arg(key)
                .arg("status")
                .query_async::<Option<String>>(&mut redis.conn())
                .await
        }
    });
    futures_util::future::try_join_all(reads).await
}

/// The order hash an index member names.
fn order_key(redis: &Redis, member: &str) -> String {
    let id = member.split_once(':').map(|(_, id)| id).unwrap_or(member);
    redis.layout().of_order(id).keys.order(id)
}

/// Up to `count` index members newest first after `cursor`, over every partition: of the
/// orders in `status` (an indexed one), or of every order.
async fn newest_members(
    redis: &Redis,
    status: Option<OrderStatus>,
    cursor: Option<&str>,
    count: usize,
) -> RedisResult<Vec<String>> {
    let max = match cursor {
        Some(c) => format!("({c}"),
        None => "+".to_owned(),
    };
    let reads = redis.layout().partitions().iter().map(|partition| {
        let index = match status {
            Some(s) => partition.keys.orders_by_status(s.as_str()),
            None => partition.keys.orders_index(),
        };
        let max = max.clone();
        async move {
            redis::cmd("ZRANGE")
                .arg(&index)
                .arg(max)
                .arg("-")
                .arg("BYLEX")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(count)
                .query_async::<Vec<String>>(&mut redis.conn())
                .await
        }
    });
    let mut members: Vec<String> = futures_util::future::try_join_all(reads)
        .await?
        .into_iter()
        .flatten()
        .collect();
    members.sort_unstable_by(|a, b| b.cmp(a));
    members.truncate(count);
    Ok(members)
}

/// The orders the index members name, in their order (gone ones left out).
async fn orders_of(redis: &Redis, members: &[String]) -> RedisResult<Vec<Order>> {
    let reads = members.iter().map(|member| {
        let key = order_key(redis, member);
        async move {
            redis::cmd("HGETALL")
                .arg(key)
                .query_async::<HashMap<String, String>>(&mut redis.conn())
                .await
        }
    });
    let hashes = futures_util::future::try_join_all(reads).await?;
    Ok(hashes.iter().filter_map(Order::from_hash).collect())
}

/// Whether `cursor` has the shape of an index member (so a bad cursor is a 400, not a Redis error).
pub fn is_cursor(cursor: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    cursor.split_once(':').is_some_and(|(entry_id, order_id)| {
        entry_id
            .split_once('-')
            .is_some_and(|(ms, seq)| digits(ms, 15) && digits(seq, 10))
            && !order_id.is_empty()
            && order_id.len() <= 64
    })
}

/// The order's events in stream order; an entry that does not read is left out and logged.
pub async fn history(redis: &Redis, order_id: &str) -> RedisResult<Vec<HistoryEntry>> {
    let partition = redis.layout().of_order(order_id);
    let mut conn = redis.conn();
    let raw: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(partition.keys.order_history(order_id))
        .query_async(&mut conn)
        .await?;
    let mut entries: Vec<HistoryEntry> = Vec::with_capacity(raw.len());
    for (event_id, json) in &raw {
        match serde_json::from_str(json) {
            Ok(entry) => entries.push(entry),
            // Written by this project's scripts only; one that does not read (a hand edit, an
            // older version's shape) is left out of the answer and said so.
            Err(e) => tracing::warn!(
                order_id,
                event_id = event_id.as_str(),
                error = %e,
                "a history entry that does not read is left out of the order's history"
            ),
        }
    }
    entries.sort_by_key(|e| entry_id_order(&e.stream_id));
    Ok(entries)
}

/// One message the notification service sent (or the relay refused) for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentMessage {
    pub kind: NotificationKind,
    pub state: NotificationState,
    pub to: String,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    /// The plain-text body, as the customer reads it.
    pub text: Option<String>,
    /// Why the relay refused it.
    pub reason: Option<String>,
}

/// The order's messages to its customer: each kind the notification service took up, in the
/// order of [`NotificationKind::ALL`] (at most one of them is ever sent).
pub async fn messages(redis: &Redis, order_id: &str) -> RedisResult<Vec<SentMessage>> {
    const FIELDS: [&str; 6] = ["state", "to", "subject", "message_id", "text", "reason"];
    let partition = redis.layout().of_order(order_id);
    let mut pipe = redis::pipe();
    for kind in NotificationKind::ALL {
        pipe.cmd("HMGET")
            .arg(partition.keys.notification(order_id, kind.as_str()))
            .arg(&FIELDS[..]);
    }
    let rows: Vec<[Option<String>; 6]> = pipe.query_async(&mut redis.conn()).await?;
    let mut out = Vec::new();
    for (kind, [state, to, subject, message_id, text, reason]) in
        NotificationKind::ALL.iter().zip(rows)
    {
        let Some(state) = state else { continue };
        let state = NotificationState::parse(&state).ok_or_else(|| {
            ParsingError::from(format!("a notification in no known state: {state:?}"))
        })?;
        out.push(SentMessage {
            kind: *kind,
            state,
            to: to.unwrap_or_default(),
            subject,
            message_id,
            text,
            reason,
        });
    }
    Ok(out)
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    Cancelled {
        previous_status: OrderStatus,
        created_ms: String,
    },
    /// Completed or cancelled already; a cancelled order's `status_reason`.
    AlreadyFinal {
        status: OrderStatus,
        reason: Option<String>,
    },
    /// Its shipment label exists: the order is on its way and can no longer be cancelled.
    AlreadyShipped {
        status: OrderStatus,
    },
    NotFound,
}

impl FromRedisValue for Cancelled {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let reply = Tagged::from_redis_value(v)?;
        let tag = CancelTag::of(&reply)?;
        if tag == CancelTag::NotFound {
            return Ok(Cancelled::NotFound);
        }
        let status = OrderStatus::parse(&reply.text(0)?).ok_or_else(|| {
            ParsingError::from(format!("cancel_order.lua: status {:?}", reply.text(0)))
        })?;
        Ok(match tag {
            CancelTag::NotFound => Cancelled::NotFound,
            CancelTag::Cancelled => Cancelled::Cancelled {
                previous_status: status,
                created_ms: reply.text(1)?,
            },
            CancelTag::Conflict => Cancelled::AlreadyFinal {
                status,
                reason: Some(reply.text(1)?).filter(|r| !r.is_empty()),
            },
            CancelTag::Shipped => Cancelled::AlreadyShipped { status },
        })
    }
}

/// Cancels an order that is not final, publishing `OrderCancelled` in the same step, and returns
/// once that is on enough replicas.
pub async fn cancel(redis: &Redis, order: &Order, reason: &str) -> RedisResult<Cancelled> {
    let event = Event::of(
        &order.id,
        &OrderCancelled {
            reason: reason.to_owned(),
            customer_email: order.customer_email.clone(),
        },
    )
    .with_producer("order/api");
    let partition: &Partition = redis.layout().of_order(&order.id);
    let space = &partition.keys;
    let mut invocation = CANCEL.prepare_invoke();
    invocation
        .key(space.order(&order.id))
        .key(&partition.stream)
        .key(space.orders_finished())
        .key(space.shipment(&order.id))
        .key(space.counters())
        .key(space.completion_samples());
    for index in space.status_indexes() {
        invocation.key(index);
    }
    let mut conn = redis.conn();
    let outcome: Cancelled = invocation
        .arg(reason)
        .arg(&event.occurred_at)
        .arg(event.to_fields_json())
        .arg(keys::status_channel())
        .arg(now_millis())
        .arg(keys::COMPLETION_SAMPLES)
        .invoke_async(&mut conn)
        .await?;
    if let Cancelled::Cancelled { created_ms, .. } = &outcome {
        redis.replicated(space).await?;
        observe_completion(OrderStatus::Cancelled, created_ms);
    }
    Ok(outcome)
}
