//! The runtime every fulfillment service shares, on top of the Redis layer
//! ([`fulfillment_redis`]) and the event model ([`fulfillment_events`]).
//!
//! Three folders, dependencies one way (`ops` ← `saga`, `ops` ← `runtime`; none imports the
//! others back):
//! - [`ops`]: what operators see: metrics, the one reader of the stream figures, `/healthz` and
//!   `/metrics`, traces and logs, liveness;
//! - [`saga`]: per-order state in Redis: step transitions, the order's projection, retention;
//! - [`runtime`]: read, handle, acknowledge, retry: the consumer loop, handlers, the dead-letter
//!   stream, shutdown, and what a service's `main` does ([`runtime::startup`]).
//!
//! Beside them, [`settings`] (read once at start) and [`store`] (the pipeline's Redis).

pub mod ops;
pub mod runtime;
pub mod saga;
pub mod settings;
pub mod store;

pub use fulfillment_events::{Event, EventType, Payload, Service};
pub use runtime::handler::{Delivery, EventHandler, Handled, HandlerError, HandlerFuture};
pub use settings::Settings;
pub use store::Redis;
