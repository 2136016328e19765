//! What operators see: metrics, the stream figures, the ops HTTP server, traces and logs, and
//! liveness. Nothing here knows how an event is handled.

pub mod liveness;
pub mod metrics;
pub mod ops_http;
pub mod stream_stats;
pub mod telemetry;
