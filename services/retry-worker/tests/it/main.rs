//! The retry worker against a real `redis-server` started per test: retries, dead letters and
//! replay, crashed and gone consumers, trimming, order retention.
//! One test binary for the crate (`cargo test -p retry-worker`), a module per area.

mod retention;
mod retries;
