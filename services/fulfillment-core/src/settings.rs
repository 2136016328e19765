//! Typed settings, read once at start from the environment.
//!
//! Every process of the pipeline reads the same [`Settings`]; each field names its variable and
//! default. A value that does not parse is refused with one line naming the variable
//! ([`SettingsError`]), so a typo in a ConfigMap stops the pod instead of running with a default.

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
    /// `REDIS_URL`: where the event stream and all state live. Default `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// `STREAM`: the event stream. Default `order_events`.
    pub stream: String,
    /// `DLQ_STREAM`: the dead-letter stream. Default `order_events:dlq`.
    pub dlq_stream: String,
    /// `CONSUMER_NAME`: this replica's consumer name in its group. Default the host name.
    pub consumer_name: String,
    /// `HTTP_ADDR`: health, readiness, metrics and (for the order service) the API. Default `0.0.0.0:8080`.
    pub http_addr: SocketAddr,
    /// `LOG_FORMAT`: `json` or `pretty`. Default `pretty` on a terminal, `json` otherwise.
    pub log_format: LogFormat,
    /// `BATCH_SIZE`: entries read per `XREADGROUP`. Default 64, 1..=10000.
    pub batch_size: usize,
    /// `BLOCK_MS`: how long one `XREADGROUP` blocks waiting for entries. Default 1000, 1..=60000.
    /// Also bounds how long a stopping consumer waits before it finishes.
    pub block_ms: u64,
    /// `MAX_IN_FLIGHT`: most entries one consumer has in hand at once; it reads the next batch
    /// while earlier ones are still being handled, up to this many. Default 256, 1..=100000.
    pub max_in_flight: usize,
    /// `RETRY_MIN_IDLE_MS`: an entry is retried once pending this long. Default 60000.
    pub retry_min_idle_ms: u64,
    /// `RETRY_MAX_RETRIES`: failed retries before an entry is dead-lettered. Default 3.
    pub retry_max_retries: u32,
    /// `RETRY_INTERVAL_MS`: pause between retry passes when the retry worker loops. Default 10000.
    pub retry_interval_ms: u64,
    /// `RETRY_BATCH_SIZE`: pending entries examined per group per pass. Default 500.
    pub retry_batch_size: usize,
    /// `CONSUMER_GONE_AFTER_MS`: a consumer unseen this long (no read returning entries, no
    /// heartbeat) with nothing pending is removed from its group. Default 600000 (10 minutes).
    pub consumer_gone_after_ms: u64,
    /// `STREAM_RETENTION_MS`: entries older than this are trimmed once every group has
    /// acknowledged them. Default 300000 (5 minutes); order history lives in the order projection.
    pub stream_retention_ms: u64,
    /// `ORDER_RETENTION_MS`: a `COMPLETED` or `CANCELLED` order, its history and every service's
    /// state of it are removed this long after it finished (by the retry worker's pass). 0 keeps
    /// them forever. Default 604800000 (7 days); when not 0, at least `STREAM_RETENTION_MS` and
    /// `IDEMPOTENCY_TTL_SECS`, so no entry or retried POST can reach a removed order.
    pub order_retention_ms: u64,
    /// `INVENTORY_FAILURE_RATE`: 0..1, the inventory handler fails before any side effect.
    pub inventory_failure_rate: f64,
    /// `INVENTORY_ACK_LOSS_RATE`: 0..1, inventory reserves and publishes, then loses the ack.
    pub inventory_ack_loss_rate: f64,
    /// `PAYMENT_FAILURE_RATE`: 0..1, a charge attempt fails transiently.
    pub payment_failure_rate: f64,
    /// `PAYMENT_MAX_ATTEMPTS`: charge attempts before the payment is given up. Default 3.
    pub payment_max_attempts: u32,
    /// `PAYMENT_BACKOFF_MS`: base of the exponential backoff between charge attempts. Default 50.
    pub payment_backoff_ms: u64,
    /// `ADMIN_TOKEN`: when set, catalog writes, DLQ actions, listing orders, the all-orders feed
    /// and cancelling need `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// `API_TOKEN`: the callers' token (the shop's backend); when set, every order and catalog
    /// endpoint and `/ws` need it or the admin token.
    pub api_token: Option<String>,
    /// `SEED_CATALOG`: seed product-A/B/C on first start when the catalog is empty. Default true.
    pub seed_catalog: bool,
    /// `IDEMPOTENCY_TTL_SECS`: how long an `Idempotency-Key` is remembered. Default 86400.
    pub idempotency_ttl_secs: u64,
    /// `SHUTDOWN_GRACE_MS`: longest a stopping process waits for in-flight work. Default 25000.
    pub shutdown_grace_ms: u64,
    /// `HTTP_REQUEST_TIMEOUT_MS`: an API request taking longer is answered 503 `request_timeout`.
    /// Default 10000.
    pub http_request_timeout_ms: u64,
    /// `HTTP_MAX_IN_FLIGHT`: API requests served at once; more wait up to 1 s for a turn, then are
    /// answered 503 `overloaded`. Default 1024.
    pub http_max_in_flight: usize,
    /// `WS_MAX_CONNECTIONS`: open `/ws` connections per API process; more are refused with 503
    /// `too_many_connections`. Default 2000 (about 9 KB each: 18 MB).
    pub ws_max_connections: usize,
}

impl Settings {
    /// Reads every setting from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads every setting through `lookup`, so tests can pass a map instead of the environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let settings = Self::read(&Env { lookup: &lookup })?;
        settings.check_retention(&lookup)?;
        Ok(settings)
    }

    /// An order must outlive every way back to it: entries on the stream and retried POSTs.
    fn check_retention(
        &self,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), SettingsError> {
        let retention = self.order_retention_ms;
        let floor = self
            .stream_retention_ms
            .max(self.idempotency_ttl_secs.saturating_mul(1000));
        if retention == 0 || retention >= floor {
            return Ok(());
        }
        Err(SettingsError {
            name: "ORDER_RETENTION_MS",
            value: lookup("ORDER_RETENTION_MS").unwrap_or_default(),
            reason: format!(
                "must be 0 or at least STREAM_RETENTION_MS and IDEMPOTENCY_TTL_SECS ({floor} ms)"
            ),
        })
    }

    fn read(env: &Env<'_>) -> Result<Self, SettingsError> {
        let default_format = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        };
        Ok(Self {
            redis_url: env.string("REDIS_URL", "redis://127.0.0.1:6379")?,
            stream: env.string("STREAM", "order_events")?,
            dlq_stream: env.string("DLQ_STREAM", "order_events:dlq")?,
            consumer_name: match env.optional("CONSUMER_NAME") {
                Some(name) => name,
                None => host_name(),
            },
            http_addr: env.parsed("HTTP_ADDR", "0.0.0.0:8080".parse().ok(), |v| {
                v.parse::<SocketAddr>().map_err(|e| e.to_string())
            })?,
            log_format: env.parsed("LOG_FORMAT", Some(default_format), |v| match v {
                "json" => Ok(LogFormat::Json),
                "pretty" => Ok(LogFormat::Pretty),
                _ => Err("expected json or pretty".into()),
            })?,
            batch_size: env.ranged("BATCH_SIZE", 64, 1, 10_000)?,
            block_ms: env.ranged("BLOCK_MS", 1000, 1, 60_000)?,
            max_in_flight: env.ranged("MAX_IN_FLIGHT", 256, 1, 100_000)?,
            retry_min_idle_ms: env.ranged("RETRY_MIN_IDLE_MS", 60_000, 1, u64::MAX)?,
            retry_max_retries: env.ranged("RETRY_MAX_RETRIES", 3, 0, 1000)?,
            retry_interval_ms: env.ranged("RETRY_INTERVAL_MS", 10_000, 1, u64::MAX)?,
            retry_batch_size: env.ranged("RETRY_BATCH_SIZE", 500, 1, 100_000)?,
            consumer_gone_after_ms: env.ranged("CONSUMER_GONE_AFTER_MS", 600_000, 1, u64::MAX)?,
            stream_retention_ms: env.ranged("STREAM_RETENTION_MS", 300_000, 0, u64::MAX)?,
            order_retention_ms: env.ranged("ORDER_RETENTION_MS", 604_800_000, 0, u64::MAX)?,
            inventory_failure_rate: env.rate("INVENTORY_FAILURE_RATE")?,
            inventory_ack_loss_rate: env.rate("INVENTORY_ACK_LOSS_RATE")?,
            payment_failure_rate: env.rate("PAYMENT_FAILURE_RATE")?,
            payment_max_attempts: env.ranged("PAYMENT_MAX_ATTEMPTS", 3, 1, 100)?,
            payment_backoff_ms: env.ranged("PAYMENT_BACKOFF_MS", 50, 0, 60_000)?,
            admin_token: env.optional("ADMIN_TOKEN").filter(|t| !t.is_empty()),
            api_token: env.optional("API_TOKEN").filter(|t| !t.is_empty()),
            seed_catalog: env.parsed("SEED_CATALOG", Some(true), parse_bool)?,
            idempotency_ttl_secs: env.ranged("IDEMPOTENCY_TTL_SECS", 86_400, 1, u64::MAX)?,
            shutdown_grace_ms: env.ranged("SHUTDOWN_GRACE_MS", 25_000, 0, u64::MAX)?,
            http_request_timeout_ms: env.ranged("HTTP_REQUEST_TIMEOUT_MS", 10_000, 1, 3_600_000)?,
            http_max_in_flight: env.ranged("HTTP_MAX_IN_FLIGHT", 1024, 1, 1_000_000)?,
            ws_max_connections: env.ranged("WS_MAX_CONNECTIONS", 2000, 0, 1_000_000)?,
        })
    }

    /// Defaults with the given Redis URL, for tests and tools that build settings in code.
    pub fn for_redis(redis_url: &str) -> Self {
        let url = redis_url.to_owned();
        Self::from_lookup(move |name| (name == "REDIS_URL").then(|| url.clone()))
            .expect("default settings are valid")
    }

    pub fn block(&self) -> Duration {
        Duration::from_millis(self.block_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    fn string(&self, name: &'static str, default: &str) -> Result<String, SettingsError> {
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

    fn parsed<T>(
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

    fn ranged<T>(&self, name: &'static str, default: T, min: T, max: T) -> Result<T, SettingsError>
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

    fn rate(&self, name: &'static str) -> Result<f64, SettingsError> {
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
        assert_eq!(s.stream, "order_events");
        assert_eq!(s.dlq_stream, "order_events:dlq");
        assert_eq!(s.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(s.retry_min_idle_ms, 60_000);
        assert_eq!(s.retry_max_retries, 3);
        assert_eq!(s.payment_max_attempts, 3);
        assert_eq!(s.http_addr.to_string(), "0.0.0.0:8080");
        assert!(s.seed_catalog);
    }

    #[test]
    fn a_bad_value_names_its_variable_in_one_line() {
        for (name, value) in [
            ("BATCH_SIZE", "lots"),
            ("BATCH_SIZE", "0"),
            ("INVENTORY_FAILURE_RATE", "1.5"),
            ("HTTP_ADDR", "nowhere"),
            ("LOG_FORMAT", "xml"),
            ("SEED_CATALOG", "maybe"),
            ("STREAM", " "),
            ("ORDER_RETENTION_MS", "1000"),
        ] {
            let err = with(&[(name, value)]).expect_err(name).to_string();
            assert!(
                err.starts_with(&format!("invalid setting {name}=")),
                "{err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
