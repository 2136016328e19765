//! The services of the pipeline: each reads the stream through its own consumer group. This is the
//! one list of them; the groups' names are the contract's ([`keys::group`]).

use crate::keys;
use std::fmt;

/// A service that reads through a consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// The order service's status projection (`order_group`).
    Order,
    Inventory,
    Payment,
    Shipping,
    Notification,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Order,
        Service::Inventory,
        Service::Payment,
        Service::Shipping,
        Service::Notification,
    ];

    /// Its short name (`inventory`), as `--replicas` and `producer` fields spell it.
    pub fn name(self) -> &'static str {
        match self {
            Service::Order => "order",
            Service::Inventory => "inventory",
            Service::Payment => "payment",
            Service::Shipping => "shipping",
            Service::Notification => "notification",
        }
    }

    /// Its consumer group.
    pub fn group(self) -> &'static str {
        match self {
            Service::Order => keys::group::ORDER,
            Service::Inventory => keys::group::INVENTORY,
            Service::Payment => keys::group::PAYMENT,
            Service::Shipping => keys::group::SHIPPING,
            Service::Notification => keys::group::NOTIFICATION,
        }
    }

    /// The service named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The service reading through `group`, if there is one.
    pub fn of_group(group: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.group() == group)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every consumer group, in [`Service::ALL`] order.
pub fn all_groups() -> [&'static str; 5] {
    Service::ALL.map(Service::group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_groups_round_trip() {
        for s in Service::ALL {
            assert_eq!(Service::parse(s.name()), Some(s));
            assert_eq!(Service::of_group(s.group()), Some(s));
        }
        assert_eq!(Service::parse("billing"), None);
        assert_eq!(all_groups()[1], "inventory_group");
    }
}
