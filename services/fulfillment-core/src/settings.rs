//! Typed settings, read once at start from the environment, grouped by concern.
//!
//! Every process reads the same [`Settings`]: Redis, the stream and how it is consumed, retries,
//! retention, the API, logs and shutdown. A service with knobs of its own (inventory's failure
//! injection, payment's charge retries) reads them in its own crate through the same [`Env`]. Each
//! field names its variable and default; a value that does not parse is refused with one line
//! naming the variable ([`SettingsError`]), so a typo in a ConfigMap stops the pod instead of
//! running with a default. Secrets (the Redis URL and password, the tokens) are
//! [`SecretString`]s: `Debug` prints them as redacted, and reading one is an explicit
//! `expose_secret()`.

pub use fulfillment_redis::connection::{RedisSettings, redact};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::time::Duration;

/// A setting that could not be read; its `Display` is the one line printed at start-up.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct SettingsError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// Settings shared by every process (one ConfigMap in Kubernetes).
#[derive(Debug, Clone)]
pub struct Settings {
    pub redis: RedisSettings,
    pub stream: StreamSettings,
    /// `CONSUMER_NAME`: this replica's consumer name in its group. Default the host name.
    pub consumer_name: String,
    pub retry: RetrySettings,
    /// `ORDER_RETENTION_MS`: a `COMPLETED` or `CANCELLED` order, its history and every service's
    /// state of it are removed this long after it finished (by the retry worker's pass). 0 keeps
    /// them forever. Default 604800000 (7 days); when not 0, at least `STREAM_RETENTION_MS` and
    /// `IDEMPOTENCY_TTL_SECS`, so no entry or retried POST can reach a removed order.
    pub order_retention_ms: u64,
    pub api: ApiSettings,
    /// `HTTP_ADDR`: health, readiness, metrics and (for the order service) the API. Default
    /// `0.0.0.0:8080`.
    pub http_addr: SocketAddr,
    /// `LOG_FORMAT`: `json` or `pretty`. Default `pretty` on a terminal, `json` otherwise.
    pub log_format: LogFormat,
    /// `SHUTDOWN_GRACE_MS`: longest a stopping process waits for in-flight work. Default 25000.
    pub shutdown_grace_ms: u64,
}

/// The stream and how a consumer reads it.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// `STREAM`: the event stream. Default `order_events`.
    pub name: String,
    /// `DLQ_STREAM`: the dead-letter stream. Default `order_events:dlq`.
    pub dlq: String,
    /// `STREAM_PARTITIONS`: partition streams the events are spread over (an order's events stay
    /// on one, chosen by a hash of its id). Default 1: the one stream `STREAM`; 1..=1024. Every
    /// process of a deployment must agree on it, and it is not changed while orders are in flight.
    pub partitions: usize,
    /// `BATCH_SIZE`: entries read per `XREADGROUP`. Default 64, 1..=10000.
    pub batch_size: usize,
    /// `BLOCK_MS`: how long one `XREADGROUP` blocks waiting for entries. Default 1000, 1..=60000.
    /// Also bounds how long a stopping consumer waits before it finishes.
    pub block_ms: u64,
    /// `READ_LINGER_US`: after a read that returned fewer than half of the entries it asked for
    /// (`BATCH_SIZE`, or fewer when `MAX_IN_FLIGHT` is nearly taken), a consumer waits this long
    /// before its next read, so that read finds more: fewer calls per entry (Redis's and the
    /// services' CPU) for up to this much more latency per step. Tokio's timer ticks in
    /// milliseconds, so a wait ends on the tick after it is due. Default 0 (read again at once),
    /// 0..=100000.
    pub read_linger_us: u64,
    /// `MAX_IN_FLIGHT`: most entries one consumer has in hand at once; it reads the next batch
    /// while earlier ones are still being handled, up to this many. Default 256, 1..=100000.
    pub max_in_flight: usize,
    /// `STREAM_RETENTION_MS`: entries older than this are trimmed once every group has
    /// acknowledged them. Default 300000 (5 minutes); order history lives in the order projection.
    pub retention_ms: u64,
}

/// The retry worker's pass.
#[derive(Debug, Clone)]
pub struct RetrySettings {
    /// `RETRY_MIN_IDLE_MS`: an entry is retried once pending this long. Default 60000.
    pub min_idle_ms: u64,
    /// `RETRY_MAX_RETRIES`: failed retries before an entry is dead-lettered. Default 3.
    pub max_retries: u32,
    /// `RETRY_INTERVAL_MS`: pause between passes when the retry worker loops. Default 10000.
    pub interval_ms: u64,
    /// `RETRY_BATCH_SIZE`: pending entries examined per group per pass. Default 500.
    pub batch_size: usize,
    /// `CONSUMER_GONE_AFTER_MS`: a consumer unseen this long (no read returning entries, no
    /// heartbeat) with nothing pending is removed from its group. Default 600000 (10 minutes).
    pub consumer_gone_after_ms: u64,
}

/// Longest `IDEMPOTENCY_TTL_SECS`: 30 days. A retry comes within minutes; this keeps the value
/// far inside what Redis takes for `SET ... EX`.
pub const MAX_IDEMPOTENCY_TTL_SECS: u64 = 30 * 24 * 3600;

/// The order service's HTTP API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `ADMIN_TOKEN`: when set, catalog writes, DLQ actions, listing orders, the all-orders feed
    /// and cancelling need `Authorization: Bearer <token>`.
    pub admin_token: Option<SecretString>,
    /// `API_TOKEN`: the callers' token (the shop's backend); when set, every order and catalog
    /// endpoint and `/ws` need it or the admin token.
    pub api_token: Option<SecretString>,
    /// `SEED_CATALOG`: seed product-A/B/C on first start when the catalog is empty. Default true.
    pub seed_catalog: bool,
    /// `IDEMPOTENCY_TTL_SECS`: how long an `Idempotency-Key` is remembered. Default 86400, at
    /// most [`MAX_IDEMPOTENCY_TTL_SECS`] (30 days).
    pub idempotency_ttl_secs: u64,
    /// `HTTP_REQUEST_TIMEOUT_MS`: an API request taking longer is answered 503
    /// `request_timeout`. Default 10000.
    pub request_timeout_ms: u64,
    /// `HTTP_MAX_IN_FLIGHT`: API requests served at once; more are answered 503 `overloaded` at
    /// once. Default 1024.
    pub max_in_flight: usize,
    /// `WS_MAX_CONNECTIONS`: `/ws` followers (`?order_id=`) open per API process, and the most
    /// all-orders feeds too (a room of their own, at most 100); a full room answers 503
    /// `too_many_connections`, a client past its quarter of the followers' 429
    /// `too_many_client_connections`. Default 2000 (about 9 KB each: 18 MB).
    pub ws_max_connections: usize,
}

impl Settings {
    /// Reads every setting from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::read(&Env::from_process())
    }

    /// Reads every setting through `lookup`, so tests can pass a map instead of the environment.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String> + 'static,
    ) -> Result<Self, SettingsError> {
        Self::read(&Env::new(lookup))
    }

    /// Reads every setting through `env`.
    pub fn read(env: &Env) -> Result<Self, SettingsError> {
        let default_format = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        };
        let cluster_nodes = match env.optional("REDIS_CLUSTER_NODES") {
            None => None,
            // The value may hold passwords: the error shows it redacted.
            Some(value) => Some(parse_seed_urls(&value).map_err(|reason| SettingsError {
                name: "REDIS_CLUSTER_NODES",
                value: value.split(',').map(redact).collect::<Vec<_>>().join(","),
                reason,
            })?),
        };
        let settings = Self {
            redis: RedisSettings {
                url: env.string("REDIS_URL", "redis://127.0.0.1:6379")?.into(),
                url_ignored: cluster_nodes.is_some() && env.optional("REDIS_URL").is_some(),
                cluster_nodes: cluster_nodes.unwrap_or_default(),
                password: env.secret("REDIS_PASSWORD"),
                wait_replicas: env.ranged("REDIS_WAIT_REPLICAS", 0, 0, 16)?,
                wait_timeout_ms: env.ranged("REDIS_WAIT_TIMEOUT_MS", 2000, 1, 60_000)?,
            },
            stream: StreamSettings {
                name: env.string("STREAM", "order_events")?,
                dlq: env.string("DLQ_STREAM", "order_events:dlq")?,
                partitions: env.ranged("STREAM_PARTITIONS", 1, 1, 1024)?,
                batch_size: env.ranged("BATCH_SIZE", 64, 1, 10_000)?,
                block_ms: env.ranged("BLOCK_MS", 1000, 1, 60_000)?,
                read_linger_us: env.ranged("READ_LINGER_US", 0, 0, 100_000)?,
                max_in_flight: env.ranged("MAX_IN_FLIGHT", 256, 1, 100_000)?,
                retention_ms: env.ranged("STREAM_RETENTION_MS", 300_000, 0, u64::MAX)?,
            },
            consumer_name: match env.optional("CONSUMER_NAME") {
                Some(name) => name,
                None => host_name(),
            },
            retry: RetrySettings {
                min_idle_ms: env.ranged("RETRY_MIN_IDLE_MS", 60_000, 1, u64::MAX)?,
                max_retries: env.ranged("RETRY_MAX_RETRIES", 3, 0, 1000)?,
                interval_ms: env.ranged("RETRY_INTERVAL_MS", 10_000, 1, u64::MAX)?,
                batch_size: env.ranged("RETRY_BATCH_SIZE", 500, 1, 100_000)?,
                consumer_gone_after_ms: env.ranged(
                    "CONSUMER_GONE_AFTER_MS",
                    600_000,
                    1,
                    u64::MAX,
                )?,
            },
            order_retention_ms: env.ranged("ORDER_RETENTION_MS", 604_800_000, 0, u64::MAX)?,
            api: ApiSettings {
                admin_token: env.secret("ADMIN_TOKEN"),
                api_token: env.secret("API_TOKEN"),
                seed_catalog: env.parsed("SEED_CATALOG", Some(true), parse_bool)?,
                idempotency_ttl_secs: env.ranged(
                    "IDEMPOTENCY_TTL_SECS",
                    86_400,
                    1,
                    MAX_IDEMPOTENCY_TTL_SECS,
                )?,
                request_timeout_ms: env.ranged("HTTP_REQUEST_TIMEOUT_MS", 10_000, 1, 3_600_000)?,
                max_in_flight: env.ranged("HTTP_MAX_IN_FLIGHT", 1024, 1, 1_000_000)?,
                ws_max_connections: env.ranged("WS_MAX_CONNECTIONS", 2000, 0, 1_000_000)?,
            },
            http_addr: env.parsed("HTTP_ADDR", "0.0.0.0:8080".parse().ok(), |v| {
                v.parse::<SocketAddr>().map_err(|e| e.to_string())
            })?,
            log_format: env.parsed("LOG_FORMAT", Some(default_format), |v| match v {
                "json" => Ok(LogFormat::Json),
                "pretty" => Ok(LogFormat::Pretty),
                _ => Err("expected json or pretty".into()),
            })?,
            shutdown_grace_ms: env.ranged("SHUTDOWN_GRACE_MS", 25_000, 0, u64::MAX)?,
        };
        settings.check_retention(env)?;
        Ok(settings)
    }

    /// An order must outlive every way back to it: entries on the stream and retried POSTs.
    fn check_retention(&self, env: &Env) -> Result<(), SettingsError> {
        let retention = self.order_retention_ms;
        let floor = self
            .stream
            .retention_ms
            .max(self.api.idempotency_ttl_secs.saturating_mul(1000));
        if retention == 0 || retention >= floor {
            return Ok(());
        }
        Err(SettingsError {
            name: "ORDER_RETENTION_MS",
            value: env.optional("ORDER_RETENTION_MS").unwrap_or_default(),
            reason: format!(
                "must be 0 or at least STREAM_RETENTION_MS and IDEMPOTENCY_TTL_SECS ({floor} ms)"
            ),
        })
    }

    /// Defaults with the given Redis URL, for tests and tools that build settings in code.
    pub fn for_redis(redis_url: &str) -> Self {
        let url = redis_url.to_owned();
        Self::from_lookup(move |name| (name == "REDIS_URL").then(|| url.clone()))
            .expect("default settings are valid")
    }

    /// Where the streams and keys live under these settings: the partitions, and the plain or
    /// hash-tagged key names (tagged on a cluster, or with more than one partition).
    pub fn layout(&self) -> fulfillment_events::keys::Layout {
        fulfillment_events::keys::Layout::new(
            &self.stream.name,
            &self.stream.dlq,
            self.stream.partitions,
            self.redis.is_cluster(),
        )
    }

    pub fn block(&self) -> Duration {
        Duration::from_millis(self.stream.block_ms)
    }

    pub fn read_linger(&self) -> Duration {
        Duration::from_micros(self.stream.read_linger_us)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// `REDIS_CLUSTER_NODES`: comma-separated `redis://` or `rediss://` URLs, at least one.
fn parse_seed_urls(value: &str) -> Result<Vec<SecretString>, String> {
    use redis::IntoConnectionInfo;
    let urls: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Err("expected comma-separated redis:// or rediss:// URLs".into());
    }
    for url in &urls {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!(
                "{} is not a redis:// or rediss:// URL",
                redact(url)
            ));
        }
        url.into_connection_info()
            .map_err(|e| format!("{}: {e}", redact(url)))?;
    }
    Ok(urls.into_iter().map(SecretString::from).collect())
}

/// Reads variables and refuses a bad one with one line naming it; services with settings of
/// their own read them through it too.
pub struct Env {
    lookup: Box<Lookup>,
}

/// Where a variable's value comes from.
type Lookup = dyn Fn(&str) -> Option<String>;

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Self {
        Self::new(|name| std::env::var(name).ok())
    }

    /// Variables looked up through `lookup` (tests pass a map).
    pub fn new(lookup: impl Fn(&str) -> Option<String> + 'static) -> Self {
        Self {
            lookup: Box::new(lookup),
        }
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// A secret: unset or empty is none.
    pub fn secret(&self, name: &str) -> Option<SecretString> {
        self.optional(name)
            .filter(|v| !v.is_empty())
            .map(SecretString::from)
    }

    pub fn string(&self, name: &'static str, default: &str) -> Result<String, SettingsError> {
        match self.optional(name) {
            None => Ok(default.to_owned()),
            Some(v) if v.trim().is_empty() => Err(SettingsError {
                name,
                value: v,
                reason: "must not be empty".into(),
            }),
            Some(v) => Ok(v),
        }
    }

    pub fn parsed<T>(
        &self,
        name: &'static str,
        default: Option<T>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, SettingsError> {
        match (self.optional(name), default) {
            (Some(v), _) => parse(v.trim()).map_err(|reason| SettingsError {
                name,
                value: v,
                reason,
            }),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(SettingsError {
                name,
                value: String::new(),
                reason: "is required".into(),
            }),
        }
    }

    pub fn ranged<T>(
        &self,
        name: &'static str,
        default: T,
        min: T,
        max: T,
    ) -> Result<T, SettingsError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
        T::Err: std::fmt::Display,
    {
        self.parsed(name, Some(default), |v| {
            let n = v.parse::<T>().map_err(|e| e.to_string())?;
            if n < min || n > max {
                return Err(format!("must be between {min} and {max}"));
            }
            Ok(n)
        })
    }

    /// A rate between 0 and 1, default 0.
    pub fn rate(&self, name: &'static str) -> Result<f64, SettingsError> {
        self.parsed(name, Some(0.0), |v| {
            let r = v.parse::<f64>().map_err(|e| e.to_string())?;
            if !(0.0..=1.0).contains(&r) {
                return Err("must be a rate between 0 and 1".into());
            }
            Ok(r)
        })
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// The host name (the pod name in Kubernetes), used as the default consumer name.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| format!("consumer-{}", uuid::Uuid::new_v4().simple()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = with(&[]).expect("defaults");
        assert_eq!(s.stream.name, "order_events");
        assert_eq!(s.stream.dlq, "order_events:dlq");
        assert_eq!(s.redis.url.expose_secret(), "redis://127.0.0.1:6379");
        assert_eq!(s.retry.min_idle_ms, 60_000);
        assert_eq!(s.retry.max_retries, 3);
        assert_eq!(s.http_addr.to_string(), "0.0.0.0:8080");
        assert!(s.api.seed_catalog);
    }

    #[test]
    fn a_bad_value_names_its_variable_in_one_line() {
        for (name, value) in [
            ("BATCH_SIZE", "lots"),
            ("BATCH_SIZE", "0"),
            ("READ_LINGER_US", "soon"),
            ("READ_LINGER_US", "100001"),
            ("HTTP_ADDR", "nowhere"),
            ("LOG_FORMAT", "xml"),
            ("SEED_CATALOG", "maybe"),
            ("STREAM", " "),
            ("ORDER_RETENTION_MS", "1000"),
            ("STREAM_PARTITIONS", "0"),
            ("REDIS_WAIT_REPLICAS", "-1"),
            ("IDEMPOTENCY_TTL_SECS", "18446744073709551615"),
            ("IDEMPOTENCY_TTL_SECS", "2592001"),
            ("REDIS_CLUSTER_NODES", "127.0.0.1:7000"),
            ("REDIS_CLUSTER_NODES", " , "),
        ] {
            let err = with(&[(name, value)]).expect_err(name).to_string();
            assert!(
                err.starts_with(&format!("invalid setting {name}=")),
                "{err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
        let rate = Env::new(|n| (n == "X_RATE").then(|| "1.5".to_owned()));
        assert!(rate.rate("X_RATE").is_err());
    }

    #[test]
    fn redis_is_on_this_machine_only_when_every_address_is() {
        let on = |pairs: &[(&str, &str)]| with(pairs).expect("settings").redis.is_on_this_machine();
        assert!(on(&[]));
        assert!(on(&[("REDIS_URL", "redis://localhost:6390/2")]));
        assert!(on(&[("REDIS_URL", "rediss://[::1]:6390")]));
        assert!(on(&[("REDIS_URL", "redis+unix:///run/redis.sock")]));
        assert!(!on(&[("REDIS_URL", "redis://redis.default.svc:6379")]));
        assert!(!on(&[("REDIS_URL", "redis://10.0.0.7:6379")]));
        assert!(on(&[(
            "REDIS_CLUSTER_NODES",
            "redis://127.0.0.1:7000,redis://127.0.0.2:7001"
        )]));
        assert!(!on(&[(
            "REDIS_CLUSTER_NODES",
            "redis://127.0.0.1:7000,redis://redis-1:7001"
        )]));
    }

    #[test]
    fn secrets_never_print_and_the_password_overrides_the_url() {
        let s = with(&[
            ("REDIS_URL", "redis://:in-url@127.0.0.1:6390/2"),
            ("REDIS_PASSWORD", "p@ss/w:rd#%"),
            ("ADMIN_TOKEN", "hunter2"),
            ("API_TOKEN", "t0ken"),
        ])
        .expect("settings");
        let printed = format!("{s:?}");
        for secret in ["in-url", "p@ss/w:rd#%", "hunter2", "t0ken"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        let info = s.redis.connection_info().expect("info");
        assert_eq!(info.redis_settings().password(), Some("p@ss/w:rd#%"));
        assert_eq!(s.redis.redacted_url(), "redis://***@127.0.0.1:6390/2");
        assert!(
            with(&[("ADMIN_TOKEN", "")])
                .expect("empty")
                .api
                .admin_token
                .is_none()
        );
    }

    #[test]
    fn cluster_nodes_replace_the_url_and_their_passwords_stay_secret() {
        let s = with(&[
            (
                "REDIS_CLUSTER_NODES",
                "redis://:pw1@10.0.0.1:7000, rediss://10.0.0.2:7001",
            ),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("STREAM_PARTITIONS", "12"),
        ])
        .expect("settings");
        assert!(s.redis.is_cluster() && s.redis.url_ignored);
        assert_eq!(s.redis.cluster_seeds().expect("seeds").len(), 2);
        assert!(!format!("{s:?}").contains("pw1"));
        assert_eq!(
            s.redis.redacted_url(),
            "cluster redis://***@10.0.0.1:7000,rediss://10.0.0.2:7001"
        );
        assert_eq!(s.layout().partitions().len(), 12);
        let bad = with(&[("REDIS_CLUSTER_NODES", "redis://:pw2@x:1,http://:pw3@y")])
            .expect_err("bad seed")
            .to_string();
        assert!(!bad.contains("pw2") && !bad.contains("pw3"), "{bad}");
        let single = with(&[]).expect("defaults");
        assert!(!single.redis.is_cluster() && !single.redis.url_ignored);
        assert!(single.layout().is_plain());
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("redis://:s3cret@redis:6379/0"),
            "redis://***@redis:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
