//! The consumer-group loop and the one decision every delivery ends in.
//!
//! Invariant: an entry is acknowledged only when its handler finished it, when it is not this
//! group's to handle, or in the same script that wrote it to the dead-letter stream. Anything
//! else stays pending for the retry worker. [`decide`] makes that decision for the live loop and
//! the retry worker alike, so both treat an entry the same way.
//!
//! Readers read with `NOACK`: an entry a group acts on is pending for it from its publication
//! (the publishing script makes it so, [`fulfillment_events::routing`]), and the reader claims
//! only what is not (an old entry, one another writer added); the others are passed over and
//! need nothing (no pending entry, no `XACK`).

use crate::ops::metrics;
use crate::ops::telemetry;
use crate::runtime::backoff::Backoff;
use crate::runtime::dead_letter::{self, DeadLetter};
use crate::runtime::handler::{Delivery, EventHandler, Handled, HandlerError};
use crate::store::Redis;
use fulfillment_events::events::{DecodeError, Event, EventType, field, field_value, now_millis};
use fulfillment_events::keys::Partition;
use fulfillment_events::routing;
use fulfillment_redis::connection::{NEW_ENTRIES, StreamReader, ensure_groups_on, read_deadline};
use fulfillment_redis::stream_entry::{RawEntry, entry_id_order};
use fulfillment_redis::stream_reader::GroupRead;
use futures_util::future::join_all;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What becomes of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    /// A replayed dead letter its group has now handled: resolve it for its order
    /// ([`dead_letter::resolve`]), then acknowledge; if resolving fails, leave it pending (the
    /// handler is idempotent, so the retry only resolves).
    ResolveAndAck,
    LeavePending {
        reason: String,
    },
    DeadLetter {
        error: String,
        poison: bool,
    },
}

/// Decodes and handles one entry for `handler`'s group and decides what becomes of it.
pub async fn decide(
    handler: &dyn EventHandler,
    partition: &Partition,
    entry: &RawEntry,
    consumer: &str,
    attempt: u64,
    stopping: &CancellationToken,
) -> (Disposition, Option<Event>) {
    let group = handler.group();
    if is_for_others(handler, entry) {
        return (Disposition::Ack, None);
    }
    let event = match Event::from_field_list(&entry.fields) {
        Ok(event) => event,
        Err(DecodeError::BadPayload { event_type, .. }) if !handler.handles(event_type) => {
            return (Disposition::Ack, None);
        }
        Err(e) => {
            let poison = !matches!(e, DecodeError::BadPayload { .. });
            metrics::event_handled(group, "undecodable", "dead_lettered");
            tracing::warn!(group, stream_id = entry.id, error = %e, "undecodable entry");
            return (
                Disposition::DeadLetter {
                    error: e.to_string(),
                    poison,
                },
                None,
            );
        }
    };
    // Decoded, so `is_for_others` saw this type and replay_for: the group handles it.
    let started = Instant::now();
    let span = tracing::info_span!(
        "handle",
        otel.name = format!("{group} {}", event.event_type),
        otel.kind = "consumer",
        group,
        consumer,
        order_id = event.order_id.as_str(),
        event_id = %event.event_id,
        event_type = event.event_type.as_str(),
        attempt,
        trace_id = telemetry::trace_id_of(event.traceparent.as_deref()).as_deref(),
    );
    telemetry::continue_trace(&span, event.traceparent.as_deref());
    let own_context = telemetry::traceparent_of(&span);
    let result = handler
        .handle(Delivery {
            partition,
            stream_id: &entry.id,
            event: &event,
            service: handler.service(),
            consumer,
            attempt,
            traceparent: own_context.as_deref().or(event.traceparent.as_deref()),
            stopping,
        })
        .instrument(span.clone())
        .await;
    metrics::handler_duration(group, event.event_type.as_str(), started.elapsed());
    let type_name = event.event_type.as_str();
    let disposition = match result {
        Ok(Handled::Done) if event.replay_for.is_some() => {
            metrics::event_handled(group, type_name, "ok");
            Disposition::ResolveAndAck
        }
        Ok(Handled::Done) => {
            metrics::event_handled(group, type_name, "ok");
            Disposition::Ack
        }
        Ok(Handled::KeepPending) => {
            metrics::event_handled(group, type_name, "ack_lost");
            span.in_scope(|| tracing::warn!("handled, and left pending (failure injection)"));
            Disposition::LeavePending {
                reason: "handled, and left pending on purpose".into(),
            }
        }
        Err(HandlerError::Transient(reason)) => {
            metrics::event_handled(group, type_name, "transient_error");
            span.in_scope(|| {
                tracing::warn!(error = reason.as_str(), "handler failed; left pending")
            });
            Disposition::LeavePending { reason }
        }
        Err(HandlerError::Permanent(error)) => {
            metrics::event_handled(group, type_name, "dead_lettered");
            span.in_scope(|| tracing::error!(error = error.as_str(), "permanent failure"));
            Disposition::DeadLetter {
                error,
                poison: false,
            }
        }
    };
    (disposition, Some(event))
}

/// Whether the entry names a type this group does not handle, is a replay for another group, or
/// was projected by its producer and the group is the projection (a replay for it excepted): then
/// a reader passes it over, and the retry worker (for one pending from before readers read with
/// `NOACK`) acknowledges it, without decoding it. Every group reads every entry, and most are
/// for others, so this skips most of the decoding. An entry whose type cannot be read is decoded
/// (and dead-lettered); a malformed entry of a known type is still dead-lettered by the groups
/// that handle that type (the order projection handles all).
fn is_for_others(handler: &dyn EventHandler, entry: &RawEntry) -> bool {
    let Some(event_type) = field_value(&entry.fields, field::TYPE)
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(EventType::parse)
    else {
        return false;
    };
    let replay_for = match field_value(&entry.fields, field::REPLAY_FOR) {
        None => None,
        Some(g) => match std::str::from_utf8(g) {
            Ok(g) => Some(g),
            Err(_) => return false,
        },
    };
    !handler.handles(event_type)
        || replay_for.is_some_and(|g| g != handler.group())
        || (handler.skips_projected()
            && replay_for.is_none()
            && field_value(&entry.fields, field::PROJECTED) == Some(b"1".as_slice()))
}

/// Whether `entry`, which `group` acts on, is in the group's pending list since it was published,
/// and recently enough that the retry worker will not take it while it is handled: marked by
/// this version's routing, for this group, and published less than `claim_after` ago (by its
/// id's time against this process's clock: a clock ahead of Redis's makes the reader claim more,
/// one behind it claims less, and a handler may then meet the retry worker's run of the same
/// entry, which idempotent handlers make harmless).
fn pending_since_published(
    group: &str,
    entry: &RawEntry,
    now_ms: u64,
    claim_after: Duration,
) -> bool {
    let text = |name| field_value(&entry.fields, name).and_then(|v| std::str::from_utf8(v).ok());
    if text(field::ROUTED) != Some(routing::VERSION) {
        return false;
    }
    let Some(event_type) = text(field::TYPE).and_then(EventType::parse) else {
        return false;
    };
    let projected = text(field::PROJECTED) == Some("1");
    if !routing::groups_acting_on(event_type, projected, text(field::REPLAY_FOR)).contains(&group) {
        return false;
    }
    let published_ms = entry_id_order(&entry.id).0;
    now_ms.saturating_sub(published_ms) < u64::try_from(claim_after.as_millis()).unwrap_or(u64::MAX)
}

/// What a consumer is called and how much it reads and holds.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub consumer: String,
    pub batch_size: usize,
    /// Most entries handled at once, over every partition: reading goes on while earlier batches
    /// are still in hand, up to this many (at least one per partition).
    pub max_in_flight: usize,
    pub block: Duration,
    /// After a read that returned fewer than half of the entries it asked for (`batch_size`, or
    /// fewer when `max_in_flight` is nearly taken), wait this long before the next one
    /// (`READ_LINGER_US`; zero reads again at once).
    pub linger: Duration,
    /// How long a reader may go without coming round before `/healthz` counts it stuck
    /// ([`stall_bound`] of `block`).
    pub stall_bound: Duration,
    /// An entry published longer ago than this is claimed before it is handled, so the retry
    /// worker (which takes entries idle `RETRY_MIN_IDLE_MS`) leaves it alone: half of that.
    /// Zero claims every entry.
    pub claim_after: Duration,
}

/// Reads the group's new entries on every partition until `shutdown`, one blocking reader per
/// partition, so a quiet partition never holds up a busy one. Each batch is handled on its own
/// task, its entries concurrently; what it acknowledges goes to the partition's acknowledging
/// task, which sends what arrives within [`ACK_LINGER`] as one `XACK`. The next read does not wait
/// for it. The partitions share one allowance of `max_in_flight` entries, taken in turn (first
/// come, first served), so a hot partition cannot starve the others. A stopping consumer finishes
/// and acknowledges every batch in hand before it returns. Redis errors are retried with backoff;
/// they never end the loop. A read that gets no reply within its deadline (`BLOCK_MS` plus
/// [`fulfillment_redis::connection::READ_MARGIN`]) drops its connection and opens another; each reader marks
/// its progress every time round ([`stall_bound`]), for `/healthz`.
pub async fn run_consumer(
    redis: Redis,
    handler: Arc<dyn EventHandler>,
    config: ConsumerConfig,
    shutdown: CancellationToken,
) {
    let group = handler.group();
    let partitions = redis.layout().partitions().to_vec();
    let capacity = Arc::new(Semaphore::new(config.max_in_flight.max(partitions.len())));
    let config = Arc::new(config);
    tracing::info!(
        group,
        consumer = config.consumer,
        partitions = partitions.len(),
        "consumer started"
    );
    let mut readers = JoinSet::new();
    for partition in partitions {
        readers.spawn(read_partition(
            redis.clone(),
            handler.clone(),
            config.clone(),
            partition,
            capacity.clone(),
            shutdown.clone(),
        ));
    }
    while let Some(done) = readers.join_next().await {
        if let Err(e) = done {
            tracing::error!(group, error = %e, "a partition reader failed");
        }
    }
    tracing::info!(group, consumer = config.consumer, "consumer stopped");
}

/// One partition's reader: reads while it has a turn, hands each batch to a task, and after a
/// small batch lingers (`ConsumerConfig::linger`) before it reads again.
async fn read_partition(
    redis: Redis,
    handler: Arc<dyn EventHandler>,
    config: Arc<ConsumerConfig>,
    partition: Partition,
    capacity: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let group = handler.group();
    let partition = Arc::new(partition);
    let (acks, to_ack) = mpsc::channel(ACK_QUEUE);
    let acker = tokio::spawn(acknowledge_in_groups(
        redis.clone(),
        partition.clone(),
        group,
        config.consumer.clone(),
        to_ack,
    ));
    let mut in_hand: JoinSet<()> = JoinSet::new();
    let mut backoff = Backoff::default();
    let mut reader = None;
    let mut last_beat: Option<Instant> = None;
    let progress = redis.liveness().register(
        format!("{group} reader of {}", partition.stream),
        config.stall_bound,
    );
    while !shutdown.is_cancelled() {
        progress.mark();
        while let Some(done) = in_hand.try_join_next() {
            report_batch_task(group, done);
        }
        if last_beat.is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY) {
            beat(&redis, &partition, group, &config.consumer).await;
            last_beat = Some(Instant::now());
        }
        // A turn: one permit, held through the (blocking) read; the batch takes what it needs more.
        let turn = tokio::select! {
            permit = capacity.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let conn = match reader.as_mut() {
            Some(conn) => conn,
            None => match redis.blocking_reader().await {
                Ok(conn) => reader.insert(conn),
                Err(e) => {
                    tracing::warn!(group, stream = partition.stream, error = %e, "cannot open reader; retrying");
                    backoff.wait(&shutdown).await;
                    continue;
                }
            },
        };
        let count = config
            .batch_size
            .min(1 + capacity.available_permits())
            .max(1);
        let read = read_new_entries(conn, group, &config, &partition.stream, count).await;
        progress.mark();
        let batch = match read {
            Ok(batch) => {
                backoff.reset();
                batch
            }
            Err(e) if e.code() == Some("NOGROUP") => {
                if let Err(e) = ensure_groups_on(&redis, &partition.stream, &[group]).await {
                    tracing::warn!(group, error = %e, "cannot create group");
                }
                backoff.wait(&shutdown).await;
                continue;
            }
            Err(e) if e.is_timeout() => {
                tracing::warn!(
                    group,
                    stream = partition.stream,
                    deadline_ms = read_deadline(config.block).as_millis() as u64,
                    "read got no reply within its deadline; dropping the connection and reconnecting"
                );
                reader = None;
                backoff.wait(&shutdown).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(group, stream = partition.stream, error = %e, "read failed; reconnecting");
                reader = None;
                backoff.wait(&shutdown).await;
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        // A small read (under half of what was asked for, so not one the in-flight allowance
        // cut short): wait a little before the next one, so that it takes more.
        let linger = if batch.len() * 2 < count {
            config.linger
        } else {
            Duration::ZERO
        };
        // Read with NOACK: the entries this group does not act on need nothing more. Those it
        // acts on are pending for it since they were published (`fulfillment_events::routing`);
        // the rest (old, or added by another writer) are claimed before they are handled.
        let batch: Vec<RawEntry> = batch
            .into_iter()
            .filter(|entry| !is_for_others(handler.as_ref(), entry))
            .collect();
        if batch.is_empty() {
            drop(turn);
            pause(linger, &shutdown).await;
            continue;
        }
        let now = now_millis();
        let to_claim: Vec<&str> = batch
            .iter()
            .filter(|entry| !pending_since_published(group, entry, now, config.claim_after))
            .map(|entry| entry.id.as_str())
            .collect();
        if !to_claim.is_empty()
            && let Err(e) = conn
                .claim(&partition.stream, group, &config.consumer, &to_claim)
                .await
        {
            tracing::warn!(group, stream = partition.stream, error = %e, count = to_claim.len(), "cannot claim what was read; reconnecting (what the scripts published stays pending for the retry worker)");
            reader = None;
            backoff.wait(&shutdown).await;
            continue;
        }
        // With REDIS_WAIT_REPLICAS, nothing is acted on before it is on a replica: a failover
        // may then lose only entries nobody acted on. Not yet there: left pending, retried later.
        if let Err(e) = redis.replicated(&partition.keys).await {
            tracing::warn!(group, stream = partition.stream, error = %e, count = batch.len(), "entries not on enough replicas; left pending");
            backoff.wait(&shutdown).await;
            continue;
        }
        let more = u32::try_from(batch.len() - 1).unwrap_or(u32::MAX);
        let Ok(rest) = capacity.clone().acquire_many_owned(more).await else {
            break;
        };
        let (redis, handler, config, partition, acks, stopping) = (
            redis.clone(),
            handler.clone(),
            config.clone(),
            partition.clone(),
            acks.clone(),
            shutdown.clone(),
        );
        in_hand.spawn(async move {
            let batch_of = Batch {
                partition: &partition,
                entries: &batch,
                stopping: &stopping,
            };
            handle_batch(&redis, handler.as_ref(), &config, batch_of, &acks).await;
            drop((turn, rest));
        });
        pause(linger, &shutdown).await;
    }
    while let Some(done) = in_hand.join_next().await {
        report_batch_task(group, done);
    }
    // Every batch is done: what is left to acknowledge goes now, and the acker ends.
    drop(acks);
    if let Err(e) = acker.await {
        tracing::error!(
            group,
            error = %e,
            "the acknowledging task failed; its entries stay pending for the retry worker"
        );
    }
}

/// Waits `linger` (nothing when zero), or until the process stops.
async fn pause(linger: Duration, shutdown: &CancellationToken) {
    if !linger.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(linger) => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

/// How long a reader may go without coming round before `/healthz` counts it stuck: three read
/// deadlines, and at least 30 s, room for a turn's wait behind batches whose handlers each wait
/// out a command timeout. Every wait in the loop has a deadline, so only a reader that cannot heal
/// itself goes this long.
pub fn stall_bound(block: Duration) -> Duration {
    (read_deadline(block) * 3).max(Duration::from_secs(30))
}

/// Most id lists waiting for the acknowledging task (each one batch's); a batch task waits for
/// room beyond that, so handled but unacknowledged ids are bounded by this many batches.
const ACK_QUEUE: usize = 1024;
/// How long acknowledgements wait for more to go with them.
const ACK_LINGER: Duration = Duration::from_millis(10);
/// An `XACK` stops gathering once it holds this many ids (one batch's list may take it past).
const MAX_ACK_IDS: usize = 1024;

/// Acknowledges what a partition's batches send it, in groups: the ids that arrive within
/// [`ACK_LINGER`] of the first go in one `XACK` (with the consumer's handled count). Nothing waits
/// on an acknowledgement (the next step follows the published event), so at low load this turns
/// an `XACK` round trip per read (often of one entry) into at most one per [`ACK_LINGER`], at no
/// cost in latency; an entry stays pending about that much longer (more while an `XACK` is slow).
/// Ends once every sender is gone and what they sent is acknowledged. A crash loses only
/// acknowledgements: those entries stay pending, and the retry worker hands them to the
/// (idempotent) handler again.
async fn acknowledge_in_groups(
    redis: Redis,
    partition: Arc<Partition>,
    group: &'static str,
    consumer: String,
    mut to_ack: mpsc::Receiver<Vec<String>>,
) {
    while let Some(mut ids) = to_ack.recv().await {
        let deadline = tokio::time::Instant::now() + ACK_LINGER;
        while ids.len() < MAX_ACK_IDS {
            match tokio::time::timeout_at(deadline, to_ack.recv()).await {
                Ok(Some(more)) => ids.extend(more),
                Ok(None) | Err(_) => break,
            }
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        if let Err(e) = acknowledge(&redis, &partition, group, &consumer, &ids).await {
            tracing::warn!(
                group,
                error = %e,
                count = ids.len(),
                "ack failed; entries will be retried"
            );
        }
    }
}

/// A batch task that panicked leaves its entries pending (they were not acknowledged), so the
/// retry worker takes them; say so loudly.
fn report_batch_task(group: &str, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(group, error = %e, "a batch task failed; its entries stay pending for the retry worker");
    }
}

/// How often a consumer records that it is alive (see [`KeySpace::heartbeats`]).
///
/// [`KeySpace::heartbeats`]: fulfillment_events::keys::KeySpace::heartbeats
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

async fn beat(redis: &Redis, partition: &Partition, group: &str, consumer: &str) {
    let mut conn = redis.conn();
    let beat: redis::RedisResult<i64> = redis::cmd("HSET")
        .arg(partition.keys.heartbeats(group))
        .arg(consumer)
        .arg(now_millis())
        .query_async(&mut conn)
        .await;
    if let Err(e) = beat {
        tracing::debug!(group, error = %e, "heartbeat not recorded");
    }
}

/// One batch read from a partition, and the process's stop signal for its handlers.
struct Batch<'a> {
    partition: &'a Partition,
    entries: &'a [RawEntry],
    stopping: &'a CancellationToken,
}

async fn handle_batch(
    redis: &Redis,
    handler: &dyn EventHandler,
    config: &ConsumerConfig,
    Batch {
        partition,
        entries: batch,
        stopping,
    }: Batch<'_>,
    ack: &mpsc::Sender<Vec<String>>,
) {
    let group = handler.group();
    let outcomes = join_all(
        batch
            .iter()
            .map(|entry| decide(handler, partition, entry, &config.consumer, 1, stopping)),
    )
    .await;
    let mut acks = Vec::new();
    for (entry, (disposition, event)) in batch.iter().zip(outcomes) {
        match disposition {
            Disposition::Ack => acks.push(entry.id.clone()),
            Disposition::ResolveAndAck => {
                if resolve_replayed(redis, partition, group, entry, event.as_ref()).await {
                    acks.push(entry.id.clone());
                }
            }
            Disposition::LeavePending { .. } => {}
            Disposition::DeadLetter { error, poison } => {
                let letter = DeadLetter {
                    group,
                    entry,
                    event: event.as_ref(),
                    deliveries: 1,
                    error: &error,
                    poison,
                };
                if let Err(e) = dead_letter::dead_letter(redis, partition, &letter).await {
                    tracing::error!(group, stream_id = entry.id, error = %e, "cannot dead-letter; left pending");
                }
            }
        }
    }
    if !acks.is_empty() && ack.send(acks).await.is_err() {
        tracing::error!(
            group,
            consumer = config.consumer,
            "the acknowledging task is gone; entries stay pending for the retry worker"
        );
    }
}

/// Resolves the dead letter a handled replay came from; false (and the entry stays pending for a
/// retry, which only resolves) when Redis refused.
pub async fn resolve_replayed(
    redis: &Redis,
    partition: &Partition,
    group: &str,
    entry: &RawEntry,
    event: Option<&Event>,
) -> bool {
    let Some(event) = event else { return true };
    match dead_letter::resolve(redis, partition, group, event).await {
        Ok(left) => {
            tracing::info!(
                group,
                order_id = event.order_id,
                ?left,
                "replayed dead letter handled; resolved"
            );
            true
        }
        Err(e) => {
            tracing::warn!(group, stream_id = entry.id, error = %e, "cannot resolve a handled replay; left pending");
            false
        }
    }
}

/// `XACK` for many ids of one partition, and the count of them added to `consumer`'s share of
/// the group's work ([`KeySpace::handled`]), in one round trip (one slot).
///
/// [`KeySpace::handled`]: fulfillment_events::keys::KeySpace::handled
pub async fn acknowledge(
    redis: &Redis,
    partition: &Partition,
    group: &str,
    consumer: &str,
    ids: &[&str],
) -> redis::RedisResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut conn = redis.conn();
    redis::pipe()
        .cmd("XACK")
        .arg(&partition.stream)
        .arg(group)
        .arg(ids)
        .ignore()
        .cmd("HINCRBY")
        .arg(partition.keys.handled(group))
        .arg(consumer)
        .arg(ids.len())
        .ignore()
        .query_async::<()>(&mut conn)
        .await
}

async fn read_new_entries(
    reader: &mut StreamReader,
    group: &str,
    config: &ConsumerConfig,
    stream: &str,
    count: usize,
) -> redis::RedisResult<Vec<RawEntry>> {
    reader
        .read(GroupRead {
            group,
            consumer: &config.consumer,
            count,
            block: config.block,
            noack: true,
            stream,
            from: NEW_ENTRIES,
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::handler::HandlerFuture;
    use fulfillment_events::events::EventType;
    use fulfillment_events::service::Service;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its calls and fails when told to.
    struct Probe {
        calls: AtomicUsize,
        result: fn() -> Result<Handled, HandlerError>,
    }

    impl EventHandler for Probe {
        fn service(&self) -> Service {
            Service::Inventory
        }
        fn handles(&self, event_type: EventType) -> bool {
            event_type == EventType::OrderPlaced
        }
        fn handle<'a>(&'a self, _delivery: Delivery<'a>) -> HandlerFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let result = (self.result)();
            Box::pin(async move { result })
        }
    }

    fn probe(result: fn() -> Result<Handled, HandlerError>) -> Probe {
        Probe {
            calls: AtomicUsize::new(0),
            result,
        }
    }

    fn entry_of(event: &Event) -> RawEntry {
        RawEntry {
            id: "1-0".into(),
            fields: event
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
                .collect(),
        }
    }

    fn partition() -> Partition {
        fulfillment_events::keys::Layout::new("s", "s:dlq", 1, false).partitions()[0].clone()
    }

    async fn disposition(handler: &Probe, event: &Event) -> Disposition {
        decide(
            handler,
            &partition(),
            &entry_of(event),
            "c-1",
            1,
            &CancellationToken::new(),
        )
        .await
        .0
    }

    #[tokio::test]
    async fn each_outcome_has_its_disposition() {
        let placed = Event::new(EventType::OrderPlaced, "o", &serde_json::json!({}));
        assert_eq!(
            disposition(&probe(|| Ok(Handled::Done)), &placed).await,
            Disposition::Ack
        );
        assert!(matches!(
            disposition(&probe(|| Ok(Handled::KeepPending)), &placed).await,
            Disposition::LeavePending { .. }
        ));
        assert!(matches!(
            disposition(&probe(|| Err(HandlerError::Transient("x".into()))), &placed).await,
            Disposition::LeavePending { .. }
        ));
        assert_eq!(
            disposition(&probe(|| Err(HandlerError::Permanent("x".into()))), &placed).await,
            Disposition::DeadLetter {
                error: "x".into(),
                poison: false
            }
        );
    }

    #[tokio::test]
    async fn entries_for_other_groups_are_acknowledged_unhandled() {
        let handler = probe(|| Err(HandlerError::Transient("must not run".into())));
        let shipped = Event::new(EventType::ShipmentPrepared, "o", &serde_json::json!({}));
        assert_eq!(disposition(&handler, &shipped).await, Disposition::Ack);
        let mut replayed = Event::new(EventType::OrderPlaced, "o", &serde_json::json!({}));
        replayed.replay_for = Some("payment_group".into());
        assert_eq!(disposition(&handler, &replayed).await, Disposition::Ack);
        assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
        replayed.replay_for = Some("inventory_group".into());
        assert!(matches!(
            disposition(&handler, &replayed).await,
            Disposition::LeavePending { .. }
        ));
        assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn undecodable_entries_are_dead_lettered_once_per_stream() {
        let handler = probe(|| Ok(Handled::Done));
        let garbage = RawEntry {
            id: "1-0".into(),
            fields: vec![(b"junk".to_vec(), vec![0xff])],
        };
        let stopping = CancellationToken::new();
        let (d, _) = decide(&handler, &partition(), &garbage, "c-1", 1, &stopping).await;
        assert!(matches!(d, Disposition::DeadLetter { poison: true, .. }));
        assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
    }
}
