//! The order projection against a real `redis-server` started per test.
//! One test binary for the crate (`cargo test -p order-projection`), a module per area.

mod projection;
