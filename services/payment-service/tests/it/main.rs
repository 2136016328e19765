//! Payment against a real `redis-server` started per test: declined cards, failing gateways, a
//! charge racing its own retry.
//! One test binary for the crate (`cargo test -p payment-service`), a module per area.

mod payments;
