//! Scenario 11, bad input: a 4xx JSON error with a code, nothing published. Also the admin token
//! on catalog writes and the DLQ, paging, and the ops endpoints.

use fulfillment_core::Service;
use fulfillment_events::events::now_millis;
use fulfillment_testing::{Backend, Harness, SECONDS_10, on_every_backend};
use order_service::orders;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn order_with(items: Value) -> Value {
    json!({"customer_id": "c", "customer_email": "c@example.com", "items": items})
}

#[tokio::test]
async fn bad_orders_are_refused_with_a_coded_json_error_and_publish_nothing() {
    let h = Harness::start().await;
    let item = |q: Value| json!([{"product_id": "product-A", "quantity": q}]);
    let too_many: Vec<Value> = (0..51)
        .map(|_| json!({"product_id": "product-A", "quantity": 1}))
        .collect();
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        ("malformed json", r#"{"customer_id": "#.into(), "application/json", 400, "malformed_json"),
        ("not an object", "[]".into(), "application/json", 422, "invalid_body"),
        ("missing fields", r#"{"customer_id": "c"}"#.into(), "application/json", 422, "invalid_body"),
        ("quantity zero", order_with(item(json!(0))).to_string(), "application/json", 422, "invalid_order"),
        ("quantity negative", order_with(item(json!(-3))).to_string(), "application/json", 422, "invalid_order"),
        ("quantity enormous", order_with(item(json!(1e30))).to_string(), "application/json", 422, "invalid_body"),
        ("quantity too large", order_with(item(json!(1001))).to_string(), "application/json", 422, "invalid_order"),
        ("quantity beyond i64", r#"{"customer_id":"c","customer_email":"c@example.com","items":[{"product_id":"product-A","quantity":99999999999999999999}]}"#.into(), "application/json", 422, "invalid_body"),
        ("quantity as text", order_with(item(json!("2"))).to_string(), "application/json", 422, "invalid_body"),
        ("unknown product", order_with(json!([{"product_id": "nope", "quantity": 1}])).to_string(), "application/json", 422, "unknown_product"),
        ("no items", order_with(json!([])).to_string(), "application/json", 422, "invalid_order"),
        ("too many items", order_with(json!(too_many)).to_string(), "application/json", 422, "invalid_order"),
        ("bad email", json!({"customer_id": "c", "customer_email": "nobody", "items": item(json!(1))}).to_string(), "application/json", 422, "invalid_order"),
        ("client price", json!({"customer_id": "c", "customer_email": "c@example.com", "items": item(json!(1)), "total": 1}).to_string(), "application/json", 422, "invalid_body"),
        ("unknown token", json!({"customer_id": "c", "customer_email": "c@example.com", "items": item(json!(1)), "payment_token": "tok_free"}).to_string(), "application/json", 422, "invalid_order"),
        ("oversized body", format!(r#"{{"customer_id": "{}"}}"#, "x".repeat(100_000)), "application/json", 413, "payload_too_large"),
        ("wrong content type", order_with(item(json!(1))).to_string(), "text/plain", 415, "unsupported_media_type"),
    ];
    for (what, body, content_type, status, code) in cases {
        let response = h
            .http
            .post(format!("{}/orders", h.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), status, "{what}");
        let error: Value = response
            .json()
            .await
            .unwrap_or_else(|_| panic!("{what}: JSON error body"));
        assert_eq!(error["error"]["code"], code, "{what}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    assert_eq!(h.stream_length().await, 0, "bad input published nothing");

    for (path, status, code) in [
        ("/orders/no-such-order", 404, "order_not_found"),
        ("/orders?status=SHIPPED", 400, "invalid_query"),
        ("/orders?limit=0", 400, "invalid_query"),
        ("/orders?cursor=abc", 400, "invalid_query"),
        ("/products/none", 404, "product_not_found"),
        ("/nowhere", 404, "not_found"),
        ("/ws", 400, "websocket_required"),
        ("/dlq/not-an-id", 404, "dead_letter_not_found"),
    ] {
        let (got, body) = h.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}");
    }
    let response = h
        .http
        .delete(format!("{}/orders", h.base))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 405);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    h.stop().await;
}

on_every_backend!(orders_are_listed_newest_first_in_pages);

/// Newest first by placement; across partitions to the millisecond (the placements here are
/// milliseconds apart), and a page's cursor never skips or repeats an order.
async fn orders_are_listed_newest_first_in_pages(backend: Backend) {
    let h = Harness::on(backend).await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        let id = h.place("product-A", 1, "tok_visa").await;
        after_the_millisecond_of(&h, &id).await;
        placed.push(id);
    }
    let (_, first) = h.get("/orders?limit=2").await;
    let cursor = first["next_cursor"].as_str().expect("cursor").to_owned();
    let (_, second) = h.get(&format!("/orders?limit=2&cursor={cursor}")).await;
    let (_, pending) = h.get("/orders?status=PENDING&limit=200").await;
    let mut newest_first = placed.clone();
    newest_first.reverse();
    assert_eq!(ids(&first), newest_first[..2]);
    assert_eq!(ids(&second), newest_first[2..4]);
    let cursor = second["next_cursor"].as_str().expect("cursor").to_owned();
    let (_, third) = h.get(&format!("/orders?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&third), newest_first[4..]);
    assert!(third["next_cursor"].is_null(), "{third}");
    assert_eq!(ids(&pending).len(), 5);
    let (_, completed) = h.get("/orders?status=COMPLETED").await;
    assert!(ids(&completed).is_empty());
    h.stop().await;
}

on_every_backend!(a_status_without_an_index_is_listed_by_a_bounded_scan);

/// `PAID` has no index of its own: a page of it reads at most `UNINDEXED_SCAN` orders, so 2,000
/// newer entries of the orders index (of no order) give an empty page with a cursor, and the
/// cursor leads on to the paid orders, a page at a time, to the end.
async fn a_status_without_an_index_is_listed_by_a_bounded_scan(backend: Backend) {
    let h = Harness::on(backend).await;
    // No shipping: orders stop at PAID.
    let consumers = h
        .consumers_of(&[Service::Order, Service::Inventory, Service::Payment])
        .await;
    let mut paid = Vec::new();
    for _ in 0..3 {
        let id = h.place("product-A", 1, "tok_visa").await;
        after_the_millisecond_of(&h, &id).await;
        paid.push(id);
    }
    for id in &paid {
        h.wait_status(id, "PAID", SECONDS_10).await;
    }
    consumers.stop().await;
    let (_, reserved) = h.get("/orders?status=RESERVED").await;
    assert!(ids(&reserved).is_empty(), "{reserved}");
    assert!(
        reserved["next_cursor"].is_null(),
        "every order read: {reserved}"
    );

    let newer: Vec<String> = (0..orders::UNINDEXED_SCAN)
        .map(|i| format!("999999999999999-{i:010}:gone-{i}"))
        .collect();
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(h.layout().partitions()[0].keys.orders_index());
    for member in &newer {
        zadd.arg(0).arg(member);
    }
    let added: usize = zadd.query_async(&mut h.redis.conn()).await.expect("zadd");
    assert_eq!(added, newer.len());

    let (status, bounded) = h.get("/orders?status=PAID&limit=2").await;
    assert_eq!(status, 200, "{bounded}");
    assert!(ids(&bounded).is_empty(), "{bounded}");
    let cursor = bounded["next_cursor"]
        .as_str()
        .expect("a cursor after the bound");
    assert_eq!(
        cursor, newer[0],
        "the scan read exactly its bound, oldest last"
    );
    let (_, first) = h
        .get(&format!("/orders?status=PAID&limit=2&cursor={cursor}"))
        .await;
    let mut newest_first = paid.clone();
    newest_first.reverse();
    assert_eq!(ids(&first), newest_first[..2]);
    let cursor = first["next_cursor"].as_str().expect("cursor");
    let (_, second) = h
        .get(&format!("/orders?status=PAID&limit=2&cursor={cursor}"))
        .await;
    assert_eq!(ids(&second), newest_first[2..]);
    assert!(second["next_cursor"].is_null(), "{second}");
    h.stop().await;
}

#[tokio::test]
async fn the_admin_token_guards_catalog_writes_and_the_dlq_but_not_orders() {
    let h = Harness::start_with(|s| s.api.admin_token = Some("s3cret".into())).await;
    let product = json!({"id": "gadget", "name": "Gadget", "price": 100, "stock": 3});
    let (status, body) = h.post("/products", product.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = h.get("/dlq").await;
    assert_eq!(status, 401);
    let wrong = h
        .http
        .post(format!("{}/products", h.base))
        .bearer_auth("s3cret!")
        .json(&product)
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status().as_u16(), 401);
    let right = h
        .http
        .post(format!("{}/products", h.base))
        .bearer_auth("s3cret")
        .json(&product)
        .send()
        .await
        .expect("request");
    assert_eq!(right.status().as_u16(), 201);
    let dlq = h
        .http
        .get(format!("{}/dlq", h.base))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("request");
    assert_eq!(dlq.status().as_u16(), 200);
    h.place("gadget", 1, "tok_visa").await;
    let (status, _) = h.get("/products/gadget").await;
    assert_eq!(status, 200, "reads need no token");
    h.stop().await;
}

#[tokio::test]
async fn the_catalog_can_be_created_replaced_and_deleted() {
    let h = Harness::start().await;
    let (status, _) = h
        .post(
            "/products",
            json!({"id": "product-A", "name": "dup", "price": 1, "stock": 1}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, body) = h
        .post(
            "/products",
            json!({"id": "bad id!", "name": "x", "price": 1, "stock": 1}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "invalid_product");
    let put = h
        .http
        .put(format!("{}/products/thing", h.base))
        .json(&json!({"name": "Thing", "price": 250, "stock": 7}))
        .send()
        .await
        .expect("put");
    assert_eq!(
        put.status().as_u16(),
        201,
        "a PUT of a new product creates it"
    );
    assert_eq!(h.stock("thing").await, 7);
    let edit = h
        .http
        .put(format!("{}/products/thing", h.base))
        .json(&json!({"name": "Thing 2", "price": 300}))
        .send()
        .await
        .expect("put");
    assert_eq!(edit.status().as_u16(), 200);
    assert_eq!(h.stock("thing").await, 7, "an edit leaves stock alone");
    let blind = h
        .http
        .put(format!("{}/products/thing", h.base))
        .json(&json!({"name": "Thing", "price": 250, "stock": 9}))
        .send()
        .await
        .expect("put");
    assert_eq!(
        blind.status().as_u16(),
        428,
        "no stock set without If-Match"
    );
    let (_, listed) = h.get("/products").await;
    let ids: Vec<&str> = listed["products"]
        .as_array()
        .expect("products")
        .iter()
        .map(|p| p["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["product-A", "product-B", "product-C", "thing"]);
    let deleted = h
        .http
        .delete(format!("{}/products/thing", h.base))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 204);
    let again = h
        .http
        .delete(format!("{}/products/thing", h.base))
        .send()
        .await
        .expect("delete");
    assert_eq!(again.status().as_u16(), 404);
    h.stop().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi_are_served() {
    let h = Harness::start().await;
    let (status, _) = h.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, body) = h.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, spec) = h.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    assert!(spec["paths"]["/orders"]["post"].is_object());
    // An order through every group, so every metric of the contract has samples.
    let consumers = h.consumers().await;
    let id = h.place("product-A", 1, "tok_visa").await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    h.settled().await;
    let metrics = h.metrics().await;
    let samples: Vec<(&str, &str)> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .collect();
    let sampled = |name: &str, labels: &str| {
        samples.iter().any(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name && rest.contains(labels)
        })
    };
    for (name, labels) in [
        ("fulfillment_stream_pending", r#"group="inventory_group""#),
        ("fulfillment_stream_lag", r#"group="order_group""#),
        ("fulfillment_stream_length", r#"stream="order_events""#),
        ("fulfillment_retries_total", r#"group="payment_group""#),
        (
            "fulfillment_dead_letters_total",
            r#"group="shipping_group""#,
        ),
        ("fulfillment_dlq_length", ""),
        ("fulfillment_events_handled_total", r#"outcome="ok""#),
        (
            "fulfillment_handler_duration_seconds_bucket",
            r#"type="OrderPlaced""#,
        ),
        (
            "fulfillment_order_completion_seconds_bucket",
            r#"status="COMPLETED""#,
        ),
        ("fulfillment_http_requests_total", r#"route="/readyz""#),
        (
            "fulfillment_http_request_duration_seconds_bucket",
            r#"route="/orders""#,
        ),
    ] {
        assert!(
            sampled(name, labels),
            "no sample of {name}{{{labels}}} in /metrics"
        );
    }
    consumers.stop().await;
    let console = h.http.get(&h.base).send().await.expect("console");
    assert_eq!(console.status().as_u16(), 200);
    for (asset, content_type) in [
        ("console.js", "text/javascript"),
        ("console.css", "text/css"),
    ] {
        let response = h
            .http
            .get(format!("{}/assets/{asset}", h.base))
            .send()
            .await
            .expect("asset");
        assert_eq!(response.status().as_u16(), 200, "{asset}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .is_ok_and(|t| t.starts_with(content_type))
        );
    }
    let (status, body) = h.get("/assets/secrets.txt").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, stats) = h.get("/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["stream"], "order_events");
    assert_eq!(stats["groups"].as_array().map(Vec::len), Some(5));
    h.stop().await;
}

#[tokio::test]
async fn an_oversized_body_always_gets_its_413_not_a_reset_connection() {
    let h = Harness::start().await;
    for size in [70_000usize, 200_000, 900_000] {
        for _ in 0..10 {
            let response = h
                .http
                .post(format!("{}/orders", h.base))
                .header("content-type", "application/json")
                .body(format!(r#"{{"customer_id": "{}"}}"#, "x".repeat(size)))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{size} bytes: {e}"));
            assert_eq!(response.status().as_u16(), 413, "{size} bytes");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"]["code"], "payload_too_large");
        }
    }
    assert_eq!(h.stream_length().await, 0);
    h.stop().await;
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_or_the_timeout_get_a_json_503() {
    let h = Harness::start_with(|s| {
        s.api.max_in_flight = 1;
        s.api.request_timeout_ms = 1_500;
    })
    .await;
    // Redis stalls for 3 s: the first request holds the only turn until its timeout.
    h.server.single().pause(3_000, "ALL").await;
    let slow = {
        let (http, url) = (h.http.clone(), format!("{}/products", h.base));
        tokio::spawn(async move {
            // Shed only if it came while the probe below held the turn for its moment: again.
            let deadline = Instant::now() + SECONDS_10;
            loop {
                let response = http.get(&url).send().await.expect("response");
                let status = response.status().as_u16();
                let body: Value = response.json().await.expect("json");
                if (status, body["error"]["code"].as_str()) != (503, Some("overloaded"))
                    || Instant::now() > deadline
                {
                    return (status, body);
                }
            }
        })
    };
    // The slow request holds the turn once a probe that never reaches Redis (`/ws` without an
    // upgrade, 400 when served) is shed.
    h.eventually(SECONDS_10, "the slow request holding the turn", || async {
        let (status, body) = h.get("/ws").await;
        (status, body["error"]["code"].as_str()) == (503, Some("overloaded"))
    })
    .await;
    let (status, body) = h.get("/orders").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("overloaded"))
    );
    let (status, body) = slow.await.expect("task");
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "request_timeout");
    // Redis holds every command until the pause ends: a PING answered means it has.
    h.eventually(SECONDS_10, "Redis answering again", || async {
        let mut conn = h.redis.conn();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    })
    .await;
    let (status, _) = h.get("/products").await;
    assert_eq!(status, 200, "served again once Redis answers");
    h.stop().await;
}

/// Waits until the clock the API stamps a placement with has left the millisecond `id` was placed
/// in (its `created_ms`), so that the next order placed is newer to the millisecond.
async fn after_the_millisecond_of(h: &Harness, id: &str) {
    let mut conn = h.redis.conn();
    let created_ms: u64 = redis::cmd("HGET")
        .arg(h.partition_of(id).keys.order(id))
        .arg("created_ms")
        .query_async(&mut conn)
        .await
        .expect("created_ms");
    let deadline = Instant::now() + SECONDS_10;
    while now_millis() <= created_ms {
        assert!(
            Instant::now() < deadline,
            "the clock stands at {created_ms}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The order ids of a page of `GET /orders`, in its order.
fn ids(page: &Value) -> Vec<String> {
    page["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| o["id"].as_str().expect("id").to_owned())
        .collect()
}
