//! The whole pipeline: the saga end to end, the binaries as real processes, the chaos suite,
//! traces.
//! One test binary for the crate (`cargo test -p fulfillment-cli`), a module per area.

mod chaos;
mod flow;
mod processes;
mod traces;
