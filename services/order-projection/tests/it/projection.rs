//! The projection: a status never moves backwards.

use fulfillment_core::Service;
use fulfillment_testing::{Harness, SECONDS_10};
use serde_json::json;

/// A status never moves backwards when events arrive late, out of order or twice.
#[tokio::test]
async fn late_and_repeated_events_never_move_a_status_backwards() {
    use fulfillment_core::{Event, EventType};
    let h = Harness::start().await;
    let projection = h.consumers_of(&[Service::Order]).await;
    let id = h.place("product-A", 1, "tok_visa").await;
    let harness = &h;
    let id = id.as_str();
    let add = |event_type: EventType, payload: serde_json::Value| {
        let event = Event::new(event_type, id, &payload);
        let fields: Vec<(Vec<u8>, Vec<u8>)> = event
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
            .collect();
        async move { harness.xadd(&fields).await }
    };
    add(
        EventType::PaymentProcessed,
        json!({"payment_id": "p", "amount": 1999, "customer_email": "c@example.com"}),
    )
    .await;
    h.wait_status(id, "PAID", SECONDS_10).await;
    add(EventType::StockReserved, json!({"items": [], "amount": 1999, "payment_token": "tok_visa", "customer_email": "c@example.com"})).await;
    add(
        EventType::ShipmentPrepared,
        json!({"label_id": "l", "tracking_number": "t", "customer_email": "c@example.com"}),
    )
    .await;
    h.wait_status(id, "COMPLETED", SECONDS_10).await;
    add(EventType::PaymentFailed, json!({"reason": "card_declined"})).await;
    add(EventType::EventDeadLettered, json!({"group": "shipping_group", "event_id": "e", "event_type": "PaymentProcessed", "error": "late", "deliveries": 4})).await;
    add(EventType::StockReserved, json!({"items": [], "amount": 1999, "payment_token": "tok_visa", "customer_email": "c@example.com"})).await;
    h.eventually(SECONDS_10, "late events on the stream", || async {
        h.xlen(&h.settings.stream.name).await == 7
    })
    .await;
    h.settled_in(&["order_group"]).await;
    let order = h.order(id).await;
    assert_eq!(order["status"], "COMPLETED");
    assert!(order["status_reason"].is_null());
    assert!(
        h.events_of(id, "OrderCancelled").await.is_empty(),
        "a final order is never cancelled"
    );
    projection.stop().await;
    h.stop().await;
}

/// Payment, shipping and notification record their own events in the order's status and history
/// as they publish them (marked `projected`), so the order group has nothing left to do for
/// them: each event is in the history once, recorded by the step's consumer under the entry id it
/// was published with, and the status moves even while the order group is down.
#[tokio::test]
async fn steps_record_their_own_events_once_and_the_order_group_skips_them() {
    let h = Harness::start().await;
    let steps = h
        .consumers_of(&[
            Service::Inventory,
            Service::Payment,
            Service::Shipping,
            Service::Notification,
        ])
        .await;
    let id = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    let projection = h.consumers_of(&[Service::Order]).await;
    h.settled().await;
    let (status, history) = h.get(&format!("/orders/{id}/events")).await;
    assert_eq!(status, 200, "{history}");
    let events = history["events"].as_array().expect("events");
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "OrderPlaced",
            "StockReserved",
            "PaymentProcessed",
            "ShipmentPrepared",
            "NotificationSent"
        ],
        "each event once: {history}"
    );
    // The API records OrderPlaced as its process's consumer name.
    let api = h.settings.settings.consumer_name.as_str();
    for (event_type, consumer) in [
        ("OrderPlaced", api),
        ("StockReserved", "inventory-1"),
        ("PaymentProcessed", "payment-1"),
        ("ShipmentPrepared", "shipping-1"),
        ("NotificationSent", "notification-1"),
    ] {
        let entry = events
            .iter()
            .find(|e| e["type"] == event_type)
            .expect("recorded");
        let published = h.events_of(&id, event_type).await;
        assert_eq!(published.len(), 1, "{event_type} published once");
        assert_eq!(published[0].text("projected").as_deref(), Some("1"));
        assert_eq!(entry["stream_id"], published[0].id.as_str(), "{entry}");
        assert_eq!(entry["recorded_by"], consumer, "{entry}");
        assert_eq!(entry["attempt"], 1);
    }
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("fulfillment_order_completion_seconds_count{status=\"COMPLETED\"} 1"),
        "the completion is measured once, where it happened"
    );
    let handled_by_order_group: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("fulfillment_events_handled_total") && l.contains("group=\"order_group\"")
        })
        .collect();
    assert!(
        handled_by_order_group.is_empty(),
        "the order group skips every event of a completed order: {handled_by_order_group:?}"
    );
    steps.stop().await;
    projection.stop().await;
    h.stop().await;
}
