//! `publish_event()`, the one way the scripts add an entry to the stream: with the entry, in the
//! same step, it puts the entry in the pending list of every group that acts on it
//! ([`fulfillment_events::routing`]), so readers can read with `NOACK`.

use std::sync::LazyLock;

/// `publish_event(stream, A, i, j)` and the routing table it reads, as Lua, for the scripts that
/// publish (see `scripts/publish.lua`).
pub static LIBRARY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{}{}",
        fulfillment_events::routing::lua_routes(),
        include_str!("scripts/publish.lua")
    )
});
