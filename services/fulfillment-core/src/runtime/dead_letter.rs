//! The dead-letter stream: moving an entry there, and the operator's list, replay and delete.
//!
//! A DLQ entry is the original entry's fields plus its provenance (`dlq_group`, `dlq_source_id`,
//! `dlq_deliveries`, `dlq_error`, `dlq_at`). Moving is one script with the acknowledgement, so an
//! entry is never acknowledged without being in the DLQ. Replay puts it back for its own group
//! only and keeps its `event_id`, so the group's idempotent handler sees an ordinary redelivery.
//!
//! Each partition has its dead-letter stream (the one `DLQ_STREAM` with one partition); an
//! operator sees them as one list, oldest first, each dead letter named by a [`DlqId`].
//!
//! Invariant: a dead letter of an order's event flags the order (`dead_letters` in its hash, the
//! set [`KeySpace::orders_dead_lettered`]) and keeps it from the retention sweep until the dead
//! letter is resolved: its replay handled by its group ([`resolve`]), or deleted by an operator.
//!
//! [`KeySpace::orders_dead_lettered`]: fulfillment_events::keys::KeySpace::orders_dead_lettered

use crate::saga::publish;
use crate::store::Redis;
use fulfillment_events::events::{Event, EventDeadLettered, EventType, now_millis, now_rfc3339};
use fulfillment_events::keys::{Layout, Partition};
use fulfillment_redis::script_reply::Tagged;
use fulfillment_redis::stream_entry::{Entries, RawEntry, entry_id_order, id_after, is_entry_id};
use redis::{RedisResult, Script};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::LazyLock;

static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}\n{}",
        publish::LIBRARY.as_str(),
        include_str!("scripts/dead_letter.lua")
    ))
});
static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}\n{}",
        publish::LIBRARY.as_str(),
        include_str!("scripts/dlq_replay.lua")
    ))
});
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

fulfillment_redis::script_tags! {
    /// What `dead_letter.lua` answers.
    enum DeadLetterTag ("dead_letter.lua") { DeadLettered = "dead_lettered", Acked = "acked" }
}

fulfillment_redis::script_tags! {
    /// What `dlq_resolve.lua` answers.
    enum ResolveTag ("dlq_resolve.lua") { Resolved = "resolved", NotFlagged = "not_flagged" }
}

fulfillment_redis::script_tags! {
    /// What `dlq_replay.lua` answers.
    enum ReplayTag ("dlq_replay.lua") {
        Replayed = "replayed",
        NotFound = "not_found",
        NotADeadLetter = "not_a_dead_letter",
    }
}

fulfillment_redis::script_tags! {
    /// What `dlq_delete.lua` answers.
    enum DeleteTag ("dlq_delete.lua") { Deleted = "deleted", NotFound = "not_found" }
}

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

/// Writes the entry to its partition's DLQ, counts it, publishes `EventDeadLettered` and
/// acknowledges it.
pub async fn dead_letter(
    redis: &Redis,
    partition: &Partition,
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
    let keys = &partition.keys;
    let mut invocation = DEAD_LETTER.prepare_invoke();
    invocation
        .key(&partition.stream)
        .key(&partition.dlq)
        .key(keys.counters())
        .key(keys.poison_seen(&letter.entry.id))
        .key(keys.order(&order_id))
        .key(keys.order_dead_letters(&order_id))
        .key(keys.orders_dead_lettered())
        .key(keys.orders_finished())
        .arg(letter.group)
        .arg(&letter.entry.id)
        .arg(letter.deliveries)
        .arg(letter.error)
        .arg(now_rfc3339())
        .arg(if letter.poison { "1" } else { "0" })
        .arg(fulfillment_events::keys::counter::dead_letters(
            letter.group,
        ))
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
    match DeadLetterTag::of(&reply)? {
        DeadLetterTag::DeadLettered => tracing::warn!(
            group = letter.group,
            stream_id = letter.entry.id,
            dlq_id = reply.text(0)?,
            error = letter.error,
            deliveries = letter.deliveries,
            "entry dead-lettered"
        ),
        DeadLetterTag::Acked => {}
    }
    Ok(())
}

/// A replayed dead letter was handled by its group: it no longer flags its order. Returns how
/// many dead letters the order still has unresolved (`None` when this one was not flagged).
pub async fn resolve(
    redis: &Redis,
    partition: &Partition,
    group: &str,
    event: &Event,
) -> RedisResult<Option<u64>> {
    let order_id = event.order_id.as_str();
    let keys = &partition.keys;
    let mut conn = redis.conn();
    let reply: Tagged = RESOLVE
        .key(keys.order(order_id))
        .key(keys.order_dead_letters(order_id))
        .key(keys.orders_dead_lettered())
        .key(keys.orders_finished())
        .arg(order_id)
        .arg(member(group, &event.event_id.to_string()))
        .arg(now_millis())
        .invoke_async(&mut conn)
        .await?;
    match ResolveTag::of(&reply)? {
        ResolveTag::Resolved => {
            let left = reply.text(0)?;
            let left = left.parse().map_err(|_| {
                redis::ParsingError::from(format!(
                    "dlq_resolve.lua answered {left:?} dead letters left, not a count"
                ))
            })?;
            Ok(Some(left))
        }
        ResolveTag::NotFlagged => Ok(None),
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

/// A dead letter's id as an operator sees it: its DLQ entry id, prefixed by its partition when
/// there are several (`p3-1700000000000-0`); with one partition, the plain entry id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqId {
    pub partition: usize,
    pub entry: String,
}

impl DlqId {
    /// The id `text` names in `layout`, if it is one.
    pub fn parse(layout: &Layout, text: &str) -> Option<Self> {
        let count = layout.partitions().len();
        let (partition, entry) = if count == 1 {
            (0, text)
        } else {
            let (p, entry) = text.strip_prefix('p')?.split_once('-')?;
            let digits = !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit());
            (if digits { p.parse().ok()? } else { return None }, entry)
        };
        (partition < count && is_entry_id(entry)).then(|| Self {
            partition,
            entry: entry.to_owned(),
        })
    }

    pub fn render(&self, layout: &Layout) -> String {
        if layout.partitions().len() == 1 {
            self.entry.clone()
        } else {
            format!("p{}-{}", self.partition, self.entry)
        }
    }

    /// Oldest first over every partition: by entry id, then partition.
    fn order(&self) -> ((u64, u64), usize) {
        (entry_id_order(&self.entry), self.partition)
    }
}

/// A dead letter as the operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    /// Its [`DlqId`].
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
    fn from_entry(id: String, entry: RawEntry) -> Self {
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
            id,
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

/// A page of dead letters, oldest first, after `cursor` (a [`DlqId`], exclusive).
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterPage {
    pub entries: Vec<DeadLetterView>,
    pub next_cursor: Option<String>,
}

/// Up to `limit` dead letters of every partition, oldest first, after `cursor`.
pub async fn list(
    redis: &Redis,
    limit: usize,
    cursor: Option<&DlqId>,
) -> RedisResult<DeadLetterPage> {
    let layout = redis.layout();
    let reads = layout.partitions().iter().map(|partition| async move {
        // After the cursor: a later entry id, or the same id on a later partition.
        let start = match cursor {
            None => "-".to_owned(),
            Some(c) if partition.index > c.partition => c.entry.clone(),
            Some(c) => match id_after(&c.entry) {
                Some(next) => next,
                // Nothing can follow the largest id there is.
                None => return Ok(Vec::new()),
            },
        };
        let Entries(found) = redis::cmd("XRANGE")
            .arg(&partition.dlq)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit + 1)
            .query_async(&mut redis.conn())
            .await?;
        RedisResult::Ok(
            found
                .into_iter()
                .map(|entry| {
                    let id = DlqId {
                        partition: partition.index,
                        entry: entry.id.clone(),
                    };
                    (id, entry)
                })
                .collect::<Vec<_>>(),
        )
    });
    let mut found: Vec<(DlqId, RawEntry)> = futures_util::future::try_join_all(reads)
        .await?
        .into_iter()
        .flatten()
        .collect();
    found.sort_by_key(|(id, _)| id.order());
    let more = found.len() > limit;
    found.truncate(limit);
    let next_cursor = more
        .then(|| found.last().map(|(id, _)| id.render(layout)))
        .flatten();
    Ok(DeadLetterPage {
        entries: found
            .into_iter()
            .map(|(id, entry)| DeadLetterView::from_entry(id.render(layout), entry))
            .collect(),
        next_cursor,
    })
}

/// Dead letters on every partition.
pub async fn count(redis: &Redis) -> RedisResult<i64> {
    let lengths = redis.layout().partitions().iter().map(|p| async move {
        redis::cmd("XLEN")
            .arg(&p.dlq)
            .query_async::<i64>(&mut redis.conn())
            .await
    });
    Ok(futures_util::future::try_join_all(lengths)
        .await?
        .into_iter()
        .sum())
}

/// One dead letter by its id.
pub async fn get(redis: &Redis, id: &DlqId) -> RedisResult<Option<DeadLetterView>> {
    let partition = &redis.layout().partitions()[id.partition];
    let mut conn = redis.conn();
    let Entries(found) = redis::cmd("XRANGE")
        .arg(&partition.dlq)
        .arg(&id.entry)
        .arg(&id.entry)
        .query_async(&mut conn)
        .await?;
    Ok(found
        .into_iter()
        .next()
        .map(|entry| DeadLetterView::from_entry(id.render(redis.layout()), entry)))
}

/// What replaying a dead letter did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReplayOutcome {
    Replayed { stream_id: String, group: String },
    NotFound,
}

/// Puts a dead letter back on its partition's stream for its own group and removes it from the
/// DLQ; the replay is on enough replicas (`REDIS_WAIT_REPLICAS`) before this returns.
pub async fn replay(redis: &Redis, id: &DlqId) -> RedisResult<ReplayOutcome> {
    let partition = &redis.layout().partitions()[id.partition];
    let mut conn = redis.conn();
    let reply: Tagged = REPLAY
        .key(&partition.dlq)
        .key(&partition.stream)
        .arg(&id.entry)
        .invoke_async(&mut conn)
        .await?;
    Ok(match ReplayTag::of(&reply)? {
        ReplayTag::Replayed => {
            let (stream_id, group) = (reply.text(0)?, reply.text(1)?);
            redis.replicated(&partition.keys).await?;
            tracing::info!(
                dlq_id = id.render(redis.layout()),
                stream_id,
                group,
                "dead letter replayed"
            );
            ReplayOutcome::Replayed { stream_id, group }
        }
        ReplayTag::NotFound | ReplayTag::NotADeadLetter => ReplayOutcome::NotFound,
    })
}

/// Removes a dead letter, which resolves it for its order (an operator decided it needs no
/// replay); false when there was none with that id.
pub async fn delete(redis: &Redis, id: &DlqId) -> RedisResult<bool> {
    let Some(letter) = get(redis, id).await? else {
        return Ok(false);
    };
    let partition = &redis.layout().partitions()[id.partition];
    let keys = &partition.keys;
    let order_id = letter.order_id.unwrap_or_default();
    let event_id = letter.event_id.unwrap_or_default();
    let mut conn = redis.conn();
    let reply: Tagged = DELETE
        .key(&partition.dlq)
        .key(keys.order(&order_id))
        .key(keys.order_dead_letters(&order_id))
        .key(keys.orders_dead_lettered())
        .key(keys.orders_finished())
        .arg(&id.entry)
        .arg(&order_id)
        .arg(member(&letter.group, &event_id))
        .arg(now_millis())
        .invoke_async(&mut conn)
        .await?;
    match DeleteTag::of(&reply)? {
        DeleteTag::Deleted => {
            redis.replicated(keys).await?;
            Ok(true)
        }
        DeleteTag::NotFound => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlq_ids_name_their_partition_when_there_are_several() {
        let one = Layout::new("s", "s:dlq", 1, false);
        let id = DlqId::parse(&one, "1700000000000-0").expect("plain id");
        assert_eq!(
            (id.partition, id.render(&one).as_str()),
            (0, "1700000000000-0")
        );
        assert!(DlqId::parse(&one, "p0-1700000000000-0").is_none());
        let four = Layout::new("s", "s:dlq", 4, false);
        let id = DlqId::parse(&four, "p3-1700000000000-7").expect("partitioned id");
        assert_eq!((id.partition, id.entry.as_str()), (3, "1700000000000-7"));
        assert_eq!(id.render(&four), "p3-1700000000000-7");
        for bad in [
            "1700000000000-0",
            "p4-1-0",
            "p-1-0",
            "px-1-0",
            "p1-",
            "p1-x",
        ] {
            assert!(DlqId::parse(&four, bad).is_none(), "{bad}");
        }
    }
}
