//! The catalog: stock set against an ETag or moved by a delta; edits racing reservations never
//! oversell.

use fulfillment_core::{Service, keys};
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
