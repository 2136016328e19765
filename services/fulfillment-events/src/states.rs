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
