//! Email: the message a notification sends, and where it goes.
//!
//! With `SMTP_URL`, through that relay (sessions kept open and reused, see [`crate::relay`]: a
//! connection and its greeting, TLS and login have [`SMTP_TIMEOUT`], a whole send
//! [`SEND_DEADLINE`]); with `MAIL_DIR` and no
//! relay (what `fulfillment up` sets), written as `.eml` files there; with neither, logged only
//! (said once at start). Every header value goes through lettre's types, which encode it: a
//! customer's address or a product's name cannot add a header.
//!
//! Each message has a `Message-ID` made from the order and the kind, so a message sent again
//! after a crash (see the notification handler) is the same message to every mail system that
//! deduplicates by it, and the order's full id in an `X-Order-Id` header and in the body.

use crate::relay::Relay;
pub use crate::relay::{SMTP_TIMEOUT, SendError};
use fulfillment_core::settings::{Env, SettingsError};
use fulfillment_events::states::NotificationKind;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::time::Duration;

/// A whole send (a connection from the pool or a new one, the message) gives up after this long.
pub const SEND_DEADLINE: Duration = Duration::from_secs(30);
/// How long a process may hold a notification it is sending, by default.
pub const DEFAULT_SEND_LEASE: Duration = Duration::from_secs(45);
/// Connections the pool keeps open to the relay, and sends in flight at once, at most: a relay
/// limits the sessions a client may open, and every send in flight is a message a crash may leave
/// unrecorded (sent again later, under the same `Message-ID`).
const POOL_SIZE: usize = 4;

/// Where the notification service's mail goes.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `SMTP_URL`: the relay, `smtp://host:port` (plain; `?tls=required` for STARTTLS,
    /// `?tls=opportunistic`), or `smtps://host:port` (TLS from the start), with `user:password@`
    /// when it asks for a login. Unset: no relay.
    pub smtp_url: Option<SecretString>,
    /// `SMTP_PASSWORD`: the relay's password whatever the URL says (what a Secret holds).
    pub smtp_password: Option<SecretString>,
    /// `MAIL_FROM`: the sender, `Name <address>` or `address`. Default
    /// `Fulfillment <orders@fulfillment.localhost>`.
    pub from: Mailbox,
    /// `MAIL_DIR`: with no relay, where each message is written as an `.eml` file (`fulfillment
    /// up` sets it to its state directory's `mail/`). Unset and no relay: mail is only logged.
    pub dir: Option<PathBuf>,
    /// `SMTP_SEND_LEASE_MS`: how long one process may hold a notification it is sending before
    /// another may send it. Default 45000: above a send's deadline ([`SEND_DEADLINE`], so a live
    /// sender is never doubled) and below `RETRY_MIN_IDLE_MS`'s default (so a dead one's work is
    /// taken at the first retry). 100..=3600000.
    pub send_lease: Duration,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            smtp_url: None,
            smtp_password: None,
            from: default_from(),
            dir: None,
            send_lease: DEFAULT_SEND_LEASE,
        }
    }
}

/// `Fulfillment <orders@fulfillment.localhost>`.
fn default_from() -> Mailbox {
    #[allow(clippy::expect_used)] // a constant, checked by a test
    let address = lettre::Address::new("orders", "fulfillment.localhost").expect("a valid address");
    Mailbox::new(Some("Fulfillment".to_owned()), address)
}

impl MailSettings {
    /// `SMTP_URL`, `SMTP_PASSWORD`, `MAIL_FROM`, `MAIL_DIR`; a bad one is refused naming it.
    pub fn read(env: &Env) -> Result<Self, SettingsError> {
        let smtp_url = env
            .secret("SMTP_URL")
            .filter(|u| !u.expose_secret().is_empty());
        let from = match env.optional("MAIL_FROM") {
            None => default_from(),
            // A control character would break the From header (lettre cannot encode it).
            Some(text) if text.chars().any(char::is_control) => {
                return Err(SettingsError {
                    name: "MAIL_FROM",
                    value: text.escape_debug().to_string(),
                    reason: "a control character (a line break?) in a mailbox".into(),
                });
            }
            Some(text) => text.parse::<Mailbox>().map_err(|e| SettingsError {
                name: "MAIL_FROM",
                value: text.clone(),
                reason: format!("not a mailbox (`Name <address>` or `address`): {e}"),
            })?,
        };
        let settings = Self {
            smtp_url,
            smtp_password: env.secret("SMTP_PASSWORD"),
            from,
            dir: env.optional("MAIL_DIR").map(PathBuf::from),
            send_lease: Duration::from_millis(env.ranged(
                "SMTP_SEND_LEASE_MS",
                DEFAULT_SEND_LEASE.as_millis() as u64,
                100,
                3_600_000,
            )?),
        };
        settings.relay()?;
        Ok(settings)
    }

    /// The relay, when there is one (its URL read, no connection opened yet).
    fn relay(&self) -> Result<Option<Relay>, SettingsError> {
        let Some(url) = &self.smtp_url else {
            return Ok(None);
        };
        let url = url.expose_secret();
        let password = self.smtp_password.as_ref().map(|p| p.expose_secret());
        Relay::parse(url, password, POOL_SIZE)
            .map(Some)
            .map_err(|why| SettingsError {
                name: "SMTP_URL",
                value: fulfillment_core::settings::redact(url),
                reason: format!("{why} (smtp://, smtps://, ?tls=required)"),
            })
    }

    /// Where mail goes, in one line for the log at start.
    pub fn describe(&self) -> String {
        match (&self.smtp_url, &self.dir) {
            (Some(url), _) => format!(
                "mail goes to the relay {}",
                fulfillment_core::settings::redact(url.expose_secret())
            ),
            (None, Some(dir)) => format!("mail is written as .eml files to {}", dir.display()),
            (None, None) => "SMTP_URL is not set: mail is only logged, nobody is emailed".into(),
        }
    }
}

/// Where messages go.
#[derive(Clone)]
pub enum Mailer {
    /// The relay, and a permit per session it may have open.
    Relay(
        std::sync::Arc<Relay>,
        std::sync::Arc<tokio::sync::Semaphore>,
    ),
    Files(AsyncFileTransport<Tokio1Executor>),
    Log,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mailer::Relay(..) => "Mailer::Relay",
            Mailer::Files(_) => "Mailer::Files",
            Mailer::Log => "Mailer::Log",
        })
    }
}

impl Mailer {
    /// The mailer the settings ask for (they were checked when read). Within the runtime.
    pub fn new(settings: &MailSettings) -> Result<Self, SettingsError> {
        if let Some(relay) = settings.relay()? {
            return Ok(Mailer::Relay(
                std::sync::Arc::new(relay),
                std::sync::Arc::new(tokio::sync::Semaphore::new(POOL_SIZE)),
            ));
        }
        Ok(match &settings.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| SettingsError {
                    name: "MAIL_DIR",
                    value: dir.display().to_string(),
                    reason: format!("cannot create it: {e}"),
                })?;
                Mailer::Files(AsyncFileTransport::<Tokio1Executor>::new(dir))
            }
            None => Mailer::Log,
        })
    }

    /// One of the [`POOL_SIZE`] sessions to the relay, open (none needed for files or the log),
    /// within [`SEND_DEADLINE`]. The handler opens it before it claims the notification and
    /// holds it to the record: a relay that is down or busy leaves the notification unclaimed
    /// (nothing to send again), and a crash leaves at most [`POOL_SIZE`] messages unrecorded.
    pub async fn session(&self) -> Result<Session, SendError> {
        let Mailer::Relay(relay, permits) = self else {
            return Ok(Session::default());
        };
        let opening = async {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|closed| SendError::Transient(closed.to_string()))?;
            Ok::<_, SendError>((permit, relay.open().await?))
        };
        match tokio::time::timeout(SEND_DEADLINE, opening).await {
            Ok(Ok((permit, open))) => Ok(Session {
                open: Some(open),
                _permit: Some(permit),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SendError::Transient(format!(
                "no session to the relay within {} s",
                SEND_DEADLINE.as_secs()
            ))),
        }
    }

    /// Sends `message` over `session`, within [`SEND_DEADLINE`].
    pub async fn send(&self, session: &mut Session, message: Message) -> Result<(), SendError> {
        let sending =
            async {
                match self {
                    Mailer::Relay(..) => match session.open.take() {
                        Some(open) => open.send(message.envelope(), &message.formatted()).await,
                        None => Err(SendError::Transient("the session was used up".into())),
                    },
                    Mailer::Files(files) => files.send(message).await.map(drop).map_err(|e| {
                        SendError::Transient(format!("cannot write the message: {e}"))
                    }),
                    Mailer::Log => {
                        tracing::info!(
                            bytes = message.formatted().len(),
                            "mail not sent: SMTP_URL is not set"
                        );
                        Ok(())
                    }
                }
            };
        match tokio::time::timeout(SEND_DEADLINE, sending).await {
            Ok(sent) => sent,
            Err(_) => Err(SendError::Transient(format!(
                "the relay did not take the message within {} s (it may have: outcome unknown)",
                SEND_DEADLINE.as_secs()
            ))),
        }
    }
}

/// What a send holds: with a relay, an open session and its permit (dropped unused, the
/// session goes back to the idle ones).
#[derive(Debug, Default)]
pub struct Session {
    open: Option<crate::relay::Session>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// `X-Order-Id`: the order's full id, for support staff and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XOrderId(pub String);

impl Header for XOrderId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Order-Id")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// One line of the order, as the customer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub name: String,
    pub quantity: u32,
    /// Cents.
    pub unit_price: u64,
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub order_id: String,
    pub kind: NotificationKind,
    pub lines: Vec<Line>,
    /// Cents.
    pub total: u64,
    /// A confirmation's tracking number.
    pub tracking_number: Option<String>,
    /// A cancellation's reason.
    pub reason: Option<String>,
    /// A cancellation: whether the customer was charged (and so is refunded).
    pub refunded: bool,
}

impl Notice {
    /// The first 8 characters of the order id, as the customer sees it in a subject.
    pub fn short_id(&self) -> &str {
        self.order_id.get(..8).unwrap_or(&self.order_id)
    }

    pub fn subject(&self) -> String {
        match self.kind {
            NotificationKind::OrderConfirmed => {
                format!("Your order {} is on its way", self.short_id())
            }
            NotificationKind::OrderCancelled => {
                format!("Your order {} was cancelled", self.short_id())
            }
        }
    }

    /// The plain-text body.
    pub fn text(&self) -> String {
        let mut out = String::new();
        match self.kind {
            NotificationKind::OrderConfirmed => {
                out.push_str(&format!(
                    "Your order {} is confirmed and shipped.\n",
                    self.order_id
                ));
                if let Some(tracking) = &self.tracking_number {
                    out.push_str(&format!("Tracking number: {tracking}\n"));
                }
            }
            NotificationKind::OrderCancelled => {
                out.push_str(&format!("Your order {} was cancelled.\n", self.order_id));
                if let Some(reason) = &self.reason {
                    out.push_str(&format!("Reason: {reason}\n"));
                }
                out.push_str(if self.refunded {
                    "Your payment is refunded.\n"
                } else {
                    "You were not charged.\n"
                });
            }
        }
        out.push('\n');
        for line in &self.lines {
            out.push_str(&format!(
                "{} x {} at {} = {}\n",
                line.quantity,
                line.name,
                money(line.unit_price),
                money(line.unit_price * u64::from(line.quantity))
            ));
        }
        out.push_str(&format!("Total: {}\n", money(self.total)));
        out
    }

    /// The HTML body, every text from the order escaped.
    pub fn html(&self) -> String {
        let mut rows = String::new();
        for line in &self.lines {
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                line.quantity,
                escape(&line.name),
                money(line.unit_price * u64::from(line.quantity))
            ));
        }
        let lead = match self.kind {
            NotificationKind::OrderConfirmed => format!(
                "<p>Your order <code>{}</code> is confirmed and shipped.</p>{}",
                escape(&self.order_id),
                self.tracking_number
                    .as_deref()
                    .map(|t| format!("<p>Tracking number: <b>{}</b></p>", escape(t)))
                    .unwrap_or_default()
            ),
            NotificationKind::OrderCancelled => format!(
                "<p>Your order <code>{}</code> was cancelled.</p>{}<p>{}</p>",
                escape(&self.order_id),
                self.reason
                    .as_deref()
                    .map(|r| format!("<p>Reason: {}</p>", escape(r)))
                    .unwrap_or_default(),
                if self.refunded {
                    "Your payment is refunded."
                } else {
                    "You were not charged."
                }
            ),
        };
        format!(
            "<!doctype html><html><body>{lead}<table>{rows}</table><p>Total: <b>{}</b></p></body></html>",
            money(self.total)
        )
    }

    /// The message to `to`, from `from`, with its deterministic `Message-ID`.
    pub fn message(&self, from: &Mailbox, to: Mailbox) -> Result<Message, lettre::error::Error> {
        Message::builder()
            .from(from.clone())
            .to(to)
            .subject(self.subject())
            .message_id(Some(message_id(&self.order_id, self.kind, from)))
            .header(XOrderId(self.order_id.clone()))
            .multipart(MultiPart::alternative_plain_html(self.text(), self.html()))
    }
}

/// The `Message-ID` of an order's notification of `kind`: the same for every attempt.
pub fn message_id(order_id: &str, kind: NotificationKind, from: &Mailbox) -> String {
    format!("<{order_id}.{}@{}>", kind.as_str(), from.email.domain())
}

/// Cents as `$12.34`.
fn money(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(kind: NotificationKind) -> Notice {
        Notice {
            order_id: "0d2f5a9e-1111-4222-8333-444455556666".into(),
            kind,
            lines: vec![Line {
                name: "<b>Widget</b>\r\nBcc: evil@example.com".into(),
                quantity: 2,
                unit_price: 1250,
            }],
            total: 2500,
            tracking_number: Some("FUL000000000042".into()),
            reason: Some("customer_request".into()),
            refunded: true,
        }
    }

    #[test]
    fn a_message_carries_the_order_and_no_header_a_caller_wrote() {
        let from = default_from();
        // No name comes from a caller (the customer's mailbox is the address alone), and a hostile
        // address does not parse (the handler records it as refused, never sends it).
        let to = Mailbox::new(None, "eve@example.com".parse().expect("address"));
        assert!(
            "eve@example.com\r\nBcc: x@example.com"
                .parse::<lettre::Address>()
                .is_err()
        );
        let message = notice(NotificationKind::OrderConfirmed)
            .message(&from, to)
            .expect("message");
        let text = String::from_utf8(message.formatted()).expect("utf-8");
        assert!(text.contains("Message-ID: <0d2f5a9e-1111-4222-8333-444455556666.order_confirmed@fulfillment.localhost>"), "{text}");
        assert!(
            text.contains("X-Order-Id: 0d2f5a9e-1111-4222-8333-444455556666"),
            "{text}"
        );
        assert!(
            text.contains("Subject: Your order 0d2f5a9e is on its way"),
            "{text}"
        );
        assert!(text.contains("FUL000000000042"), "{text}");
        assert!(
            text.contains("&lt;b&gt;Widget&lt;/b&gt;"),
            "the HTML part escapes names: {text}"
        );
        let headers = text.split("\r\n\r\n").next().expect("headers");
        assert!(
            !headers.to_ascii_lowercase().contains("\r\nbcc:"),
            "{headers}"
        );
    }

    #[test]
    fn a_cancellation_says_why_and_whether_money_comes_back() {
        let text = notice(NotificationKind::OrderCancelled).text();
        assert!(text.contains("Reason: customer_request"), "{text}");
        assert!(text.contains("Your payment is refunded."), "{text}");
        assert!(text.contains("2 x <b>Widget</b>"), "{text}");
        assert!(text.contains("Total: $25.00"), "{text}");
    }

    #[test]
    fn settings_name_what_they_refuse() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            Env::new(move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        let bad_url =
            MailSettings::read(&env(&[("SMTP_URL", "ftp://relay:25")])).expect_err("refused");
        assert_eq!(bad_url.name, "SMTP_URL");
        let bad_from =
            MailSettings::read(&env(&[("MAIL_FROM", "not an address")])).expect_err("refused");
        assert_eq!(bad_from.name, "MAIL_FROM");
        let hostile = MailSettings::read(&env(&[(
            "MAIL_FROM",
            "Shop\r\nBcc: x@example.com <shop@example.com>",
        )]))
        .expect_err("refused");
        assert_eq!(hostile.name, "MAIL_FROM");
        let ok = MailSettings::read(&env(&[
            ("SMTP_URL", "smtp://user:pw@127.0.0.1:2525"),
            ("SMTP_PASSWORD", "s3cret"),
        ]))
        .expect("read");
        assert!(!ok.describe().contains("pw"), "{}", ok.describe());
        assert_eq!(
            default_from().to_string(),
            "Fulfillment <orders@fulfillment.localhost>"
        );
    }
}
