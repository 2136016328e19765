//! Reservations against a real Redis: out of stock, a cancel before the reservation, concurrent
//! orders for few units.

use fulfillment_testing::{Backend, Harness, SECONDS_10, on_every_backend};
use serde_json::json;

on_every_backend!(
    an_order_for_a_product_out_of_stock_is_cancelled_without_a_charge,
    an_order_cancelled_while_pending_reserves_nothing,
    concurrent_orders_never_oversell,
);

/// 2. Out of stock.
async fn an_order_for_a_product_out_of_stock_is_cancelled_without_a_charge(backend: Backend) {
    let h = Harness::on(backend).await;
    let consumers = h.consumers().await;
    let id = h.place("product-C", 1, "tok_visa").await;
    let order = h.wait_status(&id, "CANCELLED", SECONDS_10).await;
    assert_eq!(order["status_reason"], "insufficient_stock");
    assert_eq!(h.stock("product-C").await, 0);
    assert_eq!(h.charges().await, 0);
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

/// An order cancelled before inventory saw it reserves nothing.
async fn an_order_cancelled_while_pending_reserves_nothing(backend: Backend) {
    let h = Harness::on(backend).await;
    let id = h.place("product-B", 5, "tok_visa").await;
    let (status, _) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202);
    let consumers = h.consumers().await;
    h.settled().await;
    assert_eq!(h.stock("product-B").await, 5);
    assert_eq!(h.charges().await, 0);
    assert_eq!(h.order(&id).await["status"], "CANCELLED");
    consumers.stop().await;
    h.stop().await;
}

/// 12. Fifty concurrent orders for ten units: exactly ten succeed, never oversold.
async fn concurrent_orders_never_oversell(backend: Backend) {
    let h = Harness::on(backend).await;
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
