//! The pipeline's Redis: the Redis layer's connections ([`fulfillment_redis::Redis`]) with what
//! the pipeline adds to them: where its streams and keys live ([`Layout`]), the loops `/healthz`
//! watches ([`Liveness`]), scripts committed in batches per key space, and the wait for replicas
//! per key space (`REDIS_WAIT_REPLICAS`).
//!
//! It dereferences to the connections, so `redis.conn()` and the other connection methods read
//! as before; what needs a key space takes a [`KeySpace`] here and hands the Redis layer only the
//! names it needs (its hash tag, its marker key).

use crate::ops::liveness::Liveness;
use crate::settings::Settings;
use fulfillment_events::keys::{KeySpace, Layout};
use fulfillment_redis::replica_wait::ReplicaWait;
use fulfillment_redis::script_batch::{BatchedScript, Batches, ScriptCall};
use redis::RedisResult;
use std::sync::Arc;
use std::time::Duration;

/// The pipeline's Redis. Cloning it is cheap (a handle).
#[derive(Clone)]
pub struct Redis {
    connections: fulfillment_redis::Redis,
    pipeline: Arc<Pipeline>,
}

struct Pipeline {
    layout: Layout,
    liveness: Liveness,
    batches: Batches,
    replicas: Option<ReplicaWait>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("cluster", &self.is_cluster())
            .field("partitions", &self.layout().partitions().len())
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Redis {
    type Target = fulfillment_redis::Redis;

    fn deref(&self) -> &Self::Target {
        &self.connections
    }
}

impl Redis {
    /// Opens the shared connection (to `REDIS_URL`, or to the cluster of `REDIS_CLUSTER_NODES`);
    /// fails when Redis does not answer in time.
    pub async fn connect(settings: &Settings) -> RedisResult<Self> {
        let connections = fulfillment_redis::Redis::connect(&settings.redis).await?;
        let redis = &settings.redis;
        let replicas = (redis.wait_replicas > 0)
            .then(|| ReplicaWait::new(redis.wait_replicas, redis.wait_timeout()));
        Ok(Self {
            connections,
            pipeline: Arc::new(Pipeline {
                layout: settings.layout(),
                liveness: Liveness::default(),
                batches: Batches::new(),
                replicas,
            }),
        })
    }

    /// The connections, for what takes the Redis layer's handle.
    pub fn connections(&self) -> &fulfillment_redis::Redis {
        &self.connections
    }

    /// The loops of this process that `/healthz` watches ([`crate::ops::liveness`]).
    pub fn liveness(&self) -> &Liveness {
        &self.pipeline.liveness
    }

    /// Where the streams and keys live.
    pub fn layout(&self) -> &Layout {
        &self.pipeline.layout
    }

    /// Runs `call` of `script`, whose keys are all in `space`, committed in a group with the other
    /// calls of that script in that key space at this moment
    /// ([`fulfillment_redis::script_batch`]).
    pub async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &'static BatchedScript,
        space: &KeySpace,
        call: ScriptCall,
    ) -> RedisResult<T> {
        self.pipeline
            .batches
            .run(|| self.conn(), script, space.prefix(), call)
            .await
    }

    /// Waits until every write this process made so far in `space` is on `REDIS_WAIT_REPLICAS`
    /// replicas, before something relies on it (a client's 201, an event another slot's effect
    /// is announced by). An error when they did not acknowledge within `REDIS_WAIT_TIMEOUT_MS`:
    /// the write happened, and may be lost if its master fails now. Without replicas to wait for,
    /// returns at once.
    pub async fn replicated(&self, space: &KeySpace) -> RedisResult<()> {
        match &self.pipeline.replicas {
            None => Ok(()),
            Some(wait) => wait.wait(&self.connections, &space.replica_marker()).await,
        }
    }

    /// Whether Redis takes a small write within `limit` (readiness; see
    /// [`fulfillment_redis::Redis::check_writable`]).
    pub async fn check_writable(&self, limit: Duration) -> RedisResult<()> {
        let probe = self.layout().global.readiness_probe();
        self.connections.check_writable(&probe, limit).await
    }
}

/// Creates each group on every partition stream (and the stream) unless it exists; `BUSYGROUP`
/// is not an error.
pub async fn ensure_groups(redis: &Redis, groups: &[&str]) -> RedisResult<()> {
    for partition in redis.layout().partitions() {
        fulfillment_redis::connection::ensure_groups_on(redis, &partition.stream, groups).await?;
    }
    Ok(())
}
