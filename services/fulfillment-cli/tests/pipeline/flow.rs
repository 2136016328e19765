//! The saga's paths: completed, out of stock, declined, cancelled; and no overselling.

use crate::helpers::{Harness, SECONDS_10};
use fulfillment_core::keys;
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;

fn types(history: &serde_json::Value) -> Vec<String> {
    history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// 1. Happy path.
#[tokio::test]
async fn an_order_completes_with_one_label_and_one_confirmation() {
    let h = Harness::start().await;
    let consumers = h.consumers().await;
    let id = h.place("product-A", 3, "tok_visa").await;
    let order = h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    assert_eq!(order["total"], 3 * 1999);
    assert_eq!(h.stock("product-A").await, 7);
    assert_eq!(h.counter(keys::counter::LABELS_CREATED).await, 1);
    h.eventually(SECONDS_10, "confirmation", || async {
        h.counter(&keys::counter::notifications("order_confirmed"))
            .await
            == 1
    })
    .await;
    assert_eq!(h.events_of(&id, "ShipmentPrepared").await.len(), 1);
    assert_eq!(h.hlen(&keys::gateway_charges()).await, 1);

    h.eventually(SECONDS_10, "history complete", || async {
        let (_, history) = h.get(&format!("/orders/{id}/events")).await;
        types(&history).contains(&"NotificationSent".to_owned())
    })
    .await;
    let (_, history) = h.get(&format!("/orders/{id}/events")).await;
    assert_eq!(
        types(&history),
        [
            "OrderPlaced",
            "StockReserved",
            "PaymentProcessed",
            "ShipmentPrepared",
            "NotificationSent"
        ]
    );
    let stream_ids: Vec<&str> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["stream_id"].as_str().expect("stream id"))
        .collect();
    let mut sorted = stream_ids.clone();
    sorted.sort_by_key(|id| order_service::orders::stream_id_order(id));
    assert_eq!(stream_ids, sorted, "history is in stream order");
    consumers.stop().await;
    h.stop().await;
}

/// 2. Out of stock.
#[tokio::test]
async fn an_order_for_a_product_out_of_stock_is_cancelled_without_a_charge() {
    let h = Harness::start().await;
    let consumers = h.consumers().await;
    let id = h.place("product-C", 1, "tok_visa").await;
    let order = h.wait_status(&id, "CANCELLED", SECONDS_10).await;
    assert_eq!(order["status_reason"], "insufficient_stock");
    assert_eq!(h.stock("product-C").await, 0);
    assert_eq!(h.hlen(&keys::gateway_charges()).await, 0);
    let failed = h.events_of(&id, "StockFailed").await;
    assert_eq!(failed.len(), 1);
    let payload: serde_json::Value =
        serde_json::from_str(&failed[0].text("payload").expect("payload")).expect("json");
    assert_eq!(
        payload,
        json!({"reason": "insufficient_stock", "product_id": "product-C"})
    );
    consumers.stop().await;
    h.stop().await;
}

/// 3. Declined card: compensation releases the stock; one cancellation notice.
#[tokio::test]
async fn a_declined_card_cancels_the_order_and_releases_its_stock() {
    let h = Harness::start().await;
    let consumers = h.consumers().await;
    let id = h.place("product-B", 2, "tok_chargeDeclined").await;
    let order = h.wait_status(&id, "CANCELLED", SECONDS_10).await;
    assert_eq!(order["status_reason"], "card_declined");
    h.eventually(SECONDS_10, "stock released", || async {
        h.stock("product-B").await == 5
    })
    .await;
    h.eventually(SECONDS_10, "cancellation notice", || async {
        h.counter(&keys::counter::notifications("order_cancelled"))
            .await
            == 1
    })
    .await;
    // Give stragglers a moment: still exactly one notice, no label, no charge.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.counter(&keys::counter::notifications("order_cancelled"))
            .await,
        1
    );
    assert_eq!(h.counter(keys::counter::LABELS_CREATED).await, 0);
    assert_eq!(h.hlen(&keys::gateway_charges()).await, 0);
    assert_eq!(h.events_of(&id, "StockReleased").await.len(), 1);
    consumers.stop().await;
    h.stop().await;
}

/// 13. Cancel before shipment: compensation; after completion: 409.
#[tokio::test]
async fn cancelling_before_shipment_compensates_and_a_completed_order_cannot_be_cancelled() {
    let h = Harness::start().await;
    // Without shipping the order stops at PAID.
    let partial = h
        .consumers_of(&["order", "inventory", "payment", "notification"])
        .await;
    let id = h.place("product-A", 2, "tok_visa").await;
    h.wait_status(&id, "PAID", SECONDS_10).await;
    assert_eq!(h.stock("product-A").await, 8);
    assert_eq!(h.hlen(&keys::gateway_charges()).await, 1);

    let (status, body) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "CANCELLED");
    assert_eq!(body["status_reason"], "cancelled_by_request");
    h.eventually(SECONDS_10, "stock released", || async {
        h.stock("product-A").await == 10
    })
    .await;
    h.eventually(SECONDS_10, "payment refunded", || async {
        h.hlen(&keys::gateway_refunds()).await == 1
            && h.events_of(&id, "PaymentRefunded").await.len() == 1
    })
    .await;
    h.eventually(SECONDS_10, "cancellation notice", || async {
        h.counter(&keys::counter::notifications("order_cancelled"))
            .await
            == 1
    })
    .await;

    // Shipping comes up late and finds PaymentProcessed and OrderCancelled waiting: whichever it
    // handles first, the order ends without a live label (none made, or made and voided).
    let shipping = h.consumers_of(&["shipping"]).await;
    h.eventually(SECONDS_10, "shipping handled both", || async {
        h.pending("shipping_group").await == 0
            && matches!(
                fulfillment_core::transition::read_fact(&h.redis, &keys::shipment(&id), "state")
                    .await
                    .expect("state")
                    .as_deref(),
                Some("cancelled" | "voided")
            )
    })
    .await;
    assert!(h.counter(keys::counter::LABELS_CREATED).await <= 1);
    assert_eq!(h.order(&id).await["status"], "CANCELLED");
    let (status, body) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 409, "{body}");

    let done = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&done, "COMPLETED", SECONDS_10).await;
    let (status, body) = h.post(&format!("/orders/{done}/cancel"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "order_final");
    let (status, _) = h.post("/orders/no-such-order/cancel", json!({})).await;
    assert_eq!(status, 404);
    partial.stop().await;
    shipping.stop().await;
    h.stop().await;
}

/// An order cancelled before inventory saw it reserves nothing.
#[tokio::test]
async fn an_order_cancelled_while_pending_reserves_nothing() {
    let h = Harness::start().await;
    let id = h.place("product-B", 5, "tok_visa").await;
    let (status, _) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202);
    let consumers = h.consumers().await;
    h.eventually(SECONDS_10, "both events handled", || async {
        h.pending("inventory_group").await == 0 && h.pending("order_group").await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.stock("product-B").await, 5);
    assert_eq!(h.hlen(&keys::gateway_charges()).await, 0);
    assert_eq!(h.order(&id).await["status"], "CANCELLED");
    consumers.stop().await;
    h.stop().await;
}

/// 12. Fifty concurrent orders for ten units: exactly ten succeed, never oversold.
#[tokio::test]
async fn concurrent_orders_never_oversell() {
    let h = Harness::start().await;
    h.create_product("scarce", 10).await;
    let consumers = h.consumers_with("inventory=3,payment=2", &h.settings).await;
    let ids =
        futures_util::future::join_all((0..50).map(|_| h.place("scarce", 1, "tok_visa"))).await;
    let mut completed = 0;
    let mut cancelled = 0;
    for id in &ids {
        h.eventually(SECONDS_10, "terminal", || async {
            let s = h.order(id).await["status"].clone();
            s == "COMPLETED" || s == "CANCELLED"
        })
        .await;
        match h.order(id).await["status"].as_str() {
            Some("COMPLETED") => completed += 1,
            _ => cancelled += 1,
        }
    }
    assert_eq!(completed, 10);
    assert_eq!(cancelled, 40);
    assert_eq!(h.stock("scarce").await, 0);
    consumers.stop().await;
    h.stop().await;
}

/// Live status over WebSocket, filtered to one order.
#[tokio::test]
async fn the_websocket_reports_every_status_change_of_an_order() {
    let h = Harness::start().await;
    let consumers = h.consumers().await;
    let ws_url = h.base.replace("http://", "ws://") + "/ws";
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url).await.expect("ws");
    let id = h.place("product-A", 1, "tok_visa").await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + SECONDS_10;
    while !seen.contains(&"COMPLETED".to_owned()) {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("status messages in time")
            .expect("open")
            .expect("message");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
            if v["order_id"] == id.as_str() {
                seen.push(v["status"].as_str().expect("status").to_owned());
            }
        }
    }
    assert_eq!(seen, ["RESERVED", "PAID", "COMPLETED"]);
    let _ = socket.close(None).await;
    consumers.stop().await;
    h.stop().await;
}

/// A status never moves backwards when events arrive late, out of order or twice.
#[tokio::test]
async fn late_and_repeated_events_never_move_a_status_backwards() {
    use fulfillment_core::{Event, EventType};
    let h = Harness::start().await;
    let projection = h.consumers_of(&["order"]).await;
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
    h.eventually(SECONDS_10, "late events handled", || async {
        h.pending("order_group").await == 0 && h.xlen(&h.settings.stream).await == 7
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
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

/// Transient charge failures are retried in-process; exhausted, the order is cancelled and its
/// stock released, with nothing charged.
#[tokio::test]
async fn a_payment_gateway_that_keeps_failing_cancels_the_order_without_a_charge() {
    let h = Harness::start().await;
    let mut flaky = h.settings.clone();
    flaky.payment_failure_rate = 1.0;
    flaky.payment_max_attempts = 3;
    let consumers = h.consumers_with("", &flaky).await;
    let id = h.place("product-B", 1, "tok_visa").await;
    let order = h.wait_status(&id, "CANCELLED", SECONDS_10).await;
    assert_eq!(order["status_reason"], "payment_unavailable");
    h.eventually(SECONDS_10, "stock released", || async {
        h.stock("product-B").await == 5
    })
    .await;
    assert_eq!(h.hlen(&keys::gateway_charges()).await, 0);
    consumers.stop().await;

    // A gateway failing half the time, with attempts to spare, charges once.
    let mut half = h.settings.clone();
    half.payment_failure_rate = 0.5;
    half.payment_max_attempts = 30;
    let consumers = h.consumers_with("", &half).await;
    let paid = h.place("product-B", 1, "tok_visa").await;
    h.wait_status(&paid, "COMPLETED", SECONDS_10).await;
    assert_eq!(h.hlen(&keys::gateway_charges()).await, 1);
    consumers.stop().await;
    h.stop().await;
}
