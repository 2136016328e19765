//! The consumer loop against a real Redis: reading on while batches are in hand, heartbeats of
//! quiet consumers, replicas sharing a group's work, a backlog draining, poison entries, and
//! `/healthz` failing while a reader is stuck (and only then).

use fulfillment_core::runtime::consumer::{ConsumerConfig, run_consumer};
use fulfillment_core::{Delivery, EventHandler, EventType, HandlerFuture, Service};
use fulfillment_events::keys;
use fulfillment_testing::{Backend, Harness, SECONDS_10, on_every_backend};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Counts how many deliveries it holds at once; each takes 100 ms.
#[derive(Default)]
struct Slow {
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    done: std::sync::atomic::AtomicUsize,
}

impl EventHandler for Slow {
    fn service(&self) -> Service {
        Service::Inventory
    }
    fn handles(&self, event_type: EventType) -> bool {
        event_type == EventType::OrderPlaced
    }
    fn handle<'a>(&'a self, _delivery: Delivery<'a>) -> HandlerFuture<'a> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            let held = self.now.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(held, SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.now.fetch_sub(1, SeqCst);
            self.done.fetch_add(1, SeqCst);
            Ok(fulfillment_core::Handled::Done)
        })
    }
}

/// A consumer reads the next batch while earlier ones are in hand, up to MAX_IN_FLIGHT.
#[tokio::test]
async fn a_consumer_reads_on_while_batches_are_in_hand_up_to_its_limit() {
    use std::sync::atomic::Ordering::SeqCst;
    let h = Harness::start().await;
    h.create_product("widget", 1000).await;
    for _ in 0..60 {
        h.place("widget", 1, "tok_visa").await;
    }
    let slow = Arc::new(Slow::default());
    let stop = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(
        h.redis.clone(),
        slow.clone(),
        ConsumerConfig {
            consumer: "inventory-slow".into(),
            batch_size: 10,
            max_in_flight: 30,
            block: Duration::from_millis(50),
            linger: Duration::ZERO,
            stall_bound: Duration::from_secs(30),
            claim_after: Duration::ZERO,
        },
        stop.clone(),
    ));
    h.eventually(
        SECONDS_10,
        "every entry handled and acknowledged",
        || async { slow.done.load(SeqCst) == 60 && h.pending("inventory_group").await == 0 },
    )
    .await;
    assert_eq!(
        slow.most.load(SeqCst),
        30,
        "three batches of 10 in hand, never more"
    );
    stop.cancel();
    consumer.await.expect("consumer");
    h.stop().await;
}

/// `XREADGROUP` calls Redis has served so far.
async fn group_reads(h: &Harness) -> u64 {
    let mut conn = h.redis.conn();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_xreadgroup:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("calls"))
}

/// Entries trickling in: a consumer without a linger reads about once per entry; one lingering
/// after small reads takes them in a few larger reads, and still handles every one.
#[tokio::test]
async fn a_lingering_consumer_takes_a_trickle_in_fewer_reads() {
    use std::sync::atomic::Ordering::SeqCst;
    let h = Harness::start().await;
    h.create_product("widget", 1000).await;
    let mut reads = Vec::new();
    for (name, linger) in [("eager", 0), ("lingering", 250)] {
        let slow = Arc::new(Slow::default());
        let stop = CancellationToken::new();
        let consumer = tokio::spawn(run_consumer(
            h.redis.clone(),
            slow.clone(),
            ConsumerConfig {
                consumer: format!("inventory-{name}"),
                batch_size: 64,
                max_in_flight: 256,
                block: Duration::from_millis(1_000),
                linger: Duration::from_millis(linger),
                stall_bound: Duration::from_secs(30),
                claim_after: Duration::ZERO,
            },
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = group_reads(&h).await;
        for _ in 0..20 {
            h.place("widget", 1, "tok_visa").await;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        h.eventually(SECONDS_10, "every entry handled", || async {
            slow.done.load(SeqCst) == 20 && h.pending("inventory_group").await == 0
        })
        .await;
        reads.push(group_reads(&h).await - before);
        stop.cancel();
        consumer.await.expect("consumer");
    }
    assert!(reads[0] >= 15, "the eager consumer read {} times", reads[0]);
    assert!(
        reads[1] <= 8,
        "the lingering consumer read {} times (the eager one {})",
        reads[1],
        reads[0]
    );
    h.stop().await;
}

/// A live consumer on a quiet stream is active and never removed, though Redis (before 7.2)
/// reports it idle since its last read that returned entries: its heartbeat says it is alive.
#[tokio::test]
async fn quiet_live_consumers_stay_active_and_are_not_removed() {
    let h = Harness::start_with(|s| s.retry.consumer_gone_after_ms = 1_500).await;
    let consumers = h.consumers().await;
    let id = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let report = h.retry_worker(&h.settings).run_pass().await.expect("pass");
    assert_eq!(report.consumers_removed, 0, "live consumers were removed");
    for group in fulfillment_events::service::all_groups() {
        let figures = fulfillment_core::ops::stream_stats::consumer_figures(
            &h.redis,
            &h.layout().partitions()[0],
            group,
        )
        .await
        .expect("figures");
        assert_eq!(figures.len(), 1, "{group}");
        assert!(
            figures[0].idle_ms >= 2_000,
            "{group}: Redis reports it idle"
        );
        assert!(figures[0].is_active(), "{group}: yet it is active");
    }
    consumers.stop().await;
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let report = h.retry_worker(&h.settings).run_pass().await.expect("pass");
    assert_eq!(
        report.consumers_removed, 5,
        "stopped consumers are gone once unseen"
    );
    h.stop().await;
}

on_every_backend!(
    a_poison_entry_is_dead_lettered_at_once_and_consumers_keep_going,
    three_inventory_consumers_share_three_hundred_orders_each_reserved_once,
);

/// 7. Poison entries go to the DLQ at once; consumers keep going.
async fn a_poison_entry_is_dead_lettered_at_once_and_consumers_keep_going(backend: Backend) {
    let h = Harness::on(backend).await;
    let consumers = h.consumers().await;
    let garbage = h
        .xadd(&[
            (b"junk".to_vec(), vec![0xff, 0xfe, 0x00]),
            (b"type".to_vec(), b"???".to_vec()),
        ])
        .await;
    let bad_payload = h
        .xadd(&[
            (
                b"event_id".to_vec(),
                uuid::Uuid::new_v4().to_string().into_bytes(),
            ),
            (b"type".to_vec(), b"OrderPlaced".to_vec()),
            (b"order_id".to_vec(), b"o-poison".to_vec()),
            (b"occurred_at".to_vec(), b"2026-01-01T00:00:00Z".to_vec()),
            (b"payload".to_vec(), b"{not json".to_vec()),
        ])
        .await;
    let id = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    h.eventually(SECONDS_10, "poison dead-lettered", || async {
        h.dlq_length().await == 3
    })
    .await;
    let dlq: Vec<_> = h.dead_letters().await.into_iter().map(|(_, e)| e).collect();
    let from_garbage: Vec<_> = dlq
        .iter()
        .filter(|e| e.text("dlq_source_id").as_deref() == Some(garbage.as_str()))
        .collect();
    assert_eq!(
        from_garbage.len(),
        1,
        "an undecodable entry is dead-lettered once"
    );
    assert_eq!(
        from_garbage[0].fields[0],
        (b"junk".to_vec(), vec![0xff, 0xfe, 0x00])
    );
    let mut groups: Vec<String> = dlq
        .iter()
        .filter(|e| e.text("dlq_source_id").as_deref() == Some(bad_payload.as_str()))
        .map(|e| e.text("dlq_group").unwrap_or_default())
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        ["inventory_group", "order_group"],
        "each group that handles the type"
    );
    for group in fulfillment_events::service::all_groups() {
        h.eventually(SECONDS_10, "all acknowledged", || async {
            h.pending(group).await == 0
        })
        .await;
    }
    consumers.stop().await;
    h.stop().await;
}

/// Replicas share a group's work on every partition: each of three inventory consumers reserves
/// some of the orders, each order once.
async fn three_inventory_consumers_share_three_hundred_orders_each_reserved_once(backend: Backend) {
    let h = Harness::on(backend).await;
    h.create_product("bulk", 10_000).await;
    let consumers = h.consumers_with("inventory=3", &h.settings).await;
    let mut ids = Vec::new();
    for chunk in 0..30 {
        let batch =
            futures_util::future::join_all((0..10).map(|_| h.place("bulk", 1, "tok_visa"))).await;
        ids.extend(batch);
        if chunk % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for id in &ids {
        h.wait_status(id, "COMPLETED", Duration::from_secs(30))
            .await;
    }
    let mut per_consumer: HashMap<String, usize> = HashMap::new();
    let mut partitions_read: HashMap<String, std::collections::HashSet<usize>> = HashMap::new();
    for partition in h.layout().partitions() {
        for entry in h.entries(&partition.stream).await {
            if entry.text("type").as_deref() == Some("StockReserved") {
                let producer = entry.text("producer").unwrap_or_default();
                partitions_read
                    .entry(producer.clone())
                    .or_default()
                    .insert(partition.index);
                *per_consumer.entry(producer).or_default() += 1;
            }
        }
    }
    assert_eq!(
        per_consumer.values().sum::<usize>(),
        300,
        "each order reserved once"
    );
    for i in 1..=3 {
        let handled = per_consumer
            .get(&format!("inventory/inventory-{i}"))
            .copied()
            .unwrap_or(0);
        assert!(handled > 0, "inventory-{i} handled none: {per_consumer:?}");
    }
    // Every consumer reads every partition: with several, each consumer's share spans many.
    let partitions = h.layout().partitions().len();
    for (consumer, read) in &partitions_read {
        assert!(
            read.len() * 2 >= partitions,
            "{consumer} reserved on {} of {partitions} partitions",
            read.len()
        );
    }
    assert_eq!(h.counter(keys::counter::RESERVATIONS).await, 300);
    assert_eq!(h.stock("bulk").await, 10_000 - 300);
    consumers.stop().await;
    h.stop().await;
}

#[tokio::test]
async fn a_backlog_of_five_hundred_orders_drains_when_consumers_start() {
    let h = Harness::start().await;
    h.create_product("bulk", 10_000).await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.extend(
            futures_util::future::join_all((0..10).map(|_| h.place("bulk", 1, "tok_visa"))).await,
        );
    }
    assert_eq!(h.stream_length().await, 500);
    let consumers = h.consumers_with("inventory=2,payment=2", &h.settings).await;
    for id in &ids {
        h.wait_status(id, "COMPLETED", Duration::from_secs(60))
            .await;
    }
    assert_eq!(h.stock("bulk").await, 10_000 - 500);
    for group in fulfillment_events::service::all_groups() {
        h.eventually(Duration::from_secs(10), "drained", || async {
            h.pending(group).await == 0
        })
        .await;
    }
    consumers.stop().await;
    h.stop().await;
}

/// Never finishes a delivery.
struct Hangs;

impl EventHandler for Hangs {
    fn service(&self) -> Service {
        Service::Inventory
    }
    fn handles(&self, event_type: EventType) -> bool {
        event_type == EventType::OrderPlaced
    }
    fn handle<'a>(&'a self, _delivery: Delivery<'a>) -> HandlerFuture<'a> {
        Box::pin(std::future::pending())
    }
}

/// `/healthz` answers 200 while the readers come round, idle ones included, and 503 `stuck`,
/// naming the reader, once one has not come round within its bound: here a reader whose only
/// room is held by a delivery that never finishes. Once that reader is gone, 200 again.
#[tokio::test]
async fn healthz_fails_while_a_reader_is_stuck_and_only_then() {
    let h = Harness::start().await;
    h.create_product("widget", 10).await;
    let stop = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(
        h.redis.clone(),
        Arc::new(Hangs),
        ConsumerConfig {
            consumer: "inventory-hangs".into(),
            batch_size: 1,
            max_in_flight: 1,
            block: Duration::from_millis(50),
            linger: Duration::ZERO,
            stall_bound: Duration::from_millis(800),
            claim_after: Duration::ZERO,
        },
        stop.clone(),
    ));
    // Idle, it reads and comes round: healthy for several bounds.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            h.get("/healthz").await.0,
            200,
            "an idle reader is not stuck"
        );
    }
    h.place("widget", 1, "tok_visa").await;
    h.eventually(SECONDS_10, "/healthz fails", || async {
        h.get("/healthz").await.0 == 503
    })
    .await;
    let (_, body) = h.get("/healthz").await;
    assert_eq!(body["error"]["code"], "stuck", "{body}");
    let named = body["error"]["details"][0]["loop"].as_str().unwrap_or("");
    assert!(named.starts_with("inventory_group reader of "), "{body}");
    consumer.abort();
    let _ = consumer.await;
    h.eventually(
        SECONDS_10,
        "/healthz passes once the reader is gone",
        || async { h.get("/healthz").await.0 == 200 },
    )
    .await;
    h.stop().await;
}
