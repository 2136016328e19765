//! Labels: none after a cancel, no cancel after a label.

use fulfillment_core::Service;

use fulfillment_events::keys;
use fulfillment_testing::{Harness, SECONDS_10};
use serde_json::json;

/// Stream order `PaymentProcessed, OrderCancelled, ShipmentPrepared`: shipping had not yet read the
/// payment when the cancel came. The cancel itself now closes shipping's door: no label is made,
/// the customer hears "cancelled" only.
#[tokio::test]
async fn a_cancel_before_the_label_means_no_label_and_only_a_cancel_notice() {
    let h = Harness::start().await;
    let upstream = h
        .consumers_of(&[Service::Order, Service::Inventory, Service::Payment])
        .await;
    let id = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&id, "PAID", SECONDS_10).await;
    let (status, body) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let downstream = h
        .consumers_of(&[Service::Shipping, Service::Notification])
        .await;
    h.settled().await;
    assert!(
        h.events_of(&id, "ShipmentPrepared").await.is_empty(),
        "no label for a cancelled order"
    );
    assert_eq!(h.counter(keys::counter::LABELS_CREATED).await, 0);
    assert_eq!(h.notification_kinds(&id).await, ["order_cancelled"]);
    h.eventually(SECONDS_10, "refunded", || async {
        !h.events_of(&id, "PaymentRefunded").await.is_empty()
    })
    .await;
    assert_eq!(h.stock("product-A").await, 10, "stock released");
    upstream.stop().await;
    downstream.stop().await;
    h.stop().await;
}

/// Shipping labelled the order, but its status does not show it (a label made before shipping
/// recorded its own event, whose order group has not caught up): a cancel now would tell the
/// customer both. It is refused with 409 `order_shipped`. And the label moves the order to
/// COMPLETED itself, with no order group running.
#[tokio::test]
async fn a_cancel_after_the_label_is_refused_and_the_customer_hears_one_thing() {
    let h = Harness::start().await;
    let workers = h
        .consumers_of(&[Service::Inventory, Service::Payment, Service::Shipping])
        .await;
    let id = h.place("product-A", 1, "tok_visa").await;
    h.eventually(SECONDS_10, "labelled", || async {
        !h.events_of(&id, "ShipmentPrepared").await.is_empty()
    })
    .await;
    assert_eq!(
        h.order(&id).await["status"],
        "COMPLETED",
        "the label records itself"
    );
    set_status(&h, &id, "PAID", 2).await;
    let (status, body) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "order_shipped");
    assert!(h.events_of(&id, "OrderCancelled").await.is_empty());
    set_status(&h, &id, "COMPLETED", 3).await;
    let rest = h
        .consumers_of(&[Service::Order, Service::Notification])
        .await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    h.settled().await;
    assert_eq!(h.notification_kinds(&id).await, ["order_confirmed"]);
    workers.stop().await;
    rest.stop().await;
    h.stop().await;
}

/// Sets the order's status and progress by hand, as the projection would have left them.
async fn set_status(h: &Harness, id: &str, status: &str, progress: u8) {
    let mut conn = h.redis.conn();
    let _: () = redis::cmd("HSET")
        .arg(h.partition_of(id).keys.order(id))
        .arg("status")
        .arg(status)
        .arg("progress")
        .arg(progress)
        .query_async(&mut conn)
        .await
        .expect("set the order's status");
}
