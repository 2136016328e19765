//! The `fulfillment` command's library: the local runner and the operator's DLQ commands.

pub mod dlq_commands;
pub mod local_runner;
