//! Order retention: finished orders leave Redis; late deliveries change nothing.

use fulfillment_events::events::now_millis;
use fulfillment_events::keys;
use fulfillment_testing::{Backend, Harness, SECONDS_10, on_every_backend};

/// Every key of `order_id` that exists: its state in its partition, its line in the catalog's
/// ledger, and (as `gateway:<hash>`) its lines in the gateway's.
async fn keys_of(h: &Harness, order_id: &str) -> Vec<String> {
    let mut conn = h.redis.conn();
    let mut candidates = h.partition_of(order_id).keys.order_state(order_id);
    candidates.push(h.layout().catalog.reservation(order_id));
    let mut found = Vec::new();
    for key in candidates {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("exists");
        if exists == 1 {
            found.push(key);
        }
    }
    let gateway = &h.layout().gateway;
    for hash in [
        gateway.gateway_charges(),
        gateway.gateway_refunds(),
        gateway.gateway_voids(),
    ] {
        let line: i64 = redis::cmd("HEXISTS")
            .arg(&hash)
            .arg(order_id)
            .query_async(&mut conn)
            .await
            .expect("hexists");
        if line == 1 {
            found.push(format!("{hash}[{order_id}]"));
        }
    }
    found
}

/// Finished orders and swept orders whose ledger lines are left, on every partition.
async fn finished_count(h: &Harness) -> i64 {
    let mut conn = h.redis.conn();
    let mut total = 0;
    for partition in h.layout().partitions() {
        for key in [
            partition.keys.orders_finished(),
            partition.keys.orders_swept(),
        ] {
            let n: i64 = redis::cmd(if key.ends_with("swept") {
                "SCARD"
            } else {
                "ZCARD"
            })
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("count");
            total += n;
        }
    }
    total
}

on_every_backend!(finished_orders_are_removed_after_retention_and_late_deliveries_change_nothing);

async fn finished_orders_are_removed_after_retention_and_late_deliveries_change_nothing(
    backend: Backend,
) {
    let h = Harness::on_with(backend, |s| s.order_retention_ms = 300).await;
    let consumers = h.consumers().await;
    let done = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&done, "COMPLETED", SECONDS_10).await;
    h.wait_counter(&keys::counter::notifications("order_confirmed"), 1)
        .await;
    assert!(keys_of(&h, &done).await.len() >= 7, "the order's state");
    let mut late = Vec::new();
    for event_type in ["OrderPlaced", "StockReserved", "PaymentProcessed"] {
        late.extend(h.events_of(&done, event_type).await);
    }
    assert_eq!(late.len(), 3);
    consumers.stop().await;

    // Placed while nothing consumes: PENDING, so never removed however old.
    let waiting = h.place("product-B", 1, "tok_visa").await;
    // The pass removes what finished ORDER_RETENTION_MS or more before its clock reads: wait until
    // that cutoff reaches the time `done` finished at (its score in the finished set) and the time
    // `waiting` was placed at (so that its age alone would not keep it).
    let mut conn = h.redis.conn();
    let finished_ms: f64 = redis::cmd("ZSCORE")
        .arg(h.partition_of(&done).keys.orders_finished())
        .arg(&done)
        .query_async(&mut conn)
        .await
        .expect("finished");
    let placed_ms: u64 = redis::cmd("HGET")
        .arg(h.partition_of(&waiting).keys.order(&waiting))
        .arg("created_ms")
        .query_async(&mut conn)
        .await
        .expect("placed");
    let retention = h.settings.order_retention_ms;
    h.eventually(
        SECONDS_10,
        "the retention cutoff past both orders",
        || async { now_millis().saturating_sub(retention) >= (finished_ms as u64).max(placed_ms) },
    )
    .await;
    // An index an older version kept for a status that lasts milliseconds, with a stale member.
    let legacy = h.partition_of(&done).keys.orders_by_status("RESERVED");
    let _: i64 = redis::cmd("ZADD")
        .arg(&legacy)
        .arg(0)
        .arg(&done)
        .query_async(&mut conn)
        .await
        .expect("zadd");
    let report = h.retry_worker(&h.settings).run_pass().await.expect("pass");
    assert_eq!(report.orders_removed, 1);
    let legacy_left: i64 = redis::cmd("EXISTS")
        .arg(&legacy)
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert_eq!(legacy_left, 0, "the pass removes indexes no status uses");
    assert_eq!(keys_of(&h, &done).await, Vec::<String>::new());
    assert_eq!(h.charges().await, 0);
    assert_eq!(finished_count(&h).await, 0);
    let (status, body) = h.get(&format!("/orders/{done}")).await;
    assert_eq!(status, 404, "{body}");
    let (_, page) = h.get("/orders").await;
    let listed: Vec<&str> = page["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .filter_map(|o| o["id"].as_str())
        .collect();
    assert_eq!(listed, vec![waiting.as_str()]);
    assert_eq!(h.order(&waiting).await["status"], "PENDING");

    // The removed order's entries delivered again: nothing is reserved, charged or labelled.
    for entry in &late {
        h.xadd_to(&h.partition_of(&done).stream, &entry.fields)
            .await;
    }
    let consumers = h.consumers().await;
    h.wait_status(&waiting, "COMPLETED", SECONDS_10).await;
    h.settled().await;
    assert_eq!(
        h.stock("product-A").await,
        9,
        "reserved once, for the first delivery"
    );
    assert_eq!(h.stock("product-B").await, 4);
    assert_eq!(h.counter(keys::counter::LABELS_CREATED).await, 2);
    assert_eq!(h.charges().await, 1, "the waiting order's");
    assert_eq!(keys_of(&h, &done).await, Vec::<String>::new());
    consumers.stop().await;
    h.stop().await;
}
