//! Notification against a real `redis-server` started per test: once per order and kind, never
//! both kinds.
//! One test binary for the crate (`cargo test -p notification-service`), a module per area.

mod mail;
mod notifications;
