//! The whole pipeline: the saga end to end, the binaries as real processes, the chaos suite,
//! network faults through a proxy, scale-out on Redis Cluster (spread, replica waits, failover),
//! traces.
//! One test binary for the crate (`cargo test -p fulfillment-cli`), a module per area.

mod chaos;
mod flow;
mod mail;
mod network;
mod processes;
mod scale_out;
mod traces;
