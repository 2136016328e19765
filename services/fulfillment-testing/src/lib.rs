//! The test harness every crate's integration tests share (`tests/it/`): a throwaway
//! `redis-server` per test on a free port, or a Redis Cluster of six of them ([`Backend`];
//! removed on drop), the API on port 0, consumers and retry passes composed from the same library
//! code the binaries run, and waits that end on what the pipeline did ([`Harness::settled`]), not
//! on a fixed sleep. Every helper reads across the partitions, so a scenario reads the same on
//! every backend ([`on_every_backend!`]).

pub mod cluster;
pub mod fault_proxy;
pub mod smtp;

pub use cluster::TestCluster;
pub use fault_proxy::{FaultProxy, Mode};
use fulfillment_cli::local_runner::{Pipeline, Replicas};
use fulfillment_core::{Redis, Service, Settings};
use fulfillment_events::keys::{Layout, Partition};
use fulfillment_pipeline::ServiceSettings;
use fulfillment_redis::stream_entry::{Entries, RawEntry};
use retry_worker::{PassReport, RetryWorker};
use serde_json::{Value, json};
use std::net::TcpListener as StdListener;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of this test's own, stopped and its directory removed on drop.
pub struct TestRedis {
    child: Child,
    dir: PathBuf,
    port: u16,
    extra: Vec<String>,
    pub url: String,
}

impl TestRedis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        for _ in 0..20 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "fulfillment-test-{port}-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
            let mut redis = TestRedis {
                child: spawn_redis(port, &dir, &extra),
                dir,
                port,
                extra,
                url: format!("redis://127.0.0.1:{port}"),
            };
            if redis.wait_ready() {
                return redis;
            }
            let _ = redis.child.kill();
        }
        panic!("could not start redis-server");
    }

    /// A server that keeps an append-only file, fsynced on every write, in its directory.
    pub fn start_durable() -> Self {
        Self::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// A replica of this server, started and in sync.
    pub fn start_replica(&self) -> TestRedis {
        let replica = TestRedis::start_with(&["--replicaof", "127.0.0.1", &self.port.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info: String = redis::Client::open(replica.url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("INFO").arg("replication").query(&mut c))
                .unwrap_or_default();
            if info.contains("master_link_status:up") && info.contains("master_sync_in_progress:0")
            {
                return replica;
            }
            assert!(Instant::now() < deadline, "the replica did not sync");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then a new `redis-server` on the same port and directory (it loads what it kept).
    pub fn crash_and_restart(&mut self) {
        self.crash_and_restart_after(Duration::ZERO);
    }

    /// [`TestRedis::crash_and_restart`], staying down for `down_for` first.
    pub fn crash_and_restart_after(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        self.child = spawn_redis(self.port, &self.dir, &self.extra);
        assert!(self.wait_ready(), "redis-server did not come back");
    }

    /// `CLIENT PAUSE ms mode` (`ALL` or `WRITE`): Redis holds its clients' commands that long.
    pub async fn pause(&self, ms: u64, mode: &str) {
        let mut admin = redis::Client::open(self.url.as_str())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        let _: String = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(ms)
            .arg(mode)
            .query_async(&mut admin)
            .await
            .expect("pause");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // Our own process must answer: a port another test took meanwhile answers too (its
            // redis-server up, ours about to fail to bind it), and two tests would share data.
            // INFO answers while an append-only file loads; PING waits until it is loaded.
            if let Ok(client) = redis::Client::open(self.url.as_str())
                && let Ok(mut conn) = client.get_connection()
                && let Ok(info) = redis::cmd("INFO").arg("server").query::<String>(&mut conn)
            {
                if !served_by(&info, self.child.id()) {
                    return false;
                }
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return true;
                }
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // port taken meanwhile
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

fn spawn_redis(port: u16, dir: &std::path::Path, extra: &[String]) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed to run these tests (apt-get install redis-server)")
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process a test started, SIGKILLed and reaped when dropped: a test that fails midway leaves
/// no service behind (one retrying its Redis's port would join whichever test's Redis takes the
/// port next).
pub struct Spawned(pub Child);

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `Command::spawn`, guarded ([`Spawned`]).
pub trait SpawnGuarded {
    fn spawn_guarded(&mut self) -> std::io::Result<Spawned>;
}

impl SpawnGuarded for Command {
    fn spawn_guarded(&mut self) -> std::io::Result<Spawned> {
        self.spawn().map(Spawned)
    }
}

/// Whether `INFO server` output comes from the process `pid`.
pub(crate) fn served_by(info: &str, pid: u32) -> bool {
    info.lines()
        .filter_map(|l| l.trim().strip_prefix("process_id:"))
        .any(|id| id == pid.to_string())
}

/// Every consumer before the notification service (the order projection, inventory, payment,
/// shipping): a mail test runs these and its own notifier.
pub const UPSTREAM_OF_NOTIFICATION: [Service; 4] = [
    Service::Order,
    Service::Inventory,
    Service::Payment,
    Service::Shipping,
];

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// What a test's pipeline runs with: the settings every process reads and the services' own.
/// It reads as [`Settings`] (through `Deref`), so `s.retry.min_idle_ms` and
/// `s.services.inventory.failure_rate` both work where a test tunes it.
#[derive(Debug, Clone)]
pub struct TestSettings {
    pub settings: Settings,
    pub services: ServiceSettings,
}

impl Deref for TestSettings {
    type Target = Settings;
    fn deref(&self) -> &Settings {
        &self.settings
    }
}

impl DerefMut for TestSettings {
    fn deref_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }
}

/// Where a test's pipeline keeps its streams and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One `redis-server`, with this many partitions.
    Single(usize),
    /// A Redis Cluster of three masters and three replicas, with this many partitions.
    Cluster(usize),
}

/// The backends every scenario runs on: the default (one Redis, one partition), one Redis with
/// four partitions, and the cluster with twelve.
pub const EVERY_BACKEND: [Backend; 3] =
    [Backend::Single(1), Backend::Single(4), Backend::Cluster(12)];

/// Runs the scenario `async fn $name(backend: Backend)` on each of [`EVERY_BACKEND`], as three
/// tests: `$name::one_redis`, `$name::one_redis_four_partitions`, `$name::cluster_twelve_partitions`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn one_redis() {
                super::$name($crate::EVERY_BACKEND[0]).await
            }
            #[tokio::test]
            async fn one_redis_four_partitions() {
                super::$name($crate::EVERY_BACKEND[1]).await
            }
            #[tokio::test]
            async fn cluster_twelve_partitions() {
                super::$name($crate::EVERY_BACKEND[2]).await
            }
        }
    )+};
}

/// The Redis a test runs against.
pub enum TestServer {
    Single(TestRedis),
    Cluster(TestCluster),
}

impl TestServer {
    pub fn start(backend: Backend) -> Self {
        match backend {
            Backend::Single(_) => TestServer::Single(TestRedis::start()),
            Backend::Cluster(_) => TestServer::Cluster(TestCluster::start()),
        }
    }

    /// The one `redis-server` (a test that crashes, pauses or replicates it runs on one).
    pub fn single(&self) -> &TestRedis {
        match self {
            TestServer::Single(redis) => redis,
            TestServer::Cluster(_) => panic!("this test needs one redis-server, not a cluster"),
        }
    }

    pub fn single_mut(&mut self) -> &mut TestRedis {
        match self {
            TestServer::Single(redis) => redis,
            TestServer::Cluster(_) => panic!("this test needs one redis-server, not a cluster"),
        }
    }

    pub fn cluster(&self) -> &TestCluster {
        match self {
            TestServer::Cluster(cluster) => cluster,
            TestServer::Single(_) => panic!("this test needs a cluster"),
        }
    }

    pub fn cluster_mut(&mut self) -> &mut TestCluster {
        match self {
            TestServer::Cluster(cluster) => cluster,
            TestServer::Single(_) => panic!("this test needs a cluster"),
        }
    }

    /// The variable a process reads to reach this server.
    pub fn env(&self) -> (&'static str, String) {
        match self {
            TestServer::Single(redis) => ("REDIS_URL", redis.url.clone()),
            TestServer::Cluster(cluster) => ("REDIS_CLUSTER_NODES", cluster.nodes_env()),
        }
    }
}

/// Settings tuned for tests on `server` with `partitions`: short blocks and idle times, fast
/// backoff.
pub fn settings_for(server: &TestServer, partitions: usize) -> TestSettings {
    let (name, value) = server.env();
    let mut s = Settings::from_lookup(move |n| (n == name).then(|| value.clone()))
        .expect("test settings are valid");
    s.stream.partitions = partitions;
    tune_for_tests(s)
}

/// Settings tuned for tests on one Redis at `url`, one partition.
pub fn test_settings(url: &str) -> TestSettings {
    tune_for_tests(Settings::for_redis(url))
}

fn tune_for_tests(mut s: Settings) -> TestSettings {
    s.stream.block_ms = 50;
    s.retry.min_idle_ms = 150;
    s.retry.interval_ms = 100;
    s.shutdown_grace_ms = 5_000;
    s.consumer_name = "retry-worker".into();
    s.retry.consumer_gone_after_ms = 600_000;
    let mut services = ServiceSettings::default();
    services.payment.backoff_ms = 1;
    TestSettings {
        settings: s,
        services,
    }
}

/// One test's world: its Redis, the API on a free port, and helpers to drive and inspect it.
pub struct Harness {
    pub settings: TestSettings,
    pub redis: Redis,
    pub base: String,
    pub http: reqwest::Client,
    api: Option<Pipeline>,
    // Dropped last: the server outlives every connection to it.
    pub server: TestServer,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut TestSettings)) -> Self {
        Self::on_with(Backend::Single(1), tune).await
    }

    /// The API on a fresh `backend`.
    pub async fn on(backend: Backend) -> Self {
        Self::on_with(backend, |_| {}).await
    }

    /// The API on a fresh `backend`, with these settings.
    pub async fn on_with(backend: Backend, tune: impl FnOnce(&mut TestSettings)) -> Self {
        let server = TestServer::start(backend);
        let partitions = match backend {
            Backend::Single(n) | Backend::Cluster(n) => n,
        };
        let mut settings = settings_for(&server, partitions);
        tune(&mut settings);
        Self::with_settings(server, settings).await
    }

    /// The API on this Redis, with these settings.
    pub async fn start_on(server: TestRedis, tune: impl FnOnce(&mut TestSettings)) -> Self {
        let mut settings = test_settings(&server.url);
        tune(&mut settings);
        Self::with_settings(TestServer::Single(server), settings).await
    }

    /// The API on `server`, started and prepared by the caller (a cluster whose node announces a
    /// proxy, say), with `partitions` and these settings.
    pub async fn start_on_server(
        server: TestServer,
        partitions: usize,
        tune: impl FnOnce(&mut TestSettings),
    ) -> Self {
        let mut settings = settings_for(&server, partitions);
        tune(&mut settings);
        Self::with_settings(server, settings).await
    }

    async fn with_settings(server: TestServer, settings: TestSettings) -> Self {
        let redis = fulfillment_core::runtime::startup::prepare_redis(&settings)
            .await
            .expect("redis");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let api = Pipeline::start(
            &settings,
            &settings.services,
            &redis,
            &Replicas::none(),
            Some(listener),
            false,
        )
        .await
        .expect("api");
        Self {
            settings,
            redis,
            base,
            http: reqwest::Client::new(),
            api: Some(api),
            server,
        }
    }

    /// Where everything lives.
    pub fn layout(&self) -> &Layout {
        self.redis.layout()
    }

    /// The variables a process needs to run against this test's Redis as the harness does.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            self.server.env(),
            (
                "STREAM_PARTITIONS",
                self.settings.stream.partitions.to_string(),
            ),
        ]
    }

    /// Starts consumers (no API, no retry loop) with these settings.
    pub async fn consumers_with(&self, replicas: &str, settings: &TestSettings) -> Pipeline {
        let replicas = Replicas::parse(replicas).expect("replicas");
        self.start_consumers(&replicas, settings).await
    }

    async fn start_consumers(&self, replicas: &Replicas, settings: &TestSettings) -> Pipeline {
        Pipeline::start(
            settings,
            &settings.services,
            &self.redis,
            replicas,
            None,
            false,
        )
        .await
        .expect("consumers")
    }

    /// Consumers whose inventory fails every delivery, and an order of `quantity` product-A whose
    /// `OrderPlaced` has failed once and is pending in `inventory_group`.
    pub async fn order_stuck_in_failing_inventory(
        &self,
        quantity: u32,
    ) -> (TestSettings, Pipeline, String) {
        let mut failing = self.settings.clone();
        failing.services.inventory.failure_rate = 1.0;
        let consumers = self.consumers_with("", &failing).await;
        let id = self.place("product-A", quantity, "tok_visa").await;
        self.eventually(SECONDS_10, "first delivery failed", || async {
            self.pending("inventory_group").await == 1
        })
        .await;
        (failing, consumers, id)
    }

    /// One consumer for each named service only.
    pub async fn consumers_of(&self, services: &[Service]) -> Pipeline {
        self.consumers_of_with(services, &self.settings).await
    }

    /// One consumer for each named service only, with these settings.
    pub async fn consumers_of_with(
        &self,
        services: &[Service],
        settings: &TestSettings,
    ) -> Pipeline {
        let mut replicas = Replicas::none();
        for s in services {
            replicas.set(*s, 1);
        }
        self.start_consumers(&replicas, settings).await
    }

    /// One consumer per service with the harness settings.
    pub async fn consumers(&self) -> Pipeline {
        self.consumers_with("", &self.settings).await
    }

    pub async fn stop(mut self) {
        if let Some(api) = self.api.take() {
            api.stop().await;
        }
    }

    pub fn retry_worker(&self, settings: &TestSettings) -> RetryWorker {
        RetryWorker::new(
            self.redis.clone(),
            settings.settings.clone(),
            fulfillment_pipeline::all_handlers(&self.redis, &settings.services),
        )
    }

    /// Waits past the min idle time, then runs one retry pass.
    pub async fn retry_pass(&self, settings: &TestSettings) -> PassReport {
        tokio::time::sleep(Duration::from_millis(settings.retry.min_idle_ms + 50)).await;
        self.retry_worker(settings)
            .run_pass()
            .await
            .expect("retry pass")
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_product(&self, id: &str, stock: i64) {
        let (status, body) = self
            .post(
                "/products",
                json!({"id": id, "name": id, "price": 500, "stock": stock}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// Places an order and returns its id.
    pub async fn place(&self, product: &str, quantity: u32, token: &str) -> String {
        let (status, body) = self
            .post(
                "/orders",
                json!({
                    "customer_id": "cust-1",
                    "customer_email": "cust-1@example.com",
                    "items": [{"product_id": product, "quantity": quantity}],
                    "payment_token": token,
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("order id").to_owned()
    }

    pub async fn order(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/orders/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until the order has `status`, or fails with the last one seen.
    pub async fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let order = self.order(id).await;
            if order["status"] == status {
                return order;
            }
            if Instant::now() > deadline {
                let (_, events) = self.get(&format!("/orders/{id}/events")).await;
                panic!(
                    "order {id} is {} ({}) after {within:?}, not {status}; its events: {events}",
                    order["status"], order["status_reason"]
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `check` holds, polling.
    pub async fn eventually<F, Fut>(&self, within: Duration, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while !check().await {
            assert!(Instant::now() < deadline, "not within {within:?}: {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn stock(&self, product: &str) -> i64 {
        let (_, body) = self.get(&format!("/products/{product}")).await;
        body["stock"].as_i64().expect("stock")
    }

    /// A durable counter, added up over the partitions.
    pub async fn counter(&self, name: &str) -> i64 {
        let mut total = 0;
        for partition in self.layout().partitions() {
            let mut conn = self.redis.conn();
            let value: Option<i64> = redis::cmd("HGET")
                .arg(partition.keys.counters())
                .arg(name)
                .query_async(&mut conn)
                .await
                .expect("counter");
            total += value.unwrap_or(0);
        }
        total
    }

    pub async fn hlen(&self, key: &str) -> i64 {
        let mut conn = self.redis.conn();
        redis::cmd("HLEN")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("hlen")
    }

    /// Charges the test gateway made.
    pub async fn charges(&self) -> i64 {
        self.hlen(&self.layout().gateway.gateway_charges()).await
    }

    /// Refunds the test gateway made.
    pub async fn refunds(&self) -> i64 {
        self.hlen(&self.layout().gateway.gateway_refunds()).await
    }

    pub async fn xlen(&self, stream: &str) -> i64 {
        let mut conn = self.redis.conn();
        redis::cmd("XLEN")
            .arg(stream)
            .query_async(&mut conn)
            .await
            .expect("xlen")
    }

    /// Entries on every partition stream.
    pub async fn stream_length(&self) -> i64 {
        let mut total = 0;
        for partition in self.layout().partitions() {
            total += self.xlen(&partition.stream).await;
        }
        total
    }

    /// Entries on every dead-letter stream.
    pub async fn dlq_length(&self) -> i64 {
        let mut total = 0;
        for partition in self.layout().partitions() {
            total += self.xlen(&partition.dlq).await;
        }
        total
    }

    /// Every entry on a stream.
    pub async fn entries(&self, stream: &str) -> Vec<RawEntry> {
        stream_entries(&self.redis, stream).await
    }

    /// Every entry on every partition stream, partition by partition.
    pub async fn all_entries(&self) -> Vec<RawEntry> {
        let mut all = Vec::new();
        for partition in self.layout().partitions() {
            all.extend(self.entries(&partition.stream).await);
        }
        all
    }

    /// Every dead letter, with its id as the API and CLI name it.
    pub async fn dead_letters(&self) -> Vec<(String, RawEntry)> {
        let mut all = Vec::new();
        for partition in self.layout().partitions() {
            for entry in self.entries(&partition.dlq).await {
                let id = fulfillment_core::runtime::dead_letter::DlqId {
                    partition: partition.index,
                    entry: entry.id.clone(),
                };
                all.push((id.render(self.layout()), entry));
            }
        }
        all
    }

    /// The partition an order lives in.
    pub fn partition_of(&self, order_id: &str) -> &Partition {
        self.layout().of_order(order_id)
    }

    /// Entries on the event stream of `event_type` for `order_id`.
    pub async fn events_of(&self, order_id: &str, event_type: &str) -> Vec<RawEntry> {
        self.entries(&self.partition_of(order_id).stream)
            .await
            .into_iter()
            .filter(|e| {
                e.text("order_id").as_deref() == Some(order_id)
                    && e.text("type").as_deref() == Some(event_type)
            })
            .collect()
    }

    /// This process's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Adds `event` to its order's partition stream by hand, as its publisher would.
    pub async fn publish(&self, event: &fulfillment_core::Event) -> String {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = event
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
            .collect();
        let stream = self.partition_of(&event.order_id).stream.clone();
        self.xadd_to(&stream, &fields).await
    }

    /// Reads every new entry of `group` on every partition as the consumer "holder", which never
    /// acknowledges them: they stay pending, as with a consumer that died holding them.
    pub async fn read_as_holder(&self, group: &str) {
        for partition in self.layout().partitions() {
            let mut conn = self.redis.conn();
            let _: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(group)
                .arg("holder")
                .arg("STREAMS")
                .arg(&partition.stream)
                .arg(">")
                .query_async(&mut conn)
                .await
                .expect("read");
        }
    }

    /// Waits until the durable counter `name` reads `value`.
    pub async fn wait_counter(&self, name: &str, value: i64) {
        self.eventually(SECONDS_10, name, || async {
            self.counter(name).await == value
        })
        .await;
    }

    /// The kinds of `NotificationSent` published for an order, in stream order.
    pub async fn notification_kinds(&self, order_id: &str) -> Vec<String> {
        self.events_of(order_id, "NotificationSent")
            .await
            .iter()
            .filter_map(|e| e.text("payload"))
            .filter_map(|p| serde_json::from_str::<Value>(&p).ok())
            .filter_map(|p| p["kind"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until every group has acknowledged everything on the stream: nothing pending,
    /// nothing left to read. What a test checks after this is what the pipeline did, not what it
    /// had not yet got to.
    pub async fn settled(&self) {
        self.settled_in(&fulfillment_events::service::all_groups())
            .await;
    }

    /// [`Harness::settled`] for every group but `group` (which may keep an entry pending on purpose,
    /// or has no consumer running).
    pub async fn settled_except(&self, group: &str) {
        let others: Vec<&str> = fulfillment_events::service::all_groups()
            .into_iter()
            .filter(|g| *g != group)
            .collect();
        self.settled_in(&others).await;
    }

    /// [`Harness::settled`] for these groups only (the others have no consumers running).
    pub async fn settled_in(&self, groups: &[&str]) {
        self.eventually(SECONDS_10, "groups settled", || async {
            for partition in self.layout().partitions() {
                let figures = fulfillment_core::ops::stream_stats::group_figures(
                    &self.redis,
                    &partition.stream,
                )
                .await
                .expect("groups");
                let settled = figures
                    .iter()
                    .filter(|g| groups.contains(&g.name.as_str()))
                    .all(|g| g.pending == 0 && g.lag == Some(0));
                if !settled {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// A request with a bearer token.
    pub async fn request_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Pending count of a group, over the partitions.
    pub async fn pending(&self, group: &str) -> i64 {
        let mut total = 0;
        for partition in self.layout().partitions() {
            let mut conn = self.redis.conn();
            let reply: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
                .arg(&partition.stream)
                .arg(group)
                .query_async(&mut conn)
                .await
                .expect("xpending");
            total += reply.count() as i64;
        }
        total
    }

    /// Entries pending in `group` that its readers read (at or before its last delivered entry),
    /// over the partitions: what a reader took and did not finish. Entries published for the
    /// group and not read yet, pending from their publication, are not counted.
    pub async fn pending_read(&self, group: &str) -> i64 {
        let mut total = 0;
        for partition in self.layout().partitions() {
            let mut conn = self.redis.conn();
            let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&partition.stream)
                .query_async(&mut conn)
                .await
                .expect("xinfo groups");
            let Some(read_up_to) = groups
                .groups
                .into_iter()
                .find(|g| g.name == group)
                .map(|g| g.last_delivered_id)
            else {
                continue;
            };
            let reply: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
                .arg(&partition.stream)
                .arg(group)
                .arg("-")
                .arg(&read_up_to)
                .arg(100_000)
                .query_async(&mut conn)
                .await
                .expect("xpending");
            total += reply.ids.len() as i64;
        }
        total
    }

    /// Entries pending in `group` as `consumer`'s (on the first partition): what it holds, apart
    /// from what is pending since its publication and no reader claimed.
    pub async fn held_by(&self, group: &str, consumer: &str) -> i64 {
        fulfillment_core::ops::stream_stats::consumer_figures(
            &self.redis,
            &self.layout().partitions()[0],
            group,
        )
        .await
        .expect("consumers")
        .iter()
        .find(|c| c.name == consumer)
        .map_or(0, |c| c.pending)
    }

    /// Waits until `group` has exactly `count` entries pending. Live consumers acknowledge in
    /// groups a few milliseconds after handling, so a count read right after an order moves may
    /// still include entries they have finished.
    pub async fn pending_settles_at(&self, group: &str, count: i64) {
        self.eventually(SECONDS_10, &format!("{group}: {count} pending"), || async {
            self.pending(group).await == count
        })
        .await;
    }

    /// Runs the `fulfillment` command against this test's Redis.
    pub fn fulfillment(&self, args: &[&str]) -> std::process::Output {
        Command::new(workspace_binary("fulfillment"))
            .args(args)
            .envs(self.env())
            .env("LOG_FORMAT", "json")
            .output()
            .expect("run fulfillment")
    }

    /// Adds an entry with these fields by hand to the first partition's stream.
    pub async fn xadd(&self, fields: &[(Vec<u8>, Vec<u8>)]) -> String {
        let stream = self.layout().partitions()[0].stream.clone();
        self.xadd_to(&stream, fields).await
    }

    /// Adds an entry with these fields by hand to `stream`.
    pub async fn xadd_to(&self, stream: &str, fields: &[(Vec<u8>, Vec<u8>)]) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(k.as_slice()).arg(v.as_slice());
        }
        let mut conn = self.redis.conn();
        cmd.query_async(&mut conn).await.expect("xadd")
    }
}

pub const SECONDS_10: Duration = Duration::from_secs(10);

/// The test gateway's ledger: charges and refunds by order id.
#[derive(Debug, Default)]
pub struct Ledger {
    pub charges: std::collections::HashMap<String, String>,
    pub refunds: std::collections::HashMap<String, String>,
}

/// A test CA (`ca.pem`, `ca.key`) and a server certificate it signed (`server.pem`, `server.key`,
/// for `localhost` and 127.0.0.1), written into `dir` by `openssl`, for a `redis-server` on TLS.
pub fn test_certificates(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl must be installed (apt-get install openssl)");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=fulfillment-test-ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("san.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
    )
    .expect("san");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "san.cnf",
    ]);
}

/// Every entry on a stream.
pub async fn stream_entries(redis: &Redis, stream: &str) -> Vec<RawEntry> {
    let mut conn = redis.conn();
    let Entries(entries) = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("xrange");
    entries
}

/// The test gateway's ledger as Redis holds it now.
pub async fn ledger(redis: &Redis) -> Ledger {
    let gateway = &redis.layout().gateway;
    let mut conn = redis.conn();
    let (charges, refunds) = redis::pipe()
        .cmd("HGETALL")
        .arg(gateway.gateway_charges())
        .cmd("HGETALL")
        .arg(gateway.gateway_refunds())
        .query_async(&mut conn)
        .await
        .expect("ledger");
    Ledger { charges, refunds }
}

/// GET `url` as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// A connection to the Redis at `url` (the test's own), one partition.
pub async fn redis_at(url: &str) -> Redis {
    Redis::connect(&Settings::for_redis(url))
        .await
        .expect("redis")
}

/// A binary of the workspace, built next to this test's own (the test command builds them all).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace` first",
        path.display()
    );
    path
}

pub fn terminate(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[cfg(test)]
mod tests {
    use super::served_by;

    #[test]
    fn a_server_is_known_by_its_process_id() {
        let info = "# Server\r\nredis_version:7.4.2\r\nprocess_id:4242\r\nrun_id:abc\r\n";
        assert!(served_by(info, 4242));
        assert!(!served_by(info, 424));
        assert!(!served_by("", 4242));
    }
}
