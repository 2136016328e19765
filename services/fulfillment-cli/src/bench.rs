//! `fulfillment bench`: a load generator that places orders through the HTTP API of any
//! deployment and follows each one to its final status.
//!
//! It creates a product of its own with enough stock, listens on `/ws` before the first order,
//! places the orders (as fast as `--concurrency` allows, or at a fixed `--rate`), and takes each
//! order's completion time from its final status message (or, when the feed missed it, from a
//! poll). Throughput is orders finished per second from the first request to the last final
//! status; latency is per order, from sending its POST to its final status. Given the deployment's
//! Redis (one, or a cluster's masters), it samples Redis's memory and reports its CPU time and
//! commands per finished order (`INFO cpu`, `INFO commandstats`, read before and after), after
//! waiting for the notification service to record a message for every finished order (the
//! messages per second it kept up).

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub api_url: String,
    pub orders: usize,
    /// Orders per second; `None` places them as fast as the concurrency allows.
    pub rate: Option<f64>,
    pub concurrency: usize,
    /// Sent as the bearer token of every request and the feed: the admin token (it opens every
    /// route), or the callers' token when only that is set.
    pub token: Option<String>,
    /// Processes whose CPU and memory are sampled during the run.
    pub pids: Vec<u32>,
    /// The deployment's Redis (one, or a cluster): memory sampled during the run, CPU and
    /// commands read before and after.
    pub redis: Option<fulfillment_core::Settings>,
    /// Longest wait for the last order to finish after the last one is placed.
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub orders: usize,
    pub accepted: usize,
    pub errors: usize,
    pub completed: usize,
    pub cancelled: usize,
    pub unfinished: usize,
    /// From the first request to the last final status.
    pub seconds: f64,
    pub orders_per_second: f64,
    /// Placement rate actually achieved.
    pub placed_per_second: f64,
    pub latency_ms: Latency,
    pub processes: Vec<ProcessUsage>,
    /// Redis's `used_memory` over the run (every master's added up), with `--redis-url` or
    /// `--redis-cluster-nodes`.
    pub redis_memory: Option<RedisMemory>,
    /// Redis's CPU time and commands per finished order over the run.
    pub redis_cpu: Option<RedisCpu>,
    /// With the Redis given: how fast the notification service recorded a message per order.
    pub mail: Option<MailRate>,
}

/// The notification service's pace: messages recorded (sent, or refused for good) for this run's
/// orders, from the first order placed to the last message recorded (mail follows completion, so
/// this is the rate of the slower of the orders and the mailer).
#[derive(Debug, Clone, Serialize)]
pub struct MailRate {
    pub messages: u64,
    pub per_second: f64,
    /// How long after the last order's final status the last message was recorded.
    pub after_last_final_ms: f64,
}

/// Redis's work per finished order, from `INFO cpu` (`used_cpu_user` + `used_cpu_sys`) and
/// `INFO commandstats` read before and after the run, on every master.
#[derive(Debug, Clone, Serialize)]
pub struct RedisCpu {
    /// Every master's CPU time added up, per order.
    pub us_per_order: f64,
    /// The CPU time of the masters' forked children that ended during the run (append-only
    /// rewrites; `used_cpu_user_children` + `used_cpu_sys_children`), per order: not the
    /// server's own thread, but the same machine's cores.
    pub children_us_per_order: f64,
    /// Every command call, per order.
    pub calls_per_order: f64,
    pub masters: Vec<MasterCpu>,
    /// Every command run, the most time first (the text report shows the first ten).
    pub commands: Vec<CommandCost>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MasterCpu {
    pub node: String,
    pub us_per_order: f64,
    pub calls_per_order: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandCost {
    pub command: String,
    pub calls_per_order: f64,
    pub us_per_call: f64,
    pub us_per_order: f64,
}

/// One master's counters at one moment: CPU seconds (its own, its children's), and per command
/// (calls, µs).
type RedisCounters = Vec<(String, (f64, f64), HashMap<String, (f64, f64)>)>;

/// Redis's `used_memory` sampled every [`MEMORY_EVERY`] from the first request to the end.
#[derive(Debug, Clone, Serialize)]
pub struct RedisMemory {
    pub start_mb: f64,
    pub max_mb: f64,
    /// Mean over the second quarter of the run (after a warm-up as long as the retention, the
    /// plateau) and over the last quarter: equal when memory is flat.
    pub second_quarter_mean_mb: f64,
    pub last_quarter_mean_mb: f64,
    /// (seconds since the start, MB), every sample.
    pub samples: Vec<(f64, f64)>,
}

/// How often `--redis-url` samples memory.
pub const MEMORY_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessUsage {
    pub pid: u32,
    pub name: String,
    /// Average CPU over the run, in percent of one core.
    pub cpu_percent: f64,
    pub max_rss_mb: f64,
}

#[derive(Debug, Default)]
struct Track {
    sent: HashMap<String, Instant>,
    finished: HashMap<String, (Instant, String)>,
}

pub async fn run(options: BenchOptions) -> anyhow::Result<BenchReport> {
    if options.orders == 0 || options.concurrency == 0 {
        bail!("--orders and --concurrency must be at least 1");
    }
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &options.token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency)
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()?;
    let product = create_product(&http, &options).await?;
    let track: Arc<Mutex<Track>> = Arc::default();
    let feed = follow_statuses(&options.api_url, options.token.as_deref(), track.clone()).await?;
    let sampler = Sampler::start(&options.pids);
    let redis = match &options.redis {
        Some(settings) => Some(
            fulfillment_core::Redis::connect(settings)
                .await
                .with_context(|| format!("{} does not answer", settings.redis.redacted_url()))?,
        ),
        None => None,
    };
    let memory = redis.clone().map(sample_redis_memory);
    let counters_before = match &redis {
        Some(redis) => Some(redis_counters(redis).await?),
        None => None,
    };
    let messages_before = match &redis {
        Some(redis) => Some(messages_recorded(redis).await?),
        None => None,
    };

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..options.concurrency {
        let (http, options, product) = (http.clone(), options.clone(), product.clone());
        let (track, next, errors) = (track.clone(), next.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= options.orders {
                    return;
                }
                if let Some(rate) = options.rate {
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent = Instant::now();
                match place(&http, &options.api_url, &product, i).await {
                    Ok(id) => {
                        track.lock().await.sent.insert(id, sent);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("order {i} refused: {e:#}");
                        }
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let placed_in = started.elapsed();

    // Wait for every accepted order to finish; poll the ones the feed has not reported.
    let deadline = Instant::now() + options.drain_timeout;
    loop {
        let missing: Vec<String> = {
            let t = track.lock().await;
            t.sent
                .keys()
                .filter(|id| !t.finished.contains_key(*id))
                .cloned()
                .collect()
        };
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if Instant::now() + Duration::from_secs(1) > deadline || missing.len() < 200 {
            for id in missing.iter().take(200) {
                if let Some(status) = final_status(&http, &options.api_url, id).await {
                    track
                        .lock()
                        .await
                        .finished
                        .entry(id.clone())
                        .or_insert((Instant::now(), status));
                }
            }
        }
    }
    feed.abort();
    // Then for the mail: a message recorded for every finished order.
    let mail_done = match (&redis, messages_before) {
        (Some(redis), Some(before)) => {
            let finished = track.lock().await.finished.len() as u64;
            loop {
                let messages = messages_recorded(redis).await?.saturating_sub(before);
                if messages >= finished || Instant::now() > deadline {
                    break Some((messages, Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        _ => None,
    };
    let usage = sampler.stop();
    let counters_after = match &redis {
        Some(redis) => Some(redis_counters(redis).await?),
        None => None,
    };
    let redis_memory = match memory {
        Some(task) => {
            task.abort();
            summarize_memory(task.samples().await)
        }
        None => None,
    };

    let t = track.lock().await;
    let mut latencies: Vec<f64> = t
        .finished
        .iter()
        .filter_map(|(id, (at, _))| {
            t.sent
                .get(id)
                .map(|s| at.duration_since(*s).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let last = t
        .finished
        .values()
        .map(|(at, _)| *at)
        .max()
        .unwrap_or(started);
    let seconds = last.duration_since(started).as_secs_f64().max(f64::EPSILON);
    let mail = mail_done.map(|(messages, at)| MailRate {
        messages,
        per_second: messages as f64 / at.duration_since(started).as_secs_f64().max(f64::EPSILON),
        after_last_final_ms: at.saturating_duration_since(last).as_secs_f64() * 1000.0,
    });
    let count = |status: &str| t.finished.values().filter(|(_, s)| s == status).count();
    let accepted = t.sent.len();
    let redis_cpu = counters_before
        .zip(counters_after)
        .map(|(before, after)| redis_cost(&before, &after, t.finished.len().max(1)));
    Ok(BenchReport {
        orders: options.orders,
        accepted,
        errors: errors.load(Ordering::Relaxed),
        completed: count("COMPLETED"),
        cancelled: count("CANCELLED"),
        unfinished: accepted - t.finished.len(),
        seconds,
        orders_per_second: t.finished.len() as f64 / seconds,
        placed_per_second: accepted as f64 / placed_in.as_secs_f64().max(f64::EPSILON),
        latency_ms: Latency {
            p50: percentile(&latencies, 0.50),
            p95: percentile(&latencies, 0.95),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().copied().unwrap_or(0.0),
        },
        processes: usage,
        redis_memory,
        redis_cpu,
        mail,
    })
}

/// Messages the notification service recorded, ever: sent or refused, of both kinds, over every
/// partition.
async fn messages_recorded(redis: &fulfillment_core::Redis) -> anyhow::Result<u64> {
    let mut total = 0;
    for partition in redis.layout().partitions() {
        let mut fields = Vec::new();
        for kind in fulfillment_events::states::NotificationKind::ALL {
            fields.push(fulfillment_events::keys::counter::notifications(
                kind.as_str(),
            ));
            fields.push(fulfillment_events::keys::counter::notifications_failed(
                kind.as_str(),
            ));
        }
        let counts: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg(partition.keys.counters())
            .arg(&fields)
            .query_async(&mut redis.conn())
            .await?;
        total += counts.into_iter().flatten().sum::<u64>();
    }
    Ok(total)
}

/// Every master's CPU seconds and command counters now.
async fn redis_counters(redis: &fulfillment_core::Redis) -> anyhow::Result<RedisCounters> {
    let infos = redis.info_of_masters(&["cpu", "commandstats"]).await?;
    Ok(infos
        .into_iter()
        .map(|(node, info)| {
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let cpu = (
                field("used_cpu_user") + field("used_cpu_sys"),
                field("used_cpu_user_children") + field("used_cpu_sys_children"),
            );
            let commands = info
                .lines()
                .filter_map(|l| {
                    let (name, stats) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                    let stat = |key: &str| {
                        stats
                            .split(',')
                            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                            .and_then(|v| v.parse::<f64>().ok())
                            .unwrap_or(0.0)
                    };
                    Some((name.to_owned(), (stat("calls"), stat("usec"))))
                })
                .collect();
            (node, cpu, commands)
        })
        .collect())
}

/// The difference of two readings, per order.
fn redis_cost(before: &RedisCounters, after: &RedisCounters, orders: usize) -> RedisCpu {
    let orders = orders as f64;
    let mut masters = Vec::new();
    let mut children_us = 0.0;
    let mut commands: HashMap<String, (f64, f64)> = HashMap::new();
    for (node, cpu, after_commands) in after {
        let (cpu_before, before_commands) = before
            .iter()
            .find(|(n, _, _)| n == node)
            .map(|(_, c, cmds)| (*c, cmds.clone()))
            .unwrap_or_default();
        let mut calls = 0.0;
        for (name, (c, us)) in after_commands {
            let (c0, us0) = before_commands.get(name).copied().unwrap_or((0.0, 0.0));
            let entry = commands.entry(name.clone()).or_default();
            entry.0 += c - c0;
            entry.1 += us - us0;
            calls += c - c0;
        }
        children_us += (cpu.1 - cpu_before.1) * 1e6;
        masters.push(MasterCpu {
            node: node.clone(),
            us_per_order: (cpu.0 - cpu_before.0) * 1e6 / orders,
            calls_per_order: calls / orders,
        });
    }
    let mut commands: Vec<CommandCost> = commands
        .into_iter()
        .filter(|(_, (calls, _))| *calls > 0.0)
        .map(|(command, (calls, us))| CommandCost {
            command,
            calls_per_order: calls / orders,
            us_per_call: us / calls,
            us_per_order: us / orders,
        })
        .collect();
    commands.sort_by(|a, b| b.us_per_order.total_cmp(&a.us_per_order));
    RedisCpu {
        us_per_order: masters.iter().map(|m| m.us_per_order).sum(),
        children_us_per_order: children_us / orders,
        calls_per_order: masters.iter().map(|m| m.calls_per_order).sum(),
        masters,
        commands,
    }
}

/// A task sampling `used_memory` until aborted.
struct MemorySampler {
    handle: tokio::task::JoinHandle<()>,
    samples: Arc<Mutex<Vec<(f64, f64)>>>,
}

impl MemorySampler {
    fn abort(&self) {
        self.handle.abort();
    }

    async fn samples(&self) -> Vec<(f64, f64)> {
        self.samples.lock().await.clone()
    }
}

fn sample_redis_memory(redis: fulfillment_core::Redis) -> MemorySampler {
    let samples: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
    let into = samples.clone();
    let started = Instant::now();
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(MEMORY_EVERY);
        loop {
            tick.tick().await;
            let Ok(infos) = redis.info_of_masters(&["memory"]).await else {
                continue;
            };
            let bytes: Option<u64> = infos.iter().map(|(_, info)| used_memory(info)).sum();
            if let Some(bytes) = bytes {
                let at = started.elapsed().as_secs_f64();
                into.lock().await.push((at, bytes as f64 / 1_000_000.0));
            }
        }
    });
    MemorySampler { handle, samples }
}

/// `used_memory` from an `INFO memory` reply.
fn used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

fn summarize_memory(samples: Vec<(f64, f64)>) -> Option<RedisMemory> {
    let (&(_, start_mb), &(end, _)) = (samples.first()?, samples.last()?);
    let mean_between = |from: f64, to: f64| {
        let within: Vec<f64> = samples
            .iter()
            .filter(|(t, _)| *t >= from * end && *t <= to * end)
            .map(|(_, mb)| *mb)
            .collect();
        within.iter().sum::<f64>() / within.len().max(1) as f64
    };
    Some(RedisMemory {
        start_mb,
        max_mb: samples.iter().map(|(_, mb)| *mb).fold(0.0, f64::max),
        second_quarter_mean_mb: mean_between(0.25, 0.5),
        last_quarter_mean_mb: mean_between(0.75, 1.0),
        samples,
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn create_product(http: &reqwest::Client, options: &BenchOptions) -> anyhow::Result<String> {
    let id = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let response = http
        .post(format!("{}/products", options.api_url))
        .json(&serde_json::json!({
            "id": id, "name": "bench", "price": 100, "stock": options.orders.saturating_mul(2),
        }))
        .send()
        .await
        .context("cannot reach the API")?;
    if response.status().as_u16() != 201 {
        bail!(
            "creating the bench product: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    Ok(id)
}

async fn place(
    http: &reqwest::Client,
    api: &str,
    product: &str,
    i: usize,
) -> anyhow::Result<String> {
    let response = http
        .post(format!("{api}/orders"))
        .json(&serde_json::json!({
            "customer_id": format!("bench-{i}"), "customer_email": "bench@example.com",
            "items": [{"product_id": product, "quantity": 1}],
        }))
        .send()
        .await?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    match (status, body["id"].as_str()) {
        (201, Some(id)) => Ok(id.to_owned()),
        _ => bail!("{status} {body}"),
    }
}

async fn final_status(http: &reqwest::Client, api: &str, id: &str) -> Option<String> {
    let order: serde_json::Value = http
        .get(format!("{api}/orders/{id}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let status = order["status"].as_str()?;
    matches!(status, "COMPLETED" | "CANCELLED" | "FAILED").then(|| status.to_owned())
}

/// Records the moment each order reaches a final status, from `/ws`.
async fn follow_statuses(
    api: &str,
    token: Option<&str>,
    track: Arc<Mutex<Track>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/ws", api.replacen("http", "ws", 1));
    let mut request = url
        .as_str()
        .into_client_request()
        .with_context(|| format!("not a WebSocket URL: {url}"))?;
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}")
                .parse()
                .context("the token is not a valid header value")?,
        );
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("cannot open {url}"))?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            let tokio_tungstenite::tungstenite::Message::Text(text) = message else {
                continue;
            };
            let Ok(change) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if let (Some(id), Some(status)) =
                (change["order_id"].as_str(), change["status"].as_str())
                && matches!(status, "COMPLETED" | "CANCELLED" | "FAILED")
            {
                track
                    .lock()
                    .await
                    .finished
                    .entry(id.to_owned())
                    .or_insert((Instant::now(), status.to_owned()));
            }
        }
    }))
}

/// Samples CPU time and resident memory of processes from /proc while the bench runs.
struct Sampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<ProcessUsage>>>,
}

impl Sampler {
    fn start(pids: &[u32]) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pids = pids.to_vec();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let ticks = 100.0; // USER_HZ on Linux
            let started = Instant::now();
            let first: Vec<Option<u64>> = pids.iter().map(|p| cpu_ticks(*p)).collect();
            let mut max_rss = vec![0u64; pids.len()];
            while !flag.load(Ordering::Relaxed) {
                for (i, pid) in pids.iter().enumerate() {
                    max_rss[i] = max_rss[i].max(rss_kb(*pid).unwrap_or(0));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let elapsed = started.elapsed().as_secs_f64().max(f64::EPSILON);
            pids.iter()
                .enumerate()
                .map(|(i, pid)| {
                    let used = cpu_ticks(*pid)
                        .zip(first[i])
                        .map(|(b, a)| b.saturating_sub(a))
                        .unwrap_or(0);
                    ProcessUsage {
                        pid: *pid,
                        name: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                            .map(|s| s.trim().to_owned())
                            .unwrap_or_else(|_| "?".into()),
                        cpu_percent: used as f64 / ticks / elapsed * 100.0,
                        max_rss_mb: max_rss[i] as f64 / 1024.0,
                    }
                })
                .collect()
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> Vec<ProcessUsage> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime is the 14th, stime the 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

/// The report for people.
pub fn render(report: &BenchReport) -> String {
    let mut out = format!(
        "orders {} accepted {} errors {} | completed {} cancelled {} unfinished {}\n\
         {:.0} orders/s finished over {:.1} s (placed at {:.0}/s)\n\
         completion latency ms: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}\n",
        report.orders,
        report.accepted,
        report.errors,
        report.completed,
        report.cancelled,
        report.unfinished,
        report.orders_per_second,
        report.seconds,
        report.placed_per_second,
        report.latency_ms.p50,
        report.latency_ms.p95,
        report.latency_ms.p99,
        report.latency_ms.max,
    );
    for p in &report.processes {
        out.push_str(&format!(
            "process {} ({}): cpu {:.0}% of a core, max rss {:.1} MB\n",
            p.pid, p.name, p.cpu_percent, p.max_rss_mb
        ));
    }
    if let Some(r) = &report.redis_cpu {
        out.push_str(&format!(
            "redis per order: {:.0} us of CPU, {:.1} calls; its append-only rewrites {:.0} us\n",
            r.us_per_order, r.calls_per_order, r.children_us_per_order
        ));
        if r.masters.len() > 1 {
            for m in &r.masters {
                out.push_str(&format!(
                    "  master {}: {:.0} us, {:.1} calls\n",
                    m.node, m.us_per_order, m.calls_per_order
                ));
            }
        }
        for c in r.commands.iter().filter(|c| c.calls_per_order >= 0.005) {
            out.push_str(&format!(
                "  {:<12} {:>5.2} calls x {:>5.1} us = {:>6.1} us\n",
                c.command, c.calls_per_order, c.us_per_call, c.us_per_order
            ));
        }
    }
    if let Some(m) = &report.mail {
        out.push_str(&format!(
            "mail: {} messages recorded, {:.0}/s from the first order to the last message, \
             the last {:.0} ms after the last final status\n",
            m.messages, m.per_second, m.after_last_final_ms
        ));
    }
    if let Some(m) = &report.redis_memory {
        out.push_str(&format!(
            "redis used_memory MB: start {:.1}, max {:.1}, mean of the 2nd quarter {:.1}, of the last quarter {:.1} ({} samples)\n",
            m.start_mb,
            m.max_mb,
            m.second_quarter_mean_mb,
            m.last_quarter_mean_mb,
            m.samples.len()
        ));
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::percentile(&v, 0.5), 50.0);
        assert_eq!(super::percentile(&v, 0.99), 99.0);
        assert_eq!(super::percentile(&v, 1.0), 100.0);
        assert_eq!(super::percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn memory_quarters_are_compared() {
        assert_eq!(
            super::used_memory("# Memory\r\nused_memory:1048576\r\n"),
            Some(1_048_576)
        );
        let samples: Vec<(f64, f64)> = (0..=100)
            .map(|t| (f64::from(t), 10.0 + f64::from(t.min(25))))
            .collect();
        let m = super::summarize_memory(samples).expect("samples");
        assert_eq!(m.start_mb, 10.0);
        assert_eq!(m.max_mb, 35.0);
        assert_eq!(m.second_quarter_mean_mb, 35.0);
        assert_eq!(m.last_quarter_mean_mb, 35.0);
        assert!(super::summarize_memory(Vec::new()).is_none());
    }
}
