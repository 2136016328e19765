//! The `fulfillment` command's library: the local runner, the operator's commands (DLQ, stats)
//! and the load generator.

pub mod bench;
pub mod dlq_commands;
pub mod local_runner;
pub mod stats;
