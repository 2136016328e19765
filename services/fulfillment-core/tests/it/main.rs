//! The runtime every service shares, against a real `redis-server` started per test: decoding, the
//! consumer loop, dead letters, the live figures, a step's repeat.
//! One test binary for the crate (`cargo test -p fulfillment-core`), a module per area.

mod consumer;
mod dead_letters;
mod decoding;
mod script_batch;
mod stream_reader;
mod stream_stats;
mod transition;
