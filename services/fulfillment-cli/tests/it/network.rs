//! Network faults: `fulfillment up` as a real process whose every Redis connection goes through a
//! fault-injecting TCP proxy ([`FaultProxy`]) in front of a real `redis-server`. Under load with
//! cancels, the network goes silent and resumes, goes silent and closes, goes silent and leaves
//! every connection half-open, turns slow, resets every connection every few seconds, or
//! trickles. After it heals, every order accepted with 201 (before, during or after the fault) is
//! final within the recovery bound, stock is conserved, one label and at most one charge per
//! order, every charge and refund has its event, no cancelled order was confirmed, no entry was
//! dead-lettered, `/readyz` said 503 while Redis could not be reached, `/healthz` stayed 200 (no
//! reader was stuck: each came round and healed itself), and the live feed delivers again on the
//! socket that was open through the fault.

use super::chaos::{INITIAL_STOCK, all_orders, drained, final_order_books, get};
use fulfillment_testing::{
    FaultProxy, Mode, SpawnGuarded, Spawned, TestRedis, free_port, terminate, workspace_binary,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const PRODUCT: &str = "net";
/// How long each fault lasts: past a read's deadline (`BLOCK_MS` 500 + 5 s) and a command's
/// (10 s), so every kind of connection meets it.
const FAULT: Duration = Duration::from_secs(12);
/// The recovery bound these settings give (docs/architecture.md, "Network faults"): a dead connection found
/// within max(`BLOCK_MS` + 5 s, 10 s), a reconnect within 5 s of backoff, and what a cut read left
/// pending retried once idle `RETRY_MIN_IDLE_MS` (2 s) at the next pass (every 0.5 s): 18 s, with
/// room for the backlog the fault built.
const RECOVERY_BOUND: Duration = Duration::from_secs(40);

/// The pipeline behind the proxy, its API, its log.
struct Run {
    redis: TestRedis,
    proxy: FaultProxy,
    up: Spawned,
    api: String,
    http: reqwest::Client,
    log: std::path::PathBuf,
    _state: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop, unless the test failed (then its path is printed: the log of
    /// `fulfillment up` is in it).
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("net-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("state dir");
            Self(dir)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("kept for the failed test: {}", self.0.display());
                return;
            }
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// How the pipeline reaches Redis through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Plain,
    /// `rediss://`: TLS to the server's TLS port (the proxy passes the bytes through), the
    /// server's certificate signed by a test CA that `SSL_CERT_FILE` names.
    Tls,
}

/// The pipeline behind a proxy to a fresh durable `redis-server`; the books are read on the
/// server's plain port, past the proxy.
async fn start(link: Link) -> Run {
    let state = tempdir::Dir::new();
    let (redis, proxy, url) = match link {
        Link::Plain => {
            let redis = TestRedis::start_durable();
            let proxy = FaultProxy::to_url(&redis.url).await;
            let url = proxy.url();
            (redis, proxy, url)
        }
        Link::Tls => {
            fulfillment_testing::test_certificates(&state.0);
            let file = |name: &str| state.0.join(name).display().to_string();
            let tls_port = free_port().to_string();
            let redis = TestRedis::start_with(&[
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--tls-port",
                &tls_port,
                "--tls-cert-file",
                &file("server.pem"),
                "--tls-key-file",
                &file("server.key"),
                "--tls-ca-cert-file",
                &file("ca.pem"),
                "--tls-auth-clients",
                "no",
            ]);
            let port: u16 = tls_port.parse().expect("port");
            let proxy = FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
            let url = format!("rediss://localhost:{}", proxy.port);
            (redis, proxy, url)
        }
    };
    let log = state.0.join("up.log");
    let port = free_port();
    let out = std::fs::File::create(&log).expect("log");
    let up = Command::new(workspace_binary("fulfillment"))
        .args(["up", "--http", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(&state.0)
        .args(["--replicas", "inventory=2,payment=2,shipping=2"])
        .env("REDIS_URL", url)
        .env("SSL_CERT_FILE", state.0.join("ca.pem"))
        .env("BLOCK_MS", "500")
        .env("RETRY_MIN_IDLE_MS", "2000")
        // Below the idle time, as the defaults are (45 s and 60 s): a lease a fault left behind
        // has run out when the entry is retried.
        .env("SMTP_SEND_LEASE_MS", "1500")
        .env("RETRY_INTERVAL_MS", "500")
        .env("PAYMENT_BACKOFF_MS", "20")
        .env("SEED_CATALOG", "false")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(out)
        .spawn_guarded()
        .expect("spawn fulfillment up");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let api = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&http, &format!("{api}/readyz")).await.map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "fulfillment up never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created = http
        .post(format!("{api}/products"))
        .json(&json!({"id": PRODUCT, "name": PRODUCT, "price": 100, "stock": INITIAL_STOCK}))
        .send()
        .await
        .expect("product");
    assert_eq!(created.status().as_u16(), 201);
    Run {
        redis,
        proxy,
        up,
        api,
        http,
        log,
        _state: state,
    }
}

/// Orders every 10 ms until stopped, 40 % of them cancelled within 60 ms; the accepted ids.
fn load(run: &Run, loading: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<String>> {
    let (http, api) = (run.http.clone(), run.api.clone());
    tokio::spawn(async move {
        let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut cancels = Vec::new();
        let mut n = 0u64;
        while loading.load(Ordering::Relaxed) {
            n += 1;
            let body = json!({
                "customer_id": format!("net-{n}"), "customer_email": "net@example.com",
                "items": [{"product_id": PRODUCT, "quantity": 1 + n % 3}],
                "payment_token": if n.is_multiple_of(10) { "tok_chargeDeclined" } else { "tok_visa" },
            });
            let (http, api, accepted) = (http.clone(), api.clone(), accepted.clone());
            // Each order on its own task: a request stuck in the fault does not stop the load.
            cancels.push(tokio::spawn(async move {
                let Ok(r) = http.post(format!("{api}/orders")).json(&body).send().await else {
                    return;
                };
                if r.status().as_u16() != 201 {
                    return;
                }
                let Some(id) = r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|o| o["id"].as_str().map(str::to_owned))
                else {
                    return;
                };
                accepted.lock().await.push(id.clone());
                if rand::random_range(0..10) < 4 {
                    tokio::time::sleep(Duration::from_millis(rand::random_range(0..60))).await;
                    let _ = http.post(format!("{api}/orders/{id}/cancel")).send().await;
                }
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for task in cancels {
            let _ = task.await;
        }
        accepted.lock().await.clone()
    })
}

/// `/readyz` and `/healthz` every 200 ms until stopped: each answer's status (0: no answer).
fn probes(run: &Run, probing: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<(u16, u16)>> {
    let (http, api) = (run.http.clone(), run.api.clone());
    tokio::spawn(async move {
        let mut samples = Vec::new();
        while probing.load(Ordering::Relaxed) {
            let ready = get(&http, &format!("{api}/readyz"))
                .await
                .map_or(0, |r| r.0);
            let health = get(&http, &format!("{api}/healthz"))
                .await
                .map_or(0, |r| r.0);
            samples.push((ready, health));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        samples
    })
}

/// The faults, each a test: what the proxy does for [`FAULT`], then how it heals.
#[derive(Debug, Clone, Copy)]
enum Fault {
    SilenceThenResume,
    SilenceThenClose,
    SilenceThenHalfOpen,
    Latency,
    Resets,
    Trickle,
}

impl Fault {
    /// Whether Redis is unreachable for long enough that `/readyz` must have said 503.
    fn unreachable(self) -> bool {
        matches!(
            self,
            Fault::SilenceThenResume | Fault::SilenceThenClose | Fault::SilenceThenHalfOpen
        )
    }

    async fn inject(self, proxy: &FaultProxy) {
        match self {
            Fault::SilenceThenResume | Fault::SilenceThenClose | Fault::SilenceThenHalfOpen => {
                proxy.set(Mode::Silent);
                tokio::time::sleep(FAULT).await;
                match self {
                    Fault::SilenceThenClose => proxy.close_all(),
                    Fault::SilenceThenHalfOpen => proxy.half_open_all(),
                    _ => {}
                }
            }
            Fault::Latency => {
                proxy.set(Mode::Latency {
                    min: Duration::from_millis(200),
                    max: Duration::from_millis(2000),
                });
                tokio::time::sleep(FAULT).await;
            }
            Fault::Resets => {
                let until = Instant::now() + FAULT;
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    proxy.reset_all();
                }
            }
            Fault::Trickle => {
                proxy.set(Mode::Trickle {
                    bytes: 16,
                    every: Duration::from_millis(5),
                });
                tokio::time::sleep(FAULT).await;
            }
        }
        proxy.set(Mode::Pass);
    }
}

async fn survives(fault: Fault, link: Link) {
    let mut run = start(link).await;
    let ws_url = format!("{}/ws", run.api.replacen("http", "ws", 1));
    let (socket, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .expect("live feed");
    let (_, mut feed) = socket.split();
    let loading = Arc::new(AtomicBool::new(true));
    let probing = Arc::new(AtomicBool::new(true));
    let orders = load(&run, loading.clone());
    let samples = probes(&run, probing.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    fault.inject(&run.proxy).await;
    let healed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    loading.store(false, Ordering::Relaxed);
    let accepted = orders.await.expect("load");
    assert!(
        accepted.len() > 200,
        "only {} orders accepted",
        accepted.len()
    );

    // Every accepted order final within the bound after the heal.
    let mut statuses: HashMap<String, String> = HashMap::new();
    for id in &accepted {
        loop {
            let status = get(&run.http, &format!("{}/orders/{id}", run.api))
                .await
                .map(|(_, o)| o["status"].as_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            if status == "COMPLETED" || status == "CANCELLED" {
                statuses.insert(id.clone(), status);
                break;
            }
            assert!(
                healed.elapsed() < RECOVERY_BOUND,
                "{fault:?}: order {id} is {status:?} {:?} after the heal",
                healed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let recovered_in = healed.elapsed();

    // The live feed that was open through the fault delivers again: a new order's change.
    let fresh = run.place_one().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, feed.next()).await;
        let Ok(Some(Ok(message))) = message else {
            panic!("{fault:?}: the live feed delivered nothing about {fresh} after the heal");
        };
        if message.to_text().is_ok_and(|t| t.contains(&fresh)) {
            break;
        }
    }
    probing.store(false, Ordering::Relaxed);
    let samples = samples.await.expect("probes");
    let not_ready = samples.iter().filter(|(r, _)| *r == 503).count();
    let unhealthy = samples.iter().filter(|(_, h)| *h != 200).count();
    if fault.unreachable() {
        assert!(
            not_ready > 0,
            "{fault:?}: /readyz never said 503: {samples:?}"
        );
    }
    assert_eq!(
        unhealthy, 0,
        "{fault:?}: /healthz failed though no reader was stuck: {samples:?}"
    );
    assert_eq!(
        samples.last().map(|s| s.0),
        Some(200),
        "{fault:?}: /readyz did not recover"
    );

    let books = run.books().await;
    let log = std::fs::read_to_string(&run.log).unwrap_or_default();
    let deadline_warnings = log
        .lines()
        .filter(|l| l.contains("no reply") || l.contains("deadline"))
        .count();
    println!(
        "{fault:?} ({link:?}): {} accepted, all final {:.1} s after the heal ({} completed), \
         /readyz 503 in {not_ready} of {} samples, {books}; {deadline_warnings} deadline warnings",
        accepted.len(),
        recovered_in.as_secs_f64(),
        statuses.values().filter(|s| *s == "COMPLETED").count(),
        samples.len(),
    );
    run.stop();
}

impl Run {
    async fn place_one(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let placed = self
                .http
                .post(format!("{}/orders", self.api))
                .json(&json!({
                    "customer_id": "net-fresh", "customer_email": "net@example.com",
                    "items": [{"product_id": PRODUCT, "quantity": 1}],
                }))
                .send()
                .await;
            if let Ok(r) = placed
                && r.status().as_u16() == 201
                && let Ok(order) = r.json::<Value>().await
                && let Some(id) = order["id"].as_str()
            {
                return id.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no order accepted after the heal"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Checks the books straight in Redis (not through the proxy); a line of figures.
    async fn books(&self) -> String {
        let store = fulfillment_testing::redis_at(&self.redis.url).await;
        drained(&store, Duration::from_secs(30)).await;
        let keys = store.layout().partitions()[0].keys.clone();
        let mut conn = store.conn();
        let dlq: i64 = redis::cmd("XLEN")
            .arg("order_events:dlq")
            .query_async(&mut conn)
            .await
            .expect("dlq");
        assert_eq!(dlq, 0, "a network fault dead-lettered entries");
        let stock: i64 = redis::cmd("HGET")
            .arg(store.layout().catalog.product(PRODUCT))
            .arg("stock")
            .query_async(&mut conn)
            .await
            .expect("stock");
        let fulfillment_testing::Ledger { charges, refunds } =
            fulfillment_testing::ledger(&store).await;
        let counters: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(keys.counters())
            .query_async(&mut conn)
            .await
            .expect("counters");
        let ids = all_orders(&store).await;
        let (mut held, mut completed, mut cancelled) = (0i64, 0i64, 0i64);
        for id in &ids {
            let status: Option<String> = redis::cmd("HGET")
                .arg(keys.order(id))
                .arg("status")
                .query_async(&mut conn)
                .await
                .expect("status");
            let status = status.unwrap_or_default();
            assert!(
                ["COMPLETED", "CANCELLED"].contains(&status.as_str()),
                "order {id} (maybe placed by a request whose answer was lost) is {status}"
            );
            held += final_order_books(&store, id, &status, &charges, &refunds).await;
            if status == "CANCELLED" {
                cancelled += 1;
            } else {
                completed += 1;
            }
        }
        assert_eq!(INITIAL_STOCK, stock + held, "stock is conserved");
        assert_eq!(
            counters
                .get(fulfillment_events::keys::counter::LABELS_CREATED)
                .copied()
                .unwrap_or(0),
            completed,
            "one label per completed order, none for others"
        );
        assert!(charges.len() <= ids.len(), "at most one charge per order");
        format!(
            "{} orders in Redis ({completed} completed, {cancelled} cancelled), \
             {} charges, {} refunds, stock {stock} + held {held} = {INITIAL_STOCK}",
            ids.len(),
            charges.len(),
            refunds.len()
        )
    }

    /// SIGTERM: `up` exits 0.
    fn stop(&mut self) {
        terminate(self.up.id());
        let code = self.up.wait().expect("wait").code();
        assert_eq!(code, Some(0), "fulfillment up exits 0 on SIGTERM");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_then_resume_loses_nothing() {
    survives(Fault::SilenceThenResume, Link::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_then_close_loses_nothing() {
    survives(Fault::SilenceThenClose, Link::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_then_half_open_connections_are_found_and_replaced() {
    survives(Fault::SilenceThenHalfOpen, Link::Plain).await;
}

/// The same over TLS: the TLS reader (redis-rs's, not the raw one) and the TLS shared connection
/// meet their deadlines too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_then_half_open_over_tls_connections_are_found_and_replaced() {
    survives(Fault::SilenceThenHalfOpen, Link::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_of_200_to_2000_ms_loses_nothing() {
    survives(Fault::Latency, Link::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_every_3_s_lose_nothing() {
    survives(Fault::Resets, Link::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_trickle_loses_nothing() {
    survives(Fault::Trickle, Link::Plain).await;
}

/// On a Redis Cluster: one master behind the proxy (it announces the proxy's port, so every
/// client reaches it there; its cluster bus stays direct, so no failover happens), silent for
/// [`FAULT`], then every connection to it left half-open. The pipeline (in this process, with the
/// retry loop) finds and replaces its connections to that master, and every order accepted
/// before, during and after completes within the bound, with exact books.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_silent_then_half_open_loses_nothing() {
    use fulfillment_cli::local_runner::{Pipeline, Replicas};
    use fulfillment_testing::{Backend, Harness, TestServer};
    const STOCK: i64 = 100_000;
    let server = TestServer::start(Backend::Cluster(6));
    let victim = server.cluster().masters()[0];
    let proxy = FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], victim))).await;
    server.cluster().announce(victim, proxy.port);
    let h = Harness::start_on_server(server, 6, |s| {
        s.stream.block_ms = 500;
        s.retry.min_idle_ms = 2_000;
        s.retry.interval_ms = 500;
    })
    .await;
    h.create_product(PRODUCT, STOCK).await;
    let mut replicas = Replicas::parse("inventory=2,payment=2,shipping=2").expect("replicas");
    replicas.set(fulfillment_core::Service::Order, 1);
    let pipeline = Pipeline::start(
        &h.settings,
        &h.settings.services,
        &h.redis,
        &replicas,
        None,
        true,
    )
    .await
    .expect("consumers");
    assert!(
        proxy.accepted() > 0,
        "nothing reaches the master through the proxy"
    );

    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let loading = Arc::new(AtomicBool::new(true));
    let load = {
        let (http, base, accepted, loading) = (
            h.http.clone(),
            h.base.clone(),
            accepted.clone(),
            loading.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut tasks = Vec::new();
            while loading.load(Ordering::Relaxed) {
                n += 1;
                let body = json!({
                    "customer_id": format!("cl-{n}"), "customer_email": "cl@example.com",
                    "items": [{"product_id": PRODUCT, "quantity": 1 + n % 3}],
                });
                let (http, base, accepted) = (http.clone(), base.clone(), accepted.clone());
                tasks.push(tokio::spawn(async move {
                    let placed = http
                        .post(format!("{base}/orders"))
                        .timeout(Duration::from_secs(3))
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(r) = placed
                        && r.status().as_u16() == 201
                        && let Ok(order) = r.json::<Value>().await
                        && let Some(id) = order["id"].as_str()
                    {
                        accepted.lock().await.push(id.to_owned());
                    }
                }));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for task in tasks {
                let _ = task.await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set(Mode::Silent);
    tokio::time::sleep(FAULT).await;
    proxy.half_open_all();
    proxy.set(Mode::Pass);
    let healed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    loading.store(false, Ordering::Relaxed);
    load.await.expect("load");
    let accepted = accepted.lock().await.clone();
    assert!(accepted.len() > 100, "only {} accepted", accepted.len());
    for id in &accepted {
        let left = RECOVERY_BOUND.saturating_sub(healed.elapsed());
        h.wait_status(id, "COMPLETED", left.max(Duration::from_millis(1)))
            .await;
    }
    let recovered_in = healed.elapsed();
    h.eventually(Duration::from_secs(30), "nothing pending", || async {
        for group in fulfillment_events::service::all_groups() {
            if h.pending(group).await > 0 {
                return false;
            }
        }
        true
    })
    .await;
    h.settled().await;
    let books = super::scale_out::all_completed_books(&h, PRODUCT, STOCK, &accepted).await;
    println!(
        "cluster, master {victim} behind the proxy silent then half-open: {} accepted, all \
         COMPLETED {:.1} s after the heal; {books}",
        accepted.len(),
        recovered_in.as_secs_f64(),
    );
    pipeline.stop().await;
    h.stop().await;
}
