//! Orders: cancelling, the live feed, idempotency keys.

use fulfillment_core::Service;

use fulfillment_events::keys;
use fulfillment_testing::{Backend, Harness, SECONDS_10, on_every_backend};
use futures_util::StreamExt;
use serde_json::{Value, json};

on_every_backend!(
    cancelling_before_shipment_compensates_and_a_completed_order_cannot_be_cancelled,
    the_websocket_reports_every_status_change_of_an_order,
);

/// 13. Cancel before shipment: compensation; after completion: 409.
async fn cancelling_before_shipment_compensates_and_a_completed_order_cannot_be_cancelled(
    backend: Backend,
) {
    let h = Harness::on(backend).await;
    // Without shipping the order stops at PAID.
    let partial = h
        .consumers_of(&[
            Service::Order,
            Service::Inventory,
            Service::Payment,
            Service::Notification,
        ])
        .await;
    let id = h.place("product-A", 2, "tok_visa").await;
    h.wait_status(&id, "PAID", SECONDS_10).await;
    assert_eq!(h.stock("product-A").await, 8);
    assert_eq!(h.charges().await, 1);

    let (status, body) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "CANCELLED");
    assert_eq!(body["status_reason"], "cancelled_by_request");
    h.eventually(SECONDS_10, "stock released", || async {
        h.stock("product-A").await == 10
    })
    .await;
    h.eventually(SECONDS_10, "payment refunded", || async {
        h.refunds().await == 1 && h.events_of(&id, "PaymentRefunded").await.len() == 1
    })
    .await;
    h.wait_counter(&keys::counter::notifications("order_cancelled"), 1)
        .await;

    // Shipping comes up late and finds PaymentProcessed and OrderCancelled waiting: whichever it
    // handles first, the order ends without a live label (none made, or made and voided).
    let shipping = h.consumers_of(&[Service::Shipping]).await;
    h.eventually(SECONDS_10, "shipping handled both", || async {
        h.pending("shipping_group").await == 0
            && matches!(
                fulfillment_core::saga::transition::read_fact(
                    &h.redis,
                    &h.partition_of(&id).keys.shipment(&id),
                    "state",
                )
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

/// Live status over WebSocket, filtered to one order.
async fn the_websocket_reports_every_status_change_of_an_order(backend: Backend) {
    let h = Harness::on(backend).await;
    let consumers = h.consumers().await;
    let ws_url = h.base.replace("http://", "ws://") + "/ws";
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url).await.expect("ws");
    let id = h.place("product-A", 1, "tok_visa").await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + SECONDS_10;
    while !seen.contains(&"COMPLETED".to_owned()) {
        let v = next_change(&mut socket, deadline).await;
        if v["order_id"] == id.as_str() {
            seen.push(v["status"].as_str().expect("status").to_owned());
        }
    }
    assert_eq!(seen, ["RESERVED", "PAID", "COMPLETED"]);
    let _ = socket.close(None).await;
    consumers.stop().await;
    h.stop().await;
}

/// A client following one order gets that order's changes and no other, in order, also when
/// many orders' changes arrive together (one `PUBLISH` of a batch, several messages per write);
/// the all-orders feed gets every one.
#[tokio::test]
async fn following_one_order_among_many_gets_its_changes_only() {
    let h = Harness::start().await;
    h.create_product("many", 1000).await;
    let ws = h.base.replace("http://", "ws://");
    let (mut all, _) = tokio_tungstenite::connect_async(format!("{ws}/ws"))
        .await
        .expect("ws");
    let ids: Vec<String> =
        futures_util::future::join_all((0..40).map(|_| h.place("many", 1, "tok_visa"))).await;
    let followed = ids[7].clone();
    let (mut one, _) = tokio_tungstenite::connect_async(format!("{ws}/ws?order_id={followed}"))
        .await
        .expect("ws");
    // Only now do the orders move, so the follower sees every change of its order.
    let consumers = h.consumers().await;
    let deadline = tokio::time::Instant::now() + SECONDS_10;
    let mut completed = std::collections::HashSet::new();
    while completed.len() < ids.len() {
        let change = next_change(&mut all, deadline).await;
        if change["status"] == "COMPLETED" {
            completed.insert(change["order_id"].as_str().expect("id").to_owned());
        }
    }
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("COMPLETED") {
        let change = next_change(&mut one, deadline).await;
        assert_eq!(change["order_id"], followed.as_str(), "{change}");
        seen.push(change["status"].as_str().expect("status").to_owned());
    }
    assert_eq!(seen, ["RESERVED", "PAID", "COMPLETED"]);
    let _ = all.close(None).await;
    let _ = one.close(None).await;
    consumers.stop().await;
    h.stop().await;
}

/// The next text message of a status feed, as JSON, before `deadline`.
async fn next_change<S>(socket: &mut S, deadline: tokio::time::Instant) -> Value
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("status messages in time")
            .expect("open")
            .expect("message");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).expect("json");
        }
    }
}

/// The fifth defect: a `|` in the body broke a retried POST with its Idempotency-Key.
#[tokio::test]
async fn an_idempotency_key_replays_a_request_holding_the_separator() {
    let h = Harness::start().await;
    let body = json!({
        "customer_id": "a|b", "customer_email": "pipe|pipe@example.com",
        "items": [{"product_id": "product-A", "quantity": 1}],
    });
    let post = || {
        h.http
            .post(format!("{}/orders", h.base))
            .header("idempotency-key", "retry-me")
            .json(&body)
            .send()
    };
    let first = post().await.expect("first");
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = first.json().await.expect("json");
    let again = post().await.expect("again");
    assert_eq!(again.status().as_u16(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["id"], first["id"]);
    h.stop().await;
}

on_every_backend!(stats_count_orders_completion_times_and_each_consumers_work);

/// `/stats` carries what the console draws: order totals, completion times, and each consumer's
/// share of its group's work, added up over the partitions; `/metrics` names each partition's
/// stream and, with several, each partition's pending and lag.
async fn stats_count_orders_completion_times_and_each_consumers_work(backend: Backend) {
    let h = Harness::on(backend).await;
    let consumers = h.consumers_with("inventory=2", &h.settings).await;
    let done = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&done, "COMPLETED", SECONDS_10).await;
    let declined = h.place("product-A", 1, "tok_chargeDeclined").await;
    h.wait_status(&declined, "CANCELLED", SECONDS_10).await;
    h.settled().await;
    let (status, stats) = h.get("/stats").await;
    assert_eq!(status, 200);
    assert_eq!(
        stats["orders"],
        json!({"placed": 2, "completed": 1, "cancelled": 1})
    );
    assert_eq!(stats["completion_ms"]["samples"], 2, "{stats}");
    assert!(
        stats["completion_ms"]["p99"]
            .as_i64()
            .is_some_and(|ms| ms >= 0)
    );
    let inventory = stats["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["group"] == "inventory_group")
        .expect("inventory_group");
    let handled: i64 = inventory["consumers"]
        .as_array()
        .expect("consumers")
        .iter()
        .map(|c| c["handled"].as_i64().unwrap_or(0))
        .sum();
    // What inventory acts on: each order's OrderPlaced, and the declined order's OrderCancelled.
    assert_eq!(
        handled, 3,
        "every entry it acts on acknowledged once in the group"
    );
    let entries = h.stream_length().await;
    assert_eq!(stats["stream_length"], entries);
    assert_eq!(stats["stream"], "order_events");
    let partitions = h.layout().partitions();
    assert_eq!(
        stats["partitions"].as_array().map(Vec::len),
        Some(partitions.len())
    );
    let metrics = h.metrics().await;
    for partition in partitions {
        let line = format!(
            "fulfillment_stream_length{{stream=\"{}\"}}",
            partition.stream
        );
        assert!(metrics.contains(&line), "{line} missing");
        let pending = format!(
            "fulfillment_partition_pending{{group=\"inventory_group\",partition=\"{}\"}} 0",
            partition.index
        );
        assert_eq!(
            metrics.contains(&pending),
            partitions.len() > 1,
            "{pending}"
        );
    }
    assert!(metrics.contains("fulfillment_stream_pending{group=\"inventory_group\"} 0"));
    consumers.stop().await;
    h.stop().await;
}

/// The case: keys were global, so a second caller reusing `cart-1001` with another body
/// got 422 naming the first caller's order. A key is its caller's own (customer, and token when
/// tokens are set): another caller gets a fresh order of its own and never the first one's id;
/// the same caller reusing its key with another body gets the 422 naming its own order.
#[tokio::test]
async fn an_idempotency_key_is_its_callers_alone() {
    let h = Harness::start_with(|s| {
        s.api.api_token = Some("api-t0ken".into());
        s.api.admin_token = Some("adm1n".into());
    })
    .await;
    let post = |token: &'static str, customer: &'static str, quantity: u32| {
        h.http
            .post(format!("{}/orders", h.base))
            .bearer_auth(token)
            .header("idempotency-key", "cart-1001")
            .json(&json!({"customer_id": customer, "customer_email": format!("{customer}@example.com"),
                "items": [{"product_id": "product-A", "quantity": quantity}]}))
            .send()
    };
    let first = post("api-t0ken", "alice", 1).await.expect("post");
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = first.json().await.expect("json");
    let alices = first["id"].as_str().expect("id").to_owned();

    // Another customer, the same key, another body: its own order, nothing of Alice's.
    let bob = post("api-t0ken", "bob", 2).await.expect("post");
    assert_eq!(bob.status().as_u16(), 201);
    assert!(bob.headers().get("idempotent-replayed").is_none());
    let bob = bob.text().await.expect("body");
    assert!(!bob.contains(&alices), "{bob}");
    assert!(!bob.contains("alice"), "{bob}");
    // Bob's retry returns Bob's order.
    let bob: Value = serde_json::from_str(&bob).expect("json");
    let again = post("api-t0ken", "bob", 2).await.expect("post");
    assert_eq!(again.status().as_u16(), 201);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["id"], bob["id"]);

    // The same customer id behind another token is another caller.
    let other_token = post("adm1n", "alice", 3).await.expect("post");
    assert_eq!(other_token.status().as_u16(), 201);
    let other_token = other_token.text().await.expect("body");
    assert!(!other_token.contains(&alices), "{other_token}");

    // Alice herself reusing her key with another body: the 422 names her own order.
    let reused = post("api-t0ken", "alice", 5).await.expect("post");
    assert_eq!(reused.status().as_u16(), 422);
    let reused: Value = reused.json().await.expect("json");
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    assert_eq!(reused["error"]["details"]["order_id"], alices.as_str());
    assert_eq!(h.stream_length().await, 3, "three orders placed");
    h.stop().await;
}

/// A token that opens nothing names nobody: with only the admin token set, an anonymous caller
/// that changes the junk token it sends is still the same anonymous caller, so its retry with the
/// key returns its first order rather than placing another.
#[tokio::test]
async fn a_junk_token_does_not_make_a_new_caller_of_a_key() {
    let h = Harness::start_with(|s| s.api.admin_token = Some("adm1n".into())).await;
    let post = |token: &'static str| {
        h.http
            .post(format!("{}/orders", h.base))
            .bearer_auth(token)
            .header("idempotency-key", "cart-2002")
            .json(
                &json!({"customer_id": "carol", "customer_email": "carol@example.com",
                "items": [{"product_id": "product-A", "quantity": 1}]}),
            )
            .send()
    };
    let first = post("junk-1").await.expect("post");
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = first.json().await.expect("json");
    let retried = post("junk-2").await.expect("post");
    assert_eq!(retried.status().as_u16(), 201);
    assert_eq!(retried.headers()["idempotent-replayed"], "true");
    let retried: Value = retried.json().await.expect("json");
    assert_eq!(retried["id"], first["id"]);
    assert_eq!(h.stream_length().await, 1, "one order placed");
    h.stop().await;
}

/// Cancelling is safe to retry: the second cancel of an order is a 409 that says the order is
/// cancelled and why, so a caller whose first answer was lost learns that it landed.
#[tokio::test]
async fn a_second_cancel_tells_the_first_one_landed() {
    let h = Harness::start().await;
    let id = h.place("product-A", 1, "tok_visa").await;
    let (status, body) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "order_final");
    assert_eq!(body["error"]["details"]["status"], "CANCELLED");
    assert_eq!(
        body["error"]["details"]["status_reason"],
        "cancelled_by_request"
    );
    h.stop().await;
}
