//! Prometheus metrics: counters and histograms kept by this process, and stream figures read from
//! Redis at scrape time.
//!
//! Retry and dead-letter totals live in Redis ([`keys::counters`]) rather than in the retry
//! worker's memory, because the retry worker is a short-lived CronJob: every long-running process
//! exports the Redis totals, so they reach Prometheus whoever did the retrying.

use crate::keys;
use crate::redis_io::Redis;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

struct ProcessMetrics {
    registry: Registry,
    events_handled: IntCounterVec,
    handler_duration: HistogramVec,
    order_completion: HistogramVec,
    http_requests: IntCounterVec,
}

static PROCESS: LazyLock<ProcessMetrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let events_handled = IntCounterVec::new(
        Opts::new(
            "fulfillment_events_handled_total",
            "Deliveries handled, by group, event type and outcome.",
        ),
        &["group", "type", "outcome"],
    )
    .expect("valid metric");
    let handler_duration = HistogramVec::new(
        HistogramOpts::new(
            "fulfillment_handler_duration_seconds",
            "Time a handler took for one delivery.",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]),
        &["group", "type"],
    )
    .expect("valid metric");
    let order_completion = HistogramVec::new(
        HistogramOpts::new(
            "fulfillment_order_completion_seconds",
            "Time from an order's placement to its terminal status.",
        )
        .buckets(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ]),
        &["status"],
    )
    .expect("valid metric");
    let http_requests = IntCounterVec::new(
        Opts::new(
            "fulfillment_http_requests_total",
            "HTTP requests, by route template, method and status.",
        ),
        &["route", "method", "status"],
    )
    .expect("valid metric");
    for collector in [
        Box::new(events_handled.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(handler_duration.clone()),
        Box::new(order_completion.clone()),
        Box::new(http_requests.clone()),
    ] {
        registry
            .register(collector)
            .expect("metric registered once");
    }
    ProcessMetrics {
        registry,
        events_handled,
        handler_duration,
        order_completion,
        http_requests,
    }
});

pub fn event_handled(group: &str, event_type: &str, outcome: &str) {
    PROCESS
        .events_handled
        .with_label_values(&[group, event_type, outcome])
        .inc();
}

pub fn handler_duration(group: &str, event_type: &str, took: Duration) {
    PROCESS
        .handler_duration
        .with_label_values(&[group, event_type])
        .observe(took.as_secs_f64());
}

pub fn order_completed(status: &str, took: Duration) {
    PROCESS
        .order_completion
        .with_label_values(&[status])
        .observe(took.as_secs_f64());
}

pub fn http_request(route: &str, method: &str, status: u16) {
    PROCESS
        .http_requests
        .with_label_values(&[route, method, &status.to_string()])
        .inc();
}

/// What `/metrics` serves: this process's metrics and the stream figures read from Redis now.
/// A Redis outage leaves the stream figures out rather than failing the scrape.
pub async fn render(redis: &Redis, stream: &str, dlq_stream: &str) -> String {
    let mut families = PROCESS.registry.gather();
    match stream_figures(redis, stream, dlq_stream).await {
        Ok(registry) => families.extend(registry.gather()),
        Err(e) => tracing::warn!(error = %e, "stream figures unavailable for /metrics"),
    }
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A consumer seen less than this long ago is active: a live consumer records a heartbeat every
/// second ([`keys::heartbeats`]) and reads entries whenever there are some.
pub const ACTIVE_CONSUMER_IDLE_MS: i64 = 120_000;

/// One group's figures from `XINFO GROUPS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupFigures {
    pub name: String,
    /// Consumers registered in the group (gone ones count until the retry worker removes them).
    pub consumers: i64,
    pub pending: i64,
    /// `None` when Redis cannot tell (after deletions in the stream).
    pub lag: Option<i64>,
    pub last_delivered_id: String,
}

/// `XINFO GROUPS` for the stream; empty when the stream does not exist yet.
pub async fn group_figures(redis: &Redis, stream: &str) -> redis::RedisResult<Vec<GroupFigures>> {
    let mut conn = redis.conn();
    let reply: redis::RedisResult<Vec<HashMap<String, redis::Value>>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut conn)
        .await;
    let groups = match reply {
        Ok(groups) => groups,
        Err(e) if e.to_string().contains("no such key") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(groups
        .into_iter()
        .map(|g| {
            let int = |k: &str| match g.get(k) {
                Some(redis::Value::Int(i)) => Some(*i),
                _ => None,
            };
            let text = |k: &str| match g.get(k) {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(redis::Value::SimpleString(s)) => s.clone(),
                _ => String::new(),
            };
            GroupFigures {
                name: text("name"),
                consumers: int("consumers").unwrap_or_default(),
                pending: int("pending").unwrap_or_default(),
                lag: int("lag"),
                last_delivered_id: text("last-delivered-id"),
            }
        })
        .collect())
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
) -> redis::RedisResult<Vec<ConsumerFigures>> {
    let mut conn = redis.conn();
    let reply: redis::RedisResult<redis::streams::StreamInfoConsumersReply> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(&mut conn)
        .await;
    let beats: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(keys::heartbeats(group))
        .query_async(&mut conn)
        .await?;
    let now = crate::events::now_millis() as i64;
    match reply {
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
        Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("no such key") => {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// The durable counters ([`keys::counters`]) as a map.
pub async fn durable_counters(redis: &Redis) -> redis::RedisResult<HashMap<String, i64>> {
    let mut conn = redis.conn();
    redis::cmd("HGETALL")
        .arg(keys::counters())
        .query_async(&mut conn)
        .await
}

async fn stream_figures(
    redis: &Redis,
    stream: &str,
    dlq_stream: &str,
) -> Result<Registry, Box<dyn std::error::Error + Send + Sync>> {
    let groups = group_figures(redis, stream).await?;
    let counters = durable_counters(redis).await?;
    let mut conn = redis.conn();
    let (stream_len, dlq_len): (i64, i64) = redis::pipe()
        .cmd("XLEN")
        .arg(stream)
        .cmd("XLEN")
        .arg(dlq_stream)
        .query_async(&mut conn)
        .await?;

    let registry = Registry::new();
    let gauge =
        |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
    let pending = gauge(
        "fulfillment_stream_pending",
        "Entries delivered to the group and not yet acknowledged.",
        &["group"],
    )?;
    let lag = gauge(
        "fulfillment_stream_lag",
        "Entries on the stream not yet delivered to the group.",
        &["group"],
    )?;
    let consumers = gauge(
        "fulfillment_group_consumers",
        "Consumers registered in the group (gone ones count until removed).",
        &["group"],
    )?;
    let active = gauge(
        "fulfillment_group_active_consumers",
        "Consumers of the group that read in the last two minutes.",
        &["group"],
    )?;
    let length = gauge(
        "fulfillment_stream_length",
        "Entries on the stream.",
        &["stream"],
    )?;
    let dlq = prometheus::IntGauge::new(
        "fulfillment_dlq_length",
        "Entries on the dead-letter stream.",
    )?;
    registry.register(Box::new(dlq.clone()))?;
    let retries = IntCounterVec::new(
        Opts::new(
            "fulfillment_retries_total",
            "Retries run by the retry worker.",
        ),
        &["group"],
    )?;
    registry.register(Box::new(retries.clone()))?;
    let dead_letters = IntCounterVec::new(
        Opts::new(
            "fulfillment_dead_letters_total",
            "Entries moved to the dead-letter stream.",
        ),
        &["group"],
    )?;
    registry.register(Box::new(dead_letters.clone()))?;

    for g in &groups {
        pending.with_label_values(&[&g.name]).set(g.pending);
        consumers.with_label_values(&[&g.name]).set(g.consumers);
        let live = consumer_figures(redis, stream, &g.name)
            .await?
            .iter()
            .filter(|c| c.is_active())
            .count();
        active.with_label_values(&[&g.name]).set(live as i64);
        if let Some(l) = g.lag {
            lag.with_label_values(&[&g.name]).set(l);
        }
    }
    for group in keys::group::ALL {
        let read = |name: String| counters.get(&name).copied().unwrap_or(0).max(0) as u64;
        retries
            .with_label_values(&[group])
            .inc_by(read(keys::counter::retries(group)));
        dead_letters
            .with_label_values(&[group])
            .inc_by(read(keys::counter::dead_letters(group)));
    }
    length.with_label_values(&[stream]).set(stream_len);
    length.with_label_values(&[dlq_stream]).set(dlq_len);
    dlq.set(dlq_len);
    Ok(registry)
}
