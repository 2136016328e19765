//! Inventory against a real `redis-server` started per test (`reserve_stock.lua`,
//! `release_stock.lua`): all or nothing, once, never oversold.
//! One test binary for the crate (`cargo test -p inventory-service`), a module per area.

mod stock;
