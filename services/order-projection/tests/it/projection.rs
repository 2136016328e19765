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
