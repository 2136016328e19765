//! `fulfillment stats`: one screen of groups, consumers, pending, lag, retries and the DLQ.

use fulfillment_core::metrics::{consumer_figures, durable_counters, group_figures};
use fulfillment_core::{Redis, Settings, keys};
use serde::Serialize;
use std::fmt::Write as _;

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

/// The one-screen table.
pub fn render(stats: &Stats) -> String {
    let mut out = format!(
        "{} length {}    {} length {}\n\n",
        stats.stream, stats.stream_length, stats.dlq_stream, stats.dlq_length
    );
    let _ = writeln!(
        out,
        "{:<20} {:>9} {:>7} {:>8} {:>6} {:>8} {:>12}",
        "GROUP", "CONSUMERS", "ACTIVE", "PENDING", "LAG", "RETRIES", "DEAD LETTERS"
    );
    for g in &stats.groups {
        let active = g.consumers.iter().filter(|c| c.active).count();
        let lag = g.lag.map_or("?".to_owned(), |l| l.to_string());
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>7} {:>8} {:>6} {:>8} {:>12}",
            g.group,
            g.consumers.len(),
            active,
            g.pending,
            lag,
            g.retries,
            g.dead_letters
        );
    }
    let _ = writeln!(
        out,
        "\n{:<20} {:<28} {:>8} {:>10}",
        "GROUP", "CONSUMER", "PENDING", "IDLE"
    );
    for g in &stats.groups {
        for c in &g.consumers {
            let _ = writeln!(
                out,
                "{:<20} {:<28} {:>8} {:>10}{}",
                g.group,
                c.name,
                c.pending,
                format_idle(c.unseen_ms),
                if c.active { "" } else { "  (inactive)" }
            );
        }
    }
    out.trim_end().to_owned()
}

fn format_idle(ms: i64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms}ms ago"),
        ms if ms < 120_000 => format!("{}s ago", ms / 1_000),
        ms if ms < i64::MAX / 2 => format!("{}m ago", ms / 60_000),
        _ => "never".to_owned(),
    }
}
