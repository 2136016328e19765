//! 8. Load balancing across replicas; 9. a backlog drains once consumers start.

use crate::helpers::Harness;
use fulfillment_core::keys;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn three_inventory_consumers_share_three_hundred_orders_each_reserved_once() {
    let h = Harness::start().await;
    h.create_product("bulk", 10_000).await;
    let consumers = h.consumers_with("inventory=3", &h.settings).await;
    let mut ids = Vec::new();
    for chunk in 0..30 {
        let batch =
            futures_util::future::join_all((0..10).map(|_| h.place("bulk", 1, "tok_visa"))).await;
        ids.extend(batch);
        if chunk % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for id in &ids {
        h.wait_status(id, "COMPLETED", Duration::from_secs(30))
            .await;
    }
    let mut per_consumer: HashMap<String, usize> = HashMap::new();
    for entry in h.entries(&h.settings.stream).await {
        if entry.text("type").as_deref() == Some("StockReserved") {
            *per_consumer
                .entry(entry.text("producer").unwrap_or_default())
                .or_default() += 1;
        }
    }
    assert_eq!(
        per_consumer.values().sum::<usize>(),
        300,
        "each order reserved once"
    );
    for i in 1..=3 {
        let handled = per_consumer
            .get(&format!("inventory/inventory-{i}"))
            .copied()
            .unwrap_or(0);
        assert!(handled > 0, "inventory-{i} handled none: {per_consumer:?}");
    }
    assert_eq!(h.counter(keys::counter::RESERVATIONS).await, 300);
    assert_eq!(h.stock("bulk").await, 10_000 - 300);
    consumers.stop().await;
    h.stop().await;
}

#[tokio::test]
async fn a_backlog_of_five_hundred_orders_drains_when_consumers_start() {
    let h = Harness::start().await;
    h.create_product("bulk", 10_000).await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.extend(
            futures_util::future::join_all((0..10).map(|_| h.place("bulk", 1, "tok_visa"))).await,
        );
    }
    assert_eq!(h.xlen(&h.settings.stream).await, 500);
    let consumers = h.consumers_with("inventory=2,payment=2", &h.settings).await;
    for id in &ids {
        h.wait_status(id, "COMPLETED", Duration::from_secs(60))
            .await;
    }
    assert_eq!(h.stock("bulk").await, 10_000 - 500);
    for group in keys::group::ALL {
        h.eventually(Duration::from_secs(10), "drained", || async {
            h.pending(group).await == 0
        })
        .await;
    }
    consumers.stop().await;
    h.stop().await;
}
