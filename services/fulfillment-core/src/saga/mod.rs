//! Per-order state in Redis: each step of a service's state machine moved and announced in one
//! script ([`transition`]), the order's status and history ([`projection`]), and the removal of
//! finished orders ([`retention`]).

pub mod projection;
pub mod publish;
pub mod retention;
pub mod transition;
