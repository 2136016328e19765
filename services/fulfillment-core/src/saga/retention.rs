//! Order retention: finished orders are removed `ORDER_RETENTION_MS` after they finished, so
//! Redis holds what is in flight and recent, not every order ever placed.
//!
//! Invariant: only `COMPLETED` and `CANCELLED` orders are removed (the projection records them
//! in their partition's finished set when they reach that status); `PENDING`, in-flight and
//! `FAILED` orders stay until they finish, and an order with an unresolved dead letter stays until
//! it is resolved (a compensation waiting for its replay must find the order and its reservation).
//! Every key of an order in its partition ([`KeySpace::order_state`]) goes in one script, so an
//! order is never half removed there; its lines in the catalog's reservation ledger and the test
//! gateway's ledger (other slots on a cluster) follow through the partition's outbox of swept
//! orders, which the same pass empties and the next pass finishes after a crash. A late delivery
//! for a removed order finds no order and changes nothing (see `transition.lua` and
//! `reserve_stock.lua`).

use crate::store::Redis;
use fulfillment_events::keys::{KeySpace, Partition};
use redis::{RedisResult, Script};
use std::sync::LazyLock;

static SWEEP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/sweep_orders.lua")));

/// Statuses that had an index before they were left out of [`fulfillment_events::keys::INDEXED_STATUSES`].
const UNINDEXED_BEFORE: [&str; 2] = ["RESERVED", "PAID"];

/// Orders removed per script call: short enough not to hold Redis up (about a millisecond).
pub const SWEEP_BATCH: usize = 200;

/// On every partition, examines up to `limit` orders that finished at or before `cutoff_ms`,
/// removes those without unresolved dead letters with their ledger lines, and returns how many
/// were removed.
pub async fn sweep_finished_orders(
    redis: &Redis,
    cutoff_ms: u64,
    limit: usize,
) -> RedisResult<u64> {
    let mut removed = 0u64;
    for partition in redis.layout().partitions() {
        // Indexes an older version kept for statuses that last milliseconds: their members went
        // stale when the statuses stopped being indexed.
        let mut conn = redis.conn();
        redis::cmd("DEL")
            .arg(
                UNINDEXED_BEFORE
                    .map(|status| partition.keys.orders_by_status(status))
                    .as_slice(),
            )
            .query_async::<i64>(&mut conn)
            .await?;
        // What a crashed pass left in the outbox goes first.
        clear_swept(redis, partition).await?;
        removed += sweep_partition(redis, partition, cutoff_ms, limit).await?;
        clear_swept(redis, partition).await?;
    }
    Ok(removed)
}

async fn sweep_partition(
    redis: &Redis,
    partition: &Partition,
    cutoff_ms: u64,
    limit: usize,
) -> RedisResult<u64> {
    let keys = &partition.keys;
    let mut removed = 0u64;
    let mut examined = 0usize;
    let mut conn = redis.conn();
    while examined < limit {
        let take = SWEEP_BATCH.min(limit - examined);
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys.orders_finished())
            .arg("-inf")
            .arg(cutoff_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(take)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            break;
        }
        let per_order = keys.order_state("").len();
        let statuses = keys.status_indexes();
        let mut invocation = SWEEP.prepare_invoke();
        invocation
            .key(keys.orders_finished())
            .key(keys.orders_index())
            .key(keys.orders_swept());
        for index in &statuses {
            invocation.key(index);
        }
        for id in &ids {
            for key in keys.order_state(id) {
                invocation.key(key);
            }
        }
        invocation.arg(cutoff_ms).arg(per_order).arg(statuses.len());
        for id in &ids {
            invocation.arg(id);
        }
        let swept: u64 = invocation.invoke_async(&mut conn).await?;
        removed += swept;
        examined += ids.len();
        // Every examined order left the finished set (removed, or kept for its dead letters), so
        // the next read moves on.
        if ids.len() < take {
            break;
        }
    }
    Ok(removed)
}

/// Removes the ledger lines of the partition's swept orders (the catalog's reservations, the
/// gateway's charges, refunds and voids), then takes them out of the outbox.
async fn clear_swept(redis: &Redis, partition: &Partition) -> RedisResult<()> {
    let layout = redis.layout();
    let outbox = partition.keys.orders_swept();
    let mut conn = redis.conn();
    loop {
        let ids: Vec<String> = redis::cmd("SRANDMEMBER")
            .arg(&outbox)
            .arg(SWEEP_BATCH)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(());
        }
        remove_ledger_lines(redis, &layout.catalog, &layout.gateway, &ids).await?;
        redis::cmd("SREM")
            .arg(&outbox)
            .arg(&ids)
            .query_async::<i64>(&mut conn)
            .await?;
    }
}

async fn remove_ledger_lines(
    redis: &Redis,
    catalog: &KeySpace,
    gateway: &KeySpace,
    ids: &[String],
) -> RedisResult<()> {
    let mut conn = redis.conn();
    let ledger: Vec<String> = ids.iter().map(|id| catalog.reservation(id)).collect();
    redis::cmd("DEL")
        .arg(&ledger)
        .query_async::<i64>(&mut conn)
        .await?;
    redis::pipe()
        .cmd("HDEL")
        .arg(gateway.gateway_charges())
        .arg(ids)
        .ignore()
        .cmd("HDEL")
        .arg(gateway.gateway_refunds())
        .arg(ids)
        .ignore()
        .cmd("HDEL")
        .arg(gateway.gateway_voids())
        .arg(ids)
        .ignore()
        .query_async::<()>(&mut conn)
        .await
}
