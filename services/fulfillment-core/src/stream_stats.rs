//! One picture of the stream: lengths, and per group its consumers, pending, lag, retries and
//! dead letters. `fulfillment stats`, `GET /stats` and the console show it.

use crate::metrics::{consumer_figures, durable_counters, group_figures};
use crate::{Redis, Settings, keys};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub stream: String,
    pub stream_length: i64,
    pub dlq_stream: String,
    pub dlq_length: i64,
    pub groups: Vec<GroupStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupStats {
    pub group: String,
    pub consumers: Vec<ConsumerStats>,
    pub pending: i64,
    pub lag: Option<i64>,
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
}

/// Reads everything `stats` shows, from Redis, now.
pub async fn collect(redis: &Redis, settings: &Settings) -> redis::RedisResult<Stats> {
    let groups = group_figures(redis, &settings.stream).await?;
    let counters = durable_counters(redis).await?;
    let mut conn = redis.conn();
    let (stream_length, dlq_length): (i64, i64) = redis::pipe()
        .cmd("XLEN")
        .arg(&settings.stream)
        .cmd("XLEN")
        .arg(&settings.dlq_stream)
        .query_async(&mut conn)
        .await?;
    let mut out = Vec::new();
    for g in groups {
        let consumers = consumer_figures(redis, &settings.stream, &g.name)
            .await?
            .into_iter()
            .map(|c| ConsumerStats {
                active: c.is_active(),
                name: c.name,
                pending: c.pending,
                unseen_ms: c.unseen_ms,
            })
            .collect();
        let counter = |name: String| counters.get(&name).copied().unwrap_or(0);
        out.push(GroupStats {
            retries: counter(keys::counter::retries(&g.name)),
            dead_letters: counter(keys::counter::dead_letters(&g.name)),
            group: g.name,
            consumers,
            pending: g.pending,
            lag: g.lag,
        });
    }
    Ok(Stats {
        stream: settings.stream.clone(),
        stream_length,
        dlq_stream: settings.dlq_stream.clone(),
        dlq_length,
        groups: out,
    })
}
