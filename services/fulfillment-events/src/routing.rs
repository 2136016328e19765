//! Which groups act on which entries: the one table the publishing scripts and the readers share.
//!
//! A group reads every entry of the stream, but acts on few of them (four of a completed order's
//! twenty-five deliveries). So readers read with `NOACK` (nothing pending, nothing to
//! acknowledge for the entries they pass over), and the script that publishes an entry puts it,
//! in the same step, in the pending list of every group that acts on it (`XCLAIM ... FORCE
//! JUSTID` to the consumer [`UNREAD`]): an entry a group must act on is pending for it from the
//! moment it exists, whatever happens to the reader that reads it. The script marks the entry
//! (`routed`, [`VERSION`]); a reader handles a marked entry of its group and acknowledges it,
//! claiming it first only when it is old (a group far behind: the retry worker, which takes
//! entries idle a while, must not take one a reader is handling). An entry another writer added
//! (an earlier version, by hand) is claimed by the reader that reads it, before it handles it.

use crate::events::EventType;
use crate::service::Service;
use std::fmt::Write;

/// The consumer that holds, in each group's pending list, the entries published for the group
/// and not yet claimed by a reader.
pub const UNREAD: &str = "(unread)";

/// The version of this table an entry's `routed` field names. Another version's entries (or
/// unmarked ones) are claimed by each reader acting on them, whatever the table says.
pub const VERSION: &str = "1";

/// Whether `service`'s group acts on an entry of `event_type`: `projected` entries (recorded in
/// the order's projection by their producer) leave the order group nothing to do.
pub fn acts_on(service: Service, event_type: EventType, projected: bool) -> bool {
    use EventType::*;
    match service {
        Service::Order => !projected,
        Service::Inventory => matches!(event_type, OrderPlaced | OrderCancelled),
        Service::Payment => matches!(event_type, StockReserved | OrderCancelled),
        Service::Shipping => matches!(event_type, PaymentProcessed | OrderCancelled),
        Service::Notification => matches!(event_type, ShipmentPrepared | OrderCancelled),
    }
}

/// The groups that act on an entry of `event_type` (`replay_for`: a replayed dead letter, for that
/// group alone).
pub fn groups_acting_on(
    event_type: EventType,
    projected: bool,
    replay_for: Option<&str>,
) -> Vec<&'static str> {
    Service::ALL
        .into_iter()
        .filter(|s| match replay_for {
            Some(group) => s.group() == group && acts_on(*s, event_type, false),
            None => acts_on(*s, event_type, projected),
        })
        .map(Service::group)
        .collect()
}

/// The table as Lua, for the publishing scripts (`publish_event()`, `saga/scripts/publish.lua`):
/// `claim_for_groups(claim, event_type, projected, replay_for)` calls `claim(group)` for each
/// group acting on the entry, as `groups_acting_on` says, and `UNREAD` and `ROUTING_VERSION`. A
/// chain of comparisons of constant strings rather than a table: a table would be built again
/// on every script call, and most calls are of one step.
pub fn lua_routes() -> String {
    let mut lua = format!(
        "local UNREAD, ROUTING_VERSION = '{UNREAD}', '{VERSION}'\n\
         local function claim_for_groups(claim, event_type, projected, replay_for)\n"
    );
    let mut first = true;
    for &event_type in EventType::ALL {
        let unprojected = groups_acting_on(event_type, false, None);
        if unprojected.is_empty() {
            continue;
        }
        let _ = writeln!(
            lua,
            "  {}if event_type == '{}' then",
            if first { "" } else { "else" },
            event_type.as_str()
        );
        first = false;
        for group in unprojected {
            let projected_too = groups_acting_on(event_type, true, None).contains(&group);
            let _ = writeln!(
                lua,
                "    if replay_for == '{group}' or (not replay_for{}) then claim('{group}') end",
                if projected_too {
                    ""
                } else {
                    " and not projected"
                }
            );
        }
    }
    if !first {
        lua.push_str("  end\n");
    }
    lua.push_str("end\n");
    lua
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_order_s_entries_each_go_to_one_group() {
        use EventType::*;
        for (t, group) in [
            (OrderPlaced, "inventory_group"),
            (StockReserved, "payment_group"),
            (PaymentProcessed, "shipping_group"),
            (ShipmentPrepared, "notification_group"),
        ] {
            assert_eq!(groups_acting_on(t, true, None), vec![group]);
        }
        assert!(groups_acting_on(NotificationSent, true, None).is_empty());
        assert_eq!(
            groups_acting_on(OrderCancelled, false, None),
            vec![
                "order_group",
                "inventory_group",
                "payment_group",
                "shipping_group",
                "notification_group"
            ]
        );
        assert_eq!(
            groups_acting_on(StockReserved, true, Some("order_group")),
            vec!["order_group"]
        );
        assert!(groups_acting_on(StockReserved, true, Some("shipping_group")).is_empty());
    }

    /// Readers trust an entry marked with [`VERSION`] to be pending for the groups this table
    /// names: a change of the table must come with a new version. Changing the table fails this
    /// test until both `VERSION` and the table below are updated.
    #[test]
    fn the_table_is_the_one_its_version_names() {
        let mut table = String::new();
        for &t in EventType::ALL {
            let _ = write!(table, "{}:", t.as_str());
            for projected in [false, true] {
                let _ = write!(table, "{}|", groups_acting_on(t, projected, None).join(","));
            }
        }
        assert_eq!(VERSION, "1");
        assert_eq!(
            table,
            "OrderPlaced:order_group,inventory_group|inventory_group|\
             StockReserved:order_group,payment_group|payment_group|\
             StockFailed:order_group||\
             PaymentProcessed:order_group,shipping_group|shipping_group|\
             PaymentFailed:order_group||\
             ShipmentPrepared:order_group,notification_group|notification_group|\
             OrderCancelled:order_group,inventory_group,payment_group,shipping_group,\
             notification_group|inventory_group,payment_group,shipping_group,notification_group|\
             StockReleased:order_group||\
             PaymentRefunded:order_group||\
             NotificationSent:order_group||\
             NotificationFailed:order_group||\
             EventDeadLettered:order_group||"
        );
    }

    #[test]
    fn the_lua_routing_names_every_type_a_group_acts_on() {
        let lua = lua_routes();
        for t in EventType::ALL {
            assert!(
                lua.contains(&format!("if event_type == '{}' then", t.as_str())),
                "{lua}"
            );
        }
        assert!(
            lua.contains(
                "  if event_type == 'OrderPlaced' then\n    \
                 if replay_for == 'order_group' or (not replay_for and not projected) then \
                 claim('order_group') end\n    \
                 if replay_for == 'inventory_group' or (not replay_for) then \
                 claim('inventory_group') end\n"
            ),
            "{lua}"
        );
    }
}
