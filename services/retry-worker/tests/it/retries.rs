//! Retries, dead letters and replay, crashed consumers, trimming, gone consumers, deleted entries.

use fulfillment_core::runtime::consumer::{ConsumerConfig, run_consumer};
use fulfillment_core::{Delivery, EventHandler, EventType, HandlerFuture, Service};
use fulfillment_events::{keys, routing};
use fulfillment_testing::{Backend, Harness, SECONDS_10, on_every_backend};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

on_every_backend!(
    the_retry_worker_completes_an_order_once_inventory_recovers,
    an_entry_failing_every_retry_is_dead_lettered_and_a_replay_completes_the_order,
);

/// 5. Inventory fails for a while, then recovers; the retry worker completes the order.
async fn the_retry_worker_completes_an_order_once_inventory_recovers(backend: Backend) {
    let h = Harness::on(backend).await;
    let (failing, consumers, id) = h.order_stuck_in_failing_inventory(1).await;

    let first = h.retry_pass(&failing).await;
    assert_eq!(
        (first.retried, first.still_pending, first.dead_lettered),
        (1, 1, 0)
    );
    assert_eq!(h.order(&id).await["status"], "PENDING");

    let healthy = h.retry_pass(&h.settings).await;
    assert_eq!((healthy.retried, healthy.recovered), (1, 1));
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    assert_eq!(
        h.counter(&keys::counter::retries("inventory_group")).await,
        2
    );
    assert_eq!(h.dlq_length().await, 0);
    h.pending_settles_at("inventory_group", 0).await;
    consumers.stop().await;
    h.stop().await;
}

/// Scenario 6, always failing: after exactly three retries the entry is dead-lettered with its provenance,
/// acknowledged, the order FAILED; replayed once healthy, the order completes.
async fn an_entry_failing_every_retry_is_dead_lettered_and_a_replay_completes_the_order(
    backend: Backend,
) {
    let h = Harness::on(backend).await;
    let (failing, consumers, id) = h.order_stuck_in_failing_inventory(2).await;
    for retry in 1..=2 {
        let report = h.retry_pass(&failing).await;
        assert_eq!(
            (report.retried, report.dead_lettered),
            (1, 0),
            "retry {retry}"
        );
        assert_eq!(h.dlq_length().await, 0);
    }
    let last = h.retry_pass(&failing).await;
    assert_eq!((last.retried, last.dead_lettered), (1, 1));
    assert_eq!(
        h.counter(&keys::counter::retries("inventory_group")).await,
        3
    );
    assert_eq!(
        h.counter(&keys::counter::dead_letters("inventory_group"))
            .await,
        1
    );
    // Acknowledged in its group (the live consumers' own acknowledgements follow within ms).
    h.pending_settles_at("inventory_group", 0).await;

    let dlq = h.dead_letters().await;
    assert_eq!(dlq.len(), 1);
    let (letter_id, letter) = &dlq[0];
    assert_eq!(letter.text("dlq_group").as_deref(), Some("inventory_group"));
    assert_eq!(letter.text("dlq_deliveries").as_deref(), Some("4"));
    assert!(
        letter
            .text("dlq_error")
            .unwrap_or_default()
            .contains("INVENTORY_FAILURE_RATE")
    );
    assert!(letter.text("dlq_at").is_some());
    assert_eq!(letter.text("type").as_deref(), Some("OrderPlaced"));
    assert_eq!(letter.text("order_id").as_deref(), Some(id.as_str()));
    let placed = h.events_of(&id, "OrderPlaced").await;
    assert_eq!(letter.text("dlq_source_id"), Some(placed[0].id.clone()));

    let failed = h.wait_status(&id, "FAILED", SECONDS_10).await;
    assert!(
        failed["status_reason"]
            .as_str()
            .unwrap_or("")
            .contains("inventory_group")
    );
    let (_, listed) = h.get("/dlq").await;
    assert_eq!(listed["entries"][0]["id"], letter_id.as_str());
    assert_eq!(listed["entries"][0]["group"], "inventory_group");
    assert_eq!(listed["entries"][0]["deliveries"], 4);

    consumers.stop().await;
    let healthy = h.consumers().await;
    let (status, body) = h
        .post(&format!("/dlq/{letter_id}/replay"), serde_json::json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["group"], "inventory_group");
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    assert_eq!(h.dlq_length().await, 0, "replay removes the dead letter");
    assert_eq!(h.stock("product-A").await, 8);
    let (status, _) = h
        .post(&format!("/dlq/{letter_id}/replay"), serde_json::json!({}))
        .await;
    assert_eq!(status, 404, "a dead letter replays once");
    healthy.stop().await;
    h.stop().await;
}

/// A handler that takes its entries and never finishes, like a consumer killed mid-flight.
struct Stuck;

impl EventHandler for Stuck {
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

/// 10. A consumer aborted while holding entries: the retry worker recovers them; stock exact.
#[tokio::test]
async fn entries_of_a_crashed_consumer_are_recovered_with_exact_stock() {
    let h = Harness::start_with(|s| s.retry.consumer_gone_after_ms = 100).await;
    h.create_product("widget", 100).await;
    let orders: Vec<String> =
        futures_util::future::join_all((0..20).map(|_| h.place("widget", 2, "tok_visa"))).await;
    let doomed = tokio::spawn(run_consumer(
        h.redis.clone(),
        Arc::new(Stuck),
        ConsumerConfig {
            consumer: "inventory-doomed".into(),
            batch_size: 100,
            max_in_flight: 100,
            block: Duration::from_millis(50),
            linger: Duration::ZERO,
            stall_bound: Duration::from_secs(30),
            claim_after: Duration::ZERO,
        },
        CancellationToken::new(),
    ));
    h.eventually(SECONDS_10, "doomed consumer holds every entry", || async {
        h.held_by("inventory_group", "inventory-doomed").await == 20
    })
    .await;
    doomed.abort();
    let survivors = h.consumers().await;
    // The survivors read (their heartbeat is there), and still cannot take what is held.
    h.eventually(SECONDS_10, "a survivor reads", || async {
        h.hlen(
            &h.layout().partitions()[0]
                .keys
                .heartbeats("inventory_group"),
        )
        .await
            >= 2
    })
    .await;
    h.settled_in(&["order_group"]).await;
    assert_eq!(h.stock("widget").await, 100, "nothing reserved while held");

    let report = h.retry_pass(&h.settings).await;
    assert_eq!(report.recovered, 20);
    for id in &orders {
        h.wait_status(id, "COMPLETED", SECONDS_10).await;
    }
    assert_eq!(h.stock("widget").await, 100 - 40);
    assert_eq!(h.counter(keys::counter::RESERVATIONS).await, 20);
    h.pending_settles_at("inventory_group", 0).await;

    // The crashed consumer now has nothing pending and is idle: the next pass removes it.
    let later = h.retry_pass(&h.settings).await;
    assert!(later.consumers_removed >= 1);
    let consumers: redis::streams::StreamInfoConsumersReply = {
        let mut conn = h.redis.conn();
        redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&h.layout().partitions()[0].stream)
            .arg("inventory_group")
            .query_async(&mut conn)
            .await
            .expect("xinfo")
    };
    assert!(
        consumers
            .consumers
            .iter()
            .all(|c| c.name != "inventory-doomed")
    );
    survivors.stop().await;
    h.stop().await;
}

/// Retention trims what every group acknowledged, never an entry some group still holds.
#[tokio::test]
async fn trimming_keeps_every_entry_some_group_has_not_acknowledged() {
    let h = Harness::start().await;
    let consumers = h.consumers().await;
    for _ in 0..5 {
        let id = h.place("product-A", 1, "tok_visa").await;
        h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    }
    consumers.stop().await;
    let held = h.place("product-A", 1, "tok_visa").await;
    let held_id = h.events_of(&held, "OrderPlaced").await[0].id.clone();
    // A consumer reads it and never acknowledges: it stays pending in inventory_group.
    h.read_as_holder("inventory_group").await;
    let others = h
        .consumers_of(&[
            Service::Order,
            Service::Payment,
            Service::Shipping,
            Service::Notification,
        ])
        .await;
    h.settled_except("inventory_group").await;
    let before = h.xlen(&h.layout().partitions()[0].stream).await;

    let mut trim_now = h.settings.clone();
    trim_now.stream.retention_ms = 0;
    trim_now.retry.min_idle_ms = 3_600_000; // nothing is retried in this pass
    let report = h.retry_worker(&trim_now).run_pass().await.expect("pass");
    assert!(report.trimmed > 0);
    assert_eq!(
        h.xlen(&h.layout().partitions()[0].stream).await,
        before - report.trimmed as i64
    );
    let remaining = h.entries(&h.layout().partitions()[0].stream).await;
    assert_eq!(
        remaining[0].id, held_id,
        "the held entry and everything after it stay"
    );
    h.pending_settles_at("inventory_group", 1).await;
    others.stop().await;
    h.stop().await;
}

/// Gone consumers with nothing pending are removed; one with pending entries never is.
#[tokio::test]
async fn only_idle_consumers_with_nothing_pending_are_removed() {
    let h = Harness::start_with(|s| s.retry.consumer_gone_after_ms = 1).await;
    h.place("product-A", 1, "tok_visa").await;
    let mut conn = h.redis.conn();
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&h.layout().partitions()[0].stream)
        .arg("shipping_group")
        .arg("ghost")
        .query_async(&mut conn)
        .await
        .expect("create consumer");
    h.read_as_holder("shipping_group").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut no_retries = h.settings.clone();
    no_retries.retry.min_idle_ms = 3_600_000;
    let report = h.retry_worker(&no_retries).run_pass().await.expect("pass");
    assert_eq!(report.consumers_removed, 1);
    let consumers: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&h.layout().partitions()[0].stream)
        .arg("shipping_group")
        .query_async(&mut conn)
        .await
        .expect("xinfo");
    let names: Vec<&str> = consumers
        .consumers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["holder"]);
    h.stop().await;
}

/// A pending entry deleted from the stream never blocks the retry worker: it leaves the group's
/// pending list (Redis 7 drops it on XCLAIM; on 6.2 the worker acknowledges the nil entry).
#[tokio::test]
async fn a_pending_entry_deleted_from_the_stream_is_cleared_not_retried_forever() {
    let h = Harness::start().await;
    let (failing, inventory, id) = h.order_stuck_in_failing_inventory(1).await;
    let entry = h.events_of(&id, "OrderPlaced").await[0].id.clone();
    let mut conn = h.redis.conn();
    let _: i64 = redis::cmd("XDEL")
        .arg(&h.layout().partitions()[0].stream)
        .arg(&entry)
        .query_async(&mut conn)
        .await
        .expect("xdel");
    let report = h.retry_pass(&failing).await;
    assert_eq!(report.retried, 0, "nothing to run: the entry is gone");
    h.pending_settles_at("inventory_group", 0).await;
    assert_eq!(h.dlq_length().await, 0);
    inventory.stop().await;
    h.stop().await;
}

/// Readers read with NOACK, so what keeps an entry safe is that the script that published it made
/// it pending for the groups that act on it. A reader that read an OrderPlaced and vanished
/// before it claimed or handled it (here a bare `XREADGROUP ... NOACK` that nothing follows)
/// leaves it pending; the retry worker takes it once idle and the order goes on.
#[tokio::test]
async fn an_entry_read_by_a_reader_that_vanished_is_still_pending_and_retried() {
    let h = Harness::start_with(|_| {}).await;
    h.create_product("widget", 10).await;
    let id = h.place("widget", 2, "tok_visa").await;
    let stream = h.layout().partitions()[0].stream.clone();
    let read: redis::Value = {
        let mut conn = h.redis.conn();
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("inventory_group")
            .arg("inventory-vanished")
            .arg("COUNT")
            .arg(10)
            .arg("NOACK")
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut conn)
            .await
            .expect("read")
    };
    assert_ne!(
        read,
        redis::Value::Nil,
        "the vanished reader read the entry"
    );
    assert_eq!(
        h.pending("inventory_group").await,
        1,
        "pending since published"
    );
    for group in [
        "payment_group",
        "shipping_group",
        "notification_group",
        "order_group",
    ] {
        assert_eq!(
            h.pending(group).await,
            0,
            "{group} does not act on OrderPlaced"
        );
    }

    let report = h.retry_pass(&h.settings).await;
    assert_eq!((report.retried, report.recovered), (1, 1));
    assert_eq!(h.order(&id).await["status"], "RESERVED");
    assert_eq!(h.stock("widget").await, 8);
    h.pending_settles_at("inventory_group", 0).await;
    h.stop().await;
}

/// An entry published for a group and not read by it yet is pending from the start, but the retry
/// worker leaves it to the group's readers, however late they come: it retries only what a
/// reader read. The readers then handle it once.
#[tokio::test]
async fn the_retry_worker_leaves_entries_no_reader_has_read_to_the_readers() {
    let h = Harness::start_with(|_| {}).await;
    h.create_product("widget", 10).await;
    let id = h.place("widget", 1, "tok_visa").await;
    assert_eq!(h.pending("inventory_group").await, 1);
    let report = h.retry_pass(&h.settings).await;
    assert_eq!(report.retried, 0, "not read by the group yet: {report:?}");
    assert_eq!(h.order(&id).await["status"], "PENDING");

    let consumers = h.consumers().await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    assert_eq!(h.stock("widget").await, 9);
    assert_eq!(h.counter(keys::counter::RESERVATIONS).await, 1);
    h.pending_settles_at("inventory_group", 0).await;
    consumers.stop().await;
    h.stop().await;
}

/// The routing table the publishing scripts read names, for every event type, exactly the groups
/// whose handlers act on it: a reader never passes over an entry made pending for its group (it
/// would wait for the retry worker), and what it acts on was made pending for it.
#[tokio::test]
async fn the_routing_table_names_exactly_the_groups_whose_handlers_act() {
    let h = Harness::start_with(|_| {}).await;
    for handler in fulfillment_pipeline::all_handlers(&h.redis, &h.settings.services) {
        for &event_type in EventType::ALL {
            for projected in [false, true] {
                let acts = handler.handles(event_type) && !(projected && handler.skips_projected());
                assert_eq!(
                    routing::acts_on(handler.service(), event_type, projected),
                    acts,
                    "{} on {event_type:?} (projected: {projected})",
                    handler.group()
                );
            }
        }
    }
    h.stop().await;
}
