//! Order retention: finished orders leave Redis; late deliveries change nothing.

use fulfillment_core::keys;
use fulfillment_core::stream_stats::group_figures;
use fulfillment_testing::{Harness, SECONDS_10};

/// Every key whose name holds `order_id`.
async fn keys_of(h: &Harness, order_id: &str) -> Vec<String> {
    let mut conn = h.redis.conn();
    redis::cmd("KEYS")
        .arg(format!("*{order_id}*"))
        .query_async(&mut conn)
        .await
        .expect("keys")
}

async fn finished_count(h: &Harness) -> i64 {
    let mut conn = h.redis.conn();
    redis::cmd("ZCARD")
        .arg(keys::orders_finished())
        .query_async(&mut conn)
        .await
        .expect("zcard")
}

#[tokio::test]
async fn finished_orders_are_removed_after_retention_and_late_deliveries_change_nothing() {
    let h = Harness::start_with(|s| s.order_retention_ms = 300).await;
    let consumers = h.consumers().await;
    let done = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&done, "COMPLETED", SECONDS_10).await;
    h.wait_counter(&keys::counter::notifications("order_confirmed"), 1)
        .await;
    assert!(keys_of(&h, &done).await.len() >= 5, "the order's state");
    let mut late = Vec::new();
    for event_type in ["OrderPlaced", "StockReserved", "PaymentProcessed"] {
        late.extend(h.events_of(&done, event_type).await);
    }
    assert_eq!(late.len(), 3);
    consumers.stop().await;

    // Placed while nothing consumes: PENDING, so never removed however old.
    let waiting = h.place("product-B", 1, "tok_visa").await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let report = h.retry_worker(&h.settings).run_pass().await.expect("pass");
    assert_eq!(report.orders_removed, 1);
    assert_eq!(keys_of(&h, &done).await, Vec::<String>::new());
    assert_eq!(h.hlen(&keys::gateway_charges()).await, 0);
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
        h.xadd(&entry.fields).await;
    }
    let consumers = h.consumers().await;
    h.wait_status(&waiting, "COMPLETED", SECONDS_10).await;
    h.eventually(SECONDS_10, "every group caught up", || async {
        let groups = group_figures(&h.redis, &h.settings.stream.name)
            .await
            .expect("groups");
        groups.len() == fulfillment_core::Service::ALL.len()
            && groups.iter().all(|g| g.pending == 0 && g.lag == Some(0))
    })
    .await;
    assert_eq!(
        h.stock("product-A").await,
        9,
        "reserved once, for the first delivery"
    );
    assert_eq!(h.stock("product-B").await, 4);
    assert_eq!(h.counter(keys::counter::LABELS_CREATED).await, 2);
    assert_eq!(
        h.hlen(&keys::gateway_charges()).await,
        1,
        "the waiting order's"
    );
    assert_eq!(keys_of(&h, &done).await, Vec::<String>::new());
    consumers.stop().await;
    h.stop().await;
}
