//! Batched scripts against a real Redis: concurrent calls go as batches, and what a batch defers
//! to its end (`count`, `keep_recent`) adds up to what the calls one by one would have done.

use fulfillment_core::Redis;
use fulfillment_core::settings::Settings;
use fulfillment_events::keys::KeySpace;
use fulfillment_redis::script_batch::{BatchedScript, ScriptCall};
use fulfillment_testing::TestRedis;
use futures_util::future::join_all;
use std::sync::LazyLock;

static COUNT: LazyLock<BatchedScript> = LazyLock::new(|| {
    BatchedScript::new(
        "count_test",
        "count(KEYS[1], 'calls', 1)
count(KEYS[1], ARGV[1], tonumber(ARGV[2]))
keep_recent(KEYS[2], ARGV[2], 5)
return ARGV[2]",
    )
});

#[tokio::test]
async fn deferred_counters_and_lists_add_up_alone_and_in_batches() {
    let server = TestRedis::start();
    let redis = Redis::connect(&Settings::for_redis(&server.url))
        .await
        .expect("connects");
    let space = KeySpace::plain();
    let call = |n: usize| {
        let mut call = ScriptCall::new();
        call.key("c")
            .key("l")
            .arg(if n.is_multiple_of(2) { "even" } else { "odd" })
            .arg(n);
        call
    };
    // One call alone (the plain form), then 200 at once (batches); 51 more below, all of 0.
    let first: String = redis
        .run_script(&COUNT, &space, call(0))
        .await
        .expect("alone");
    assert_eq!(first, "0");
    let answers: Vec<String> =
        join_all((1..=200).map(|n| redis.run_script(&COUNT, &space, call(n))))
            .await
            .into_iter()
            .map(|a| a.expect("in a batch"))
            .collect();
    assert_eq!(
        answers,
        (1..=200).map(|n| n.to_string()).collect::<Vec<_>>()
    );

    let mut conn = redis.conn();
    let recent: Vec<i64> = redis::cmd("LRANGE")
        .arg("l")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("LRANGE");
    assert_eq!(recent.len(), 5, "kept the last five: {recent:?}");
    let last = recent[0];
    assert_eq!(
        recent,
        (last - 4..=last).rev().collect::<Vec<_>>(),
        "newest first, in the order the calls ran"
    );

    // Redis forgot its scripts (a restart, a failover): they are loaded again, alone and batched.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("SCRIPT FLUSH");
    let again: String = redis
        .run_script(&COUNT, &space, call(0))
        .await
        .expect("reloaded");
    assert_eq!(again, "0");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("SCRIPT FLUSH");
    let batched: Vec<String> = join_all((0..50).map(|_| redis.run_script(&COUNT, &space, call(0))))
        .await
        .into_iter()
        .map(|a| a.expect("reloaded in a batch"))
        .collect();
    assert_eq!(batched.len(), 50);

    let counters: Vec<i64> = redis::cmd("HMGET")
        .arg("c")
        .arg("calls")
        .arg("even")
        .arg("odd")
        .query_async(&mut conn)
        .await
        .expect("HMGET");
    let even: i64 = (0..=200).filter(|n| n % 2 == 0).sum();
    let odd: i64 = (0..=200).filter(|n| n % 2 == 1).sum();
    assert_eq!(counters, vec![252, even, odd]);
}
