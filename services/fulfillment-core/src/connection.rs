//! Connections to Redis and the stream set-up every process does at start.
//!
//! Two kinds of connection: one shared, self-reconnecting [`ConnectionManager`] for ordinary
//! commands and scripts, and a dedicated connection per blocking reader, because
//! `XREADGROUP BLOCK` would stall every other command multiplexed on the same socket and would
//! trip the usual response timeout.

use crate::settings::RedisSettings;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisResult};
use std::time::Duration;

/// `XGROUP CREATE ... 0`: a group created late still sees every entry still on the stream.
pub const FROM_START: &str = "0";
/// `XREADGROUP ... >`: entries never delivered to this group.
pub const NEW_ENTRIES: &str = ">";
/// `XADD ... *`: let Redis choose the entry id.
pub const AUTO_ID: &str = "*";

/// Commands that are not blocking reads give up after this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared handle: the client (to open blocking readers) and a reconnecting connection.
#[derive(Clone)]
pub struct Redis {
    client: Client,
    conn: ConnectionManager,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").finish_non_exhaustive()
    }
}

/// Makes `rediss://` URLs work: the TLS stack (rustls) needs a process-wide crypto provider, and
/// ring builds with the C compiler alone. Server certificates are checked against the system's
/// roots, or the bundle named by `SSL_CERT_FILE`.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Redis {
    /// Opens the shared connection; fails when Redis does not answer.
    pub async fn connect(settings: &RedisSettings) -> RedisResult<Self> {
        install_tls_provider();
        let client = Client::open(settings.connection_info()?)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(6)
            .set_max_delay(Duration::from_secs(2));
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(Self { client, conn })
    }

    /// A clone of the shared connection (cheap: it is a handle).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A connection of its own, without response timeout, for one blocking reader.
    pub async fn blocking_reader(&self) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// A pub/sub connection (for the live status feed).
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        self.client.get_async_pubsub().await
    }

    /// A small write that expires by itself, for readiness: it fails when Redis refuses writes
    /// (out of memory under `noeviction`, a read-only replica), which a `PING` would not tell.
    pub async fn check_writable(&self) -> RedisResult<()> {
        let mut conn = self.conn();
        redis::cmd("SET")
            .arg(crate::keys::readiness_probe())
            .arg(1)
            .arg("PX")
            .arg(5_000)
            .query_async::<()>(&mut conn)
            .await
    }
}

/// Creates each group on `stream` (and the stream) unless it exists; `BUSYGROUP` is not an error.
pub async fn ensure_groups(redis: &Redis, stream: &str, groups: &[&str]) -> RedisResult<()> {
    let mut conn = redis.conn();
    for group in groups {
        let created: RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg(FROM_START)
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => tracing::info!(stream, group, "created consumer group"),
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Warns loudly when Redis may evict keys that hold streams or state (an `allkeys-*` policy).
/// Managed Redis often forbids `CONFIG`; then nothing can be checked and nothing is said.
pub async fn warn_if_keys_may_be_evicted(redis: &Redis) {
    let mut conn = redis.conn();
    let reply: RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut conn)
        .await;
    if let Ok(pair) = reply
        && let Some(policy) = pair.get(1)
        && policy.starts_with("allkeys")
    {
        tracing::error!(
            policy = policy.as_str(),
            "Redis maxmemory-policy may evict stream and state keys; set it to noeviction"
        );
    }
}
