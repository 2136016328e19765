//! The saga where its steps meet: a cancellation racing a label, a compensation that is
//! dead-lettered, a charge racing its own retry, a catalog edit racing reservations, and an
//! idempotency key whose request holds the separator.

use crate::helpers::{Harness, SECONDS_10};
use fulfillment_core::keys;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The kinds of `NotificationSent` published for an order.
async fn notifications(h: &Harness, order_id: &str) -> Vec<String> {
    h.events_of(order_id, "NotificationSent")
        .await
        .iter()
        .filter_map(|e| e.text("payload"))
        .filter_map(|p| serde_json::from_str::<Value>(&p).ok())
        .filter_map(|p| p["kind"].as_str().map(str::to_owned))
        .collect()
}

/// Stream order `PaymentProcessed, OrderCancelled, ShipmentPrepared`: shipping had not yet read the
/// payment when the cancel came. The cancel itself now closes shipping's door: no label is made,
/// the customer hears "cancelled" only.
#[tokio::test]
async fn a_cancel_before_the_label_means_no_label_and_only_a_cancel_notice() {
    let h = Harness::start().await;
    let upstream = h.consumers_of(&["order", "inventory", "payment"]).await;
    let id = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&id, "PAID", SECONDS_10).await;
    let (status, body) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let downstream = h.consumers_of(&["shipping", "notification"]).await;
    h.settled().await;
    assert!(
        h.events_of(&id, "ShipmentPrepared").await.is_empty(),
        "no label for a cancelled order"
    );
    assert_eq!(h.counter(keys::counter::LABELS_CREATED).await, 0);
    assert_eq!(notifications(&h, &id).await, ["order_cancelled"]);
    h.eventually(SECONDS_10, "refunded", || async {
        !h.events_of(&id, "PaymentRefunded").await.is_empty()
    })
    .await;
    assert_eq!(h.stock("product-A").await, 10, "stock released");
    upstream.stop().await;
    downstream.stop().await;
    h.stop().await;
}

/// Shipping labelled the order, but the projection has not seen it yet (the order still looks
/// PAID): a cancel now would tell the customer both. It is refused with 409 `order_shipped`.
#[tokio::test]
async fn a_cancel_after_the_label_is_refused_and_the_customer_hears_one_thing() {
    let h = Harness::start().await;
    let workers = h.consumers_of(&["inventory", "payment", "shipping"]).await;
    let id = h.place("product-A", 1, "tok_visa").await;
    h.eventually(SECONDS_10, "labelled", || async {
        !h.events_of(&id, "ShipmentPrepared").await.is_empty()
    })
    .await;
    assert_eq!(
        h.order(&id).await["status"],
        "PENDING",
        "projection not running"
    );
    let (status, body) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "order_shipped");
    assert!(h.events_of(&id, "OrderCancelled").await.is_empty());
    let rest = h.consumers_of(&["order", "notification"]).await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    h.settled().await;
    assert_eq!(notifications(&h, &id).await, ["order_confirmed"]);
    workers.stop().await;
    rest.stop().await;
    h.stop().await;
}

/// Notification confirms only a live label: a `ShipmentPrepared` whose label was voided (as a
/// cancellation recorded before the cancel rule did) confirms nothing, and once a customer was
/// told one outcome, they are never told the other.
#[tokio::test]
async fn a_voided_label_confirms_nothing_and_no_customer_is_told_both() {
    let h = Harness::start().await;
    let upstream = h
        .consumers_of(&["order", "inventory", "payment", "shipping"])
        .await;
    let id = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    let mut conn = h.redis.conn();
    let _: () = redis::cmd("HSET")
        .arg(keys::shipment(&id))
        .arg("state")
        .arg(keys::shipment_state::VOIDED)
        .query_async(&mut conn)
        .await
        .expect("void the label");
    let notifier = h.consumers_of(&["notification"]).await;
    h.settled().await;
    assert!(notifications(&h, &id).await.is_empty(), "nothing confirmed");

    // Told "cancelled" first (by hand, as a replayed OrderCancelled would), a later confirmation
    // is held back.
    let other = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&other, "COMPLETED", SECONDS_10).await;
    h.settled().await;
    assert_eq!(notifications(&h, &other).await, ["order_confirmed"]);
    let cancelled = fulfillment_core::Event::new(
        fulfillment_core::EventType::OrderCancelled,
        &other,
        &json!({"reason": "by_hand", "customer_email": "cust-1@example.com"}),
    );
    let fields: Vec<(Vec<u8>, Vec<u8>)> = cancelled
        .to_fields()
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
        .collect();
    h.xadd(&fields).await;
    h.settled().await;
    assert_eq!(notifications(&h, &other).await, ["order_confirmed"]);
    upstream.stop().await;
    notifier.stop().await;
    h.stop().await;
}

/// The second defect: `OrderCancelled` dead-lettered for inventory. The order shows it
/// (its dead letters, `fulfillment stats`), the retention sweep keeps it with its reservation, and
/// a replay once inventory is healthy gives the stock back; then the sweep may remove it.
#[tokio::test]
async fn a_dead_lettered_compensation_is_visible_kept_and_completed_by_its_replay() {
    let h = Harness::start().await;
    let early = h.consumers_of(&["order", "inventory"]).await;
    let id = h.place("product-A", 3, "tok_visa").await;
    h.wait_status(&id, "RESERVED", SECONDS_10).await;
    early.stop().await;
    assert_eq!(h.stock("product-A").await, 7);

    let mut failing = h.settings.clone();
    failing.inventory_failure_rate = 1.0;
    let broken = h.consumers_of_with(&["order", "inventory"], &failing).await;
    let (status, body) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    h.eventually(SECONDS_10, "cancel pending in inventory", || async {
        h.pending("inventory_group").await == 1
    })
    .await;
    for _ in 0..3 {
        h.retry_pass(&failing).await;
    }
    assert_eq!(h.xlen(&h.settings.dlq_stream).await, 1, "dead-lettered");
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
    let healthy = h.consumers_of(&["order", "inventory"]).await;
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

/// A late `OrderCancelled` for an order that no longer exists writes no state at all.
#[tokio::test]
async fn a_late_delivery_for_a_removed_order_creates_no_state() {
    let h = Harness::start().await;
    let consumers = h.consumers().await;
    let ghost = "00000000-0000-0000-0000-00000000dead";
    let late = fulfillment_core::Event::new(
        fulfillment_core::EventType::OrderCancelled,
        ghost,
        &json!({"reason": "late", "customer_email": "x@example.com"}),
    );
    let fields: Vec<(Vec<u8>, Vec<u8>)> = late
        .to_fields()
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
        .collect();
    h.xadd(&fields).await;
    h.settled().await;
    let mut conn = h.redis.conn();
    for key in keys::order_state(ghost) {
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

/// The third defect: a charge attempt still running when its retry (or a duplicate
/// `StockReserved`) settles the payment as failed. Every money movement must be an event: each
/// charge in the gateway's ledger has its `PaymentProcessed`, each refund its `PaymentRefunded`,
/// and no order is both failed and charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_racing_its_own_retry_never_moves_money_silently() {
    let h = Harness::start_with(|s| {
        s.payment_failure_rate = 0.75;
        s.payment_backoff_ms = 150;
        s.payment_max_attempts = 3;
        s.retry_min_idle_ms = 200;
        s.retry_interval_ms = 100;
    })
    .await;
    h.create_product("racy", 10_000).await;
    let consumers = h
        .consumers_with(
            "order=1,inventory=1,payment=2,shipping=1,notification=1",
            &h.settings,
        )
        .await;
    let retrying = {
        let worker = h.retry_worker(&h.settings);
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { worker.run_loop(stop).await }
        });
        (task, stop)
    };
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(h.place("racy", 1, "tok_visa").await);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let status = h.order(id).await["status"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            if ["COMPLETED", "CANCELLED", "FAILED"].contains(&status.as_str()) {
                break;
            }
            assert!(Instant::now() < deadline, "order {id} stuck at {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    h.eventually(Duration::from_secs(30), "payments settled", || async {
        h.pending("payment_group").await == 0
    })
    .await;
    retrying.1.cancel();
    let _ = retrying.0.await;

    let mut conn = h.redis.conn();
    let charges: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys::gateway_charges())
        .query_async(&mut conn)
        .await
        .expect("charges");
    let refunds: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys::gateway_refunds())
        .query_async(&mut conn)
        .await
        .expect("refunds");
    let mut types: HashMap<String, Vec<String>> = HashMap::new();
    for entry in h.entries(&h.settings.stream).await {
        if let (Some(order), Some(kind)) = (entry.text("order_id"), entry.text("type")) {
            types.entry(order).or_default().push(kind);
        }
    }
    let has = |id: &str, kind: &str| types.get(id).is_some_and(|t| t.iter().any(|k| k == kind));
    let mut failed_and_charged = 0;
    for id in &ids {
        if charges.contains_key(id) {
            assert!(
                has(id, "PaymentProcessed"),
                "order {id} charged without PaymentProcessed"
            );
        }
        if refunds.contains_key(id) {
            assert!(
                has(id, "PaymentRefunded"),
                "order {id} refunded without PaymentRefunded"
            );
            let (_, history) = h.get(&format!("/orders/{id}/events")).await;
            assert!(
                history["events"]
                    .as_array()
                    .expect("events")
                    .iter()
                    .any(|e| e["type"] == "PaymentRefunded"),
                "{id}: refund not in its history"
            );
        }
        if has(id, "PaymentFailed") && charges.contains_key(id) && !refunds.contains_key(id) {
            failed_and_charged += 1;
        }
    }
    assert_eq!(
        failed_and_charged, 0,
        "orders failed and charged, not refunded"
    );
    println!(
        "{} orders: {} charged, {} refunded",
        ids.len(),
        charges.len(),
        refunds.len()
    );
    consumers.stop().await;
    h.stop().await;
}

/// The fourth defect: a price edit that carried the stock it read undid reservations
/// made meanwhile. Edits now leave stock alone, stock moves by deltas or by an `If-Match`-guarded
/// set, and reservations plus stock always add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_edits_racing_reservations_never_oversell() {
    let h = Harness::start().await;
    h.create_product("hot", 1_000).await;
    let consumers = h.consumers_of(&["order", "inventory"]).await;
    let editing = {
        let (http, base) = (h.http.clone(), h.base.clone());
        tokio::spawn(async move {
            let mut edits = 0;
            for price in 0..200u64 {
                let product: Value = http
                    .get(format!("{base}/products/hot"))
                    .send()
                    .await
                    .expect("get")
                    .json()
                    .await
                    .expect("json");
                // What the hostile run did: write back the stock it read.
                let blind = http
                    .put(format!("{base}/products/hot"))
                    .json(&json!({"name": "Hot", "price": 500 + price, "stock": product["stock"]}))
                    .send()
                    .await
                    .expect("put");
                assert_eq!(blind.status().as_u16(), 428, "a blind stock set is refused");
                let edit = http
                    .put(format!("{base}/products/hot"))
                    .json(&json!({"name": "Hot", "price": 500 + price}))
                    .send()
                    .await
                    .expect("put");
                assert_eq!(edit.status().as_u16(), 200);
                edits += 1;
            }
            edits
        })
    };
    let mut placing = Vec::new();
    for _ in 0..4 {
        let (http, base) = (h.http.clone(), h.base.clone());
        placing.push(tokio::spawn(async move {
            for _ in 0..40 {
                let body = json!({"customer_id": "c", "customer_email": "c@example.com",
                    "items": [{"product_id": "hot", "quantity": 10}]});
                let r = http
                    .post(format!("{base}/orders"))
                    .json(&body)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status().as_u16(), 201);
            }
        }));
    }
    for p in placing {
        p.await.expect("placing");
    }
    assert_eq!(editing.await.expect("editing"), 200);
    h.settled_in(&["order_group", "inventory_group"]).await;
    let mut conn = h.redis.conn();
    let reserved: i64 = redis::cmd("HGET")
        .arg(keys::counters())
        .arg(keys::counter::RESERVATIONS)
        .query_async::<Option<i64>>(&mut conn)
        .await
        .expect("reservations")
        .unwrap_or(0);
    assert_eq!(
        reserved, 100,
        "exactly the 1,000 units were sold, 10 at a time"
    );
    assert_eq!(h.stock("hot").await, 0, "and no more");
    consumers.stop().await;
    h.stop().await;
}

/// Stock is set only against the ETag the caller read; a delta adjusts it in place.
#[tokio::test]
async fn stock_is_set_against_an_etag_or_moved_by_a_delta() {
    let h = Harness::start().await;
    let read = h
        .http
        .get(format!("{}/products/product-A", h.base))
        .send()
        .await
        .expect("get");
    let etag = read.headers()["etag"].to_str().expect("etag").to_owned();
    let set = |tag: String, stock: i64| {
        h.http
            .put(format!("{}/products/product-A", h.base))
            .header("if-match", tag)
            .json(&json!({"name": "Product A", "price": 1999, "stock": stock}))
            .send()
    };
    let applied = set(etag.clone(), 25).await.expect("put");
    assert_eq!(applied.status().as_u16(), 200);
    let fresh = applied.headers()["etag"].to_str().expect("etag").to_owned();
    assert_ne!(fresh, etag);
    assert_eq!(h.stock("product-A").await, 25);
    let stale = set(etag, 99).await.expect("put");
    assert_eq!(stale.status().as_u16(), 412);
    let body: Value = stale.json().await.expect("json");
    assert_eq!(body["error"]["code"], "precondition_failed");
    assert_eq!(
        h.stock("product-A").await,
        25,
        "a stale set changes nothing"
    );

    // A reservation changes the ETag too.
    let consumers = h.consumers_of(&["inventory"]).await;
    h.place("product-A", 2, "tok_visa").await;
    h.eventually(SECONDS_10, "reserved", || async {
        h.stock("product-A").await == 23
    })
    .await;
    let after_reservation = set(fresh, 50).await.expect("put");
    assert_eq!(after_reservation.status().as_u16(), 412);

    let (status, body) = h
        .post("/products/product-A/stock", json!({"delta": 7}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stock"], 30);
    let (status, body) = h
        .post("/products/product-A/stock", json!({"delta": -31}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "stock_out_of_range");
    let (status, _) = h.post("/products/nope/stock", json!({"delta": 1})).await;
    assert_eq!(status, 404);
    consumers.stop().await;
    h.stop().await;
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
