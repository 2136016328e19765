//! Shipping against a real `redis-server` started per test: one label per order, none for a
//! cancelled one.
//! One test binary for the crate (`cargo test -p shipping-service`), a module per area.

mod labels;
