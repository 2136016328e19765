//! Order retention: finished orders are removed `ORDER_RETENTION_MS` after they finished, so
//! Redis holds what is in flight and recent, not every order ever placed.
//!
//! Invariant: only `COMPLETED` and `CANCELLED` orders are removed (the projection records them
//! in [`keys::orders_finished`] when they reach that status); `PENDING`, in-flight and `FAILED`
//! orders stay until they finish, and an order with an unresolved dead letter stays until it is
//! resolved (a compensation waiting for its replay must find the order and its reservation). Every key of an order ([`keys::order_state`]) goes in one
//! script, so an order is never half removed. A late delivery for a removed order finds no order
//! and changes nothing (see `transition.lua` and `reserve_stock.lua`).

use crate::connection::Redis;
use crate::keys;
use redis::{RedisResult, Script};
use std::sync::LazyLock;

static SWEEP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/sweep_orders.lua")));

/// Orders removed per script call: short enough not to hold Redis up (about a millisecond).
pub const SWEEP_BATCH: usize = 200;

/// Examines up to `limit` orders that finished at or before `cutoff_ms`, removes those without
/// unresolved dead letters, and returns how many were removed.
pub async fn sweep_finished_orders(
    redis: &Redis,
    cutoff_ms: u64,
    limit: usize,
) -> RedisResult<u64> {
    let mut removed = 0u64;
    let mut examined = 0usize;
    let mut conn = redis.conn();
    while examined < limit {
        let take = SWEEP_BATCH.min(limit - examined);
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys::orders_finished())
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
        let per_order = keys::order_state("").len();
        let mut invocation = SWEEP.prepare_invoke();
        invocation
            .key(keys::orders_finished())
            .key(keys::orders_index())
            .key(keys::gateway_charges())
            .key(keys::gateway_refunds())
            .key(keys::gateway_voids());
        for id in &ids {
            for key in keys::order_state(id) {
                invocation.key(key);
            }
        }
        invocation
            .arg(cutoff_ms)
            .arg(keys::orders_by_status(""))
            .arg(per_order);
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
