//! The live figures: lag after Redis restarts from its append-only file.

use fulfillment_testing::{Harness, SECONDS_10, TestRedis};

/// 10. After `kill -9` of Redis and a restart from its append-only file (rewritten once meanwhile),
/// a group that has read everything shows no lag, and after a retry pass XINFO's own lag is right.
#[tokio::test]
async fn lag_is_right_after_redis_restarts_from_its_append_only_file() {
    let server = TestRedis::start_durable();
    let mut h = Harness::start_on(server, |_| {}).await;
    let consumers = h.consumers().await;
    for _ in 0..5 {
        h.place("product-A", 1, "tok_visa").await;
    }
    h.settled().await;
    let mut conn = h.redis.conn();
    let _: String = redis::cmd("BGREWRITEAOF")
        .query_async(&mut conn)
        .await
        .expect("rewrite");
    h.eventually(SECONDS_10, "rewrite done", || async {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(&mut h.redis.conn())
            .await
            .expect("info");
        info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0")
    })
    .await;
    for _ in 0..4 {
        h.place("product-B", 1, "tok_visa").await;
    }
    h.settled().await;
    consumers.stop().await;
    h.server.single_mut().crash_and_restart();
    h.eventually(SECONDS_10, "reconnected", || async {
        h.get("/readyz").await.0 == 200
    })
    .await;
    let (_, stats) = h.get("/stats").await;
    for g in stats["groups"].as_array().expect("groups") {
        assert_eq!(g["lag"], 0, "{} after the restart: {g}", g["group"]);
    }
    // XINFO itself is wrong until the retry worker repairs the counter.
    h.retry_pass(&h.settings).await;
    h.place("product-B", 1, "tok_visa").await;
    let raw: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&h.layout().partitions()[0].stream)
        .query_async(&mut h.redis.conn())
        .await
        .expect("xinfo");
    for g in raw {
        assert_eq!(
            g.get("lag"),
            Some(&redis::Value::Int(1)),
            "one new entry, one entry of lag: {g:?}"
        );
    }
    h.stop().await;
}
