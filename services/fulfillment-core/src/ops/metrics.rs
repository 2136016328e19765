//! Prometheus metrics: counters and histograms kept by this process, and the pipeline's figures
//! read from Redis at scrape time (through [`crate::ops::stream_stats`], the one reader `/stats` shares).
//!
//! Retry and dead-letter totals live in Redis (the counters hash,
//! [`KeySpace::counters`](fulfillment_events::keys::KeySpace::counters)) rather than in the retry worker's
//! memory, because the retry worker is a short-lived CronJob: every long-running process exports
//! the Redis totals, so they reach Prometheus whoever did the retrying.

use crate::ops::stream_stats::{self, Stats};
use crate::store::Redis;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::LazyLock;
use std::time::Duration;

/// Longest a scrape waits for Redis; then it serves what the process knows.
const REDIS_FIGURES_TIMEOUT: Duration = Duration::from_secs(2);

struct ProcessMetrics {
    registry: Registry,
    events_handled: IntCounterVec,
    handler_duration: HistogramVec,
    order_completion: HistogramVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
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
    let http_duration = HistogramVec::new(
        HistogramOpts::new(
            "fulfillment_http_request_duration_seconds",
            "Time the API took to answer, by route template and method.",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
        ]),
        &["route", "method"],
    )
    .expect("valid metric");
    for collector in [
        Box::new(events_handled.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(handler_duration.clone()),
        Box::new(order_completion.clone()),
        Box::new(http_requests.clone()),
        Box::new(http_duration.clone()),
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
        http_duration,
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

/// One API request: `method` must be one of a fixed set (the caller maps others to `other`).
pub fn http_request(route: &str, method: &str, status: u16, took: Duration) {
    PROCESS
        .http_requests
        .with_label_values(&[route, method, &status.to_string()])
        .inc();
    PROCESS
        .http_duration
        .with_label_values(&[route, method])
        .observe(took.as_secs_f64());
}

/// What `/metrics` serves: this process's metrics and the pipeline's figures read from Redis
/// now. A Redis outage or a Redis slower than two seconds leaves those figures out rather than
/// failing or holding up the scrape.
pub async fn render(redis: &Redis) -> String {
    let mut families = PROCESS.registry.gather();
    let read = tokio::time::timeout(REDIS_FIGURES_TIMEOUT, stream_stats::collect(redis)).await;
    match read {
        Ok(Ok(stats)) => match figures(&stats) {
            Ok(registry) => families.extend(registry.gather()),
            Err(e) => tracing::error!(error = %e, "cannot build the stream figures"),
        },
        Ok(Err(e)) => tracing::warn!(error = %e, "stream figures unavailable for /metrics"),
        Err(_) => tracing::warn!("Redis did not answer in time; stream figures left out"),
    }
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The figures of `stats` as a registry of their own, made afresh each scrape.
fn figures(stats: &Stats) -> Result<Registry, prometheus::Error> {
    let registry = Registry::new();
    let gauge =
        |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
    let counter = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
        let c = IntCounterVec::new(Opts::new(name, help), &["group"])?;
        registry.register(Box::new(c.clone()))?;
        Ok(c)
    };
    let single = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
        let g = IntGauge::new(name, help)?;
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
    let oldest = gauge(
        "fulfillment_stream_oldest_pending_seconds",
        "Age of the group's oldest entry delivered and not yet acknowledged (0 when none).",
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
        "Entries on the stream (each partition stream and dead-letter stream).",
        &["stream"],
    )?;
    let dlq = single(
        "fulfillment_dlq_length",
        "Entries on the dead-letter stream (every partition's).",
    )?;
    let flagged = single(
        "fulfillment_orders_with_dead_letters",
        "Orders with a dead letter not yet resolved (replayed and handled, or deleted).",
    )?;
    let retries = counter(
        "fulfillment_retries_total",
        "Retries run by the retry worker.",
    )?;
    let dead_letters = counter(
        "fulfillment_dead_letters_total",
        "Entries moved to the dead-letter stream.",
    )?;
    for g in &stats.groups {
        pending.with_label_values(&[&g.group]).set(g.pending);
        consumers
            .with_label_values(&[&g.group])
            .set(g.consumers.len() as i64);
        active
            .with_label_values(&[&g.group])
            .set(g.consumers.iter().filter(|c| c.active).count() as i64);
        if let Some(l) = g.lag {
            lag.with_label_values(&[&g.group]).set(l);
        }
        oldest
            .with_label_values(&[&g.group])
            .set(g.oldest_pending_ms.unwrap_or(0) / 1000);
    }
    // Every group of the contract, even before its first retry or dead letter.
    for group in fulfillment_events::service::all_groups() {
        let g = stats.groups.iter().find(|g| g.group == *group);
        let total = |n: Option<i64>| n.unwrap_or(0).max(0) as u64;
        retries
            .with_label_values(&[group])
            .inc_by(total(g.map(|g| g.retries)));
        dead_letters
            .with_label_values(&[group])
            .inc_by(total(g.map(|g| g.dead_letters)));
    }
    for p in &stats.partitions {
        length.with_label_values(&[&p.stream]).set(p.stream_length);
        length.with_label_values(&[&p.dlq_stream]).set(p.dlq_length);
    }
    if stats.partitions.len() > 1 {
        let pending = gauge(
            "fulfillment_partition_pending",
            "Entries of one partition delivered to the group and not yet acknowledged.",
            &["group", "partition"],
        )?;
        let lag = gauge(
            "fulfillment_partition_lag",
            "Entries of one partition not yet delivered to the group.",
            &["group", "partition"],
        )?;
        for p in &stats.partitions {
            let index = p.index.to_string();
            for g in &p.groups {
                pending
                    .with_label_values(&[&g.group, &index])
                    .set(g.pending);
                if let Some(l) = g.lag {
                    lag.with_label_values(&[&g.group, &index]).set(l);
                }
            }
        }
    }
    let notifications = IntCounterVec::new(
        Opts::new(
            "fulfillment_notifications_total",
            "Notifications by kind and outcome: sent, resent (sent again with the same Message-ID \
             after an attempt that was not recorded), failed (the relay refused the recipient).",
        ),
        &["kind", "outcome"],
    )?;
    registry.register(Box::new(notifications.clone()))?;
    for n in &stats.notifications {
        for (outcome, total) in [("sent", n.sent), ("resent", n.resent), ("failed", n.failed)] {
            notifications
                .with_label_values(&[n.kind, outcome])
                .inc_by(total.max(0) as u64);
        }
    }
    dlq.set(stats.dlq_length);
    flagged.set(stats.orders_with_dead_letters);
    if let Some(memory) = stats.redis_memory {
        single(
            "fulfillment_redis_used_memory_bytes",
            "Memory Redis uses (INFO used_memory).",
        )?
        .set(memory.used_bytes);
        single(
            "fulfillment_redis_maxmemory_bytes",
            "Redis's memory limit (INFO maxmemory; 0 when none is set).",
        )?
        .set(memory.max_bytes);
    }
    if let Some(ms) = stats.retry_worker_last_pass_ms {
        let last = Gauge::new(
            "fulfillment_retry_worker_last_run_timestamp_seconds",
            "When the retry worker last finished a pass (Unix time).",
        )?;
        registry.register(Box::new(last.clone()))?;
        last.set(ms as f64 / 1000.0);
    }
    Ok(registry)
}
