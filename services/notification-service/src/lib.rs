//! Notification: emails the customer that their order is confirmed (on `ShipmentPrepared`) or
//! cancelled (on `OrderCancelled`), through the relay of `SMTP_URL` ([`mail`]).
//!
//! Invariant: one message per order and kind, and never both kinds for one order. The relay is
//! outside any Redis script, so a notification moves in three steps on its hash:
//! 1. **claim**: nothing (or `sending`) → `sending`, in a script that also requires that no
//!    message of the other kind was claimed and, for a confirmation, that the label is live,
//!    takes this delivery's lease to send, and reads what the message says (one script,
//!    `claim_notification.lua`);
//! 2. **send** the message, whose `Message-ID` is made from the order and the kind;
//! 3. **record**: `sending` → `sent` with `NotificationSent`, in one script.
//!
//! A delivery that finds `sending` (the process died between claim and record, or the send failed
//! and the entry is retried) sends again with the same `Message-ID`, and counts a resend. So the
//! only way to a second message in a customer's inbox is a crash after the relay accepted the
//! message and before the record (docs/architecture.md), and it is counted. A relay that refuses
//! the recipient for good (SMTP 5xx) is not asked again: `sending` → `failed` with
//! `NotificationFailed`. A relay that is down, slow or answers 4xx is a transient error: the entry
//! stays pending for the retry worker and is dead-lettered after the last retry, like any other.

pub mod mail;
pub mod relay;

use fulfillment_core::saga::transition::{Recorder, Step, transition};
use fulfillment_core::{
    Delivery, Event, EventHandler, EventType, Handled, HandlerError, HandlerFuture, Redis, Service,
};
use fulfillment_events::events::{
    LineItem, NotificationFailed, NotificationSent, OrderCancelled, ShipmentPrepared,
};
use fulfillment_events::keys;
use fulfillment_events::states::{NotificationKind, NotificationState, PaymentState};
use fulfillment_redis::script_batch::{BatchedScript, ScriptCall};
use fulfillment_redis::script_reply::Tagged;
use lettre::message::Mailbox;
use mail::{Line, Mailer, Notice, SendError};
use redis::Script;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use tracing::Instrument;

pub use mail::MailSettings;

static RELEASE_LEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/release_lease.lua")));
static CLAIM: LazyLock<BatchedScript> = LazyLock::new(|| {
    BatchedScript::new(
        "claim_notification",
        include_str!("scripts/claim_notification.lua"),
    )
});

fulfillment_redis::script_tags! {
    /// What `claim_notification.lua` answers.
    enum ClaimTag ("claim_notification.lua") {
        Claimed = "claimed", Settled = "settled", Blocked = "blocked", Busy = "busy", Gone = "gone"
    }
}

/// The notification group's handler.
#[derive(Debug, Clone)]
pub struct NotificationHandler {
    redis: Redis,
    mailer: Arc<Mailer>,
    from: Mailbox,
    send_lease: std::time::Duration,
    names: Arc<std::sync::Mutex<NameCache>>,
}

/// Products' names as the catalog gave them, each for [`NAME_TTL`]: a burst of orders of one
/// product reads its name once, and a renamed product shows its new name within that time.
#[derive(Debug, Default)]
struct NameCache(HashMap<String, (Option<String>, std::time::Instant)>);

/// How long a product's name is taken from [`NameCache`].
const NAME_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// At most this many names are kept; the cache starts over when full (catalogs are small; order
/// lines name only products the catalog holds).
const NAMES_KEPT: usize = 10_000;

impl NameCache {
    fn get(&self, product_id: &str) -> Option<Option<String>> {
        self.0
            .get(product_id)
            .filter(|(_, at)| at.elapsed() < NAME_TTL)
            .map(|(name, _)| name.clone())
    }

    fn put(&mut self, product_id: &str, name: Option<String>) {
        if self.0.len() >= NAMES_KEPT {
            self.0.clear();
        }
        self.0
            .insert(product_id.to_owned(), (name, std::time::Instant::now()));
    }
}

/// What the customer is to be told, read from the event.
struct Request {
    kind: NotificationKind,
    to: String,
    tracking_number: Option<String>,
    reason: Option<String>,
}

/// What step 1 (the claim, with this delivery's lease to send) found.
enum Claim {
    /// Claimed and leased by this delivery: what the message says, read in the same step.
    Claimed(Claimed),
    /// Sent or refused before: the record step publishes its event again.
    Settled(NotificationState),
    /// The customer was told the other outcome, or the label is not live (the guard's state).
    Blocked(String),
    /// Another delivery's lease runs.
    Busy { holder: String, left_ms: u64 },
    /// Retention removed the order.
    Gone,
}

/// Step 1 as [`NotificationHandler::claimed_session`] ends it: claimed, with the session to
/// send over, or nothing to send.
enum Opened {
    /// The session boxed: it is large, the other outcomes small.
    Claimed(Claimed, Box<mail::Session>),
    Settled(NotificationState),
    Blocked(String),
    Gone,
}

/// A claimed notification and what its message says.
struct Claimed {
    /// An earlier attempt claimed it and was not recorded: this is a resend.
    resend: bool,
    /// The order's items (JSON), total (cents) and payment state, as the claim read them.
    items: String,
    total: Option<u64>,
    payment: Option<PaymentState>,
}

/// How long a delivery waits out another's lease before it leaves its entry pending: a live
/// sender is done within a send's deadline.
const BUSY_WAIT: std::time::Duration = mail::SEND_DEADLINE;

/// What step 3 records.
enum Told<'a> {
    Sent(&'a Notice),
    /// Refused for good, and why.
    Refused(&'a Notice, &'a str),
    /// Settled by an earlier delivery: its event is published again.
    Before(NotificationState),
}

impl Request {
    fn of(event: &Event, kind: NotificationKind) -> Result<Self, HandlerError> {
        Ok(match kind {
            NotificationKind::OrderConfirmed => {
                let shipped: ShipmentPrepared = event.payload_as()?;
                Request {
                    kind,
                    to: shipped.customer_email,
                    tracking_number: Some(shipped.tracking_number),
                    reason: None,
                }
            }
            NotificationKind::OrderCancelled => {
                let cancelled: OrderCancelled = event.payload_as()?;
                Request {
                    kind,
                    to: cancelled.customer_email,
                    tracking_number: None,
                    reason: Some(cancelled.reason),
                }
            }
        })
    }
}

impl NotificationHandler {
    pub fn new(redis: Redis, mailer: Mailer, mail: &MailSettings) -> Self {
        Self {
            redis,
            mailer: Arc::new(mailer),
            from: mail.from.clone(),
            send_lease: mail.send_lease,
            names: Arc::default(),
        }
    }

    async fn notify(&self, delivery: Delivery<'_>) -> Result<Handled, HandlerError> {
        let event = delivery.event;
        let Some(kind) = kind_of(event.event_type) else {
            // Never delivered: the consumer passes other types over.
            return Ok(Handled::Done);
        };
        let request = Request::of(event, kind)?;
        // This delivery's own lease (another delivery of one notification may run at once: a
        // duplicate entry in the same batch, or the retry worker's while a slow batch still
        // holds it). The same consumer retrying the same entry takes its own lease back.
        let holder = format!("{}/{}", delivery.consumer, delivery.stream_id);
        let handled = self.claim_and_send(&delivery, &request, &holder).await;
        if handled.is_err() {
            // Not sent, or sent and not recorded (or the claim's outcome is unknown): whoever
            // retries may go at once.
            self.release(&delivery, kind, &holder).await;
        }
        handled
    }

    /// Steps 1 to 3: the claim over a session opened for it, then the send and the record.
    async fn claim_and_send(
        &self,
        delivery: &Delivery<'_>,
        request: &Request,
        holder: &str,
    ) -> Result<Handled, HandlerError> {
        let kind = request.kind;
        let (claimed, mut session) = match self.claimed_session(delivery, request, holder).await? {
            Opened::Claimed(claimed, session) => (claimed, session),
            Opened::Settled(told) => {
                self.record(delivery, request, Told::Before(told)).await?;
                return Ok(Handled::Done);
            }
            Opened::Blocked(guard_state) => {
                tracing::warn!(
                    kind = kind.as_str(),
                    guard_state = guard_state.as_str(),
                    "not sent: the customer was told the other outcome, or the label is not live"
                );
                return Ok(Handled::Done);
            }
            Opened::Gone => {
                tracing::debug!("order removed by retention; nothing sent");
                return Ok(Handled::Done);
            }
        };
        let resend = claimed.resend;
        let notice = self.notice(delivery, request, claimed).await?;
        let span = tracing::info_span!("smtp send", kind = kind.as_str(), resend);
        match self
            .send(&mut session, &notice, &request.to)
            .instrument(span)
            .await
        {
            Ok(()) => {
                if resend {
                    self.count(
                        delivery,
                        &keys::counter::notifications_resent(kind.as_str()),
                    )
                    .await;
                    tracing::warn!(
                        kind = kind.as_str(),
                        "sent again with the same Message-ID (an earlier attempt was not recorded)"
                    );
                }
                self.record_sent(delivery, request, &notice).await?;
                tracing::debug!(
                    kind = kind.as_str(),
                    to = mask_email(&request.to).as_str(),
                    "notification sent"
                );
                Ok(Handled::Done)
            }
            Err(SendError::Refused(reason)) => {
                tracing::warn!(
                    kind = kind.as_str(),
                    to = mask_email(&request.to).as_str(),
                    reason = reason.as_str(),
                    "the relay refused the recipient; not retried"
                );
                self.record(delivery, request, Told::Refused(&notice, &reason))
                    .await?;
                Ok(Handled::Done)
            }
            Err(SendError::Transient(e)) => Err(HandlerError::Transient(format!(
                "mail not sent (left pending): {e}"
            ))),
        }
    }

    /// Step 1 over an open session: the claim with this delivery's lease to send (`holder`),
    /// and the session when it was claimed (given back otherwise). Another delivery's running
    /// lease is waited out here (the session given back meanwhile), for [`BUSY_WAIT`] at most: a
    /// duplicate entry in the same batch finds the message sent within milliseconds; after that
    /// the entry stays pending (a transient error).
    async fn claimed_session(
        &self,
        delivery: &Delivery<'_>,
        request: &Request,
        holder: &str,
    ) -> Result<Opened, HandlerError> {
        let until = tokio::time::Instant::now() + BUSY_WAIT;
        loop {
            // Open before anything is claimed, held until the record: a relay that is down or
            // busy leaves the notification as it was, and the lease covers the send and the
            // record, never a wait for a session.
            let session = self.mailer.session().await.map_err(|e| {
                HandlerError::Transient(format!("mail not sent (left pending): {e}"))
            })?;
            let (other, left_ms) = match self.claim(delivery, request, holder).await? {
                Claim::Busy { holder, left_ms } => (holder, left_ms),
                Claim::Claimed(claimed) => {
                    return Ok(Opened::Claimed(claimed, Box::new(session)));
                }
                Claim::Settled(told) => return Ok(Opened::Settled(told)),
                Claim::Blocked(guard_state) => return Ok(Opened::Blocked(guard_state)),
                Claim::Gone => return Ok(Opened::Gone),
            };
            drop(session);
            if tokio::time::Instant::now() >= until {
                return Err(HandlerError::Transient(format!(
                    "{other} is sending this notification (its lease runs {left_ms} ms more); left pending"
                )));
            }
            let pause = std::time::Duration::from_millis(left_ms.clamp(10, 200));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = delivery.stopping.cancelled() => {
                    return Err(HandlerError::Transient(
                        "stopping while another delivery sends this notification".into(),
                    ));
                }
            }
        }
    }

    /// Step 1: the notification is `sending` and this delivery holds the lease to send it, unless
    /// another delivery's lease runs, the customer was told (or refused) already, was told the
    /// other kind, or the label is not live. An order retention removed writes nothing.
    async fn claim(
        &self,
        delivery: &Delivery<'_>,
        request: &Request,
        holder: &str,
    ) -> Result<Claim, HandlerError> {
        let order_id = delivery.event.order_id.as_str();
        let keys = &delivery.partition.keys;
        let mut call = ScriptCall::new();
        call.key(keys.notification(order_id, request.kind.as_str()))
            .key(keys.order(order_id))
            .key(keys.notification(order_id, request.kind.other().as_str()))
            .key(keys.payment(order_id));
        if request.kind == NotificationKind::OrderConfirmed {
            call.key(keys.shipment(order_id));
        }
        call.arg(holder)
            .arg(self.send_lease.as_millis() as u64)
            .arg(&request.to);
        let reply: Tagged = self.redis.run_script(&CLAIM, keys, call).await?;
        let claim = (|| -> Result<Claim, redis::ParsingError> {
            Ok(match ClaimTag::of(&reply)? {
                ClaimTag::Claimed => {
                    let previous = reply.text(0)?;
                    let total = reply.text(2)?;
                    let payment = reply.text(3)?;
                    Claim::Claimed(Claimed {
                        resend: match previous.as_str() {
                            "-" => false,
                            "sending" => true,
                            other => {
                                return Err(format!(
                                    "a notification was claimed from the state {other:?}, which it cannot"
                                )
                                .into());
                            }
                        },
                        items: reply.text(1)?,
                        total: (!total.is_empty())
                            .then(|| total.parse())
                            .transpose()
                            .map_err(|e| format!("an order's total: {e}"))?,
                        payment: (!payment.is_empty())
                            .then(|| {
                                PaymentState::parse(&payment).ok_or_else(|| {
                                    format!("the order's payment is in no known state: {payment:?}")
                                })
                            })
                            .transpose()?,
                    })
                }
                ClaimTag::Settled => {
                    let state = reply.text(0)?;
                    match NotificationState::parse(&state) {
                        Some(told @ (NotificationState::Sent | NotificationState::Failed)) => {
                            Claim::Settled(told)
                        }
                        Some(NotificationState::Sending) | None => {
                            return Err(format!(
                                "a notification is in a state it cannot be: {state:?}"
                            )
                            .into());
                        }
                    }
                }
                ClaimTag::Blocked => Claim::Blocked(reply.text(0)?),
                ClaimTag::Gone => Claim::Gone,
                ClaimTag::Busy => Claim::Busy {
                    holder: reply.text(0)?,
                    left_ms: reply.text(1)?.parse().map_err(|e| {
                        redis::ParsingError::from(format!("a lease's time left: {e}"))
                    })?,
                },
            })
        })()
        .map_err(redis::RedisError::from)?;
        Ok(claim)
    }

    /// Gives the lease up after a delivery that failed, so the retry may go at once (a failure to give
    /// it up only delays the retry until the lease runs out).
    async fn release(&self, delivery: &Delivery<'_>, kind: NotificationKind, holder: &str) {
        let order_id = delivery.event.order_id.as_str();
        let released: redis::RedisResult<i64> = RELEASE_LEASE
            .key(
                delivery
                    .partition
                    .keys
                    .notification(order_id, kind.as_str()),
            )
            .arg(holder)
            .invoke_async(&mut self.redis.conn())
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "cannot give the send lease up; it runs out by itself");
        }
    }

    /// Step 3 after the relay took the message: recorded, asked again a few times (the step is
    /// safe to repeat) before the entry is left to a retry, which would send the message again.
    async fn record_sent(
        &self,
        delivery: &Delivery<'_>,
        request: &Request,
        notice: &Notice,
    ) -> Result<(), HandlerError> {
        let mut pause = std::time::Duration::from_millis(100);
        for _ in 0..3 {
            match self.record(delivery, request, Told::Sent(notice)).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "the relay took the message; recording it failed, asking again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
        self.record(delivery, request, Told::Sent(notice)).await
    }

    /// Step 3: `sending` → `sent` with `NotificationSent`, or → `failed` with
    /// `NotificationFailed`; once settled, the same step publishes that event again. The hash
    /// keeps what the customer was told for `GET /orders/{id}/messages` (the first record's, if
    /// two race): a sent message's subject, `Message-ID` and text, a refused one's subject and
    /// reason.
    async fn record(
        &self,
        delivery: &Delivery<'_>,
        request: &Request,
        outcome: Told<'_>,
    ) -> Result<(), HandlerError> {
        let kind = request.kind;
        let (subject, message_id, text);
        let (to, event, counter, facts): (_, _, _, &[(&str, &str)]) = match outcome {
            Told::Sent(notice) => {
                (subject, text) = (notice.subject(), notice.text());
                message_id = mail::message_id(&notice.order_id, kind, &self.from);
                (
                    NotificationState::Sent,
                    delivery.follow_up(&NotificationSent {
                        kind,
                        to: request.to.clone(),
                    }),
                    keys::counter::notifications(kind.as_str()),
                    &[
                        ("subject", &subject),
                        ("message_id", &message_id),
                        ("text", &text),
                    ],
                )
            }
            Told::Refused(notice, reason) => {
                subject = notice.subject();
                (
                    NotificationState::Failed,
                    delivery.follow_up(&NotificationFailed {
                        kind,
                        to: request.to.clone(),
                        reason: reason.to_owned(),
                    }),
                    keys::counter::notifications_failed(kind.as_str()),
                    &[("subject", &subject), ("reason", reason)],
                )
            }
            // The step only publishes the event it stored the first time.
            Told::Before(settled) => (
                settled,
                delivery.follow_up(&NotificationSent {
                    kind,
                    to: request.to.clone(),
                }),
                keys::counter::notifications(kind.as_str()),
                &[],
            ),
        };
        let order_id = delivery.event.order_id.as_str();
        transition(
            &self.redis,
            delivery.partition,
            &Step {
                order_id,
                key: delivery
                    .partition
                    .keys
                    .notification(order_id, kind.as_str()),
                from: &[Some(NotificationState::Sending)],
                to,
                event: Some(&event),
                event_field: "event",
                counter: Some(&counter),
                facts,
                guards: &[],
                recorder: Some(Recorder {
                    consumer: delivery.consumer,
                    attempt: delivery.attempt,
                }),
            },
        )
        .await?;
        Ok(())
    }

    /// Step 2: the message to the customer, over the session opened for it.
    async fn send(
        &self,
        session: &mut mail::Session,
        notice: &Notice,
        to: &str,
    ) -> Result<(), SendError> {
        let address: lettre::Address = to
            .parse()
            .map_err(|e| SendError::Refused(format!("not an address: {e}")))?;
        let message = notice
            .message(&self.from, Mailbox::new(None, address))
            .map_err(|e| SendError::Refused(format!("cannot compose the message: {e}")))?;
        self.mailer.send(session, message).await
    }

    /// What the message says: the order's lines with their products' names, the total, and for a
    /// cancellation whether money was taken (and so is given back); the claim read the order.
    async fn notice(
        &self,
        delivery: &Delivery<'_>,
        request: &Request,
        claimed: Claimed,
    ) -> Result<Notice, HandlerError> {
        let order_id = delivery.event.order_id.as_str();
        let items: Vec<LineItem> = if claimed.items.is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(&claimed.items).map_err(|e| {
                HandlerError::Permanent(format!("the order's items are unreadable: {e}"))
            })?
        };
        let names = self.product_names(&items).await?;
        let lines = items
            .iter()
            .map(|item| Line {
                name: names
                    .get(&item.product_id)
                    .cloned()
                    .unwrap_or_else(|| item.product_id.clone()),
                quantity: item.quantity,
                unit_price: item.unit_price,
            })
            .collect();
        let refunded = match claimed.payment {
            Some(PaymentState::Charging | PaymentState::Charged | PaymentState::Refunded) => true,
            Some(PaymentState::Failed | PaymentState::Cancelled) | None => false,
        };
        Ok(Notice {
            order_id: order_id.to_owned(),
            kind: request.kind,
            lines,
            total: claimed.total.unwrap_or_default(),
            tracking_number: request.tracking_number.clone(),
            reason: request.reason.clone(),
            refunded,
        })
    }

    /// The catalog's names of the order's products (a product since removed keeps its id), each
    /// read at most once per [`NAME_TTL`].
    async fn product_names(
        &self,
        items: &[LineItem],
    ) -> Result<HashMap<String, String>, HandlerError> {
        let catalog = &self.redis.layout().catalog;
        let mut names = HashMap::new();
        let mut asked = std::collections::HashSet::new();
        for item in items {
            if !asked.insert(item.product_id.as_str()) {
                continue;
            }
            let cached = self.cached_names().get(&item.product_id);
            let name = match cached {
                Some(name) => name,
                None => {
                    let name: Option<String> = redis::cmd("HGET")
                        .arg(catalog.product(&item.product_id))
                        .arg("name")
                        .query_async(&mut self.redis.conn())
                        .await?;
                    let name = name.filter(|n| !n.is_empty());
                    self.cached_names().put(&item.product_id, name.clone());
                    name
                }
            };
            if let Some(name) = name {
                names.insert(item.product_id.clone(), name);
            }
        }
        Ok(names)
    }

    /// The name cache; a panic elsewhere while it was held leaves names that are still names.
    fn cached_names(&self) -> std::sync::MutexGuard<'_, NameCache> {
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds one to a durable counter of the order's partition (a figure: a failure is logged).
    async fn count(&self, delivery: &Delivery<'_>, counter: &str) {
        let added: redis::RedisResult<i64> = redis::cmd("HINCRBY")
            .arg(delivery.partition.keys.counters())
            .arg(counter)
            .arg(1)
            .query_async(&mut self.redis.conn())
            .await;
        if let Err(e) = added {
            tracing::warn!(error = %e, counter, "cannot count");
        }
    }
}

/// What the customer is told on an event; every event type is named, so a new one must be given
/// a place here. `handles` and `handle` both read this one list.
fn kind_of(event_type: EventType) -> Option<NotificationKind> {
    match event_type {
        EventType::ShipmentPrepared => Some(NotificationKind::OrderConfirmed),
        EventType::OrderCancelled => Some(NotificationKind::OrderCancelled),
        EventType::OrderPlaced
        | EventType::StockReserved
        | EventType::StockFailed
        | EventType::PaymentProcessed
        | EventType::PaymentFailed
        | EventType::StockReleased
        | EventType::PaymentRefunded
        | EventType::NotificationSent
        | EventType::NotificationFailed
        | EventType::EventDeadLettered => None,
    }
}

impl EventHandler for NotificationHandler {
    fn service(&self) -> Service {
        Service::Notification
    }

    fn handles(&self, event_type: EventType) -> bool {
        kind_of(event_type).is_some()
    }

    fn handle<'a>(&'a self, delivery: Delivery<'a>) -> HandlerFuture<'a> {
        Box::pin(self.notify(delivery))
    }
}

/// `alice@example.com` → `a***@example.com`: logs name the recipient without exposing it.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// Builds the handler as the service binary does. The settings were checked when read; a mailer
/// that cannot be made from them anyway only logs (and says so).
pub fn handler(redis: Redis, mail: &MailSettings) -> NotificationHandler {
    let mailer = Mailer::new(mail).unwrap_or_else(|e| {
        tracing::error!(error = %e, "no mailer; mail is only logged");
        Mailer::Log
    });
    NotificationHandler::new(redis, mailer, mail)
}

#[cfg(test)]
mod tests {
    #[test]
    fn emails_are_masked() {
        assert_eq!(super::mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(super::mask_email("nonsense"), "***");
    }
}
