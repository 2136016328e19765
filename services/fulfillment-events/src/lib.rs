//! The event model of the pipeline: the events on `order_events` and their payloads, the states
//! an order and each step of it go through, the services and their consumer groups, and where
//! every key lives in Redis ([`keys`]).
//!
//! It depends on no runtime: nothing here opens a connection or spawns a task, so the runtime,
//! the services, the CLI and the tests all share one definition of each fact.

pub mod events;
pub mod keys;
pub mod routing;
pub mod service;
pub mod states;

pub use events::{Event, EventType, Payload};
pub use service::Service;
