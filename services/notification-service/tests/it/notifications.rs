//! Notifications: a voided label confirms nothing; nobody is told both outcomes.

use fulfillment_core::Service;

use fulfillment_testing::{Harness, SECONDS_10, UPSTREAM_OF_NOTIFICATION};
use serde_json::json;

/// Notification confirms only a live label: a `ShipmentPrepared` whose label was voided (as a
/// cancellation recorded before the cancel rule did) confirms nothing, and once a customer was
/// told one outcome, they are never told the other.
#[tokio::test]
async fn a_voided_label_confirms_nothing_and_no_customer_is_told_both() {
    let h = Harness::start().await;
    let upstream = h.consumers_of(&UPSTREAM_OF_NOTIFICATION).await;
    let id = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    let mut conn = h.redis.conn();
    let _: () = redis::cmd("HSET")
        .arg(h.partition_of(&id).keys.shipment(&id))
        .arg("state")
        .arg(fulfillment_events::states::ShipmentState::Voided.as_str())
        .query_async(&mut conn)
        .await
        .expect("void the label");
    let notifier = h.consumers_of(&[Service::Notification]).await;
    h.settled().await;
    assert!(
        h.notification_kinds(&id).await.is_empty(),
        "nothing confirmed"
    );

    // Told "cancelled" first (by hand, as a replayed OrderCancelled would), a later confirmation
    // is held back.
    let other = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&other, "COMPLETED", SECONDS_10).await;
    h.settled().await;
    assert_eq!(h.notification_kinds(&other).await, ["order_confirmed"]);
    let cancelled = fulfillment_core::Event::new(
        fulfillment_core::EventType::OrderCancelled,
        &other,
        &json!({"reason": "by_hand", "customer_email": "cust-1@example.com"}),
    );
    h.publish(&cancelled).await;
    h.settled().await;
    assert_eq!(h.notification_kinds(&other).await, ["order_confirmed"]);
    upstream.stop().await;
    notifier.stop().await;
    h.stop().await;
}
