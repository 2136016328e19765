//! The chaos suite: the pipeline as real processes under steady load while consumers are
//! SIGKILLed and restarted, `redis-server` is SIGKILLed and restarted from its append-only file,
//! every client connection is dropped with `CLIENT KILL`, and the network between every process
//! and Redis (a [`FaultProxy`]) goes silent, then leaves every connection half-open. Then nothing may be lost: every
//! accepted order is final, stock is conserved, one label and at most one charge per order, every
//! entry acknowledged or dead-lettered; the services reconnected by themselves and `/readyz`
//! reported the outage. Bounded: about 25 s of load, 90 s at most to drain.
//!
//! The cancel storm: the same processes with the seed's unstable inventory, lost acks and failing
//! payments, and mail on to a real SMTP relay, while a second client cancels orders at random
//! moments right after placing them. Then no cancelled order was confirmed (in its history or in
//! the customer's inbox), every final order's customer got its one kind of message, every charge and refund has its event in the order's
//! history, every dead letter's order shows it, and once the dead letters are replayed against
//! healthy services, stock is back exactly.

use fulfillment_core::Redis;
use fulfillment_testing::smtp::TestSmtp;
use fulfillment_testing::{
    FaultProxy, Mode, SpawnGuarded, Spawned, TestRedis, free_port, terminate, workspace_binary,
};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

pub(super) const INITIAL_STOCK: i64 = 100_000;

/// One service process, restartable under the same consumer name.
struct Service {
    binary: &'static str,
    name: String,
    port: u16,
    args: Vec<&'static str>,
    env: Vec<(&'static str, &'static str)>,
    child: Spawned,
}

fn spawn(
    binary: &'static str,
    name: &str,
    port: u16,
    args: &[&'static str],
    env: &[(&'static str, &'static str)],
    redis_url: &str,
) -> Spawned {
    Command::new(workspace_binary(binary))
        .args(args)
        .env("REDIS_URL", redis_url)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("CONSUMER_NAME", name)
        .env("BLOCK_MS", "100")
        .env("BATCH_SIZE", "32")
        .env("RETRY_MIN_IDLE_MS", "1500")
        // Below the idle time, as the defaults are (45 s and 60 s).
        .env("SMTP_SEND_LEASE_MS", "1000")
        .env("RETRY_INTERVAL_MS", "500")
        .env("PAYMENT_BACKOFF_MS", "20")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info,fulfillment_core::runtime::consumer=warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_guarded()
        .expect("spawn service")
}

impl Service {
    fn start(binary: &'static str, name: &str, args: &[&'static str], redis_url: &str) -> Self {
        Self::start_with(binary, name, args, &[], redis_url)
    }

    fn start_with(
        binary: &'static str,
        name: &str,
        args: &[&'static str],
        env: &[(&'static str, &'static str)],
        redis_url: &str,
    ) -> Self {
        let port = free_port();
        Self {
            binary,
            name: name.to_owned(),
            port,
            args: args.to_vec(),
            env: env.to_vec(),
            child: spawn(binary, name, port, args, env, redis_url),
        }
    }

    fn kill_and_restart(&mut self, redis_url: &str) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        self.respawn(redis_url);
    }

    /// SIGTERM (it must exit 0), then the same consumer again with other settings.
    fn restart_with(&mut self, env: &[(&'static str, &'static str)], redis_url: &str) {
        terminate(self.child.id());
        let code = self.child.wait().expect("wait").code();
        assert_eq!(code, Some(0), "{} exits 0 on SIGTERM", self.name);
        self.env = env.to_vec();
        self.respawn(redis_url);
    }

    /// The same binary, consumer name, port and arguments, as a new process.
    fn respawn(&mut self, redis_url: &str) {
        self.child = spawn(
            self.binary,
            &self.name,
            self.port,
            &self.args,
            &self.env,
            redis_url,
        );
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

pub(super) async fn get(http: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let response = http.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// Every service as its own process against the Redis at `url`, two replicas of each consumer that writes
/// effects (one notification consumer, the retry worker looping), each given `env`; ready, with
/// a product of `INITIAL_STOCK` units named `product`. The API's base URL comes with them.
async fn start_pipeline(
    url: &str,
    http: &reqwest::Client,
    env: &[(&'static str, &'static str)],
    product: &str,
) -> (Vec<Service>, String) {
    let url = url.to_owned();
    let mut services = vec![Service::start("order-service", "order-1", &[], &url)];
    for (binary, name) in [
        ("inventory-service", "inventory-1"),
        ("inventory-service", "inventory-2"),
        ("payment-service", "payment-1"),
        ("payment-service", "payment-2"),
        ("shipping-service", "shipping-1"),
        ("shipping-service", "shipping-2"),
        ("notification-service", "notification-1"),
        ("retry-worker", "retry-worker"),
    ] {
        let args: &[&'static str] = if binary == "retry-worker" {
            &["--loop"]
        } else {
            &[]
        };
        services.push(Service::start_with(binary, name, args, env, &url));
    }
    for service in &services {
        wait_ready(http, service).await;
    }
    own_ports(http, &mut services, &url).await;
    let api = format!("http://127.0.0.1:{}", services[0].port);
    let created = http
        .post(format!("{api}/products"))
        .json(&json!({"id": product, "name": product, "price": 100, "stock": INITIAL_STOCK}))
        .send()
        .await
        .expect("product");
    assert_eq!(created.status().as_u16(), 201);
    (services, api)
}

/// A port from `free_port()` can be taken by another test's process before the service binds it:
/// the service then exits at start ("cannot listen on HTTP_ADDR"), and the `/readyz` that
/// [`wait_ready`] saw was that other process's. Such a service starts again on another port; one
/// that exited while its port is free failed for another reason, and the test fails.
async fn own_ports(http: &reqwest::Client, services: &mut [Service], redis_url: &str) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut moved = false;
        for service in services.iter_mut() {
            if service.alive() {
                continue;
            }
            let taken = std::net::TcpListener::bind(("127.0.0.1", service.port)).is_err();
            assert!(
                taken,
                "{} exited at start, and not because its port was taken",
                service.name
            );
            service.port = free_port();
            service.respawn(redis_url);
            wait_ready(http, service).await;
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

async fn wait_ready(http: &reqwest::Client, service: &Service) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(http, &format!("http://127.0.0.1:{}/readyz", service.port))
        .await
        .map(|r| r.0)
        != Some(200)
    {
        assert!(
            Instant::now() < deadline,
            "{} never became ready",
            service.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_when_consumers_redis_and_connections_fail_under_load() {
    let mut redis = TestRedis::start_durable();
    // Every process reaches Redis through the proxy; the test's own checks go straight to it.
    let proxy = FaultProxy::to_url(&redis.url).await;
    let url = proxy.url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let (mut services, api) = start_pipeline(&url, &http, &[], "chaos").await;

    // Steady load: an order every few milliseconds; only a 201 counts as accepted.
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let loading = Arc::new(AtomicBool::new(true));
    let load = {
        let (http, api, accepted, refused, loading) = (
            http.clone(),
            api.clone(),
            accepted.clone(),
            refused.clone(),
            loading.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while loading.load(Ordering::Relaxed) {
                n += 1;
                let token = if n.is_multiple_of(10) {
                    "tok_chargeDeclined"
                } else {
                    "tok_visa"
                };
                let body = json!({
                    "customer_id": format!("chaos-{n}"), "customer_email": "chaos@example.com",
                    "items": [{"product_id": "chaos", "quantity": 1 + n % 3}], "payment_token": token,
                });
                match http.post(format!("{api}/orders")).json(&body).send().await {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let order: Value = r.json().await.unwrap_or(Value::Null);
                        if let Some(id) = order["id"].as_str() {
                            accepted.lock().await.push(id.to_owned());
                        }
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(8)).await;
            }
        })
    };

    // Faults, while the load runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["inventory-1", "payment-1"] {
        let s = services
            .iter_mut()
            .find(|s| s.name == name)
            .expect("service");
        s.kill_and_restart(&url);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    {
        let mut conn = redis::Client::open(redis.url.as_str())
            .and_then(|c| c.get_connection())
            .expect("admin connection");
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query(&mut conn)
            .expect("CLIENT KILL");
        assert!(killed > 10, "dropped {killed} connections");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The network goes silent, then every connection is left half-open (Redis's side gone, the
    // processes' side open and silent): each process must find its dead connections itself.
    proxy.set(Mode::Silent);
    tokio::time::sleep(Duration::from_secs(7)).await;
    proxy.half_open_all();
    proxy.set(Mode::Pass);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Redis dies: /readyz must say so; then it comes back from its append-only file.
    let readyz = format!("{api}/readyz");
    let outage = {
        let (http, readyz) = (http.clone(), readyz.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(6);
            while Instant::now() < deadline {
                if let Some((503, body)) = get(&http, &readyz).await {
                    return Some(body);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        })
    };
    let restart = tokio::task::spawn_blocking(move || {
        redis.crash_and_restart_after(Duration::from_secs(3));
        redis
    });
    let not_ready = outage.await.expect("outage watcher");
    let redis = restart.await.expect("restart");
    let body = not_ready.expect("/readyz never reported the Redis outage");
    assert_eq!(body["error"]["code"], "redis_unavailable");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&http, &readyz).await.map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "/readyz did not recover after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = services
        .iter_mut()
        .find(|s| s.name == "shipping-1")
        .expect("shipping");
    s.kill_and_restart(&url);
    tokio::time::sleep(Duration::from_secs(4)).await;
    loading.store(false, Ordering::Relaxed);
    load.await.expect("load");
    let accepted = accepted.lock().await.clone();
    assert!(
        accepted.len() > 300,
        "only {} orders accepted",
        accepted.len()
    );

    // Every process is still up (none gave up on Redis), and every accepted order ends.
    for service in services.iter_mut() {
        assert!(service.alive(), "{} died", service.name);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut statuses: HashMap<String, String> = HashMap::new();
    for id in &accepted {
        loop {
            let status = get(&http, &format!("{api}/orders/{id}"))
                .await
                .map(|(_, o)| o["status"].as_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            if status == "COMPLETED" || status == "CANCELLED" {
                statuses.insert(id.clone(), status);
                break;
            }
            if Instant::now() >= deadline {
                let mut health = Vec::new();
                for service in &services {
                    let url = format!("http://127.0.0.1:{}/healthz", service.port);
                    health.push((service.name.clone(), get(&http, &url).await));
                }
                panic!("order {id} is {status:?}, not final; /healthz: {health:?}");
            }
            assert!(
                Instant::now() < deadline,
                "order {id} is {status:?}, not final"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Let compensation and notifications settle, then check the books.
    let store = fulfillment_testing::redis_at(&redis.url).await;
    let keys = store.layout().partitions()[0].keys.clone();
    let mut conn = store.conn();
    drained(&store, Duration::from_secs(60)).await;

    // All orders Redis holds, accepted or not (a reply lost in the crash still placed one).
    let ids = all_orders(&store).await;
    let stock: i64 = redis::cmd("HGET")
        .arg(store.layout().catalog.product("chaos"))
        .arg("stock")
        .query_async(&mut conn)
        .await
        .expect("stock");
    let mut held = 0i64;
    let mut completed = 0i64;
    for id in &ids {
        let (state, holds) = reservation(&store, id).await;
        let status: Option<String> = redis::cmd("HGET")
            .arg(keys.order(id))
            .arg("status")
            .query_async(&mut conn)
            .await
            .expect("status");
        if status.as_deref() == Some("COMPLETED") {
            completed += 1;
            assert_eq!(
                state.as_deref(),
                Some("reserved"),
                "completed order {id} holds its stock"
            );
        }
        held += holds;
    }
    assert_eq!(INITIAL_STOCK, stock + held, "stock is conserved");

    let counters: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(keys.counters())
        .query_async(&mut conn)
        .await
        .expect("counters");
    assert_eq!(
        counters
            .get(fulfillment_events::keys::counter::LABELS_CREATED)
            .copied()
            .unwrap_or(0),
        completed,
        "one label per completed order, none for others"
    );
    let charges: i64 = redis::cmd("HLEN")
        .arg(store.layout().gateway.gateway_charges())
        .query_async(&mut conn)
        .await
        .expect("charges");
    assert!(charges <= ids.len() as i64, "at most one charge per order");
    assert!(charges >= completed, "every completed order was charged");
    let dlq: i64 = redis::cmd("XLEN")
        .arg("order_events:dlq")
        .query_async(&mut conn)
        .await
        .expect("dlq");
    let finals = statuses.values().filter(|s| *s == "COMPLETED").count();
    println!(
        "chaos: {} accepted ({} refused during faults), {} orders in Redis, {finals} completed, \
         {} cancelled, stock {stock} + held {held} = {INITIAL_STOCK}, {charges} charges, {dlq} dead letters",
        accepted.len(),
        refused.load(Ordering::Relaxed),
        ids.len(),
        statuses.len() - finals,
    );

    for service in services.iter_mut() {
        terminate(service.child.id());
        let code = service.child.wait().expect("wait").code();
        assert_eq!(code, Some(0), "{} exits 0 on SIGTERM", service.name);
    }
    drop(redis);
}

/// Faults of the cancel storm: the seed's unstable inventory, lost acknowledgements, transient
/// payment failures.
const STORMY: &[(&str, &str)] = &[
    ("INVENTORY_FAILURE_RATE", "0.4"),
    ("INVENTORY_ACK_LOSS_RATE", "0.2"),
    ("PAYMENT_FAILURE_RATE", "0.3"),
];

/// Waits until `count` reads 0, or fails after `within` naming `what` is left.
pub(super) async fn until_none<F, Fut>(within: Duration, what: &str, mut count: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let deadline = Instant::now() + within;
    loop {
        let left = count().await;
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{left} {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every entry of every group acknowledged (or dead-lettered), within `within`.
pub(super) async fn drained(store: &Redis, within: Duration) {
    until_none(within, "entries never acknowledged", || async {
        let mut conn = store.conn();
        let mut pending = 0;
        for partition in store.layout().partitions() {
            for group in fulfillment_events::service::all_groups() {
                let reply: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
                    .arg(&partition.stream)
                    .arg(group)
                    .query_async(&mut conn)
                    .await
                    .expect("xpending");
                pending += reply.count() as i64;
            }
        }
        pending
    })
    .await;
}

/// An order's reservation in the catalog's ledger: its state, and the units it holds (none
/// unless `reserved`).
pub(super) async fn reservation(store: &Redis, id: &str) -> (Option<String>, i64) {
    let (state, items): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(store.layout().catalog.reservation(id))
        .arg("state")
        .arg("items")
        .query_async(&mut store.conn())
        .await
        .expect("reservation");
    if state.as_deref() != Some("reserved") {
        return (state, 0);
    }
    let lines: Vec<Value> = serde_json::from_str(&items.unwrap_or_default()).expect("items");
    let held = lines
        .iter()
        .map(|l| l["quantity"].as_i64().unwrap_or(0))
        .sum();
    (state, held)
}

/// The ids of every order Redis holds, on every partition.
pub(super) async fn all_orders(store: &Redis) -> Vec<String> {
    let mut ids = Vec::new();
    for partition in store.layout().partitions() {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(partition.keys.orders_index())
            .arg(0)
            .arg(-1)
            .query_async(&mut store.conn())
            .await
            .expect("orders");
        ids.extend(
            members
                .iter()
                .filter_map(|m| m.split_once(':').map(|(_, id)| id.to_owned())),
        );
    }
    ids
}

/// The books of one final order (`COMPLETED` or `CANCELLED`), straight from Redis: only a
/// completed order holds stock; every charge and refund of the gateway's ledger has its event in
/// the order's history; a cancelled order was never confirmed and kept no charge; a completed one
/// was never told cancelled. The units it holds.
pub(super) async fn final_order_books(
    store: &Redis,
    id: &str,
    status: &str,
    charges: &HashMap<String, String>,
    refunds: &HashMap<String, String>,
) -> i64 {
    let (state, holds) = reservation(store, id).await;
    if state.as_deref() == Some("reserved") {
        assert_eq!(
            status, "COMPLETED",
            "cancelled order {id} still holds stock"
        );
    }
    let history: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(store.layout().of_order(id).keys.order_history(id))
        .query_async(&mut store.conn())
        .await
        .expect("history");
    let events: Vec<Value> = history
        .values()
        .filter_map(|h| serde_json::from_str(h).ok())
        .collect();
    let has = |t: &str| events.iter().any(|e| e["type"] == t);
    let told = |kind: &str| {
        events
            .iter()
            .any(|e| e["type"] == "NotificationSent" && e["payload"]["kind"] == kind)
    };
    if charges.contains_key(id) {
        assert!(
            has("PaymentProcessed"),
            "order {id} charged without PaymentProcessed"
        );
    }
    if refunds.contains_key(id) {
        assert!(
            has("PaymentRefunded"),
            "order {id} refunded without PaymentRefunded"
        );
    }
    if status == "CANCELLED" {
        assert!(
            !told("order_confirmed"),
            "cancelled order {id} was confirmed"
        );
        if charges.contains_key(id) {
            assert!(
                refunds.contains_key(id),
                "cancelled order {id} kept its charge"
            );
        }
    } else {
        assert!(
            !told("order_cancelled"),
            "completed order {id} was told cancelled"
        );
    }
    holds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_storms_under_failures_confirm_nothing_cancelled_and_lose_no_stock_or_money() {
    let redis = TestRedis::start_durable();
    let url = redis.url.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    // Mail on, to a real relay: no customer may be told both outcomes, or nothing.
    let smtp = TestSmtp::start();
    let relay: &'static str = Box::leak(smtp.url().into_boxed_str());
    let stormy_with_mail: &'static [(&str, &str)] =
        Box::leak([STORMY, &[("SMTP_URL", relay)]].concat().into_boxed_slice());
    let (mut services, api) = start_pipeline(&url, &http, stormy_with_mail, "storm").await;

    // Orders, each cancelled at a random moment within 60 ms of its placement, or not at all.
    let (cancel_tx, mut cancel_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let cancels = {
        let (http, api) = (http.clone(), api.clone());
        tokio::spawn(async move {
            let mut outcomes: HashMap<u16, usize> = HashMap::new();
            let mut tasks = Vec::new();
            while let Some(id) = cancel_rx.recv().await {
                let (http, api) = (http.clone(), api.clone());
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(rand::random_range(0..60))).await;
                    http.post(format!("{api}/orders/{id}/cancel"))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                }));
            }
            for task in tasks {
                *outcomes.entry(task.await.unwrap_or(0)).or_default() += 1;
            }
            outcomes
        })
    };
    let started = Instant::now();
    let mut placed = 0usize;
    while started.elapsed() < Duration::from_secs(12) {
        placed += 1;
        let body = json!({
            "customer_id": format!("storm-{placed}"), "customer_email": "storm@example.com",
            "items": [{"product_id": "storm", "quantity": 1 + placed % 3}],
            "payment_token": if placed.is_multiple_of(10) { "tok_chargeDeclined" } else { "tok_visa" },
        });
        if let Ok(r) = http.post(format!("{api}/orders")).json(&body).send().await
            && r.status().as_u16() == 201
            && let Ok(order) = r.json::<Value>().await
            && let Some(id) = order["id"].as_str()
            && rand::random_range(0..10) < 6
        {
            let _ = cancel_tx.send(id.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    drop(cancel_tx);
    let cancel_outcomes = cancels.await.expect("cancels");
    assert!(placed > 300, "only {placed} orders placed");

    let store = fulfillment_testing::redis_at(&url).await;
    let keys = store.layout().partitions()[0].keys.clone();
    let mut conn = store.conn();
    drained(&store, Duration::from_secs(90)).await;

    // Mid-storm books: every dead letter's order shows it.
    let dlq: Vec<Value> = {
        let (_, page) = get(&http, &format!("{api}/dlq?limit=1000"))
            .await
            .expect("dlq");
        page["entries"].as_array().cloned().unwrap_or_default()
    };
    for letter in &dlq {
        let Some(order_id) = letter["order_id"].as_str() else {
            continue;
        };
        let (_, order) = get(&http, &format!("{api}/orders/{order_id}"))
            .await
            .expect("order");
        assert!(
            order["dead_letters"].as_u64().unwrap_or(0) > 0 || order["status"] == "FAILED",
            "order {order_id} has a dead letter ({}) nobody can see: {order}",
            letter["event_type"]
        );
    }

    // Healthy again: every dead letter replayed, every order settles.
    for service in services.iter_mut().skip(1) {
        service.restart_with(&[("SMTP_URL", relay)], &url);
    }
    for service in &services {
        wait_ready(&http, service).await;
    }
    own_ports(&http, &mut services, &url).await;
    for letter in &dlq {
        let id = letter["id"].as_str().expect("dlq id");
        let replayed = http
            .post(format!("{api}/dlq/{id}/replay"))
            .send()
            .await
            .expect("replay");
        assert_eq!(replayed.status().as_u16(), 202);
    }
    drained(&store, Duration::from_secs(60)).await;
    until_none(
        Duration::from_secs(30),
        "orders still have dead letters after replay",
        || async {
            redis::cmd("SCARD")
                .arg(keys.orders_dead_lettered())
                .query_async::<i64>(&mut store.conn())
                .await
                .expect("flagged")
        },
    )
    .await;

    let ids = all_orders(&store).await;
    let stock: i64 = redis::cmd("HGET")
        .arg(store.layout().catalog.product("storm"))
        .arg("stock")
        .query_async(&mut conn)
        .await
        .expect("stock");
    let fulfillment_testing::Ledger { charges, refunds } =
        fulfillment_testing::ledger(&store).await;
    let (mut held, mut cancelled, mut completed) = (0i64, 0, 0);
    let inboxes = super::mail::by_order(smtp.messages());
    let mut told_twice = 0;
    for id in &ids {
        let (status, dead_letters): (Option<String>, Option<i64>) = redis::cmd("HMGET")
            .arg(keys.order(id))
            .arg("status")
            .arg("dead_letters")
            .query_async(&mut conn)
            .await
            .expect("order");
        let status = status.unwrap_or_default();
        assert_ne!(
            status, "FAILED",
            "order {id} still FAILED after its replays"
        );
        assert!(
            ["COMPLETED", "CANCELLED"].contains(&status.as_str()),
            "order {id} is {status}"
        );
        assert_eq!(dead_letters.unwrap_or(0), 0, "order {id} still flagged");
        held += final_order_books(&store, id, &status, &charges, &refunds).await;
        // The customer's inbox: this order's one kind, under its one Message-ID.
        let kind = if status == "CANCELLED" {
            "order_cancelled"
        } else {
            "order_confirmed"
        };
        let message_ids: HashSet<Option<String>> = inboxes
            .get(id)
            .map(|mails| mails.iter().map(|m| m.header("Message-ID")).collect())
            .unwrap_or_default();
        assert_eq!(
            message_ids,
            HashSet::from([Some(format!("<{id}.{kind}@fulfillment.localhost>"))]),
            "order {id} ({status}): the customer's messages"
        );
        if inboxes[id].len() > 1 {
            told_twice += 1;
        }
        if status == "CANCELLED" {
            cancelled += 1;
        } else {
            completed += 1;
        }
    }
    assert_eq!(INITIAL_STOCK, stock + held, "stock is conserved");
    println!(
        "cancel storm: {placed} placed, cancels answered {cancel_outcomes:?}, {} orders: \
         {completed} completed, {cancelled} cancelled; {} dead letters replayed; \
         {} charges, {} refunds; stock {stock} + held {held} = {INITIAL_STOCK}; \
         {} messages, {told_twice} orders told twice (same Message-ID)",
        ids.len(),
        dlq.len(),
        charges.len(),
        refunds.len(),
        smtp.messages().len(),
    );
    for service in services.iter_mut() {
        terminate(service.child.id());
        let code = service.child.wait().expect("wait").code();
        assert_eq!(code, Some(0), "{} exits 0 on SIGTERM", service.name);
    }
    drop(redis);
}
