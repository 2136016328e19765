//! The states an order and each step of it go through, as types. Their text forms are the
//! contract's (`PENDING`, `labelled`, ...) and what the Lua scripts store; parsing a text that
//! names no state is an error, never a default.

use redis::{FromRedisValue, ParsingError, Value};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An order's status (the contract's names). It never moves backwards: progress
/// `Pending < Reserved < Paid < Completed`; `Completed` and `Cancelled` are final; `Failed` (an
/// event of the order was dead-lettered) holds until progress moves again after a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Reserved,
    Paid,
    Completed,
    Cancelled,
    Failed,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Pending,
        OrderStatus::Reserved,
        OrderStatus::Paid,
        OrderStatus::Completed,
        OrderStatus::Cancelled,
        OrderStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Reserved => "RESERVED",
            OrderStatus::Paid => "PAID",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// `Completed` or `Cancelled`: nothing moves it any more.
    pub fn is_final(self) -> bool {
        matches!(self, OrderStatus::Completed | OrderStatus::Cancelled)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromRedisValue for OrderStatus {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let text = String::from_redis_value(v)?;
        Self::parse(&text).ok_or_else(|| format!("unknown order status {text:?}").into())
    }
}

/// A state of one of a service's per-order state machines, as its hash's `state` field holds it.
pub trait StepState: Copy + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// Which machine, for messages.
    const MACHINE: &'static str;
    fn as_str(self) -> &'static str;
    fn parse(text: &str) -> Option<Self>;
}

/// Defines a state enum with its stored text forms; parsing anything else is `None`.
macro_rules! step_states {
    ($(#[$doc:meta])* $name:ident ($machine:literal) { $($(#[$vdoc:meta])* $variant:ident = $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|state| state.as_str() == text)
            }
        }

        impl StepState for $name {
            const MACHINE: &'static str = $machine;
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
            fn parse(text: &str) -> Option<Self> {
                $name::parse(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

step_states! {
    /// Inventory's record of an order's stock (its reservation hash).
    ReservationState ("reservation") {
        Reserved = "reserved",
        /// Stock was short: nothing was reserved.
        Failed = "failed",
        Released = "released",
    }
}

step_states! {
    /// Payment's record of an order's charge.
    PaymentState ("payment") {
        /// A charge is being attempted (the gateway may or may not have taken it).
        Charging = "charging",
        Charged = "charged",
        /// Declined, or given up after the last attempt.
        Failed = "failed",
        Refunded = "refunded",
        /// The order was cancelled before any charge.
        Cancelled = "cancelled",
    }
}

step_states! {
    /// Shipping's record of an order's label.
    ShipmentState ("shipment") {
        Labelled = "labelled",
        /// The order was cancelled before a label was made.
        Cancelled = "cancelled",
        /// The label was made, then voided by a cancellation.
        Voided = "voided",
    }
}

step_states! {
    /// Notification's record of one kind of message to an order's customer.
    NotificationState ("notification") {
        /// Claimed: the message is being sent (or was, and its record did not follow).
        Sending = "sending",
        Sent = "sent",
        /// The relay refused the recipient for good.
        Failed = "failed",
    }
}

step_states! {
    /// What a notification tells the customer.
    NotificationKind ("notification kind") {
        OrderConfirmed = "order_confirmed",
        OrderCancelled = "order_cancelled",
    }
}

impl NotificationKind {
    /// The kind a customer must never also be told.
    pub fn other(self) -> Self {
        match self {
            NotificationKind::OrderConfirmed => NotificationKind::OrderCancelled,
            NotificationKind::OrderCancelled => NotificationKind::OrderConfirmed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip_and_match_serde() {
        for kind in NotificationKind::ALL {
            assert_eq!(NotificationKind::parse(kind.as_str()), Some(*kind));
            let json = serde_json::to_string(kind).expect("serializes");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        for state in PaymentState::ALL {
            assert_eq!(PaymentState::parse(state.as_str()), Some(*state));
        }
        assert_eq!(ShipmentState::parse("LABELLED"), None);
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
    }
}
