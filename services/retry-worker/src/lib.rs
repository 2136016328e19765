//! The retry worker: one pass over every group's pending entries, as a CronJob runs it, or a loop.
//!
//! A pass covers every partition. Per partition and group: `XPENDING ... IDLE` finds entries idle
//! at least `RETRY_MIN_IDLE_MS` among those a reader read (up to the group's last delivered one;
//! later ones are pending from their publication and wait for the group's readers);
//! `XCLAIM` with the same min-idle takes them (so two workers never both take one); the group's
//! own handler runs again. An entry whose retry fails stays pending for the next pass until it
//! has failed `RETRY_MAX_RETRIES` retries; then it goes to the DLQ. Permanent errors go to the DLQ
//! at once; claimed ids whose entries are gone are acknowledged. Then consumers that are gone
//! (idle, nothing pending) are removed, the stream is trimmed below what every group has
//! acknowledged, finished orders older than `ORDER_RETENTION_MS` are removed, and each group's
//! lag counter is repaired if a restart from the append-only file left it wrong. The pass records
//! when it finished, for `/metrics`.

use fulfillment_core::ops::stream_stats::{consumer_figures, group_figures, oldest_pending_id};
use fulfillment_core::runtime::consumer::{Disposition, acknowledge, decide, resolve_replayed};
use fulfillment_core::runtime::dead_letter::{self, DeadLetter};
use fulfillment_core::saga::retention;
use fulfillment_core::{EventHandler, Redis, Settings};
use fulfillment_events::events::now_millis;
use fulfillment_events::keys;
use fulfillment_events::keys::Partition;
use fulfillment_redis::script_reply::Tagged;
use fulfillment_redis::stream_entry::{Entries, RawEntry, entry_id_order};
use futures_util::future::join_all;
use redis::streams::StreamPendingCountReply;
use redis::{RedisResult, Script};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use tokio_util::sync::CancellationToken;

static REMOVE_GONE_CONSUMER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/remove_gone_consumer.lua")));
static REPAIR_LAG: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/repair_lag.lua")));

fulfillment_redis::script_tags! {
    /// What `repair_lag.lua` answers.
    enum LagTag ("repair_lag.lua") {
        Repaired = "repaired",
        Right = "right",
        TooFar = "too_far",
        NoGroup = "no_group",
    }
}

/// Most entries a lag repair counts per group and pass; a group further behind is repaired by a
/// later pass, once it has caught up some.
const LAG_REPAIR_MAX_COUNT: usize = 1000;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    /// Entries run again.
    pub retried: usize,
    /// Retried entries that succeeded.
    pub recovered: usize,
    /// Retried entries that failed again and stay pending for a later pass.
    pub still_pending: usize,
    pub dead_lettered: usize,
    /// Claimed ids whose entries were deleted, acknowledged.
    pub gone_acknowledged: usize,
    pub consumers_removed: usize,
    /// Entries trimmed off the stream.
    pub trimmed: u64,
    /// Finished orders removed after `ORDER_RETENTION_MS`.
    pub orders_removed: u64,
    /// Groups whose lag counter was wrong (after a restart from the append-only file), repaired.
    pub lags_repaired: usize,
}

impl PassReport {
    fn add(&mut self, other: &PassReport) {
        self.retried += other.retried;
        self.recovered += other.recovered;
        self.still_pending += other.still_pending;
        self.dead_lettered += other.dead_lettered;
        self.gone_acknowledged += other.gone_acknowledged;
    }
}

/// A pass gives up after this long (each of its commands gives up after its own deadline too).
pub const PASS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Most finished orders one pass removes; the rest wait for the next pass.
pub const SWEEP_LIMIT_PER_PASS: usize = 100_000;

#[derive(Clone)]
pub struct RetryWorker {
    redis: Redis,
    settings: Settings,
    handlers: Vec<Arc<dyn EventHandler>>,
}

impl std::fmt::Debug for RetryWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryWorker").finish_non_exhaustive()
    }
}

impl RetryWorker {
    pub fn new(redis: Redis, settings: Settings, handlers: Vec<Arc<dyn EventHandler>>) -> Self {
        Self {
            redis,
            settings,
            handlers,
        }
    }

    /// One pass over every partition: every group's retries, then consumer clean-up, trimming
    /// and lag repair; then the retention sweep. Every command has its deadline, and the pass as
    /// a whole [`PASS_DEADLINE`]: a pass cut short is a pass that crashed, which every step is
    /// made to survive (what it claimed stays pending for the next).
    pub async fn run_pass(&self) -> RedisResult<PassReport> {
        self.run_pass_until(&CancellationToken::new()).await
    }

    /// [`Self::run_pass`], whose handlers give up their waits once `stopping` fires.
    async fn run_pass_until(&self, stopping: &CancellationToken) -> RedisResult<PassReport> {
        let pass = self.pass(stopping);
        fulfillment_redis::connection::within(PASS_DEADLINE, "retry pass", pass).await
    }

    async fn pass(&self, stopping: &CancellationToken) -> RedisResult<PassReport> {
        let mut report = PassReport::default();
        for partition in self.redis.layout().partitions() {
            // Each group's last delivered entry, read once for the partition: a group's retries
            // go no further (what is pending and unread waits for its readers).
            let groups = group_figures(&self.redis, &partition.stream).await?;
            for handler in &self.handlers {
                let Some(read_up_to) = groups.iter().find(|g| g.name == handler.group()) else {
                    continue;
                };
                let group_report = self
                    .retry_group(
                        partition,
                        handler.as_ref(),
                        &read_up_to.last_delivered_id,
                        stopping,
                    )
                    .await?;
                report.add(&group_report);
            }
            report.consumers_removed += self.remove_gone_consumers(partition).await?;
            report.trimmed += self.trim_stream(partition).await?;
            report.lags_repaired += self.repair_lags(partition).await?;
        }
        report.orders_removed = self.sweep_orders().await?;
        self.record_pass().await?;
        Ok(report)
    }

    /// Sets each group's read counter right where Redis lost count (see `repair_lag.lua`).
    async fn repair_lags(&self, partition: &Partition) -> RedisResult<usize> {
        let mut conn = self.redis.conn();
        let mut repaired = 0;
        for group in fulfillment_events::service::all_groups() {
            let reply: Tagged = REPAIR_LAG
                .key(&partition.stream)
                .arg(group)
                .arg(LAG_REPAIR_MAX_COUNT)
                .invoke_async(&mut conn)
                .await?;
            match LagTag::of(&reply)? {
                LagTag::Repaired => {
                    tracing::warn!(
                        group,
                        stream = partition.stream,
                        lag = reply.text(0)?,
                        "group lag was wrong; repaired"
                    );
                    repaired += 1;
                }
                LagTag::Right | LagTag::TooFar | LagTag::NoGroup => {}
            }
        }
        Ok(repaired)
    }

    /// Records when this pass finished, in Redis (the retry worker may be a short-lived CronJob).
    async fn record_pass(&self) -> RedisResult<()> {
        let mut conn = self.redis.conn();
        redis::cmd("HSET")
            .arg(self.redis.layout().global.counters())
            .arg(keys::counter::RETRY_WORKER_LAST_PASS_MS)
            .arg(now_millis())
            .query_async(&mut conn)
            .await
    }

    /// Passes every `RETRY_INTERVAL_MS` until `shutdown`; a failed pass is logged and retried.
    /// The loop marks its progress for `/healthz` every time round.
    pub async fn run_loop(&self, shutdown: CancellationToken) {
        let interval = std::time::Duration::from_millis(self.settings.retry.interval_ms);
        let progress = self.redis.liveness().register(
            "retry loop",
            interval + PASS_DEADLINE + std::time::Duration::from_secs(30),
        );
        while !shutdown.is_cancelled() {
            progress.mark();
            match self.run_pass_until(&shutdown).await {
                Ok(report) if report != PassReport::default() => {
                    tracing::info!(?report, "retry pass")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retry pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    async fn retry_group(
        &self,
        partition: &Partition,
        handler: &dyn EventHandler,
        read_up_to: &str,
        stopping: &CancellationToken,
    ) -> RedisResult<PassReport> {
        let group = handler.group();
        let s = &self.settings;
        let mut report = PassReport::default();
        // Only entries the group has read (up to `read_up_to`, its last delivered one): those it
        // has not are pending from their publication (`fulfillment_events::routing`) and wait for
        // its readers, however long they take.
        let mut conn = self.redis.conn();
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&partition.stream)
            .arg(group)
            .arg("IDLE")
            .arg(s.retry.min_idle_ms)
            .arg("-")
            .arg(read_up_to)
            .arg(s.retry.batch_size)
            .query_async(&mut conn)
            .await?;
        if pending.ids.is_empty() {
            return Ok(report);
        }
        // As the consumers do: nothing is acted on before it is on enough replicas
        // (REDIS_WAIT_REPLICAS). Not yet: left for a later pass, unclaimed, so not a retry.
        if let Err(e) = self.redis.replicated(&partition.keys).await {
            tracing::warn!(group, stream = partition.stream, error = %e, "pending entries not on enough replicas; left for a later pass");
            return Ok(report);
        }
        let deliveries: HashMap<&str, u64> = pending
            .ids
            .iter()
            .map(|p| (p.id.as_str(), p.times_delivered as u64))
            .collect();
        let ids: Vec<&str> = pending.ids.iter().map(|p| p.id.as_str()).collect();
        let Entries(claimed) = redis::cmd("XCLAIM")
            .arg(&partition.stream)
            .arg(group)
            .arg(&s.consumer_name)
            .arg(s.retry.min_idle_ms)
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
        let (gone, live): (Vec<RawEntry>, Vec<RawEntry>) =
            claimed.into_iter().partition(|e| e.fields.is_empty());
        let gone_ids: Vec<&str> = gone.iter().map(|e| e.id.as_str()).collect();
        acknowledge(&self.redis, partition, group, &s.consumer_name, &gone_ids).await?;
        report.gone_acknowledged = gone_ids.len();

        if live.is_empty() {
            return Ok(report);
        }
        redis::cmd("HINCRBY")
            .arg(partition.keys.counters())
            .arg(keys::counter::retries(group))
            .arg(live.len())
            .query_async::<i64>(&mut conn)
            .await?;

        // Deliveries so far, before this run: the first delivery plus earlier retries. This run is
        // retry number `before` (delivery `before + 1`).
        let before: Vec<u64> = live
            .iter()
            .map(|e| deliveries.get(e.id.as_str()).copied().unwrap_or(1))
            .collect();
        let outcomes = join_all(live.iter().zip(&before).map(|(entry, before)| {
            decide(
                handler,
                partition,
                entry,
                &s.consumer_name,
                before + 1,
                stopping,
            )
        }))
        .await;
        let mut acks = Vec::new();
        for ((entry, before), (disposition, event)) in live.iter().zip(before).zip(outcomes) {
            report.retried += 1;
            let dead = match disposition {
                Disposition::Ack => {
                    report.recovered += 1;
                    acks.push(entry.id.as_str());
                    None
                }
                Disposition::ResolveAndAck => {
                    if resolve_replayed(&self.redis, partition, group, entry, event.as_ref()).await
                    {
                        report.recovered += 1;
                        acks.push(entry.id.as_str());
                    } else {
                        report.still_pending += 1;
                    }
                    None
                }
                Disposition::LeavePending { reason }
                    if before >= u64::from(s.retry.max_retries) =>
                {
                    Some((format!("retries exhausted: {reason}"), false))
                }
                Disposition::LeavePending { .. } => {
                    report.still_pending += 1;
                    None
                }
                Disposition::DeadLetter { error, poison } => Some((error, poison)),
            };
            if let Some((error, poison)) = dead {
                let letter = DeadLetter {
                    group,
                    entry,
                    event: event.as_ref(),
                    deliveries: before + 1,
                    error: &error,
                    poison,
                };
                dead_letter::dead_letter(&self.redis, partition, &letter).await?;
                report.dead_lettered += 1;
            }
        }
        acknowledge(&self.redis, partition, group, &s.consumer_name, &acks).await?;
        Ok(report)
    }

    /// Removes consumers unseen (no read with entries, no heartbeat) for `CONSUMER_GONE_AFTER_MS`
    /// with nothing pending; never one with pending entries.
    async fn remove_gone_consumers(&self, partition: &Partition) -> RedisResult<usize> {
        let s = &self.settings;
        let mut conn = self.redis.conn();
        let mut removed = 0;
        for group in fulfillment_events::service::all_groups() {
            for consumer in consumer_figures(&self.redis, partition, group).await? {
                if consumer.pending > 0
                    || (consumer.unseen_ms as u64) < s.retry.consumer_gone_after_ms
                {
                    continue;
                }
                let gone: i64 = REMOVE_GONE_CONSUMER
                    .key(&partition.stream)
                    .key(partition.keys.heartbeats(group))
                    .key(partition.keys.handled(group))
                    .arg(group)
                    .arg(&consumer.name)
                    .arg(s.retry.consumer_gone_after_ms)
                    .arg(now_millis())
                    .invoke_async(&mut conn)
                    .await?;
                if gone == 1 {
                    tracing::info!(
                        group,
                        stream = partition.stream,
                        consumer = consumer.name,
                        "removed gone consumer"
                    );
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Removes finished orders older than `ORDER_RETENTION_MS` (none when it is 0), at most
    /// [`SWEEP_LIMIT_PER_PASS`] a pass.
    async fn sweep_orders(&self) -> RedisResult<u64> {
        let retention = self.settings.order_retention_ms;
        if retention == 0 {
            return Ok(0);
        }
        let cutoff = now_millis().saturating_sub(retention);
        retention::sweep_finished_orders(&self.redis, cutoff, SWEEP_LIMIT_PER_PASS).await
    }

    /// Trims entries older than `STREAM_RETENTION_MS`, never at or above the oldest entry some
    /// group has pending or not yet read.
    async fn trim_stream(&self, partition: &Partition) -> RedisResult<u64> {
        let s = &self.settings;
        let Some(safe) = self.oldest_unacknowledged(partition).await? else {
            return Ok(0);
        };
        let cut = (now_millis().saturating_sub(s.stream.retention_ms), 0);
        let min_id = safe.min(cut);
        if min_id == (0, 0) {
            return Ok(0);
        }
        let mut conn = self.redis.conn();
        redis::cmd("XTRIM")
            .arg(&partition.stream)
            .arg("MINID")
            .arg(format!("{}-{}", min_id.0, min_id.1))
            .query_async(&mut conn)
            .await
    }

    /// The lowest id that some group still needs: its oldest pending entry, or the entry after
    /// its last delivered one. `None` when the stream has no groups.
    async fn oldest_unacknowledged(
        &self,
        partition: &Partition,
    ) -> RedisResult<Option<(u64, u64)>> {
        let stream = &partition.stream;
        let groups = group_figures(&self.redis, stream).await?;
        let mut oldest: Option<(u64, u64)> = None;
        for g in &groups {
            // Entries are pending from their publication (for the groups that act on them), so a
            // group's oldest pending entry may be one it has not read yet: what it needs starts
            // at the older of the two.
            let read_up_to = entry_id_order(&g.last_delivered_id);
            let needed = match oldest_pending_id(&self.redis, stream, &g.name, g.pending).await? {
                Some(id) => id.min(read_up_to),
                None => read_up_to,
            };
            oldest = Some(oldest.map_or(needed, |o| o.min(needed)));
        }
        Ok(oldest)
    }
}
