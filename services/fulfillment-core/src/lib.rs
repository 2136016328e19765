//! What every fulfillment service shares: the event schema, the Redis Streams runtime (publish,
//! consumer-group loop, dead-letter), per-order state transitions, settings, telemetry, metrics
//! and shutdown.
//!
//! The modules form a line, each using only those before it: `events` → `stream_entry` →
//! `stream_reader` →
//! `dead_letter` → `handler` → `consumer` → `startup` (what a service's `main` does).

pub mod backoff;
pub mod connection;
pub mod consumer;
pub mod dead_letter;
pub mod events;
pub mod handler;
pub mod keys;
pub mod liveness;
pub mod metrics;
pub mod ops_http;
pub mod projection;
mod replica_wait;
pub mod retention;
pub mod script_batch;
pub mod script_reply;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod startup;
pub mod stream_entry;
pub mod stream_reader;
pub mod stream_stats;
pub mod telemetry;
pub mod transition;

pub use connection::Redis;
pub use events::{Event, EventType, Payload};
pub use handler::{Delivery, EventHandler, Handled, HandlerError, HandlerFuture};
pub use service::Service;
pub use settings::Settings;
