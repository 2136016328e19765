//! Connections to Redis (one server, or a Redis Cluster), where the pipeline's keys live in it,
//! and the stream set-up every process does at start.
//!
//! A [`Redis`] is the pipeline's Redis: a shared, self-reconnecting connection for ordinary
//! commands and scripts, the [`Layout`] that says which partition and key space everything lives
//! in, and, with `REDIS_WAIT_REPLICAS`, the wait for replicas ([`Redis::replicated`]). Blocking
//! readers get a connection each, because `XREADGROUP BLOCK` would stall every other command
//! multiplexed on the same socket and would trip the usual response timeout.
//!
//! On a cluster, redis-rs's cluster client routes every command by its key's slot and follows
//! MOVED, ASK and topology changes; the layout keeps every script and pipeline to one slot.

use crate::keys::{KeySpace, Layout};
use crate::replica_wait::ReplicaWait;
use crate::script_batch::{BatchedScript, Batches, ScriptCall};
use crate::settings::Settings;
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
use std::sync::Arc;
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

/// The pipeline's Redis: connections, the layout of keys in it, the wait for replicas. Cloning
/// it is cheap (a handle).
#[derive(Clone)]
pub struct Redis {
    shared: Arc<Shared>,
}

struct Shared {
    backend: Backend,
    layout: Layout,
    replicas: Option<ReplicaWait>,
    batches: Batches,
}

// One per process, behind the handle's Arc: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    /// One Redis: the client (to open blocking readers) and a reconnecting connection.
    Single {
        client: Client,
        conn: ConnectionManager,
    },
    /// A Redis Cluster: the shared cluster connection, a client without response timeout for
    /// blocking readers, and the seed nodes (for pub/sub).
    Cluster {
        client: ClusterClient,
        readers: ClusterClient,
        conn: ClusterConnection,
        seeds: Arc<[ConnectionInfo]>,
    },
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("cluster", &self.is_cluster())
            .field("partitions", &self.layout().partitions().len())
            .finish_non_exhaustive()
    }
}

/// TCP settings of every connection: `TCP_NODELAY` (redis-rs leaves Nagle's algorithm on, which
/// holds a request back while an earlier one is unacknowledged: a millisecond or more per hop
/// once several readers share the work).
pub fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// Makes `rediss://` URLs work: the TLS stack (rustls) needs a process-wide crypto provider, and
/// ring builds with the C compiler alone. Server certificates are checked against the system's
/// roots, or the bundle named by `SSL_CERT_FILE`.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Redis {
    /// Opens the shared connection (to `REDIS_URL`, or to the cluster of `REDIS_CLUSTER_NODES`);
    /// fails when Redis does not answer.
    pub async fn connect(settings: &Settings) -> RedisResult<Self> {
        install_tls_provider();
        let redis = &settings.redis;
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
            let conn = client.get_async_connection().await?;
            Backend::Cluster {
                client,
                readers,
                conn,
                seeds,
            }
        } else {
            let client = Client::open(redis.connection_info()?)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(COMMAND_TIMEOUT))
                .set_number_of_retries(6)
                .set_max_delay(Duration::from_secs(2));
            let conn = client.get_connection_manager_with_config(config).await?;
            Backend::Single { client, conn }
        };
        let replicas = (redis.wait_replicas > 0)
            .then(|| ReplicaWait::new(redis.wait_replicas, redis.wait_timeout()));
        Ok(Self {
            shared: Arc::new(Shared {
                backend,
                layout: settings.layout(),
                replicas,
                batches: Batches::new(),
            }),
        })
    }

    /// Where the streams and keys live.
    pub fn layout(&self) -> &Layout {
        &self.shared.layout
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.shared.backend, Backend::Cluster { .. })
    }

    fn backend(&self) -> &Backend {
        &self.shared.backend
    }

    /// A clone of the shared connection (cheap: it is a handle).
    pub fn conn(&self) -> Conn {
        match self.backend() {
            Backend::Single { conn, .. } => Conn::Managed(conn.clone()),
            Backend::Cluster { conn, .. } => Conn::Cluster(conn.clone()),
        }
    }

    /// A connection of its own, without response timeout, for one blocking reader: on one Redis
    /// over plain TCP, the reader's own protocol client (see [`crate::stream_reader`]).
    pub async fn blocking_reader(&self) -> RedisResult<StreamReader> {
        match self.backend() {
            Backend::Single { client, .. } => {
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
    }

    /// A connection of its own with the given response timeout (the replica wait's).
    pub(crate) async fn dedicated(&self, timeout: Duration) -> RedisResult<Conn> {
        match self.backend() {
            Backend::Single { client, .. } => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(timeout));
                Ok(Conn::Direct(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            Backend::Cluster { client, .. } => {
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A pub/sub connection (for the live status feed). On a cluster, a message published on any
    /// node reaches the subscribers of every node, so one seed that answers is enough.
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        match self.backend() {
            Backend::Single { client, .. } => client.get_async_pubsub().await,
            Backend::Cluster { seeds, .. } => {
                let mut last = None;
                for seed in seeds.iter() {
                    match Client::open(seed.clone())?.get_async_pubsub().await {
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

    /// Runs `call` of `script`, whose keys are all in `space`, committed in a group with the other
    /// calls of that script on that slot at this moment ([`crate::script_batch`]).
    pub async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &'static BatchedScript,
        space: &KeySpace,
        call: ScriptCall,
    ) -> RedisResult<T> {
        self.shared
            .batches
            .run(|| self.conn(), script, space, call)
            .await
    }

    /// Waits until every write this process made so far in `space` is on `REDIS_WAIT_REPLICAS`
    /// replicas, before something relies on it (a client's 201, an event another slot's effect
    /// is announced by). An error when they did not acknowledge within `REDIS_WAIT_TIMEOUT_MS`:
    /// the write happened, and may be lost if its master fails now. Without replicas to wait for,
    /// returns at once.
    pub async fn replicated(&self, space: &KeySpace) -> RedisResult<()> {
        match &self.shared.replicas {
            None => Ok(()),
            Some(wait) => wait.wait(self, space).await,
        }
    }

    /// A small write that expires by itself, for readiness: it fails when Redis refuses writes
    /// (out of memory under `noeviction`, a read-only replica), which a `PING` would not tell.
    pub async fn check_writable(&self) -> RedisResult<()> {
        let mut conn = self.conn();
        redis::cmd("SET")
            .arg(self.layout().global.readiness_probe())
            .arg(1)
            .arg("PX")
            .arg(5_000)
            .query_async::<()>(&mut conn)
            .await
    }

    /// `INFO <sections>` of every master, by node (`redis` for one Redis), sorted by node.
    pub async fn info_of_masters(&self, sections: &[&str]) -> RedisResult<Vec<(String, String)>> {
        use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
        let mut cmd = redis::cmd("INFO");
        for section in sections {
            cmd.arg(*section);
        }
        match self.backend() {
            Backend::Single { conn, .. } => Ok(vec![(
                "redis".to_owned(),
                cmd.query_async(&mut conn.clone()).await?,
            )]),
            Backend::Cluster { conn, .. } => {
                let routing = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::Special),
                ));
                let reply = conn.clone().route_command(cmd, routing).await?;
                let by_node: std::collections::BTreeMap<String, String> =
                    redis::from_redis_value(reply)?;
                Ok(by_node.into_iter().collect())
            }
        }
    }
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
    /// (`NOGROUP` when the group is gone).
    pub async fn read(&mut self, read: GroupRead<'_>) -> RedisResult<Vec<RawEntry>> {
        match self {
            StreamReader::Raw(raw) => raw.read(read).await,
            StreamReader::Client(conn) => {
                let ReadReply(entries) = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(read.group)
                    .arg(read.consumer)
                    .arg("COUNT")
                    .arg(read.count)
                    .arg("BLOCK")
                    .arg(read.block_ms())
                    .arg("STREAMS")
                    .arg(read.stream)
                    .arg(read.from)
                    .query_async(conn)
                    .await?;
                Ok(entries)
            }
        }
    }
}

/// A connection of any kind: the shared one, a dedicated one, or the cluster's.
#[derive(Clone)]
pub enum Conn {
    Managed(ConnectionManager),
    Direct(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Direct(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Creates each group on every partition stream (and the stream) unless it exists; `BUSYGROUP`
/// is not an error.
pub async fn ensure_groups(redis: &Redis, groups: &[&str]) -> RedisResult<()> {
    for partition in redis.layout().partitions() {
        ensure_groups_on(redis, &partition.stream, groups).await?;
    }
    Ok(())
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
