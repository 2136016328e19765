//! The blocking reader's own protocol client against a real Redis that wants a password and a
//! database other than 0: it authenticates, selects, reads what redis-rs writes, times out empty,
//! and keeps Redis's error code.

use fulfillment_core::Redis;
use fulfillment_core::settings::Settings;
use fulfillment_redis::connection::{NEW_ENTRIES, StreamReader, ensure_groups_on};
use fulfillment_redis::stream_reader::GroupRead;
use fulfillment_testing::TestRedis;
use std::time::Duration;

/// A redis-rs connection of the test's own to `url`.
async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connects")
}

#[tokio::test]
async fn the_raw_reader_authenticates_selects_reads_and_keeps_error_codes() {
    let server = TestRedis::start();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .query_async(&mut connection(&server.url).await)
        .await
        .expect("CONFIG SET");
    let url = format!(
        "{}/3",
        server.url.replace("redis://", "redis://default:s3cret@")
    );
    let redis = Redis::connect(&Settings::for_redis(&url))
        .await
        .expect("connects");
    ensure_groups_on(&redis, "s", &["g"]).await.expect("group");
    let mut conn = redis.conn();
    let id: String = redis::cmd("XADD")
        .arg("s")
        .arg("*")
        .arg("type")
        .arg("OrderPlaced")
        .arg("payload")
        .arg(&b"line\r\nbreak\0"[..])
        .query_async(&mut conn)
        .await
        .expect("XADD");

    let mut reader = redis.blocking_reader().await.expect("reader");
    assert!(
        matches!(reader, StreamReader::Raw(_)),
        "plain TCP reads raw"
    );
    let read = |group| GroupRead {
        group,
        consumer: "c",
        count: 10,
        block: Duration::from_millis(20),
        noack: false,
        stream: "s",
        from: NEW_ENTRIES,
    };
    let entries = reader.read(read("g")).await.expect("read");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, id);
    assert_eq!(
        entries[0].fields,
        vec![
            (b"type".to_vec(), b"OrderPlaced".to_vec()),
            (b"payload".to_vec(), b"line\r\nbreak\0".to_vec()),
        ]
    );
    assert_eq!(
        reader.read(read("g")).await.expect("empty"),
        vec![],
        "a timed-out block reads nothing"
    );
    let error = reader.read(read("nope")).await.expect_err("no such group");
    assert_eq!(error.code(), Some("NOGROUP"));
    assert_eq!(
        reader.read(read("g")).await.expect("still in step"),
        vec![],
        "an error reply leaves the connection usable"
    );
    let in_db_0: i64 = redis::cmd("EXISTS")
        .arg("s")
        .query_async(&mut connection(&server.url.replace("redis://", "redis://:s3cret@")).await)
        .await
        .expect("EXISTS");
    assert_eq!(in_db_0, 0, "the stream is in database 3");
}
