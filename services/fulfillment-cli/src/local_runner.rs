//! `fulfillment up`: every service in one process, each replica its own consumer, the retry
//! worker on an interval, and a private `redis-server` when none answers.
//!
//! The pipeline is built from the same library functions the images run ([`Pipeline::start`]),
//! so the integration tests and the local runner exercise the code that ships.
//!
//! The private Redis is stopped last: it runs in a process group of its own, so a Ctrl-C at the
//! terminal (SIGINT to the foreground group) reaches `up` alone, which finishes and acknowledges
//! the work in hand and only then shuts Redis down. `up` killed outright (SIGKILL, a closed
//! terminal's SIGHUP) cannot stop it; the next `up` on the same state dir adopts that Redis (it
//! knows it by the pid file Redis keeps there) and stops it on its own way out.

use anyhow::{Context, bail};
use fulfillment_core::runtime::consumer::run_consumer;
use fulfillment_core::runtime::startup::{consumer_config, prepare_redis};
use fulfillment_core::settings::RedisSettings;
use fulfillment_core::{Redis, Service, Settings};
use fulfillment_pipeline::ServiceSettings;
use retry_worker::RetryWorker;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const MAX_REPLICAS: usize = 64;

/// Consumers per service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicas(BTreeMap<Service, usize>);

impl Default for Replicas {
    fn default() -> Self {
        Self(Service::ALL.iter().map(|s| (*s, 1)).collect())
    }
}

impl Replicas {
    /// Parses `inventory=3,shipping=2`; unnamed services keep one consumer.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut replicas = Self::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, count) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not service=count"))?;
            let service = Service::parse(name).ok_or_else(|| {
                let names: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
                format!("unknown service {name:?}; one of {}", names.join(", "))
            })?;
            let count: usize = count
                .parse()
                .ok()
                .filter(|c| (1..=MAX_REPLICAS).contains(c))
                .ok_or_else(|| format!("replicas of {name} must be 1 to {MAX_REPLICAS}"))?;
            replicas.0.insert(service, count);
        }
        Ok(replicas)
    }

    /// No consumers at all (the API alone), for tests that start consumers later.
    pub fn none() -> Self {
        Self(Service::ALL.iter().map(|s| (*s, 0)).collect())
    }

    pub fn of(&self, service: Service) -> usize {
        self.0.get(&service).copied().unwrap_or(1)
    }

    pub fn set(&mut self, service: Service, count: usize) {
        self.0.insert(service, count);
    }
}

/// A running pipeline: API, consumers and (optionally) the retry loop.
#[derive(Debug)]
pub struct Pipeline {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl Pipeline {
    /// Starts the API on `listener` (if given), `replicas` consumers per service and, with
    /// `retry_loop`, the retry worker every `RETRY_INTERVAL_MS`.
    pub async fn start(
        settings: &Settings,
        own: &ServiceSettings,
        redis: &Redis,
        replicas: &Replicas,
        listener: Option<TcpListener>,
        retry_loop: bool,
    ) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        if let Some(listener) = listener {
            let state = order_service::prepare(Arc::new(settings.clone()), redis.clone()).await?;
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = order_service::serve(state, listener, stop).await {
                    tracing::error!(error = %e, "API stopped");
                }
            }));
        }
        for service in Service::ALL {
            let handler = fulfillment_pipeline::handler(service, redis, own);
            for i in 1..=replicas.of(service) {
                tasks.push(tokio::spawn(run_consumer(
                    redis.clone(),
                    handler.clone(),
                    consumer_config(settings, &format!("{service}-{i}")),
                    shutdown.clone(),
                )));
            }
        }
        if retry_loop {
            let mut retry_settings = settings.clone();
            retry_settings.consumer_name = "retry-worker".into();
            let worker = RetryWorker::new(
                redis.clone(),
                retry_settings.clone(),
                fulfillment_pipeline::all_handlers(redis, own),
            );
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move { worker.run_loop(stop).await }));
        }
        Ok(Self {
            shutdown,
            tasks,
            grace: settings.shutdown_grace(),
        })
    }

    /// Stops reading, lets every consumer finish and acknowledge its batch, then returns.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(self.grace, all).await.is_err() {
            tracing::warn!("some work did not finish within the grace period");
        }
    }
}

/// What `fulfillment up` was asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub http: std::net::SocketAddr,
    pub replicas: Replicas,
    pub unstable: bool,
    /// Where a private Redis keeps its append-only file.
    pub state_dir: PathBuf,
}

/// Runs everything until `shutdown`; stops the private Redis, if it started one, on the way out.
pub async fn up(
    settings: Settings,
    mut own: ServiceSettings,
    options: UpOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if options.unstable {
        own.inventory.failure_rate = 0.4;
    }
    // No relay: each message is an .eml file beside the private Redis's data.
    if own.notification.smtp_url.is_none() && own.notification.dir.is_none() {
        own.notification.dir = Some(options.state_dir.join("mail"));
    }
    // A cluster is the operator's: never a private one in its place.
    let private_redis = if settings.redis.is_cluster() {
        None
    } else {
        ensure_redis(&settings.redis, &options.state_dir).await?
    };
    let result = async {
        let redis = prepare_redis(&settings).await?;
        let listener = TcpListener::bind(options.http)
            .await
            .with_context(|| format!("cannot listen on --http {}", options.http))?;
        let pipeline = Pipeline::start(
            &settings,
            &own,
            &redis,
            &options.replicas,
            Some(listener),
            true,
        )
        .await?;
        tracing::info!(
            api = %format!("http://{}", options.http),
            redis = settings.redis.redacted_url(),
            partitions = settings.stream.partitions,
            inventory_failure_rate = own.inventory.failure_rate,
            mail = own.notification.describe(),
            "fulfillment is up; Ctrl-C stops it"
        );
        shutdown.cancelled().await;
        pipeline.stop().await;
        Ok(())
    }
    .await;
    if let Some(redis) = private_redis {
        redis.stop().await;
    }
    result
}

/// The file in the state dir where a private `redis-server` keeps its process id (Redis writes it
/// at start and removes it on a clean shutdown).
const PIDFILE: &str = "redis.pid";

/// How long a private Redis has to shut down (flushing its append-only file) before it is killed.
const REDIS_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A `redis-server` this process stops: one it started, or one an earlier `up` on the same state
/// dir started and left behind when it was killed.
#[derive(Debug)]
pub struct PrivateRedis {
    /// `None` for an adopted Redis, which is not this process's child.
    child: Option<Child>,
    redis: RedisSettings,
}

impl PrivateRedis {
    /// Asks it to shut down (flushing its append-only file), then waits for it.
    pub async fn stop(mut self) {
        if let Ok(info) = self.redis.connection_info()
            && let Ok(client) = redis::Client::open(info)
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query_async(&mut conn).await;
        }
        match self.child.as_mut() {
            Some(child) => {
                if tokio::time::timeout(REDIS_STOP_TIMEOUT, child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
            None => {
                let deadline = tokio::time::Instant::now() + REDIS_STOP_TIMEOUT;
                while redis_answers(&self.redis).await {
                    if tokio::time::Instant::now() >= deadline {
                        tracing::warn!("the adopted redis-server did not shut down");
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        tracing::info!("private redis-server stopped");
    }
}

/// Returns `None` when Redis answers at `REDIS_URL` (unless it is one an earlier `up` on
/// `state_dir` left behind: that one is adopted); otherwise starts a private `redis-server` on the
/// URL's port when the URL is local and `redis-server` is on the PATH, or says what is missing.
/// The private Redis runs in a process group of its own, out of reach of the terminal's Ctrl-C.
pub async fn ensure_redis(
    redis: &RedisSettings,
    state_dir: &Path,
) -> anyhow::Result<Option<PrivateRedis>> {
    use secrecy::ExposeSecret;
    let url = redis.url.expose_secret();
    if redis_answers(redis).await {
        if let Some(pid) = left_behind(redis, state_dir).await {
            tracing::info!(
                pid,
                dir = %state_dir.display(),
                "adopted the private redis-server an earlier fulfillment up left behind; it stops on exit"
            );
            return Ok(Some(PrivateRedis {
                child: None,
                redis: redis.clone(),
            }));
        }
        return Ok(None);
    }
    let (host, port) = local_host_port(url).with_context(|| {
        format!(
            "no Redis answers at REDIS_URL={} and it is not local, so none can be started",
            redis.redacted_url()
        )
    })?;
    let Some(server) = find_on_path("redis-server") else {
        bail!(
            "no Redis answers at {} and redis-server is not installed (Debian: apt-get install redis-server)",
            redis.redacted_url()
        );
    };
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let dir = std::fs::canonicalize(state_dir)?;
    let child = Command::new(server)
        .args(["--bind", &host, "--port", &port.to_string()])
        .arg("--dir")
        .arg(&dir)
        .args(["--appendonly", "yes", "--save", "", "--daemonize", "no"])
        .args(["--logfile", "redis.log"])
        .arg("--pidfile")
        .arg(dir.join(PIDFILE))
        // Its own process group: the terminal's SIGINT stops `up`, which stops Redis last.
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start redis-server")?;
    let private = PrivateRedis {
        child: Some(child),
        redis: redis.clone(),
    };
    for _ in 0..100 {
        if redis_answers(redis).await {
            tracing::info!(port, dir = %dir.display(), "started a private redis-server");
            return Ok(Some(private));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    private.stop().await;
    bail!(
        "started redis-server on port {port} but it did not answer; see {}/redis.log",
        dir.display()
    )
}

/// The process id of the Redis answering at `redis` when it is a private one that an earlier `up`
/// on `state_dir` started and no longer runs: the pid file there names the process that answers,
/// and that process's parent is not a `fulfillment` (it was handed to init when its `up` died).
/// Linux only (it reads `/proc`); elsewhere a Redis left behind is used as any other that answers.
async fn left_behind(redis: &RedisSettings, state_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(state_dir.join(PIDFILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let client = redis.connection_info().and_then(redis::Client::open).ok()?;
    let info = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("INFO")
            .arg("server")
            .query_async::<String>(&mut conn)
            .await
    };
    let info = tokio::time::timeout(Duration::from_secs(1), info)
        .await
        .ok()?
        .ok()?;
    let answering = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("process_id:"))?;
    if answering != pid.to_string() {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let parent = parent_pid(&stat)?;
    let parent_name = std::fs::read_to_string(format!("/proc/{parent}/comm")).unwrap_or_default();
    (parent_name.trim() != "fulfillment").then_some(pid)
}

/// The parent's process id in a `/proc/<pid>/stat` line (`pid (comm) state ppid ...`; the command
/// name may hold spaces and parentheses, so the fields are counted from its last `)`).
fn parent_pid(stat: &str) -> Option<u32> {
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(1)?.parse().ok()
}

async fn redis_answers(redis: &RedisSettings) -> bool {
    fulfillment_redis::connection::install_tls_provider();
    let Ok(client) = redis.connection_info().and_then(redis::Client::open) else {
        return false;
    };
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Ok(_))
    )
}

/// Host and port of a `redis://` URL whose host is this machine.
fn local_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("redis://")?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, 6379),
    };
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]").then(|| (host.to_owned(), port))
}

fn find_on_path(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|candidate| candidate.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_parse_and_refuse_nonsense() {
        let r = Replicas::parse("inventory=3, shipping=2").expect("parses");
        assert_eq!(r.of(Service::Inventory), 3);
        assert_eq!(r.of(Service::Shipping), 2);
        assert_eq!(r.of(Service::Payment), 1);
        assert!(Replicas::parse("inventory").is_err());
        assert!(Replicas::parse("billing=2").is_err());
        assert!(Replicas::parse("inventory=0").is_err());
        assert!(Replicas::parse("inventory=1000").is_err());
    }

    #[test]
    fn only_local_urls_get_a_private_redis() {
        assert_eq!(
            local_host_port("redis://127.0.0.1:6390/0"),
            Some(("127.0.0.1".into(), 6390))
        );
        assert_eq!(
            local_host_port("redis://:pw@localhost"),
            Some(("localhost".into(), 6379))
        );
        assert_eq!(local_host_port("redis://redis.prod:6379"), None);
        assert_eq!(local_host_port("rediss://127.0.0.1:6379"), None);
    }

    #[test]
    fn the_parent_is_read_past_the_command_name() {
        assert_eq!(parent_pid("4242 (redis-server) S 1 4242 4242 0"), Some(1));
        assert_eq!(parent_pid("77 (a) b (c)) S 901 77 77 0"), Some(901));
        assert_eq!(parent_pid("77 (redis-server"), None);
    }
}
