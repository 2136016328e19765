//! `fulfillment-e2e`: the black-box end-to-end suite. It knows only the API URL and where Redis
//! is (`REDIS_URL`, or `REDIS_CLUSTER_NODES` with `STREAM_PARTITIONS`), so it runs the same against
//! `fulfillment up`, a kind cluster (as the chart's `helm test` Job) or any deployment. Each scenario uses products and customers of its own, so the suite can
//! run again and again against a live system. Prints one line per scenario and a closing
//! `N passed, N failed`; exits 0 only when every scenario passed.

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Runs the end-to-end scenarios against a running deployment.
#[derive(Debug, Clone, Parser)]
#[command(name = "fulfillment-e2e", version)]
struct Args {
    /// Base URL of the order API.
    #[arg(long, env = "E2E_API_URL", default_value = "http://127.0.0.1:8080")]
    api_url: String,
    /// Redis URL of the deployment (for the poison entry and stream checks).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Seed URLs of the deployment's Redis Cluster, comma-separated (then --redis-url is unused).
    #[arg(long, env = "REDIS_CLUSTER_NODES", hide_env_values = true)]
    redis_cluster_nodes: Option<String>,
    /// The deployment's STREAM_PARTITIONS.
    #[arg(long, env = "STREAM_PARTITIONS", default_value_t = 1)]
    stream_partitions: usize,
    /// Admin token, when the deployment sets ADMIN_TOKEN.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The callers' token, when the deployment sets API_TOKEN (used when there is no admin token).
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Redis password, when the deployment gives it apart from the URL (REDIS_PASSWORD).
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    redis_password: Option<String>,
    /// Event stream name.
    #[arg(long, env = "STREAM", default_value = "order_events")]
    stream: String,
    /// Longest wait for an order to reach a status, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// Wait this long for the API to become ready before starting, in seconds.
    #[arg(long, default_value_t = 60)]
    wait_ready_secs: u64,
}

struct Suite {
    args: Args,
    http: reqwest::Client,
    redis: fulfillment_core::Redis,
    run_id: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The deployment's Redis settings, as its processes read them.
fn deployment_settings(args: &Args) -> Result<fulfillment_core::Settings> {
    let mut vars = vec![
        ("REDIS_URL", args.redis_url.clone()),
        ("STREAM", args.stream.clone()),
        ("STREAM_PARTITIONS", args.stream_partitions.to_string()),
    ];
    if let Some(nodes) = &args.redis_cluster_nodes {
        vars.push(("REDIS_CLUSTER_NODES", nodes.clone()));
    }
    if let Some(password) = &args.redis_password {
        vars.push(("REDIS_PASSWORD", password.clone()));
    }
    fulfillment_core::Settings::from_lookup(move |name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    })
    .map_err(|e| anyhow::anyhow!("{e}"))
}

async fn run(args: Args) -> Result<bool> {
    // rediss:// needs a process-wide crypto provider for rustls (ring builds with a C compiler
    // alone); built by itself this binary has no other crate to install one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Every request carries the strongest token given (the admin token opens every route), so a
    // deployment with API_TOKEN refuses none of the suite's requests for want of one.
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = args.admin_token.as_ref().or(args.api_token.as_ref()) {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()?;
    wait_ready(&http, &args).await?;
    let redis = fulfillment_core::Redis::connect(&deployment_settings(&args)?)
        .await
        .context("cannot reach the deployment's Redis")?;
    let suite = Suite {
        run_id: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        args,
        http,
        redis,
    };
    let scenarios: Vec<(&str, ScenarioFn)> = vec![
        ("1 happy path completes", |s| Box::pin(s.happy_path())),
        ("2 out of stock cancels", |s| Box::pin(s.out_of_stock())),
        ("3 declined card compensates", |s| {
            Box::pin(s.declined_card())
        }),
        ("6 poison entry dead-lettered", |s| {
            Box::pin(s.poison_entry())
        }),
        ("11 bad input refused", |s| Box::pin(s.bad_input())),
        ("13 cancel compensates or conflicts", |s| {
            Box::pin(s.cancel())
        }),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in scenarios {
        let started = Instant::now();
        match scenario(&suite).await {
            Ok(()) => {
                passed += 1;
                println!("PASS {name} ({} ms)", started.elapsed().as_millis());
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {name}: {e:#}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

type ScenarioFn =
    for<'a> fn(&'a Suite) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;

async fn wait_ready(http: &reqwest::Client, args: &Args) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.wait_ready_secs);
    loop {
        let ready = http.get(format!("{}/readyz", args.api_url)).send().await;
        if matches!(&ready, Ok(r) if r.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the API at {} is not ready after {}s",
                args.api_url,
                args.wait_ready_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Suite {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.args.api_url)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.args.timeout_secs)
    }

    async fn json(response: reqwest::Response) -> Result<(u16, Value)> {
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn get(&self, path: &str) -> Result<(u16, Value)> {
        Self::json(self.http.get(self.url(path)).send().await?).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        Self::json(self.http.post(self.url(path)).json(body).send().await?).await
    }

    /// A product of this run's own, so runs never share stock.
    async fn product(&self, name: &str, stock: i64) -> Result<String> {
        let id = format!("e2e-{}-{name}", self.run_id);
        let (status, body) = self
            .post(
                "/products",
                &json!({"id": id, "name": id, "price": 1250, "stock": stock}),
            )
            .await?;
        ensure!(status == 201, "creating product {id}: {status} {body}");
        Ok(id)
    }

    async fn place(&self, product: &str, quantity: u32, token: &str) -> Result<String> {
        let (status, body) = self
            .post(
                "/orders",
                &json!({
                    "customer_id": format!("e2e-{}", self.run_id),
                    "customer_email": format!("e2e-{}@example.com", self.run_id),
                    "items": [{"product_id": product, "quantity": quantity}],
                    "payment_token": token,
                }),
            )
            .await?;
        ensure!(status == 201, "placing an order: {status} {body}");
        body["id"]
            .as_str()
            .map(str::to_owned)
            .context("order without id")
    }

    async fn wait_status(&self, id: &str, wanted: &str) -> Result<Value> {
        let deadline = Instant::now() + self.timeout();
        loop {
            let (_, order) = self.get(&format!("/orders/{id}")).await?;
            if order["status"] == wanted {
                return Ok(order);
            }
            if Instant::now() > deadline {
                bail!(
                    "order {id} is {} after {:?}, expected {wanted}",
                    order["status"],
                    self.timeout()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `check` until it returns true or the timeout passes.
    async fn eventually<F, Fut>(&self, what: &str, check: F) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let deadline = Instant::now() + self.timeout();
        while !check().await? {
            if Instant::now() > deadline {
                bail!("not within {:?}: {what}", self.timeout());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn stock(&self, product: &str) -> Result<i64> {
        let (_, body) = self.get(&format!("/products/{product}")).await?;
        body["stock"].as_i64().context("product without stock")
    }

    async fn history(&self, id: &str) -> Result<Vec<String>> {
        let (_, body) = self.get(&format!("/orders/{id}/events")).await?;
        Ok(body["events"]
            .as_array()
            .context("history without events")?
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("").to_owned())
            .collect())
    }

    async fn happy_path(&self) -> Result<()> {
        let product = self.product("happy", 10).await?;
        let id = self.place(&product, 2, "tok_visa").await?;
        let order = self.wait_status(&id, "COMPLETED").await?;
        ensure!(
            order["total"] == 2500,
            "total priced from the catalog: {}",
            order["total"]
        );
        ensure!(
            self.stock(&product).await? == 8,
            "stock down by the quantity"
        );
        self.eventually("confirmation recorded", || async {
            Ok(self
                .history(&id)
                .await?
                .contains(&"NotificationSent".to_owned()))
        })
        .await?;
        let history = self.history(&id).await?;
        ensure!(
            history
                == [
                    "OrderPlaced",
                    "StockReserved",
                    "PaymentProcessed",
                    "ShipmentPrepared",
                    "NotificationSent"
                ],
            "history in stream order, each event once: {history:?}"
        );
        Ok(())
    }

    async fn out_of_stock(&self) -> Result<()> {
        let product = self.product("empty", 0).await?;
        let id = self.place(&product, 1, "tok_visa").await?;
        let order = self.wait_status(&id, "CANCELLED").await?;
        ensure!(
            order["status_reason"] == "insufficient_stock",
            "reason: {}",
            order["status_reason"]
        );
        ensure!(self.stock(&product).await? == 0, "stock untouched");
        let history = self.history(&id).await?;
        ensure!(
            !history.contains(&"PaymentProcessed".to_owned()),
            "no charge: {history:?}"
        );
        Ok(())
    }

    async fn declined_card(&self) -> Result<()> {
        let product = self.product("declined", 5).await?;
        let id = self.place(&product, 3, "tok_chargeDeclined").await?;
        let order = self.wait_status(&id, "CANCELLED").await?;
        ensure!(
            order["status_reason"] == "card_declined",
            "reason: {}",
            order["status_reason"]
        );
        self.eventually("stock restored", || async {
            Ok(self.stock(&product).await? == 5)
        })
        .await?;
        self.eventually("release and notice recorded", || async {
            let h = self.history(&id).await?;
            Ok(h.contains(&"StockReleased".to_owned())
                && h.contains(&"NotificationSent".to_owned()))
        })
        .await?;
        let history = self.history(&id).await?;
        ensure!(
            !history.contains(&"ShipmentPrepared".to_owned()),
            "no label: {history:?}"
        );
        let notices = history.iter().filter(|t| *t == "NotificationSent").count();
        ensure!(notices == 1, "one cancellation notice, saw {notices}");
        Ok(())
    }

    async fn poison_entry(&self) -> Result<()> {
        let mut redis = self.redis.conn();
        let stream = &self.redis.layout().partitions()[0].stream;
        let poison_id: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("e2e_poison")
            .arg(&self.run_id)
            .arg("payload")
            .arg("{this is not json")
            .query_async(&mut redis)
            .await?;
        let mut found = None;
        let deadline = Instant::now() + self.timeout();
        while found.is_none() {
            found = self.find_dead_letter(&poison_id).await?;
            if found.is_none() {
                ensure!(
                    Instant::now() < deadline,
                    "poison entry {poison_id} never reached the DLQ"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let letter = found.context("dead letter")?;
        ensure!(
            letter["fields"]["e2e_poison"] == self.run_id.as_str(),
            "original fields kept: {letter}"
        );
        ensure!(
            letter["error"].as_str().is_some_and(|e| !e.is_empty()),
            "error recorded: {letter}"
        );
        // Consumers keep going.
        let product = self.product("after-poison", 3).await?;
        let id = self.place(&product, 1, "tok_visa").await?;
        self.wait_status(&id, "COMPLETED").await?;
        let dlq_id = letter["id"].as_str().context("dead letter id")?;
        let response = self
            .http
            .delete(self.url(&format!("/dlq/{dlq_id}")))
            .send()
            .await?;
        ensure!(
            response.status().as_u16() == 204,
            "deleting the dead letter: {}",
            response.status()
        );
        Ok(())
    }

    async fn find_dead_letter(&self, source_id: &str) -> Result<Option<Value>> {
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/dlq?limit=1000&cursor={c}"),
                None => "/dlq?limit=1000".to_owned(),
            };
            let (status, page) = self.get(&path).await?;
            ensure!(status == 200, "GET /dlq: {status} {page}");
            let entries = page["entries"].as_array().context("entries")?;
            if let Some(letter) = entries.iter().find(|e| e["source_id"] == source_id) {
                return Ok(Some(letter.clone()));
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(None),
            }
        }
    }

    async fn bad_input(&self) -> Result<()> {
        let customer = format!("e2e-bad-{}", self.run_id);
        let mut redis = self.redis.conn();
        let mut before = Vec::new();
        for partition in self.redis.layout().partitions() {
            let last: Vec<redis::Value> = redis::cmd("XREVRANGE")
                .arg(&partition.stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut redis)
                .await?;
            before.push(last);
        }
        let order = |items: Value| {
            json!({"customer_id": customer, "customer_email": "bad@example.com", "items": items})
                .to_string()
        };
        let cases = [
            (
                "malformed json",
                "{\"customer_id\":".to_owned(),
                "application/json",
                400,
            ),
            (
                "missing fields",
                json!({"customer_id": customer}).to_string(),
                "application/json",
                422,
            ),
            (
                "quantity zero",
                order(json!([{"product_id": "product-A", "quantity": 0}])),
                "application/json",
                422,
            ),
            (
                "quantity negative",
                order(json!([{"product_id": "product-A", "quantity": -1}])),
                "application/json",
                422,
            ),
            (
                "quantity enormous",
                order(json!([{"product_id": "product-A", "quantity": 1e300}])),
                "application/json",
                422,
            ),
            (
                "unknown product",
                order(json!([{"product_id": "no-such-product", "quantity": 1}])),
                "application/json",
                422,
            ),
            (
                "too many items",
                order(json!(vec![
                    json!({"product_id": "product-A", "quantity": 1});
                    51
                ])),
                "application/json",
                422,
            ),
            (
                "oversized body",
                format!("{{\"customer_id\": \"{}\"}}", "x".repeat(200_000)),
                "application/json",
                413,
            ),
            (
                "wrong content type",
                order(json!([{"product_id": "product-A", "quantity": 1}])),
                "text/plain",
                415,
            ),
        ];
        for (what, body, content_type, status) in cases {
            let response = self
                .http
                .post(self.url("/orders"))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await?;
            let got = response.status().as_u16();
            let error: Value = response.json().await.unwrap_or(Value::Null);
            ensure!(
                got == status,
                "{what}: expected {status}, got {got} {error}"
            );
            ensure!(
                error["error"]["code"].is_string(),
                "{what}: no JSON error code: {error}"
            );
        }
        for (partition, last) in self.redis.layout().partitions().iter().zip(before) {
            let since = match last.first() {
                Some(redis::Value::Array(entry)) => match entry.first() {
                    Some(redis::Value::BulkString(id)) => {
                        format!("({}", String::from_utf8_lossy(id))
                    }
                    _ => "-".to_owned(),
                },
                _ => "-".to_owned(),
            };
            let after: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(&partition.stream)
                .arg(since)
                .arg("+")
                .query_async(&mut redis)
                .await?;
            let leaked = after
                .iter()
                .any(|(_, fields)| fields.iter().any(|(_, v)| v.contains(&customer)));
            ensure!(
                !leaked,
                "bad input published an event on {}",
                partition.stream
            );
        }
        Ok(())
    }

    async fn cancel(&self) -> Result<()> {
        let product = self.product("cancel", 10).await?;
        // Cancel right after placing; the pipeline may be faster, so try a few times for a 202.
        let mut cancelled = None;
        for _ in 0..10 {
            let id = self.place(&product, 1, "tok_visa").await?;
            let (status, body) = self
                .post(&format!("/orders/{id}/cancel"), &json!({}))
                .await?;
            match status {
                202 => {
                    cancelled = Some(id);
                    break;
                }
                // Too late: completed (order_final), or its shipment label already made
                // (order_shipped, while the order still shows PAID or RESERVED).
                409 => ensure!(
                    body["error"]["code"] == "order_final"
                        || body["error"]["code"] == "order_shipped",
                    "409 without code: {body}"
                ),
                _ => bail!("cancel answered {status} {body}"),
            }
        }
        let id = cancelled.context("no cancel arrived before completion in 10 tries")?;
        let order = self.wait_status(&id, "CANCELLED").await?;
        ensure!(
            order["status_reason"] == "cancelled_by_request",
            "reason: {}",
            order["status_reason"]
        );
        // Compensation: all stock not held by completed orders comes back.
        self.eventually("stock restored for the cancelled order", || async {
            let (_, page) = self.get("/orders?limit=200&status=COMPLETED").await?;
            let completed = page["orders"]
                .as_array()
                .map(|orders| {
                    orders
                        .iter()
                        .filter(|o| o["items"][0]["product_id"] == product.as_str())
                        .count() as i64
                })
                .unwrap_or(0);
            Ok(self.stock(&product).await? == 10 - completed)
        })
        .await?;
        let (status, body) = self
            .post(&format!("/orders/{id}/cancel"), &json!({}))
            .await?;
        ensure!(status == 409, "cancelling twice: {status} {body}");

        let done = self.place(&product, 1, "tok_visa").await?;
        self.wait_status(&done, "COMPLETED").await?;
        let (status, body) = self
            .post(&format!("/orders/{done}/cancel"), &json!({}))
            .await?;
        ensure!(
            status == 409 && body["error"]["code"] == "order_final",
            "after completion: {status} {body}"
        );
        Ok(())
    }
}
