//! Read, handle, acknowledge, retry: the consumer loop of a group ([`consumer`]), what a handler
//! is ([`handler`]), the dead-letter stream ([`dead_letter`]), backoff, shutdown, and what every
//! service's `main` does ([`startup`]).

pub mod backoff;
pub mod consumer;
pub mod dead_letter;
pub mod handler;
pub mod shutdown;
pub mod startup;
