//! Dead letters flag their order: kept from retention until resolved, resolved by a handled replay
//! or a delete; late deliveries create no state.

use fulfillment_core::Service;
use fulfillment_testing::{Backend, Harness, SECONDS_10, on_every_backend};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

/// The second defect: `OrderCancelled` dead-lettered for inventory. The order shows it
/// (its dead letters, `fulfillment stats`), the retention sweep keeps it with its reservation, and
/// a replay once inventory is healthy gives the stock back; then the sweep may remove it.
#[tokio::test]
async fn a_dead_lettered_compensation_is_visible_kept_and_completed_by_its_replay() {
    let h = Harness::start().await;
    let early = h.consumers_of(&[Service::Order, Service::Inventory]).await;
    let id = h.place("product-A", 3, "tok_visa").await;
    h.wait_status(&id, "RESERVED", SECONDS_10).await;
    early.stop().await;
    assert_eq!(h.stock("product-A").await, 7);

    let mut failing = h.settings.clone();
    failing.services.inventory.failure_rate = 1.0;
    let broken = h
        .consumers_of_with(&[Service::Order, Service::Inventory], &failing)
        .await;
    let (status, body) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    h.eventually(SECONDS_10, "cancel pending in inventory", || async {
        h.pending("inventory_group").await == 1
    })
    .await;
    for _ in 0..3 {
        h.retry_pass(&failing).await;
    }
    assert_eq!(h.dlq_length().await, 1, "dead-lettered");
    h.settled_in(&["order_group", "inventory_group"]).await;

    let order = h.order(&id).await;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(
        order["dead_letters"], 1,
        "the order shows its dead letter: {order}"
    );
    assert_eq!(h.stock("product-A").await, 7, "stock still held");
    let (_, stats) = h.get("/stats").await;
    assert_eq!(stats["orders_with_dead_letters"], 1);
    let out = h.fulfillment(&["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("orders with unresolved dead letters 1"),
        "{text}"
    );

    // Retention has long passed: the order and its reservation are kept for the replay.
    let mut sweeping = failing.clone();
    sweeping.order_retention_ms = 1;
    let report = h.retry_pass(&sweeping).await;
    assert_eq!(report.orders_removed, 0);
    assert_eq!(h.order(&id).await["status"], "CANCELLED");

    broken.stop().await;
    let healthy = h.consumers_of(&[Service::Order, Service::Inventory]).await;
    let (_, dlq) = h.get("/dlq").await;
    let letter = dlq["entries"][0]["id"].as_str().expect("dlq id").to_owned();
    let (status, _) = h.post(&format!("/dlq/{letter}/replay"), json!({})).await;
    assert_eq!(status, 202);
    h.eventually(SECONDS_10, "stock released by the replay", || async {
        h.stock("product-A").await == 10
    })
    .await;
    h.settled_in(&["order_group", "inventory_group"]).await;
    assert_eq!(h.order(&id).await["dead_letters"], 0);
    let (_, stats) = h.get("/stats").await;
    assert_eq!(stats["orders_with_dead_letters"], 0);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut sweeping = h.settings.clone();
    sweeping.order_retention_ms = 1;
    let report = h.retry_pass(&sweeping).await;
    assert_eq!(report.orders_removed, 1, "resolved, the order may go");
    let (status, _) = h.get(&format!("/orders/{id}")).await;
    assert_eq!(status, 404);
    healthy.stop().await;
    h.stop().await;
}

/// A FAILED order (its `OrderPlaced` dead-lettered) that an operator cancels is finished but
/// still has its dead letter: the sweep keeps it. Deleting the dead letter resolves it (an
/// operator decided no replay is needed); then the sweep may remove the order.
#[tokio::test]
async fn an_order_finished_with_a_dead_letter_is_kept_until_the_letter_is_deleted() {
    let h = Harness::start().await;
    let (failing, consumers, id) = h.order_stuck_in_failing_inventory(1).await;
    for _ in 0..3 {
        h.retry_pass(&failing).await;
    }
    h.wait_status(&id, "FAILED", SECONDS_10).await;
    assert_eq!(h.order(&id).await["dead_letters"], 1);
    let (status, _) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202);
    let mut sweeping = failing.clone();
    sweeping.order_retention_ms = 1;
    let report = h.retry_pass(&sweeping).await;
    assert_eq!(
        report.orders_removed, 0,
        "kept while its dead letter is unresolved"
    );
    assert_eq!(h.order(&id).await["status"], "CANCELLED");

    let (_, dlq) = h.get("/dlq").await;
    let letter = dlq["entries"][0]["id"].as_str().expect("dlq id").to_owned();
    let (status, _) = h
        .request_as(Method::DELETE, &format!("/dlq/{letter}"), None, None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(h.order(&id).await["dead_letters"], 0);
    let (_, stats) = h.get("/stats").await;
    assert_eq!(stats["orders_with_dead_letters"], 0);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = h.retry_pass(&sweeping).await;
    assert_eq!(report.orders_removed, 1, "resolved, the order may go");
    consumers.stop().await;
    h.stop().await;
}

on_every_backend!(a_late_delivery_for_a_removed_order_creates_no_state);

/// A late `OrderCancelled` for an order that no longer exists writes no state at all, in its
/// partition or in the catalog's ledger.
async fn a_late_delivery_for_a_removed_order_creates_no_state(backend: Backend) {
    let h = Harness::on(backend).await;
    let consumers = h.consumers().await;
    let ghost = "00000000-0000-0000-0000-00000000dead";
    let late = fulfillment_core::Event::new(
        fulfillment_core::EventType::OrderCancelled,
        ghost,
        &json!({"reason": "late", "customer_email": "x@example.com"}),
    );
    h.publish(&late).await;
    h.settled().await;
    let mut conn = h.redis.conn();
    let mut keys = h.partition_of(ghost).keys.order_state(ghost);
    keys.push(h.layout().catalog.reservation(ghost));
    for key in keys {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("exists");
        assert_eq!(exists, 0, "{key} was created by a late delivery");
    }
    consumers.stop().await;
    h.stop().await;
}
