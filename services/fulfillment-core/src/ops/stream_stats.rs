//! The one reader of the pipeline's live figures in Redis: stream lengths, and per group its
//! consumers, pending, lag, oldest pending entry, retries and dead letters; orders with unresolved
//! dead letters; Redis's memory; when the retry worker last passed. `/metrics`, `GET /stats`,
//! `fulfillment stats`, the console and the retry worker all read through here.
//!
//! With several partitions every figure is read per partition and added up (a consumer's figures
//! over every partition it reads); [`Stats::partitions`] keeps each partition's own, so an
//! operator can find a hot one.
//!
//! Lag is Redis's own (`XINFO GROUPS`), except that a group whose last delivered entry is the
//! stream's last has no lag, whatever XINFO says: after a restart from an append-only file,
//! `entries-read` can fall behind for good and XINFO's lag with it (the retry worker then repairs
//! the group's counter, see `repair_lag.lua`).

use crate::store::Redis;
use fulfillment_events::keys::{self, Partition};
use fulfillment_events::states::NotificationKind;
use fulfillment_redis::stream_entry::entry_id_order;
use redis::{FromRedisValue, RedisError, RedisResult, Value};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// A consumer seen less than this long ago is active: a live consumer records a heartbeat every
/// second ([`keys::KeySpace::heartbeats`]) and reads entries whenever there are some.
pub const ACTIVE_CONSUMER_IDLE_MS: i64 = 120_000;

/// Everything the pipeline's live view shows.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// `STREAM`: the stream, or the name every partition stream starts with.
    pub stream: String,
    /// Entries on every partition stream.
    pub stream_length: i64,
    /// `DLQ_STREAM`: the dead-letter stream, or the name every partition's starts with.
    pub dlq_stream: String,
    pub dlq_length: i64,
    /// Each group over every partition.
    pub groups: Vec<GroupStats>,
    /// Each partition's own figures (one entry with one partition).
    pub partitions: Vec<PartitionStats>,
    /// Orders with a dead letter not yet resolved (replayed and handled, or deleted).
    pub orders_with_dead_letters: i64,
    /// Every master's memory added up; `None` when Redis does not give `INFO memory` (some
    /// managed offerings).
    pub redis_memory: Option<RedisMemory>,
    /// When the retry worker last finished a pass (ms since the epoch), if ever.
    pub retry_worker_last_pass_ms: Option<i64>,
    /// Orders placed and finished, ever (retention does not lower them): rates come from two
    /// readings.
    pub orders: OrderTotals,
    /// Placed-to-final times of the last finished orders (up to 1,000 per partition), when there
    /// are any.
    pub completion_ms: Option<Completion>,
    /// Notifications by kind: sent, sent again after an unrecorded attempt, refused for good.
    pub notifications: Vec<NotificationTotals>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NotificationTotals {
    pub kind: &'static str,
    pub sent: i64,
    pub resent: i64,
    pub failed: i64,
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
    /// `None` when Redis cannot tell for some partition.
    pub lag: Option<i64>,
    /// Age of the group's oldest entry delivered and not yet acknowledged (ms), if any: one its
    /// readers read (pending entries not read yet are the group's lag, not a stuck entry).
    pub oldest_pending_ms: Option<i64>,
    pub retries: i64,
    pub dead_letters: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStats {
    pub name: String,
    pub pending: i64,
    /// Since it was last seen alive (a read with entries, or its heartbeat), on any partition.
    pub unseen_ms: i64,
    pub active: bool,
    /// Entries it acknowledged, ever: its share of the group's work.
    pub handled: i64,
}

/// One partition's streams and groups.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStats {
    pub index: usize,
    pub stream: String,
    pub stream_length: i64,
    pub dlq_stream: String,
    pub dlq_length: i64,
    pub groups: Vec<PartitionGroupStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionGroupStats {
    pub group: String,
    pub pending: i64,
    pub lag: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RedisMemory {
    pub used_bytes: i64,
    /// 0 when no limit is set (on any master).
    pub max_bytes: i64,
}

/// What one partition holds, as read.
struct PartitionRead {
    stream_length: i64,
    dlq_length: i64,
    orders_with_dead_letters: i64,
    groups: Vec<GroupRead>,
    counters: HashMap<String, i64>,
    completions: Vec<i64>,
}

/// What one group on one partition holds, as read: its figures, its consumers, its oldest
/// pending entry, each consumer's count of work.
struct GroupRead {
    figures: GroupFigures,
    consumers: Vec<ConsumerFigures>,
    oldest: Option<(u64, u64)>,
    handled: HashMap<String, i64>,
}

/// Reads everything, from Redis, now.
pub async fn collect(redis: &Redis) -> RedisResult<Stats> {
    let layout = redis.layout();
    let partitions = futures_util::future::try_join_all(
        layout
            .partitions()
            .iter()
            .map(|partition| read_partition(redis, partition)),
    );
    let memory = redis.info_of_masters(&["memory"]);
    let last_pass = async {
        redis::cmd("HGET")
            .arg(layout.global.counters())
            .arg(keys::counter::RETRY_WORKER_LAST_PASS_MS)
            .query_async::<Option<i64>>(&mut redis.conn())
            .await
    };
    let (partitions, memory, last_pass) = futures_util::join!(partitions, memory, last_pass);
    let (partitions, last_pass) = (partitions?, last_pass?);
    let now = fulfillment_events::events::now_millis() as i64;

    let mut counters: HashMap<String, i64> = HashMap::new();
    let mut completions = Vec::new();
    let mut groups: BTreeMap<String, GroupStats> = BTreeMap::new();
    let mut consumers: BTreeMap<(String, String), ConsumerStats> = BTreeMap::new();
    let mut per_partition = Vec::new();
    let (mut stream_length, mut dlq_length, mut flagged) = (0, 0, 0);
    for (partition, read) in layout.partitions().iter().zip(partitions) {
        stream_length += read.stream_length;
        dlq_length += read.dlq_length;
        flagged += read.orders_with_dead_letters;
        for (name, value) in read.counters {
            *counters.entry(name).or_default() += value;
        }
        completions.extend(read.completions);
        let mut own_groups = Vec::new();
        for GroupRead {
            figures: g,
            consumers: group_consumers,
            oldest,
            handled,
        } in read.groups
        {
            own_groups.push(PartitionGroupStats {
                group: g.name.clone(),
                pending: g.pending,
                lag: g.lag,
            });
            let total = groups.entry(g.name.clone()).or_insert_with(|| GroupStats {
                group: g.name.clone(),
                consumers: Vec::new(),
                pending: 0,
                lag: Some(0),
                oldest_pending_ms: None,
                retries: 0,
                dead_letters: 0,
            });
            total.pending += g.pending;
            total.lag = total.lag.zip(g.lag).map(|(a, b)| a + b);
            if let Some((ms, _)) = oldest {
                let age = (now - ms as i64).max(0);
                total.oldest_pending_ms = Some(total.oldest_pending_ms.map_or(age, |o| o.max(age)));
            }
            for c in group_consumers {
                let entry = consumers
                    .entry((g.name.clone(), c.name.clone()))
                    .or_insert_with(|| ConsumerStats {
                        name: c.name.clone(),
                        pending: 0,
                        unseen_ms: i64::MAX,
                        active: false,
                        handled: 0,
                    });
                entry.pending += c.pending;
                entry.unseen_ms = entry.unseen_ms.min(c.unseen_ms);
                entry.active |= c.is_active();
                entry.handled += handled.get(&c.name).copied().unwrap_or(0);
            }
        }
        per_partition.push(PartitionStats {
            index: partition.index,
            stream: partition.stream.clone(),
            stream_length: read.stream_length,
            dlq_stream: partition.dlq.clone(),
            dlq_length: read.dlq_length,
            groups: own_groups,
        });
    }
    for ((group, _), consumer) in consumers {
        if let Some(g) = groups.get_mut(&group) {
            g.consumers.push(consumer);
        }
    }
    let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
    let groups = groups
        .into_values()
        .map(|mut g| {
            g.retries = counter(&keys::counter::retries(&g.group));
            g.dead_letters = counter(&keys::counter::dead_letters(&g.group));
            g
        })
        .collect();
    Ok(Stats {
        stream: layout.stream().to_owned(),
        stream_length,
        dlq_stream: layout.dlq().to_owned(),
        dlq_length,
        groups,
        partitions: per_partition,
        orders_with_dead_letters: flagged,
        redis_memory: memory.ok().and_then(|infos| {
            sum_memory(&infos.into_iter().map(|(_, info)| info).collect::<Vec<_>>())
        }),
        retry_worker_last_pass_ms: last_pass,
        orders: OrderTotals {
            placed: counter(keys::counter::ORDERS_PLACED),
            completed: counter(keys::counter::ORDERS_COMPLETED),
            cancelled: counter(keys::counter::ORDERS_CANCELLED),
        },
        completion_ms: completion(completions),
        notifications: NotificationKind::ALL
            .iter()
            .map(|kind| NotificationTotals {
                kind: kind.as_str(),
                sent: counter(&keys::counter::notifications(kind.as_str())),
                resent: counter(&keys::counter::notifications_resent(kind.as_str())),
                failed: counter(&keys::counter::notifications_failed(kind.as_str())),
            })
            .collect(),
    })
}

/// One partition's streams, groups, consumers, counters and completion times.
async fn read_partition(redis: &Redis, partition: &Partition) -> RedisResult<PartitionRead> {
    let keys = &partition.keys;
    let lengths = async {
        redis::pipe()
            .cmd("XLEN")
            .arg(&partition.stream)
            .cmd("XLEN")
            .arg(&partition.dlq)
            .cmd("SCARD")
            .arg(keys.orders_dead_lettered())
            .query_async::<(i64, i64, i64)>(&mut redis.conn())
            .await
    };
    let completions = async {
        redis::cmd("LRANGE")
            .arg(keys.completion_samples())
            .arg(0)
            .arg(-1)
            .query_async::<Vec<i64>>(&mut redis.conn())
            .await
    };
    let counters = async {
        redis::cmd("HGETALL")
            .arg(keys.counters())
            .query_async::<HashMap<String, i64>>(&mut redis.conn())
            .await
    };
    let (groups, lengths, completions, counters) = futures_util::join!(
        group_figures(redis, &partition.stream),
        lengths,
        completions,
        counters
    );
    let groups = groups?;
    let (stream_length, dlq_length, orders_with_dead_letters) = lengths?;
    let groups = futures_util::future::try_join_all(groups.into_iter().map(|g| async move {
        let handled = async {
            redis::cmd("HGETALL")
                .arg(keys.handled(&g.name))
                .query_async::<HashMap<String, i64>>(&mut redis.conn())
                .await
        };
        let (consumers, oldest, handled) = futures_util::try_join!(
            consumer_figures(redis, partition, &g.name),
            oldest_read_pending_id(redis, &partition.stream, &g.name, &g.last_delivered_id),
            handled
        )?;
        RedisResult::Ok(GroupRead {
            figures: g,
            consumers,
            oldest,
            handled,
        })
    }))
    .await?;
    Ok(PartitionRead {
        stream_length,
        dlq_length,
        orders_with_dead_letters,
        groups,
        counters: counters?,
        completions: completions.unwrap_or_default(),
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

/// Every master's `used_memory` and `maxmemory` added up (`max_bytes` 0 when any master has no
/// limit).
fn sum_memory(infos: &[String]) -> Option<RedisMemory> {
    let each: Option<Vec<RedisMemory>> = infos.iter().map(|i| parse_memory(i)).collect();
    let each = each.filter(|e| !e.is_empty())?;
    Some(RedisMemory {
        used_bytes: each.iter().map(|m| m.used_bytes).sum(),
        max_bytes: if each.iter().any(|m| m.max_bytes == 0) {
            0
        } else {
            each.iter().map(|m| m.max_bytes).sum()
        },
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
        Err(e) if !stream_exists(redis, stream).await? => {
            tracing::trace!(error = %e, stream, "no stream yet: no groups");
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let last = last?;
    groups
        .into_iter()
        .map(|g| {
            let field = |k: &str| {
                g.get(k)
                    .ok_or_else(|| parse_error(format!("XINFO GROUPS of {stream}: no `{k}` field")))
            };
            let int = |k: &str| match field(k)? {
                Value::Int(i) => Ok(Some(*i)),
                // `lag` is nil when Redis cannot tell.
                Value::Nil => Ok(None),
                other => Err(parse_error(format!(
                    "XINFO GROUPS of {stream}: `{k}` is {other:?}, not a number"
                ))),
            };
            let text = |k: &str| String::from_redis_value_ref(field(k)?).map_err(RedisError::from);
            let count = |k: &str| {
                int(k)?
                    .ok_or_else(|| parse_error(format!("XINFO GROUPS of {stream}: `{k}` is nil")))
            };
            let last_delivered_id = text("last-delivered-id")?;
            let caught_up = last.as_deref().is_none_or(|l| l == last_delivered_id);
            Ok(GroupFigures {
                name: text("name")?,
                consumers: count("consumers")?,
                pending: count("pending")?,
                // Redis before 7.0 has no `lag`: unknown, unless the group has read everything.
                lag: if caught_up {
                    Some(0)
                } else if g.contains_key("lag") {
                    int("lag")?
                } else {
                    None
                },
                last_delivered_id,
            })
        })
        .collect()
}

/// Whether `stream` exists: what tells "no such key" from another error of an `XINFO`.
async fn stream_exists(redis: &Redis, stream: &str) -> RedisResult<bool> {
    redis::cmd("EXISTS")
        .arg(stream)
        .query_async(&mut redis.conn())
        .await
}

fn parse_error(message: String) -> RedisError {
    RedisError::from(redis::ParsingError::from(message))
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
        Ok(info) => {
            let id = info.get("last-generated-id").ok_or_else(|| {
                parse_error(format!("XINFO STREAM of {stream}: no `last-generated-id`"))
            })?;
            let id = String::from_redis_value_ref(id).map_err(RedisError::from)?;
            Ok(Some(id).filter(|id| id != "0-0"))
        }
        Err(e) if !stream_exists(redis, stream).await? => {
            tracing::trace!(error = %e, stream, "no stream yet");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The id of the oldest entry pending in the group that its readers read (at or before its last
/// delivered entry: an entry is pending for the groups that act on it from its publication), as
/// `(ms, seq)`.
pub async fn oldest_read_pending_id(
    redis: &Redis,
    stream: &str,
    group: &str,
    last_delivered_id: &str,
) -> RedisResult<Option<(u64, u64)>> {
    let mut conn = redis.conn();
    let first: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg("-")
        .arg(last_delivered_id)
        .arg(1)
        .query_async(&mut conn)
        .await?;
    Ok(first.ids.first().map(|p| entry_id_order(&p.id)))
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
        redis::streams::StreamPendingReply::Data(d) => Some(entry_id_order(&d.start_id)),
        redis::streams::StreamPendingReply::Empty => None,
        // redis-rs may add shapes (its enum is non-exhaustive): one it adds is not guessed at.
        _ => {
            return Err(parse_error(format!(
                "XPENDING of {stream} {group}: a summary of an unknown shape"
            )));
        }
    })
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

/// `XINFO CONSUMERS` of one group on one partition with each consumer's heartbeat there; empty
/// when the group does not exist. The holder of what was published for the group and not read
/// yet ([`fulfillment_events::routing::UNREAD`]) is no consumer and not listed.
pub async fn consumer_figures(
    redis: &Redis,
    partition: &Partition,
    group: &str,
) -> RedisResult<Vec<ConsumerFigures>> {
    let info = async {
        redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&partition.stream)
            .arg(group)
            .query_async::<redis::streams::StreamInfoConsumersReply>(&mut redis.conn())
            .await
    };
    let beats = async {
        redis::cmd("HGETALL")
            .arg(partition.keys.heartbeats(group))
            .query_async::<HashMap<String, i64>>(&mut redis.conn())
            .await
    };
    let (info, beats) = futures_util::join!(info, beats);
    let beats = beats?;
    let now = fulfillment_events::events::now_millis() as i64;
    match info {
        Ok(info) => Ok(info
            .consumers
            .into_iter()
            // Not a reader: it holds what was published for the group and not read yet.
            .filter(|c| c.name != fulfillment_events::routing::UNREAD)
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
        Err(e) if e.code() == Some("NOGROUP") => Ok(Vec::new()),
        Err(e) if !stream_exists(redis, &partition.stream).await? => {
            tracing::trace!(error = %e, stream = partition.stream, "no stream yet: no consumers");
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// The durable counters of every partition, added up.
pub async fn durable_counters(redis: &Redis) -> RedisResult<HashMap<String, i64>> {
    let each = futures_util::future::try_join_all(redis.layout().partitions().iter().map(
        |p| async move {
            redis::cmd("HGETALL")
                .arg(p.keys.counters())
                .query_async::<HashMap<String, i64>>(&mut redis.conn())
                .await
        },
    ))
    .await?;
    let mut total: HashMap<String, i64> = HashMap::new();
    for counters in each {
        for (name, value) in counters {
            *total.entry(name).or_default() += value;
        }
    }
    Ok(total)
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
        let limited = "used_memory:10\r\nmaxmemory:100\r\n".to_owned();
        let both = sum_memory(&[limited.clone(), limited.clone()]).expect("sum");
        assert_eq!((both.used_bytes, both.max_bytes), (20, 200));
        let one_unlimited = sum_memory(&[limited, info.to_owned()]).expect("sum");
        assert_eq!(one_unlimited.max_bytes, 0);
    }

    #[test]
    fn completion_percentiles_come_from_the_samples() {
        assert!(completion(Vec::new()).is_none());
        let c = completion((1..=100).rev().collect()).expect("some");
        assert_eq!((c.p50, c.p99, c.max, c.samples), (50, 99, 100, 100));
    }
}
