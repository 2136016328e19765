//! The `fulfillment` command's library: the local runner, the operator's commands (DLQ, stats,
//! partitions) and the load generator.

pub mod bench;
pub mod dlq_commands;
pub mod local_runner;
pub mod partitions;
pub mod stats;
