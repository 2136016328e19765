//! What every fulfillment service shares: the event schema, the Redis Streams runtime (publish,
//! consumer-group loop, dead-letter), per-order state transitions, settings, telemetry, metrics
//! and shutdown.

pub mod consumer;
pub mod dead_letter;
pub mod events;
pub mod keys;
pub mod metrics;
pub mod ops_http;
pub mod redis_io;
pub mod retention;
pub mod script_reply;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod stream_stats;
pub mod telemetry;
pub mod transition;

pub use consumer::{Delivery, EventHandler, Handled, HandlerError, HandlerFuture};
pub use events::{Event, EventType};
pub use redis_io::Redis;
pub use settings::Settings;

/// Every fulfillment binary links this crate, so this is their allocator. The hot path (decoding
/// entries, building events and Redis commands) allocates many small, short-lived buffers across
/// worker threads; the system allocator spent about a quarter of the services' CPU time in
/// `malloc` and `free` under load, mimalloc much less (numbers in the README's performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
