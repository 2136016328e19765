//! The one reader of the pipeline's live figures in Redis: stream lengths, and per group its
//! consumers, pending, lag, oldest pending entry, retries and dead letters; orders with unresolved
//! dead letters; Redis's memory; when the retry worker last passed. `/metrics`, `GET /stats`,
//! `fulfillment stats`, the console and the retry worker all read through here.
//!
//! Lag is Redis's own (`XINFO GROUPS`), except that a group whose last delivered entry is the
//! stream's last has no lag, whatever XINFO says: after a restart from an append-only file,
//! `entries-read` can fall behind for good and XINFO's lag with it (the retry worker then repairs
//! the group's counter, see `repair_lag.lua`).

use crate::connection::Redis;
use crate::keys;
use redis::{RedisResult, Value};
use serde::Serialize;
use std::collections::HashMap;

/// A consumer seen less than this long ago is active: a live consumer records a heartbeat every
/// second ([`keys::heartbeats`]) and reads entries whenever there are some.
pub const ACTIVE_CONSUMER_IDLE_MS: i64 = 120_000;

/// Everything the pipeline's live view shows.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub stream: String,
    pub stream_length: i64,
    pub dlq_stream: String,
    pub dlq_length: i64,
    pub groups: Vec<GroupStats>,
    /// Orders with a dead letter not yet resolved (replayed and handled, or deleted).
    pub orders_with_dead_letters: i64,
    /// `None` when Redis does not give `INFO memory` (some managed offerings).
    pub redis_memory: Option<RedisMemory>,
    /// When the retry worker last finished a pass (ms since the epoch), if ever.
    pub retry_worker_last_pass_ms: Option<i64>,
    /// Orders placed and finished, ever (retention does not lower them): rates come from two
    /// readings.
    pub orders: OrderTotals,
    /// Placed-to-final times of the last finished orders (up to 1,000), when there are any.
    pub completion_ms: Option<Completion>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct OrderTotals {
    pub placed: i64,
    pub completed: i64,
    pub cancelled: i64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Completion {
    pub p50: i64,
    pub p99: i64,
    pub max: i64,
    /// How many finished orders these are of.
    pub samples: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupStats {
    pub group: String,
    pub consumers: Vec<ConsumerStats>,
    pub pending: i64,
    pub lag: Option<i64>,
    /// Age of the group's oldest entry delivered and not yet acknowledged (ms), if any.
    pub oldest_pending_ms: Option<i64>,
    pub retries: i64,
    pub dead_letters: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStats {
    pub name: String,
    pub pending: i64,
    /// Since it was last seen alive (a read with entries, or its heartbeat).
    pub unseen_ms: i64,
    pub active: bool,
    /// Entries it acknowledged, ever: its share of the group's work.
    pub handled: i64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RedisMemory {
    pub used_bytes: i64,
    /// 0 when no limit is set.
    pub max_bytes: i64,
}

/// Reads everything, from Redis, now.
pub async fn collect(redis: &Redis, stream: &str, dlq_stream: &str) -> RedisResult<Stats> {
    let lengths = async {
        redis::pipe()
            .cmd("XLEN")
            .arg(stream)
            .cmd("XLEN")
            .arg(dlq_stream)
            .cmd("SCARD")
            .arg(keys::orders_dead_lettered())
            .query_async::<(i64, i64, i64)>(&mut redis.conn())
            .await
    };
    let memory = async {
        redis::cmd("INFO")
            .arg("memory")
            .query_async::<String>(&mut redis.conn())
            .await
    };
    let completions = async {
        redis::cmd("LRANGE")
            .arg(keys::completion_samples())
            .arg(0)
            .arg(-1)
            .query_async::<Vec<i64>>(&mut redis.conn())
            .await
    };
    let (groups, counters, lengths, memory, completions) = futures_util::join!(
        group_figures(redis, stream),
        durable_counters(redis),
        lengths,
        memory,
        completions
    );
    let (groups, counters) = (groups?, counters?);
    let (stream_length, dlq_length, orders_with_dead_letters) = lengths?;
    let now = crate::events::now_millis() as i64;
    let per_group = futures_util::future::try_join_all(groups.iter().map(|g| async move {
        let handled = async {
            redis::cmd("HGETALL")
                .arg(keys::handled(&g.name))
                .query_async::<HashMap<String, i64>>(&mut redis.conn())
                .await
        };
        let (consumers, oldest, handled) = futures_util::try_join!(
            consumer_figures(redis, stream, &g.name),
            oldest_pending_id(redis, stream, &g.name, g.pending),
            handled
        )?;
        RedisResult::Ok((consumers, oldest, handled))
    }))
    .await?;
    let counter = |name: String| counters.get(&name).copied().unwrap_or(0);
    let groups = groups
        .into_iter()
        .zip(per_group)
        .map(|(g, (consumers, oldest, handled))| GroupStats {
            retries: counter(keys::counter::retries(&g.name)),
            dead_letters: counter(keys::counter::dead_letters(&g.name)),
            oldest_pending_ms: oldest.map(|(ms, _)| (now - ms as i64).max(0)),
            consumers: consumers
                .into_iter()
                .map(|c| ConsumerStats {
                    active: c.is_active(),
                    handled: handled.get(&c.name).copied().unwrap_or(0),
                    name: c.name,
                    pending: c.pending,
                    unseen_ms: c.unseen_ms,
                })
                .collect(),
            group: g.name,
            pending: g.pending,
            lag: g.lag,
        })
        .collect();
    Ok(Stats {
        stream: stream.to_owned(),
        stream_length,
        dlq_stream: dlq_stream.to_owned(),
        dlq_length,
        groups,
        orders_with_dead_letters,
        redis_memory: memory.ok().and_then(|info| parse_memory(&info)),
        retry_worker_last_pass_ms: counters
            .get(keys::counter::RETRY_WORKER_LAST_PASS_MS)
            .copied(),
        orders: OrderTotals {
            placed: counter(keys::counter::ORDERS_PLACED.into()),
            completed: counter(keys::counter::ORDERS_COMPLETED.into()),
            cancelled: counter(keys::counter::ORDERS_CANCELLED.into()),
        },
        completion_ms: completion(completions.unwrap_or_default()),
    })
}

/// Median, 99th percentile and maximum of completion times.
fn completion(mut samples: Vec<i64>) -> Option<Completion> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    Some(Completion {
        p50: at(0.5),
        p99: at(0.99),
        max: samples[samples.len() - 1],
        samples: samples.len(),
    })
}

/// `used_memory` and `maxmemory` of an `INFO memory` reply.
fn parse_memory(info: &str) -> Option<RedisMemory> {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    Some(RedisMemory {
        used_bytes: field("used_memory")?,
        max_bytes: field("maxmemory").unwrap_or(0),
    })
}

/// One group's figures from `XINFO GROUPS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupFigures {
    pub name: String,
    /// Consumers registered in the group (gone ones count until the retry worker removes them).
    pub consumers: i64,
    pub pending: i64,
    /// `None` when Redis cannot tell (after deletions in the stream, or a restart).
    pub lag: Option<i64>,
    pub last_delivered_id: String,
}

/// `XINFO GROUPS` for the stream, lag corrected for groups that have read everything; empty when
/// the stream does not exist yet.
pub async fn group_figures(redis: &Redis, stream: &str) -> RedisResult<Vec<GroupFigures>> {
    let groups = async {
        redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async::<Vec<HashMap<String, Value>>>(&mut redis.conn())
            .await
    };
    let last = last_generated_id(redis, stream);
    let (groups, last) = futures_util::join!(groups, last);
    let groups = match groups {
        Ok(groups) => groups,
        Err(e) if is_no_such_key(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let last = last?;
    Ok(groups
        .into_iter()
        .map(|g| {
            let int = |k: &str| match g.get(k) {
                Some(Value::Int(i)) => Some(*i),
                _ => None,
            };
            let text = |k: &str| match g.get(k) {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => String::new(),
            };
            let last_delivered_id = text("last-delivered-id");
            let caught_up = last.as_deref().is_none_or(|l| l == last_delivered_id);
            GroupFigures {
                name: text("name"),
                consumers: int("consumers").unwrap_or_default(),
                pending: int("pending").unwrap_or_default(),
                lag: if caught_up { Some(0) } else { int("lag") },
                last_delivered_id,
            }
        })
        .collect())
}

/// The stream's `last-generated-id` (`None` when nothing was ever added).
async fn last_generated_id(redis: &Redis, stream: &str) -> RedisResult<Option<String>> {
    let mut conn = redis.conn();
    let info: RedisResult<HashMap<String, Value>> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(&mut conn)
        .await;
    match info {
        Ok(info) => Ok(match info.get("last-generated-id") {
            Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Some(Value::SimpleString(s)) => Some(s.clone()),
            _ => None,
        }
        .filter(|id| id != "0-0")),
        Err(e) if is_no_such_key(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_no_such_key(e: &redis::RedisError) -> bool {
    e.to_string().contains("no such key")
}

/// The id of the group's oldest pending entry (`XPENDING` summary), as `(ms, seq)`.
pub async fn oldest_pending_id(
    redis: &Redis,
    stream: &str,
    group: &str,
    pending: i64,
) -> RedisResult<Option<(u64, u64)>> {
    if pending == 0 {
        return Ok(None);
    }
    let mut conn = redis.conn();
    let summary: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(&mut conn)
        .await?;
    Ok(match summary {
        redis::streams::StreamPendingReply::Data(d) => Some(parse_entry_id(&d.start_id)),
        _ => None,
    })
}

/// A stream entry id (`ms-seq`) as a pair that sorts like the stream; a malformed one is (0, 0).
pub fn parse_entry_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// One consumer's figures from `XINFO CONSUMERS` and its heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerFigures {
    pub name: String,
    pub pending: i64,
    /// Since the consumer last read entries, as Redis reports it.
    pub idle_ms: i64,
    /// Since the consumer was last seen alive: the younger of its idle time and its heartbeat.
    pub unseen_ms: i64,
}

impl ConsumerFigures {
    pub fn is_active(&self) -> bool {
        self.unseen_ms < ACTIVE_CONSUMER_IDLE_MS
    }
}

/// `XINFO CONSUMERS` of one group with each consumer's heartbeat; empty when the group does not
/// exist.
pub async fn consumer_figures(
    redis: &Redis,
    stream: &str,
    group: &str,
) -> RedisResult<Vec<ConsumerFigures>> {
    let info = async {
        redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg(group)
            .query_async::<redis::streams::StreamInfoConsumersReply>(&mut redis.conn())
            .await
    };
    let beats = async {
        redis::cmd("HGETALL")
            .arg(keys::heartbeats(group))
            .query_async::<HashMap<String, i64>>(&mut redis.conn())
            .await
    };
    let (info, beats) = futures_util::join!(info, beats);
    let beats = beats?;
    let now = crate::events::now_millis() as i64;
    match info {
        Ok(info) => Ok(info
            .consumers
            .into_iter()
            .map(|c| {
                let idle_ms = c.idle as i64;
                let since_beat = beats.get(&c.name).map_or(i64::MAX, |b| (now - b).max(0));
                ConsumerFigures {
                    unseen_ms: idle_ms.min(since_beat),
                    name: c.name,
                    pending: c.pending as i64,
                    idle_ms,
                }
            })
            .collect()),
        Err(e) if e.code() == Some("NOGROUP") || is_no_such_key(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The durable counters ([`keys::counters`]) as a map.
pub async fn durable_counters(redis: &Redis) -> RedisResult<HashMap<String, i64>> {
    let mut conn = redis.conn();
    redis::cmd("HGETALL")
        .arg(keys::counters())
        .query_async(&mut conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_figures_come_from_info() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:0\r\n";
        let m = parse_memory(info).expect("figures");
        assert_eq!((m.used_bytes, m.max_bytes), (1_048_576, 0));
        assert!(parse_memory("# Memory\r\n").is_none());
    }

    #[test]
    fn completion_percentiles_come_from_the_samples() {
        assert!(completion(Vec::new()).is_none());
        let c = completion((1..=100).rev().collect()).expect("some");
        assert_eq!((c.p50, c.p99, c.max, c.samples), (50, 99, 100, 100));
    }

    #[test]
    fn ids_parse_and_order() {
        assert_eq!(parse_entry_id("1700-3"), (1700, 3));
        assert_eq!(parse_entry_id("0-0"), (0, 0));
        assert!(parse_entry_id("1700-10") > parse_entry_id("1700-9"));
    }
}
