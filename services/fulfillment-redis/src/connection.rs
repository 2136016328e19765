//! Connections to Redis (one server, or a Redis Cluster).
//!
//! A [`Redis`] is a process's connections: a shared, self-reconnecting connection for ordinary
//! commands and scripts, and on demand a connection of its own for each blocking reader, for
//! pub/sub and for waits on replicas ([`Redis::dedicated`]). Blocking readers get a connection each, because `XREADGROUP BLOCK` would stall every other command
//! multiplexed on the same socket and would trip the usual response timeout.
//!
//! The network lies, so nothing here waits without a deadline: an ordinary command gives up after
//! [`COMMAND_TIMEOUT`], a blocking read after its `BLOCK` plus [`READ_MARGIN`] ([`read_deadline`]),
//! a connection attempt after [`CONNECT_TIMEOUT`]. A connection whose peer vanished without a
//! FIN (a node crash, a lost NAT or conntrack entry) looks open and answers nothing, and redis-rs
//! reconnects only after an I/O error, never after a timeout; so a shared-connection command that
//! timed out has the shared connection replaced (see [`Redis::conn`]), and a reader whose read
//! timed out is dropped and opened afresh. TCP keepalive on every socket ([`tcp_settings`]) is the
//! second net, for a peer that is gone while nothing is being asked of it.
//!
//! On a cluster, redis-rs's cluster client routes every command by its key's slot and follows
//! MOVED, ASK and topology changes; callers keep every script and pipeline to one slot.

use crate::socket::tcp_settings;
use crate::stream_entry::{RawEntry, ReadReply};
use crate::stream_reader::{GroupRead, RawReader};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, RedisFuture, RedisResult,
    Value,
};
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// `XGROUP CREATE ... 0`: a group created late still sees every entry still on the stream.
pub const FROM_START: &str = "0";
/// `XREADGROUP ... >`: entries never delivered to this group.
pub const NEW_ENTRIES: &str = ">";
/// `XADD ... *`: let Redis choose the entry id.
pub const AUTO_ID: &str = "*";

/// Commands that are not blocking reads give up after this long: the write's outcome is then
/// unknown (it may have happened), and the shared connection is replaced.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Opening a connection (TCP, TLS, `AUTH`, `SELECT`) gives up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A blocking read gives up this long after its `BLOCK` would have ended: time for a busy Redis
/// (an `fsync` of the append-only file can hold it a second or two) to send the reply. Reads take
/// entries with `NOACK`: a read cut short leaves each entry its group acts on pending as it was
/// since its publication (the publishing scripts see to it), for the retry worker; only an entry no
/// script of this version published (not marked `routed`) is not pending until its reader claims
/// it, and such a read loses it for the group.
pub const READ_MARGIN: Duration = Duration::from_secs(5);

/// How long a read that blocks `block` may take in all, before its connection counts as dead.
pub fn read_deadline(block: Duration) -> Duration {
    block + READ_MARGIN
}

/// A process's connections to Redis. Cloning it is cheap (a handle).
#[derive(Clone)]
pub struct Redis {
    shared: Arc<Shared>,
}

struct Shared {
    backend: Backend,
    /// The shared connection and its generation (one more each time it is replaced).
    current: RwLock<(u64, Conn)>,
    /// Set while a replacement of the shared connection is being opened.
    replacing: AtomicBool,
}

// One per process, behind the handle's Arc: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    /// One Redis: its client (for the shared connection, blocking readers and pub/sub).
    Single { client: Client },
    /// A Redis Cluster: the client of the shared connection, a client without response timeout
    /// for blocking readers (their reads have deadlines of their own), and the seed nodes (for
    /// pub/sub).
    Cluster {
        client: ClusterClient,
        readers: ClusterClient,
        seeds: Arc<[ConnectionInfo]>,
    },
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("cluster", &self.is_cluster())
            .finish_non_exhaustive()
    }
}

/// Makes `rediss://` URLs work: the TLS stack (rustls) needs a process-wide crypto provider, and
/// ring builds with the C compiler alone. Server certificates are checked against the system's
/// roots, or the bundle named by `SSL_CERT_FILE`.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Redis {
    /// Opens the shared connection (to `REDIS_URL`, or to the cluster of `REDIS_CLUSTER_NODES`);
    /// fails when Redis does not answer within [`CONNECT_TIMEOUT`].
    pub async fn connect(redis: &RedisSettings) -> RedisResult<Self> {
        install_tls_provider();
        let backend = if redis.is_cluster() {
            if redis.url_ignored {
                tracing::warn!("REDIS_CLUSTER_NODES is set, so REDIS_URL is ignored");
            }
            let seeds: Arc<[ConnectionInfo]> = redis.cluster_seeds()?.into();
            let builder = || {
                ClusterClient::builder(seeds.iter().cloned())
                    .tcp_settings(tcp_settings())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .retries(10)
                    .min_retry_wait(10)
                    .max_retry_wait(500)
            };
            let client = builder().response_timeout(COMMAND_TIMEOUT).build()?;
            let readers = builder().build()?;
            Backend::Cluster {
                client,
                readers,
                seeds,
            }
        } else {
            Backend::Single {
                client: Client::open(redis.connection_info()?)?,
            }
        };
        let conn = open_shared(&backend).await?;
        Ok(Self {
            shared: Arc::new(Shared {
                backend,
                current: RwLock::new((0, conn)),
                replacing: AtomicBool::new(false),
            }),
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.shared.backend, Backend::Cluster { .. })
    }

    fn backend(&self) -> &Backend {
        &self.shared.backend
    }

    /// A handle on the shared connection (cheap to clone). Each command on it takes the shared
    /// connection of that moment and has [`COMMAND_TIMEOUT`] in all; one that gets no reply in
    /// time has the shared connection replaced. A handle kept for long (a script's batcher keeps
    /// one for the life of the process) so moves to the new connection with its next command.
    pub fn conn(&self) -> Conn {
        Conn::Shared(self.clone())
    }

    /// The shared connection now, and its generation.
    fn current(&self) -> (u64, Conn) {
        let current = self
            .shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        (current.0, current.1.clone())
    }

    /// Replaces the shared connection of `generation` (unless it was replaced already, or a
    /// replacement is being opened): one of its commands got no reply in time, so its peer may be
    /// gone without a word, which redis-rs never notices by itself. Commands in flight on the old
    /// connection finish or time out there; new ones use the new connection once it is open.
    fn replace_shared(&self, generation: u64) {
        let shared = &self.shared;
        let current = shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if current != generation || shared.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            timeout_ms = COMMAND_TIMEOUT.as_millis() as u64,
            "a Redis command got no reply in time; opening a new shared connection"
        );
        let redis = self.clone();
        tokio::spawn(async move {
            match open_shared(redis.backend()).await {
                Ok(conn) => {
                    let mut current = redis
                        .shared
                        .current
                        .write()
                        .unwrap_or_else(PoisonError::into_inner);
                    *current = (generation + 1, conn);
                    tracing::info!("opened a new shared Redis connection");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open a new shared Redis connection; the next timeout tries again");
                }
            }
            redis.shared.replacing.store(false, Ordering::Release);
        });
    }

    /// A connection of its own for one blocking reader: on one Redis over plain TCP, the reader's
    /// own protocol client (see [`crate::stream_reader`]). It has no response timeout of its own:
    /// [`StreamReader::read`] gives each read its deadline.
    pub async fn blocking_reader(&self) -> RedisResult<StreamReader> {
        let opening = async {
            match self.backend() {
                Backend::Single { client } => {
                    let info = client.get_connection_info();
                    if let ConnectionAddr::Tcp(host, port) = info.addr() {
                        let raw = RawReader::connect(host, *port, info, CONNECT_TIMEOUT).await?;
                        return Ok(StreamReader::Raw(raw));
                    }
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        .set_response_timeout(None);
                    Ok(StreamReader::Client(Conn::Direct(
                        client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?,
                    )))
                }
                Backend::Cluster { readers, .. } => Ok(StreamReader::Client(Conn::Cluster(
                    readers.get_async_connection().await?,
                ))),
            }
        };
        within(CONNECT_TIMEOUT * 2, "opening a reader", opening).await
    }

    /// A connection of its own with the given response timeout (the replica wait's).
    pub async fn dedicated(&self, timeout: Duration) -> RedisResult<Conn> {
        match self.backend() {
            Backend::Single { client } => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(timeout));
                Ok(Conn::Direct(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            Backend::Cluster { client, .. } => Ok(Conn::Cluster(
                within(
                    CONNECT_TIMEOUT * 2,
                    "connecting",
                    client.get_async_connection(),
                )
                .await?,
            )),
        }
    }

    /// A pub/sub connection (for the live status feed), open within [`CONNECT_TIMEOUT`]. On a
    /// cluster, a message published on any node reaches the subscribers of every node, so one seed
    /// that answers is enough. Its user pings it to find a vanished peer.
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        match self.backend() {
            Backend::Single { client } => {
                within(CONNECT_TIMEOUT, "connecting", client.get_async_pubsub()).await
            }
            Backend::Cluster { seeds, .. } => {
                let mut last = None;
                for seed in seeds.iter() {
                    let client = Client::open(seed.clone())?;
                    match within(CONNECT_TIMEOUT, "connecting", client.get_async_pubsub()).await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no seeds"))
                }))
            }
        }
    }

    /// A small write that expires by itself, for readiness: it fails when Redis refuses writes
    /// (out of memory under `noeviction`, a read-only replica), which a `PING` would not tell, and
    /// when Redis does not answer within `limit` (then the shared connection is replaced, as a
    /// command of its own that timed out would have it: readiness may be all an idle API asks).
    pub async fn check_writable(&self, key: &str, limit: Duration) -> RedisResult<()> {
        let (generation, mut conn) = self.current();
        let mut write = redis::cmd("SET");
        write.arg(key).arg(1).arg("PX").arg(5_000);
        let written = within(limit, "SET", write.query_async::<()>(&mut conn)).await;
        if written.as_ref().is_err_and(redis::RedisError::is_timeout) {
            self.replace_shared(generation);
        }
        written
    }

    /// `INFO <sections>` of every master, by node (`redis` for one Redis), sorted by node.
    pub async fn info_of_masters(&self, sections: &[&str]) -> RedisResult<Vec<(String, String)>> {
        use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
        let mut cmd = redis::cmd("INFO");
        for section in sections {
            cmd.arg(*section);
        }
        if let (generation, Conn::Cluster(mut cluster)) = self.current() {
            let routing = RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllMasters,
                Some(ResponsePolicy::Special),
            ));
            let reply = within(COMMAND_TIMEOUT, "INFO", cluster.route_command(cmd, routing)).await;
            if reply.as_ref().is_err_and(redis::RedisError::is_timeout) {
                self.replace_shared(generation);
            }
            let by_node: std::collections::BTreeMap<String, String> =
                redis::from_redis_value(reply?)?;
            return Ok(by_node.into_iter().collect());
        }
        Ok(vec![(
            "redis".to_owned(),
            cmd.query_async(&mut self.conn()).await?,
        )])
    }
}

/// Opens the shared connection: on one Redis, a connection manager (which reconnects by itself
/// after an I/O error), on a cluster, the cluster connection. Both give up on a command after
/// [`COMMAND_TIMEOUT`].
async fn open_shared(backend: &Backend) -> RedisResult<Conn> {
    let opening = async {
        match backend {
            Backend::Single { client } => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(6)
                    .set_max_delay(Duration::from_secs(2));
                Ok(Conn::Managed(
                    client.get_connection_manager_with_config(config).await?,
                ))
            }
            Backend::Cluster { client, .. } => {
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    };
    // The manager retries its first connection (6 times, 2 s apart at most): past that, give up.
    within(CONNECT_TIMEOUT * 4, "connecting", opening).await
}

/// `work`, or a timeout error naming `what` once `limit` has passed.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    work: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(what, limit)),
    }
}

/// An I/O timeout error (`is_timeout()`), naming what took too long.
pub fn timed_out(what: &str, limit: Duration) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what}: no reply within {} ms", limit.as_millis()),
    ))
}

/// Where a consumer reads its group's new entries.
pub enum StreamReader {
    /// Its own TCP connection and parser (one Redis, plain TCP; see [`crate::stream_reader`]).
    Raw(RawReader),
    /// A redis-rs connection (TLS, Unix socket, Redis Cluster).
    Client(Conn),
}

impl StreamReader {
    /// Reads the entries; none when the block timed out. An error from Redis keeps its code
    /// (`NOGROUP` when the group is gone). No reply within [`read_deadline`] is a timeout error,
    /// and the reader must not be used again (its connection is in an unknown state).
    pub async fn read(&mut self, read: GroupRead<'_>) -> RedisResult<Vec<RawEntry>> {
        let deadline = read_deadline(read.block);
        let reading = async {
            match self {
                StreamReader::Raw(raw) => raw.read(read).await,
                StreamReader::Client(conn) => {
                    let mut cmd = redis::cmd("XREADGROUP");
                    cmd.arg("GROUP")
                        .arg(read.group)
                        .arg(read.consumer)
                        .arg("COUNT")
                        .arg(read.count)
                        .arg("BLOCK")
                        .arg(read.block_ms());
                    if read.noack {
                        cmd.arg("NOACK");
                    }
                    let ReadReply(entries) = cmd
                        .arg("STREAMS")
                        .arg(read.stream)
                        .arg(read.from)
                        .query_async(conn)
                        .await?;
                    Ok(entries)
                }
            }
        };
        within(deadline, "XREADGROUP", reading).await
    }

    /// Makes `ids` of `stream` pending as `consumer`'s in `group`, idle from now
    /// (`XCLAIM ... 0 <ids> FORCE JUSTID`), on the reader's own connection. No reply within
    /// [`COMMAND_TIMEOUT`] is a timeout error, and the reader must not be used again.
    pub async fn claim(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[&str],
    ) -> RedisResult<()> {
        let claiming = async {
            match self {
                StreamReader::Raw(raw) => raw.claim(stream, group, consumer, ids).await,
                StreamReader::Client(conn) => {
                    redis::cmd("XCLAIM")
                        .arg(stream)
                        .arg(group)
                        .arg(consumer)
                        .arg(0)
                        .arg(ids)
                        .arg("FORCE")
                        .arg("JUSTID")
                        .query_async::<redis::Value>(conn)
                        .await?;
                    Ok(())
                }
            }
        };
        within(COMMAND_TIMEOUT, "XCLAIM", claiming).await
    }
}

/// A connection of any kind: the shared one, a dedicated one, or the cluster's.
#[derive(Clone)]
pub enum Conn {
    Managed(ConnectionManager),
    Direct(MultiplexedConnection),
    Cluster(ClusterConnection),
    /// A handle on the shared connection ([`Redis::conn`]).
    Shared(Redis),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Shared(redis) => Box::pin(async move {
                let (generation, mut conn) = redis.current();
                // Our own deadline: redis-rs bounds the reply, not the wait for a connection
                // being made again, which on a silent network can last as long as it likes.
                let sending = conn.req_packed_command(cmd);
                let result = within(COMMAND_TIMEOUT, "a command", sending).await;
                if result.as_ref().is_err_and(redis::RedisError::is_timeout) {
                    redis.replace_shared(generation);
                }
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Shared(redis) => Box::pin(async move {
                let (generation, mut conn) = redis.current();
                let sending = conn.req_packed_commands(pipeline, offset, count);
                let result = within(COMMAND_TIMEOUT, "a pipeline", sending).await;
                if result.as_ref().is_err_and(redis::RedisError::is_timeout) {
                    redis.replace_shared(generation);
                }
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Direct(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Shared(redis) => redis.current().1.get_db(),
        }
    }
}

/// Creates each group on `stream` unless it exists.
pub async fn ensure_groups_on(redis: &Redis, stream: &str, groups: &[&str]) -> RedisResult<()> {
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

/// Where the event stream and all state live.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `REDIS_URL`: `redis://[:password@]host:port[/db]` or `rediss://` for TLS. Default
    /// `redis://127.0.0.1:6379`. Ignored (with a warning at start) when `REDIS_CLUSTER_NODES` is
    /// set.
    pub url: SecretString,
    /// Whether `REDIS_URL` was set beside `REDIS_CLUSTER_NODES` (and so is ignored).
    pub url_ignored: bool,
    /// `REDIS_CLUSTER_NODES`: comma-separated seed URLs of a Redis Cluster (`redis://` or
    /// `rediss://`, password allowed). When set, every process talks to the cluster through
    /// redis-rs's cluster client, which follows MOVED/ASK and topology changes. Default unset: one
    /// Redis at `REDIS_URL`.
    pub cluster_nodes: Vec<SecretString>,
    /// `REDIS_PASSWORD`: when set, the password to use whatever the URL (or the seed URLs) say;
    /// any characters, no URL-encoding (what a Kubernetes Secret holds).
    pub password: Option<SecretString>,
    /// `REDIS_WAIT_REPLICAS`: when above 0, a write that a client or another step relies on
    /// (an order before its 201, a stock reservation before its event) is acknowledged by this
    /// many replicas (`WAIT`) before it is relied on; otherwise the caller gets an error and the
    /// step is retried. Default 0 (Redis's asynchronous replication), 0..=16.
    pub wait_replicas: u32,
    /// `REDIS_WAIT_TIMEOUT_MS`: longest a write waits for its replicas. Default 2000; keep it
    /// below the cluster's `cluster-node-timeout`, so no wait outlives a failover.
    pub wait_timeout_ms: u64,
}

impl RedisSettings {
    /// Whether every process talks to a Redis Cluster (`REDIS_CLUSTER_NODES`).
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }

    /// Where to connect on one Redis: the URL, with `REDIS_PASSWORD` in place of its password when
    /// set.
    pub fn connection_info(&self) -> redis::RedisResult<redis::ConnectionInfo> {
        self.with_password(self.url.expose_secret())
    }

    /// The cluster's seed nodes, each with `REDIS_PASSWORD` in place of its password when set.
    pub fn cluster_seeds(&self) -> redis::RedisResult<Vec<redis::ConnectionInfo>> {
        self.cluster_nodes
            .iter()
            .map(|url| self.with_password(url.expose_secret()))
            .collect()
    }

    fn with_password(&self, url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
        use redis::IntoConnectionInfo;
        let info = url
            .into_connection_info()?
            .set_tcp_settings(crate::socket::tcp_settings());
        Ok(match &self.password {
            None => info,
            Some(password) => {
                let redis = info
                    .redis_settings()
                    .clone()
                    .set_password(password.expose_secret());
                info.set_redis_settings(redis)
            }
        })
    }

    /// Whether every Redis this process talks to is on this machine: a loopback address,
    /// `localhost` or a Unix socket (`fulfillment up` then leaves Redis a core).
    pub fn is_on_this_machine(&self) -> bool {
        use redis::ConnectionAddr;
        let infos = if self.is_cluster() {
            self.cluster_seeds()
        } else {
            self.connection_info().map(|info| vec![info])
        };
        let is_local = |host: &str| {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        infos.is_ok_and(|infos| {
            infos.iter().all(|info| match info.addr() {
                ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => {
                    is_local(host)
                }
                ConnectionAddr::Unix(_) => true,
                _ => false,
            })
        })
    }

    /// Where this process connects, without passwords, for messages: the URL, or the seed nodes.
    pub fn redacted_url(&self) -> String {
        if self.is_cluster() {
            let seeds: Vec<String> = self
                .cluster_nodes
                .iter()
                .map(|url| redact(url.expose_secret()))
                .collect();
            return format!("cluster {}", seeds.join(","));
        }
        redact(self.url.expose_secret())
    }

    /// How long a write waits for its replicas.
    pub fn wait_timeout(&self) -> Duration {
        Duration::from_millis(self.wait_timeout_ms)
    }
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
