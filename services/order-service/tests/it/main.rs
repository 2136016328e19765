//! The order service's API against a real `redis-server` started per test: input, tokens, limits,
//! the catalog, orders.
//! One test binary for the crate (`cargo test -p order-service`), a module per area.

mod api_input;
mod catalog;
mod guards;
mod live_feed;
mod orders;
