//! The contract between the consumer runtime and a service: what a handler is given (a
//! [`Delivery`]) and what it answers ([`Handled`] or a [`HandlerError`]).
//!
//! Handlers are idempotent: the same event delivered twice has its effect once. A handler never
//! acknowledges anything itself; the consumer runtime decides from its answer.

use fulfillment_events::events::{DecodeError, Event, EventType, Payload};
use fulfillment_events::keys::Partition;
use fulfillment_events::service::Service;
use std::future::Future;
use std::pin::Pin;

/// What a handler returns.
pub type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Handled, HandlerError>> + Send + 'a>>;

/// A finished delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Done: acknowledge.
    Done,
    /// Done, and yet leave the entry pending, so it is delivered again (inventory's injected
    /// ack loss, `INVENTORY_ACK_LOSS_RATE`: downstream sees the event twice).
    KeepPending,
}

/// Why a delivery did not finish.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// May pass on a later attempt: the entry stays pending and the retry worker retries it.
    #[error("{0}")]
    Transient(String),
    /// Cannot pass however often it is tried: the entry goes to the dead-letter stream now.
    #[error("{0}")]
    Permanent(String),
}

impl From<redis::RedisError> for HandlerError {
    fn from(e: redis::RedisError) -> Self {
        HandlerError::Transient(format!("redis: {e}"))
    }
}

impl From<DecodeError> for HandlerError {
    fn from(e: DecodeError) -> Self {
        HandlerError::Permanent(e.to_string())
    }
}

/// One delivery of an event to a handler.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The partition the entry was read from: the order's stream and key space, where the
    /// handler keeps its state of the order and publishes what follows.
    pub partition: &'a Partition,
    pub stream_id: &'a str,
    pub event: &'a Event,
    /// The service handling it.
    pub service: Service,
    /// The consumer handling it (`inventory-1`, `retry-worker`).
    pub consumer: &'a str,
    /// 1 for the first delivery, 2 for the first retry, and so on.
    pub attempt: u64,
    /// The trace context of the handler's span (or of the event, when traces are off).
    pub traceparent: Option<&'a str>,
    /// Fires when the process is stopping: a handler that waits (a backoff between attempts)
    /// gives up at once with a transient error, so the entry stays pending for whoever runs next.
    pub stopping: &'a tokio_util::sync::CancellationToken,
}

impl Delivery<'_> {
    /// The next event of the same order, published by this delivery, of the payload's type: it
    /// carries this delivery's trace context and names this service and consumer as its producer.
    pub fn follow_up<P: Payload>(&self, payload: &P) -> Event {
        self.next(P::TYPE, Event::of(&self.event.order_id, payload).payload)
    }

    /// A follow-up of `P`'s type whose payload a script fills in (only it knows which product
    /// was short, what was released): the event's other fields, with an empty payload.
    pub fn follow_up_without_payload<P: Payload>(&self) -> Event {
        self.next(P::TYPE, serde_json::json!({}))
    }

    fn next(&self, event_type: EventType, payload: serde_json::Value) -> Event {
        let mut next = Event::new(event_type, &self.event.order_id, &payload);
        next.traceparent = self.traceparent.map(str::to_owned);
        next.producer = Some(format!("{}/{}", self.service, self.consumer));
        next
    }
}

/// A service's logic for the events its group cares about.
pub trait EventHandler: Send + Sync + 'static {
    /// The service this handler is; its group is the consumer group it reads through.
    fn service(&self) -> Service;
    /// The consumer group this handler reads through.
    fn group(&self) -> &'static str {
        self.service().group()
    }
    /// Whether this group acts on `event_type`; other entries are passed over. For the five
    /// services it agrees with [`fulfillment_events::routing::acts_on`] (a test checks), by which
    /// the publishing scripts make an entry pending for the groups that act on it.
    fn handles(&self, event_type: EventType) -> bool;
    /// Whether entries marked `projected` (recorded in the order's projection by their producer)
    /// are passed over too: only the projection itself has nothing left to do for them.
    fn skips_projected(&self) -> bool {
        false
    }
    fn handle<'a>(&'a self, delivery: Delivery<'a>) -> HandlerFuture<'a>;
}
