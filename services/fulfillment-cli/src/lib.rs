//! The `fulfillment` command's library: the local runner and the operator's commands (DLQ,
//! stats).

pub mod dlq_commands;
pub mod local_runner;
pub mod stats;
