//! The catalog: stock set against an ETag or moved by a delta; edits racing reservations never
//! oversell.

use fulfillment_core::Service;

use fulfillment_events::keys;
use fulfillment_testing::{Harness, SECONDS_10};
use serde_json::{Value, json};

/// The fourth defect: a price edit that carried the stock it read undid reservations
/// made meanwhile. Edits now leave stock alone, stock moves by deltas or by an `If-Match`-guarded
/// set, and reservations plus stock always add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_edits_racing_reservations_never_oversell() {
    let h = Harness::start().await;
    h.create_product("hot", 1_000).await;
    let consumers = h.consumers_of(&[Service::Order, Service::Inventory]).await;
    let editing = {
        let (http, base) = (h.http.clone(), h.base.clone());
        tokio::spawn(async move {
            let mut edits = 0;
            for price in 0..200u64 {
                let product =
                    fulfillment_testing::get_json(&http, &format!("{base}/products/hot")).await;
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
    let reserved = h.counter(keys::counter::RESERVATIONS).await;
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
    let consumers = h.consumers_of(&[Service::Inventory]).await;
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

/// POST /products/{id}/stock with an Idempotency-Key, sent with the same key and body
/// twice. The second request stands in for a retry after the first answer was lost. The delta is
/// applied once and both get the same answer; the same key with another delta is a 422; another key
/// applies again.
#[tokio::test]
async fn a_stock_delta_retried_with_its_idempotency_key_is_applied_once() {
    let h = Harness::start().await;
    let adjust = |key: &'static str, delta: i64| {
        h.http
            .post(format!("{}/products/product-A/stock", h.base))
            .header("idempotency-key", key)
            .json(&json!({"delta": delta}))
            .send()
    };
    let first = adjust("restock-1", 50).await.expect("post");
    assert_eq!(first.status().as_u16(), 200);
    let first_etag = first.headers()["etag"].clone();
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["stock"], 60);
    let again = adjust("restock-1", 50).await.expect("post");
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.headers()["etag"],
        first_etag,
        "the first answer's ETag"
    );
    let again: Value = again.json().await.expect("json");
    assert_eq!(again, first, "the first answer, again");
    assert_eq!(h.stock("product-A").await, 60, "applied once");

    let reused = adjust("restock-1", 70).await.expect("post");
    assert_eq!(reused.status().as_u16(), 422);
    let reused: Value = reused.json().await.expect("json");
    assert_eq!(
        reused["error"]["code"], "idempotency_key_reused",
        "{reused}"
    );
    let other = adjust("restock-2", 50).await.expect("post");
    assert_eq!(other.status().as_u16(), 200);
    assert_eq!(h.stock("product-A").await, 110);
    h.stop().await;
}

/// The case: Redis holds writes past the API's deadline, so the first delta's answer is
/// 503 `outcome_unknown` (not `redis_unavailable` "try again"), though the delta lands; the
/// retry with the same key then moves nothing: 999 -> 1049, never 1099.
#[tokio::test]
async fn a_timed_out_stock_delta_is_unknown_and_its_keyed_retry_applies_once() {
    let h = Harness::start_with(|s| s.api.request_timeout_ms = 1_500).await;
    h.create_product("timed", 999).await;
    // The script is loaded before the pause, so the paused call is the adjustment itself.
    let (status, _) = h.post("/products/timed/stock", json!({"delta": 0})).await;
    assert_eq!(status, 200);
    let adjust = || {
        h.http
            .post(format!("{}/products/timed/stock", h.base))
            .header("idempotency-key", "delivery-77")
            .json(&json!({"delta": 50}))
            .send()
    };
    h.server.single().pause(3_000, "WRITE").await;
    let unknown = adjust().await.expect("post");
    assert_eq!(unknown.status().as_u16(), 503);
    let body: Value = unknown.json().await.expect("json");
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    // Reads wait behind the paused write on the API's connection: poll until one answers.
    h.eventually(SECONDS_10, "the paused delta lands", || async {
        h.get("/products/timed").await.1["stock"] == 1049
    })
    .await;
    let retried = adjust().await.expect("post");
    assert_eq!(retried.status().as_u16(), 200);
    assert_eq!(retried.headers()["idempotent-replayed"], "true");
    let retried: Value = retried.json().await.expect("json");
    assert_eq!(retried["stock"], 1049);
    assert_eq!(h.stock("timed").await, 1049, "applied once");
    h.stop().await;
}

/// The review's case: with `REDIS_WAIT_REPLICAS=1`, a write whose replica wait fails with an
/// error reply (here `WAIT` is refused by an ACL: NOPERM) was applied on the master, so its answer
/// is 503 `outcome_unknown`, never `redis_unavailable` ("nothing was written, try again"); and the
/// keyed retry applies nothing twice.
#[tokio::test]
async fn a_write_whose_replica_wait_fails_is_unknown() {
    let primary = fulfillment_testing::TestRedis::start();
    let replica = primary.start_replica();
    let h = Harness::start_on(primary, |s| {
        s.redis.wait_replicas = 1;
        s.redis.wait_timeout_ms = 1_000;
    })
    .await;
    h.create_product("waited", 14).await;
    let mut admin = redis::Client::open(h.server.single().url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-wait")
        .query_async(&mut admin)
        .await
        .expect("acl");
    let adjust = || {
        h.http
            .post(format!("{}/products/waited/stock", h.base))
            .header("idempotency-key", "delivery-100")
            .json(&json!({"delta": 100}))
            .send()
    };
    let answer = adjust().await.expect("post");
    assert_eq!(answer.status().as_u16(), 503);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    assert_eq!(h.stock("waited").await, 114, "it was applied");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("+wait")
        .query_async(&mut admin)
        .await
        .expect("acl");
    let retried = adjust().await.expect("post");
    assert_eq!(retried.status().as_u16(), 200);
    assert_eq!(retried.headers()["idempotent-replayed"], "true");
    assert_eq!(h.stock("waited").await, 114, "applied once");
    drop(replica);
    h.stop().await;
}

/// Sends `body` to `path` as a POST on a raw connection, a byte every `gap`, and reads the
/// answer: its status and JSON body.
async fn post_slowly(base: &str, path: &str, body: &str, gap: std::time::Duration) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    for byte in body.as_bytes() {
        stream.write_all(&[*byte]).await.expect("body");
        tokio::time::sleep(gap).await;
    }
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("answer");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let json = answer.find("\r\n\r\n").map_or("", |at| &answer[at + 4..]);
    (status, serde_json::from_str(json).expect("json"))
}

/// The review's case: a write's deadline counts from the request's arrival, as the request's own
/// timeout does, not from when its slowly sent body was read. With a 3 s request timeout, a body
/// that takes 1.2 s to arrive and a write Redis holds: 503 `outcome_unknown` (at 2.5 s after
/// arrival), not the vaguer `request_timeout` of the outer timeout.
#[tokio::test]
async fn a_write_after_a_slow_body_is_unknown_before_the_request_times_out() {
    let h = Harness::start_with(|s| s.api.request_timeout_ms = 3_000).await;
    h.create_product("slow", 10).await;
    // The script is loaded before the pause, so the paused call is the adjustment itself.
    let (status, _) = h.post("/products/slow/stock", json!({"delta": 0})).await;
    assert_eq!(status, 200);
    let body = json!({"delta": 5}).to_string();
    let gap = std::time::Duration::from_millis(1_200) / body.len() as u32;
    let server = h.server.single();
    let (answer, ()) = tokio::join!(
        post_slowly(&h.base, "/products/slow/stock", &body, gap),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            server.pause(4_000, "WRITE").await;
        }
    );
    let (status, body) = answer;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    h.eventually(SECONDS_10, "the paused delta lands", || async {
        h.get("/products/slow").await.1["stock"] == 15
    })
    .await;
    h.stop().await;
}

/// The review's case: a key's TTL that Redis refuses (`SET ... EX` past its range) came after the
/// write in the scripts, so the write landed, its key was not recorded, and the error reply read
/// as "nothing written". The scripts now check it before their first write: refused, nothing
/// moved, no order placed. (Settings refuse such a TTL at start; this one goes around them.)
#[tokio::test]
async fn a_key_ttl_redis_refuses_writes_nothing() {
    let h = Harness::start_with(|s| s.api.idempotency_ttl_secs = u64::MAX).await;
    h.create_product("ttl", 14).await;
    let adjusted = h
        .http
        .post(format!("{}/products/ttl/stock", h.base))
        .header("idempotency-key", "delivery-1")
        .json(&json!({"delta": 100}))
        .send()
        .await
        .expect("post");
    assert_eq!(adjusted.status().as_u16(), 503);
    let body: Value = adjusted.json().await.expect("json");
    assert_eq!(body["error"]["code"], "redis_unavailable", "{body}");
    assert_eq!(h.stock("ttl").await, 14, "nothing moved");
    let placed = h
        .http
        .post(format!("{}/orders", h.base))
        .header("idempotency-key", "cart-1")
        .json(
            &json!({"customer_id": "c", "customer_email": "c@example.com",
            "items": [{"product_id": "ttl", "quantity": 1}]}),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(placed.status().as_u16(), 503);
    let body: Value = placed.json().await.expect("json");
    assert_eq!(body["error"]["code"], "redis_unavailable", "{body}");
    assert_eq!(h.stream_length().await, 0, "no order placed");
    h.stop().await;
}

/// A create retried after its answer was lost finds the product it made and answers 200 with it;
/// a create of a taken id with another body is still a 409.
#[tokio::test]
async fn a_retried_create_answers_with_the_product_it_made() {
    let h = Harness::start().await;
    let body = json!({"id": "gadget", "name": "Gadget", "price": 1250, "stock": 8});
    let (status, created) = h.post("/products", body.clone()).await;
    assert_eq!(status, 201, "{created}");
    let retried = h
        .http
        .post(format!("{}/products", h.base))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(retried.status().as_u16(), 200);
    assert_eq!(retried.headers()["idempotent-replayed"], "true");
    let retried: Value = retried.json().await.expect("json");
    assert_eq!(retried, created);
    let other = json!({"id": "gadget", "name": "Gadget", "price": 999, "stock": 8});
    let (status, refused) = h.post("/products", other).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "product_exists");
    let (_, list) = h.get("/products").await;
    let gadgets = list["products"]
        .as_array()
        .expect("products")
        .iter()
        .filter(|p| p["id"] == "gadget")
        .count();
    assert_eq!(gadgets, 1);
    h.stop().await;
}
