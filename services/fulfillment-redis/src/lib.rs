//! The Redis access layer: connections to one Redis or a Redis Cluster, each wait on them with a
//! deadline; blocking stream readers; Lua scripts committed in batches per slot; the wait for
//! replicas; script replies as types.
//!
//! It knows nothing of orders, events or where the pipeline keeps its keys: callers name the
//! keys, streams and groups. Dependencies run one way: `socket` and `stream_entry` → `stream_reader`
//! → `connection` → `script_batch`, `replica_wait`; `script_reply` stands alone.

pub mod connection;
pub mod replica_wait;
pub mod script_batch;
pub mod script_reply;
pub mod socket;
pub mod stream_entry;
pub mod stream_reader;

pub use connection::{Conn, Redis, RedisSettings};
