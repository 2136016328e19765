//! The dead-letter stream: moving an entry there, and the operator's list, replay and delete.
//!
//! A DLQ entry is the original entry's fields plus its provenance (`dlq_group`, `dlq_source_id`,
//! `dlq_deliveries`, `dlq_error`, `dlq_at`). Moving is one script with the acknowledgement, so an
//! entry is never acknowledged without being in the DLQ. Replay puts it back for its own group
//! only and keeps its `event_id`, so the group's idempotent handler sees an ordinary redelivery.
//!
//! Invariant: a dead letter of an order's event flags the order (`dead_letters` in its hash, the
//! set [`keys::orders_dead_lettered`]) and keeps it from the retention sweep until the dead letter
//! is resolved: its replay handled by its group ([`resolve`]), or deleted by an operator.

use crate::connection::Redis;
use crate::events::{Event, EventDeadLettered, EventType, now_millis, now_rfc3339};
use crate::keys;
use crate::script_reply::Tagged;
use crate::stream_entry::{Entries, RawEntry, id_after, is_entry_id};
use redis::{RedisResult, Script};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::LazyLock;

static DEAD_LETTER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/dead_letter.lua")));
static REPLAY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/dlq_replay.lua")));
static RESOLVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/resolve_dead_letter.lua"),
        include_str!("scripts/dlq_resolve.lua")
    ))
});
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/resolve_dead_letter.lua"),
        include_str!("scripts/dlq_delete.lua")
    ))
});

/// How an order's set of unresolved dead letters names one: the group and the event id.
pub fn member(group: &str, event_id: &str) -> String {
    format!("{group} {event_id}")
}

/// Field pairs of an original entry copied into the DLQ at most; the rest is dropped so the script
/// stays within Lua's argument limits.
const MAX_COPIED_FIELDS: usize = 1000;

/// One entry on its way to the DLQ.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    pub group: &'a str,
    pub entry: &'a RawEntry,
    /// The decoded event, when the entry could be decoded.
    pub event: Option<&'a Event>,
    pub deliveries: u64,
    pub error: &'a str,
    /// Undecodable: dead-lettered once for the stream, not once per group.
    pub poison: bool,
}

/// Writes the entry to the DLQ, counts it, publishes `EventDeadLettered` and acknowledges it.
pub async fn dead_letter(
    redis: &Redis,
    stream: &str,
    dlq_stream: &str,
    letter: &DeadLetter<'_>,
) -> RedisResult<()> {
    let original: Vec<&(Vec<u8>, Vec<u8>)> =
        letter.entry.fields.iter().take(MAX_COPIED_FIELDS).collect();
    let (order_id, event_id) = match letter.event {
        Some(e) => (e.order_id.clone(), e.event_id.to_string()),
        None => (
            letter.entry.text("order_id").unwrap_or_default(),
            letter.entry.text("event_id").unwrap_or_default(),
        ),
    };
    let mut invocation = DEAD_LETTER.prepare_invoke();
    invocation
        .key(stream)
        .key(dlq_stream)
        .key(keys::counters())
        .key(keys::poison_seen(&letter.entry.id))
        .key(keys::order(&order_id))
        .key(keys::order_dead_letters(&order_id))
        .key(keys::orders_dead_lettered())
        .key(keys::orders_finished())
        .arg(letter.group)
        .arg(&letter.entry.id)
        .arg(letter.deliveries)
        .arg(letter.error)
        .arg(now_rfc3339())
        .arg(if letter.poison { "1" } else { "0" })
        .arg(keys::counter::dead_letters(letter.group))
        .arg(&order_id)
        .arg(member(letter.group, &event_id))
        .arg(original.len() * 2);
    for (name, value) in original {
        invocation.arg(name.as_slice()).arg(value.as_slice());
    }
    if let Some(notice) = dead_letter_notice(letter) {
        for (name, value) in notice.to_fields() {
            invocation.arg(name).arg(value);
        }
    }
    let mut conn = redis.conn();
    let reply: Tagged = invocation.invoke_async(&mut conn).await?;
    match reply.tag.as_str() {
        "dead_lettered" => tracing::warn!(
            group = letter.group,
            stream_id = letter.entry.id,
            dlq_id = reply.text(0)?,
            error = letter.error,
            deliveries = letter.deliveries,
            "entry dead-lettered"
        ),
        "acked" => {}
        _ => return Err(reply.unknown("dead_letter.lua").into()),
    }
    Ok(())
}

/// A replayed dead letter was handled by its group: it no longer flags its order. Returns how
/// many dead letters the order still has unresolved (`None` when this one was not flagged).
pub async fn resolve(redis: &Redis, group: &str, event: &Event) -> RedisResult<Option<u64>> {
    let order_id = event.order_id.as_str();
    let mut conn = redis.conn();
    let reply: Tagged = RESOLVE
        .key(keys::order(order_id))
        .key(keys::order_dead_letters(order_id))
        .key(keys::orders_dead_lettered())
        .key(keys::orders_finished())
        .arg(order_id)
        .arg(member(group, &event.event_id.to_string()))
        .arg(now_millis())
        .invoke_async(&mut conn)
        .await?;
    match reply.tag.as_str() {
        "resolved" => Ok(reply.text(0)?.parse().ok()),
        "not_flagged" => Ok(None),
        _ => Err(reply.unknown("dlq_resolve.lua").into()),
    }
}

/// The `EventDeadLettered` to publish, unless the entry is itself one (no loops).
fn dead_letter_notice(letter: &DeadLetter<'_>) -> Option<Event> {
    let (order_id, event_id, event_type) = match letter.event {
        Some(e) if e.event_type == EventType::EventDeadLettered => return None,
        Some(e) => (
            e.order_id.clone(),
            e.event_id.to_string(),
            e.event_type.to_string(),
        ),
        None => (
            letter.entry.text("order_id").unwrap_or_default(),
            letter.entry.text("event_id").unwrap_or_default(),
            letter.entry.text("type").unwrap_or_default(),
        ),
    };
    let payload = EventDeadLettered {
        group: letter.group.to_owned(),
        event_id,
        event_type,
        error: letter.error.to_owned(),
        deliveries: letter.deliveries,
    };
    let mut notice =
        Event::of(&order_id, &payload).with_producer(&format!("dead-letter/{}", letter.group));
    notice.traceparent = letter.event.and_then(|e| e.traceparent.clone());
    Some(notice)
}

/// A dead letter as the operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    pub id: String,
    pub group: String,
    pub source_id: String,
    pub deliveries: u64,
    pub error: String,
    pub dead_lettered_at: String,
    pub event_type: Option<String>,
    pub order_id: Option<String>,
    pub event_id: Option<String>,
    /// The original entry's fields (bytes that are not UTF-8 shown lossily).
    pub fields: BTreeMap<String, String>,
}

impl DeadLetterView {
    fn from_entry(entry: RawEntry) -> Self {
        let mut fields = BTreeMap::new();
        let mut meta = BTreeMap::new();
        for (k, v) in &entry.fields {
            let k = String::from_utf8_lossy(k).into_owned();
            let v = String::from_utf8_lossy(v).into_owned();
            match k.strip_prefix("dlq_") {
                Some(name) => {
                    meta.insert(name.to_owned(), v);
                }
                None => {
                    fields.insert(k, v);
                }
            }
        }
        let take = |m: &mut BTreeMap<String, String>, k: &str| m.remove(k).unwrap_or_default();
        Self {
            id: entry.id,
            group: take(&mut meta, "group"),
            source_id: take(&mut meta, "source_id"),
            deliveries: take(&mut meta, "deliveries").parse().unwrap_or_default(),
            error: take(&mut meta, "error"),
            dead_lettered_at: take(&mut meta, "at"),
            event_type: fields.get("type").cloned(),
            order_id: fields.get("order_id").cloned(),
            event_id: fields.get("event_id").cloned(),
            fields,
        }
    }
}

/// A page of dead letters, oldest first, after `cursor` (an entry id, exclusive).
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterPage {
    pub entries: Vec<DeadLetterView>,
    pub next_cursor: Option<String>,
}

pub async fn list(
    redis: &Redis,
    dlq_stream: &str,
    limit: usize,
    cursor: Option<&str>,
) -> RedisResult<DeadLetterPage> {
    let start = match cursor {
        Some(id) => match id_after(id) {
            Some(next) => next,
            // Nothing can follow the largest id there is.
            None => {
                return Ok(DeadLetterPage {
                    entries: Vec::new(),
                    next_cursor: None,
                });
            }
        },
        None => "-".to_owned(),
    };
    let mut conn = redis.conn();
    let Entries(found) = redis::cmd("XRANGE")
        .arg(dlq_stream)
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(limit + 1)
        .query_async(&mut conn)
        .await?;
    let mut entries: Vec<DeadLetterView> =
        found.into_iter().map(DeadLetterView::from_entry).collect();
    let next_cursor = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok(DeadLetterPage {
        entries,
        next_cursor,
    })
}

/// One dead letter by its DLQ id.
pub async fn get(redis: &Redis, dlq_stream: &str, id: &str) -> RedisResult<Option<DeadLetterView>> {
    let mut conn = redis.conn();
    let Entries(found) = redis::cmd("XRANGE")
        .arg(dlq_stream)
        .arg(id)
        .arg(id)
        .query_async(&mut conn)
        .await?;
    Ok(found.into_iter().next().map(DeadLetterView::from_entry))
}

/// What replaying a dead letter did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReplayOutcome {
    Replayed { stream_id: String, group: String },
    NotFound,
}

/// Puts a dead letter back on the stream for its own group and removes it from the DLQ.
pub async fn replay(
    redis: &Redis,
    stream: &str,
    dlq_stream: &str,
    id: &str,
) -> RedisResult<ReplayOutcome> {
    if !is_entry_id(id) {
        return Ok(ReplayOutcome::NotFound);
    }
    let mut conn = redis.conn();
    let reply: Tagged = REPLAY
        .key(dlq_stream)
        .key(stream)
        .arg(id)
        .invoke_async(&mut conn)
        .await?;
    Ok(match reply.tag.as_str() {
        "replayed" => {
            let (stream_id, group) = (reply.text(0)?, reply.text(1)?);
            tracing::info!(dlq_id = id, stream_id, group, "dead letter replayed");
            ReplayOutcome::Replayed { stream_id, group }
        }
        "not_found" | "not_a_dead_letter" => ReplayOutcome::NotFound,
        _ => return Err(reply.unknown("dlq_replay.lua").into()),
    })
}

/// Removes a dead letter, which resolves it for its order (an operator decided it needs no
/// replay); false when there was none with that id.
pub async fn delete(redis: &Redis, dlq_stream: &str, id: &str) -> RedisResult<bool> {
    if !is_entry_id(id) {
        return Ok(false);
    }
    let Some(letter) = get(redis, dlq_stream, id).await? else {
        return Ok(false);
    };
    let order_id = letter.order_id.unwrap_or_default();
    let event_id = letter.event_id.unwrap_or_default();
    let mut conn = redis.conn();
    let reply: Tagged = DELETE
        .key(dlq_stream)
        .key(keys::order(&order_id))
        .key(keys::order_dead_letters(&order_id))
        .key(keys::orders_dead_lettered())
        .key(keys::orders_finished())
        .arg(id)
        .arg(&order_id)
        .arg(member(&letter.group, &event_id))
        .arg(now_millis())
        .invoke_async(&mut conn)
        .await?;
    match reply.tag.as_str() {
        "deleted" => Ok(true),
        "not_found" => Ok(false),
        _ => Err(reply.unknown("dlq_delete.lua").into()),
    }
}
