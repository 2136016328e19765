//! The whole pipeline: an order from POST to its confirmation; duplicates and lost acks have their
//! effects once. Each scenario runs on one Redis, on one Redis with four partitions, and on a
//! Redis Cluster with twelve.

use fulfillment_events::keys;
use fulfillment_testing::{Backend, Harness, SECONDS_10, on_every_backend};
use serde_json::json;

fn types(history: &serde_json::Value) -> Vec<String> {
    history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

on_every_backend!(
    an_order_completes_with_one_label_and_one_confirmation,
    a_lost_inventory_ack_makes_downstream_see_stock_reserved_twice_with_one_effect,
    the_same_entry_added_twice_by_hand_has_its_effects_once,
    an_idempotency_key_returns_the_first_order,
);

/// 1. Happy path.
async fn an_order_completes_with_one_label_and_one_confirmation(backend: Backend) {
    let h = Harness::on(backend).await;
    let consumers = h.consumers().await;
    let id = h.place("product-A", 3, "tok_visa").await;
    let order = h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    assert_eq!(order["total"], 3 * 1999);
    assert_eq!(h.stock("product-A").await, 7);
    assert_eq!(h.counter(keys::counter::LABELS_CREATED).await, 1);
    h.wait_counter(&keys::counter::notifications("order_confirmed"), 1)
        .await;
    assert_eq!(h.events_of(&id, "ShipmentPrepared").await.len(), 1);
    assert_eq!(h.charges().await, 1);

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
    sorted.sort_by_key(|id| fulfillment_redis::stream_entry::entry_id_order(id));
    assert_eq!(stream_ids, sorted, "history is in stream order");
    consumers.stop().await;
    h.stop().await;
}

/// `fulfillment_events_handled_total` of `group`, `event_type` and `outcome` in a `/metrics` text
/// (0 when it has no sample).
fn handled(metrics: &str, group: &str, event_type: &str, outcome: &str) -> i64 {
    let labels = [
        format!("group=\"{group}\""),
        format!("type=\"{event_type}\""),
        format!("outcome=\"{outcome}\""),
    ];
    metrics
        .lines()
        .filter(|l| l.starts_with("fulfillment_events_handled_total{"))
        .filter(|l| labels.iter().all(|label| l.contains(label.as_str())))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<i64>().ok())
        .sum()
}

/// The ids of the entries pending in `group`, over the partitions.
async fn pending_ids(h: &Harness, group: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for partition in h.layout().partitions() {
        let mut conn = h.redis.conn();
        let reply: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&partition.stream)
            .arg(group)
            .arg("-")
            .arg("+")
            .arg(100)
            .query_async(&mut conn)
            .await
            .expect("xpending");
        ids.extend(reply.ids.into_iter().map(|p| p.id));
    }
    ids
}

async fn assert_effects_once(h: &Harness, id: &str) {
    h.wait_status(id, "COMPLETED", SECONDS_10).await;
    h.wait_counter(&keys::counter::notifications("order_confirmed"), 1)
        .await;
    // Every group downstream of inventory has handled everything it was given (inventory may
    // keep an entry pending on purpose: a lost ack).
    h.settled_except("inventory_group").await;
    assert_eq!(
        h.counter(keys::counter::RESERVATIONS).await,
        1,
        "one reservation"
    );
    assert_eq!(h.charges().await, 1, "one charge");
    assert_eq!(
        h.counter(keys::counter::LABELS_CREATED).await,
        1,
        "one label"
    );
    assert_eq!(
        h.counter(&keys::counter::notifications("order_confirmed"))
            .await,
        1,
        "one confirmation"
    );
    let labels: std::collections::HashSet<String> = h
        .events_of(id, "ShipmentPrepared")
        .await
        .iter()
        .map(|e| e.text("payload").unwrap_or_default())
        .collect();
    assert_eq!(
        labels.len(),
        1,
        "every ShipmentPrepared names the same label"
    );
    assert_eq!(h.stock("product-A").await, 9);
    let (_, history) = h.get(&format!("/orders/{id}/events")).await;
    let ids: Vec<&str> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_id"].as_str().expect("event id"))
        .collect();
    let unique: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "history has each event once");
}

async fn a_lost_inventory_ack_makes_downstream_see_stock_reserved_twice_with_one_effect(
    backend: Backend,
) {
    let h = Harness::on(backend).await;
    let mut lossy = h.settings.clone();
    lossy.services.inventory.ack_loss_rate = 1.0;
    let consumers = h.consumers_with("", &lossy).await;
    let id = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    // The last entry (NotificationSent) follows completion: once inventory's group has read
    // past it, nothing more of this order is on its way to inventory.
    h.eventually(SECONDS_10, "inventory read past the customer's message", || async {
        let Some(told) = h.events_of(&id, "NotificationSent").await.pop() else {
            return false;
        };
        let stream = h.partition_of(&id).stream.clone();
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query_async(&mut h.redis.conn())
            .await
            .expect("XINFO GROUPS");
        groups.iter().any(|g| {
            matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n == b"inventory_group")
                && matches!(g.get("last-delivered-id"),
                    Some(redis::Value::BulkString(last)) if fulfillment_redis::stream_entry::entry_id_order(&String::from_utf8_lossy(last)) >= fulfillment_redis::stream_entry::entry_id_order(&told.id))
        })
    })
    .await;
    // The other entries' acknowledgements follow within milliseconds; that one never does.
    h.pending_settles_at("inventory_group", 1).await;
    // Never: inventory handled the OrderPlaced and chose to leave it pending (its `ack_lost` in
    // /metrics), so no acknowledgement of it is on its way.
    h.eventually(SECONDS_10, "inventory's ack_lost counted", || async {
        handled(
            &h.metrics().await,
            "inventory_group",
            "OrderPlaced",
            "ack_lost",
        ) >= 1
    })
    .await;
    assert_eq!(h.pending("inventory_group").await, 1, "the ack was lost");
    let placed = h.events_of(&id, "OrderPlaced").await;
    assert_eq!(
        pending_ids(&h, "inventory_group").await,
        [placed[0].id.clone()],
        "the entry left pending is the OrderPlaced"
    );
    // The retry worker redelivers it (with the same instability): the reservation exists, so the
    // StockReserved it published is published again, unchanged, and the entry is acknowledged.
    let report = h.retry_pass(&lossy).await;
    assert_eq!(report.retried, 1);
    assert_eq!(report.recovered, 1);
    h.pending_settles_at("inventory_group", 0).await;
    h.eventually(SECONDS_10, "second StockReserved handled", || async {
        h.events_of(&id, "StockReserved").await.len() == 2 && h.pending("payment_group").await == 0
    })
    .await;
    let reserved = h.events_of(&id, "StockReserved").await;
    assert_eq!(reserved[0].fields, reserved[1].fields, "same event, twice");
    assert_effects_once(&h, &id).await;
    consumers.stop().await;
    h.stop().await;
}

async fn the_same_entry_added_twice_by_hand_has_its_effects_once(backend: Backend) {
    let h = Harness::on(backend).await;
    let id = h.place("product-A", 1, "tok_visa").await;
    let placed = h.events_of(&id, "OrderPlaced").await;
    assert_eq!(placed.len(), 1);
    h.xadd_to(&h.partition_of(&id).stream, &placed[0].fields)
        .await;
    let consumers = h
        .consumers_with(
            "inventory=2,payment=2,shipping=2,notification=2",
            &h.settings,
        )
        .await;
    assert_effects_once(&h, &id).await;
    consumers.stop().await;
    h.stop().await;
}

async fn an_idempotency_key_returns_the_first_order(backend: Backend) {
    let h = Harness::on(backend).await;
    let body = json!({
        "customer_id": "c", "customer_email": "c@example.com",
        "items": [{"product_id": "product-A", "quantity": 1}],
    });
    let send = |body: serde_json::Value| {
        h.http
            .post(format!("{}/orders", h.base))
            .header("Idempotency-Key", "retry-me-1")
            .json(&body)
            .send()
    };
    let first = send(body.clone()).await.expect("first");
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.expect("json");
    let again = send(body.clone()).await.expect("again");
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = again.json().await.expect("json");
    assert_eq!(first["id"], again["id"]);
    assert_eq!(h.stream_length().await, 1, "one OrderPlaced");

    let mut other = body;
    other["items"][0]["quantity"] = json!(2);
    let reused = send(other).await.expect("reused");
    assert_eq!(reused.status(), 422);
    let reused: serde_json::Value = reused.json().await.expect("json");
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    assert_eq!(h.stream_length().await, 1);
    h.stop().await;
}
