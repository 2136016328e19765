//! Charges: a declined card, a gateway that keeps failing, a charge racing its own retry.

use fulfillment_events::keys;
use fulfillment_testing::{Backend, Harness, SECONDS_10, on_every_backend};
use std::collections::HashMap;
use std::time::{Duration, Instant};

on_every_backend!(a_declined_card_cancels_the_order_and_releases_its_stock);

/// 3. Declined card: compensation releases the stock; one cancellation notice.
async fn a_declined_card_cancels_the_order_and_releases_its_stock(backend: Backend) {
    let h = Harness::on(backend).await;
    let consumers = h.consumers().await;
    let id = h.place("product-B", 2, "tok_chargeDeclined").await;
    let order = h.wait_status(&id, "CANCELLED", SECONDS_10).await;
    assert_eq!(order["status_reason"], "card_declined");
    h.eventually(SECONDS_10, "stock released", || async {
        h.stock("product-B").await == 5
    })
    .await;
    h.wait_counter(&keys::counter::notifications("order_cancelled"), 1)
        .await;
    // Once every group is done: still exactly one notice, no label, no charge.
    h.settled().await;
    assert_eq!(
        h.counter(&keys::counter::notifications("order_cancelled"))
            .await,
        1
    );
    assert_eq!(h.counter(keys::counter::LABELS_CREATED).await, 0);
    assert_eq!(h.charges().await, 0);
    assert_eq!(h.events_of(&id, "StockReleased").await.len(), 1);
    consumers.stop().await;
    h.stop().await;
}

/// Transient charge failures are retried in-process; exhausted, the order is cancelled and its
/// stock released, with nothing charged.
#[tokio::test]
async fn a_payment_gateway_that_keeps_failing_cancels_the_order_without_a_charge() {
    let h = Harness::start().await;
    let mut flaky = h.settings.clone();
    flaky.services.payment.failure_rate = 1.0;
    flaky.services.payment.max_attempts = 3;
    let consumers = h.consumers_with("", &flaky).await;
    let id = h.place("product-B", 1, "tok_visa").await;
    let order = h.wait_status(&id, "CANCELLED", SECONDS_10).await;
    assert_eq!(order["status_reason"], "payment_unavailable");
    h.eventually(SECONDS_10, "stock released", || async {
        h.stock("product-B").await == 5
    })
    .await;
    assert_eq!(h.charges().await, 0);
    consumers.stop().await;

    // A gateway failing half the time, with attempts to spare, charges once.
    let mut half = h.settings.clone();
    half.services.payment.failure_rate = 0.5;
    half.services.payment.max_attempts = 30;
    let consumers = h.consumers_with("", &half).await;
    let paid = h.place("product-B", 1, "tok_visa").await;
    h.wait_status(&paid, "COMPLETED", SECONDS_10).await;
    assert_eq!(h.charges().await, 1);
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
        s.services.payment.failure_rate = 0.75;
        s.services.payment.backoff_ms = 150;
        s.services.payment.max_attempts = 3;
        s.retry.min_idle_ms = 200;
        s.retry.interval_ms = 100;
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

    let fulfillment_testing::Ledger { charges, refunds } =
        fulfillment_testing::ledger(&h.redis).await;
    let mut types: HashMap<String, Vec<String>> = HashMap::new();
    for entry in h.all_entries().await {
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

/// Stopping cuts a backoff between charge attempts short: the consumer stops at once (not after
/// its long pause), the payment is neither failed nor charged (the order is not cancelled for
/// it), and the entry stays pending for whoever runs next, who then charges it.
#[tokio::test]
async fn stopping_between_charge_attempts_leaves_the_payment_to_the_next_run() {
    let h = Harness::start().await;
    let mut flaky = h.settings.clone();
    flaky.services.payment.failure_rate = 1.0;
    flaky.services.payment.max_attempts = 3;
    // A minute between attempts: a stop that waited for it would take that long.
    flaky.services.payment.backoff_ms = 30_000;
    let consumers = h.consumers_with("", &flaky).await;
    let id = h.place("product-B", 1, "tok_visa").await;
    h.eventually(SECONDS_10, "the first attempt failed", || async {
        h.order(&id).await["status"] == "RESERVED" && h.pending("payment_group").await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    consumers.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopping waited {:?} for the backoff",
        stopping.elapsed()
    );
    assert_eq!(
        h.order(&id).await["status"],
        "RESERVED",
        "not failed for it"
    );
    assert_eq!(h.pending("payment_group").await, 1, "left pending");
    assert_eq!(h.charges().await, 0);

    // Whoever runs next (here a retry pass, the gateway healthy) charges it once.
    let mut retry = h.settings.clone();
    retry.retry.min_idle_ms = 1;
    let consumers = h.consumers().await;
    h.retry_pass(&retry).await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    assert_eq!(h.charges().await, 1);
    consumers.stop().await;
    h.stop().await;
}
