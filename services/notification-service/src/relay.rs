//! The SMTP relay client: sessions kept open to the relay and reused, on sockets with
//! `TCP_NODELAY`.
//!
//! lettre's pooled transport leaves Nagle's algorithm on, and a session writes a message's body
//! and its closing `.` in two writes: the second waited for the relay to acknowledge the first,
//! which Linux delays by up to 40 ms. That held a session to about 22 messages a second, a process
//! with four to 88 against a relay that takes 600 a second on one connection. The sessions here are
//! lettre's own (`AsyncSmtpConnection`: its commands, STARTTLS, TLS and login) on sockets this
//! module opens, with `TCP_NODELAY` set; the URL is read as lettre reads it.

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::{Category, Severity};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A new session (the connection, the greeting, TLS and the login) gives up after this long.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a message did not go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The relay refused the recipient for good (an SMTP 5xx of the mail system: no such
    /// mailbox, not accepted here, a bad address): sending again would be refused again.
    #[error("refused: {0}")]
    Refused(String),
    /// Anything else: the relay down, slow, a 4xx, a refused login. May pass later.
    #[error("{0}")]
    Transient(String),
}

/// What a failed send means for the customer. Refused for good (recorded, not retried): a 5xx
/// about the recipient (an enhanced status `5.1.x` other than the sender's `5.1.7`/`5.1.8`, or
/// `5.2.1` disabled; without an enhanced status, a `55z`/`50z` reply), or a message this relay can
/// never take (lettre's client error: an address it cannot carry, such as one not in ASCII to a
/// relay without SMTPUTF8). Everything else may pass later and is retried: the relay down, slow,
/// a 4xx, and a 5xx about the relay's own configuration (`5.7.1` relay access denied, a refused
/// login or sender), which is not the customer's failure.
fn classify(e: lettre::transport::smtp::Error) -> SendError {
    if e.is_client() {
        return SendError::Refused(e.to_string());
    }
    let text = e.to_string();
    let refused = match e.status() {
        Some(code) if code.severity == Severity::PermanentNegativeCompletion => {
            match enhanced_status(&text) {
                Some((5, 1, detail)) => detail != 7 && detail != 8,
                Some((5, 2, 1)) => true,
                Some(_) => false,
                None => matches!(code.category, Category::MailSystem | Category::Syntax),
            }
        }
        _ => false,
    };
    if refused {
        SendError::Refused(text)
    } else {
        SendError::Transient(text)
    }
}

/// The first RFC 3463 enhanced status code (`5.1.1`) in a reply's text.
fn enhanced_status(text: &str) -> Option<(u16, u16, u16)> {
    text.split(|c: char| c.is_whitespace() || c == ':' || c == '(' || c == ')')
        .find_map(|word| {
            let mut parts = word.split('.');
            let class = parts.next()?.parse().ok()?;
            let subject = parts.next()?.parse().ok()?;
            let detail = parts.next()?.parse().ok()?;
            (parts.next().is_none() && matches!(class, 2 | 4 | 5))
                .then_some((class, subject, detail))
        })
}

/// A session idle longer than this is asked `NOOP` before it is used (a relay closes idle
/// sessions after a while: 5 minutes by RFC 5321, less in practice).
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);
/// How long that `NOOP` may take before the session is given up as half-open.
const NOOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the relay is and how to talk to it, and the sessions open to it.
pub struct Relay {
    host: String,
    port: u16,
    tls: Tls,
    hello: ClientId,
    credentials: Option<Credentials>,
    /// Sessions that sent their last message and may send the next, with when they did.
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    /// At most this many idle sessions are kept.
    keep: usize,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// The relay of `url` (`smtp://host[:25]`, `smtp://host[:587]?tls=required|opportunistic`,
    /// `smtps://host[:465]`, `user:password@`, a path naming the EHLO name), as lettre's
    /// `from_url` reads it; `password`, when given, replaces the URL's. Keeps `keep` idle sessions.
    pub fn parse(url: &str, password: Option<&str>, keep: usize) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        let host = parsed
            .host_str()
            .ok_or("no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls_param = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let tls_for = |host: &str| TlsParameters::new(host.to_owned()).map_err(|e| e.to_string());
        let (port, tls) = match (parsed.scheme(), tls_param.as_deref()) {
            ("smtp", None) => (parsed.port().unwrap_or(25), Tls::None),
            ("smtp", Some("required")) => {
                (parsed.port().unwrap_or(587), Tls::Required(tls_for(&host)?))
            }
            ("smtp", Some("opportunistic")) => (
                parsed.port().unwrap_or(587),
                Tls::Opportunistic(tls_for(&host)?),
            ),
            ("smtps", _) => (parsed.port().unwrap_or(465), Tls::Wrapper(tls_for(&host)?)),
            (scheme, tls) => {
                return Err(format!(
                    "unknown scheme {scheme:?} or tls={}",
                    tls.unwrap_or_default()
                ));
            }
        };
        let hello = match parsed.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_owned()),
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let password = password
            .map(str::to_owned)
            .or_else(|| parsed.password().map(decode));
        let credentials =
            password.map(|password| Credentials::new(decode(parsed.username()), password));
        Ok(Self {
            host,
            port,
            tls,
            hello,
            credentials,
            idle: Mutex::new(Vec::new()),
            keep,
        })
    }

    /// An idle session that still answers `NOOP` within [`NOOP_TIMEOUT`] (asked only after
    /// [`CHECK_AFTER_IDLE`]), else a new one: held by the returned [`Session`], which goes back
    /// to the idle ones when dropped unused or after a message it sent.
    pub async fn open(self: &Arc<Self>) -> Result<Session, SendError> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some((mut session, since)) = idle else {
                let session = self.connect().await?;
                return Ok(Session {
                    relay: self.clone(),
                    open: Some(session),
                });
            };
            if session.has_broken() {
                continue;
            }
            if since.elapsed() > CHECK_AFTER_IDLE
                && !tokio::time::timeout(NOOP_TIMEOUT, session.test_connected())
                    .await
                    .unwrap_or(false)
            {
                continue;
            }
            return Ok(Session {
                relay: self.clone(),
                open: Some(session),
            });
        }
    }

    fn keep_idle(&self, session: AsyncSmtpConnection) {
        if session.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.keep {
            idle.push((session, Instant::now()));
        }
    }

    /// A new session: TCP (with `TCP_NODELAY`) within [`SMTP_TIMEOUT`], TLS from the start or by
    /// STARTTLS as the URL says, the greeting, EHLO, and the login when there is one.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let unreachable = |e: String| {
            SendError::Transient(format!(
                "cannot reach the relay {}:{}: {e}",
                self.host, self.port
            ))
        };
        let tcp = tokio::time::timeout(
            SMTP_TIMEOUT,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| unreachable(format!("no connection within {} s", SMTP_TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
        tcp.set_nodelay(true)
            .map_err(|e| unreachable(e.to_string()))?;
        let greeted = async {
            let mut session = match &self.tls {
                Tls::Wrapper(parameters) => {
                    #[allow(deprecated)] // lettre's own stream: the way to its TLS.
                    let mut stream =
                        lettre::transport::smtp::client::AsyncNetworkStream::use_existing_tokio1(
                            Box::new(tcp),
                        );
                    stream.upgrade_tls(parameters.clone()).await?;
                    AsyncSmtpConnection::connect_with_transport(
                        Box::new(Encrypted(stream)),
                        &self.hello,
                    )
                    .await?
                }
                Tls::None | Tls::Required(_) | Tls::Opportunistic(_) => {
                    AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?
                }
            };
            match &self.tls {
                Tls::Required(parameters) => {
                    session.starttls(parameters.clone(), &self.hello).await?;
                }
                Tls::Opportunistic(parameters) if session.can_starttls() => {
                    session.starttls(parameters.clone(), &self.hello).await?;
                }
                Tls::None | Tls::Opportunistic(_) | Tls::Wrapper(_) => {}
            }
            if let Some(credentials) = &self.credentials {
                session.auth(DEFAULT_MECHANISMS, credentials).await?;
            }
            Ok::<_, lettre::transport::smtp::Error>(session)
        };
        match tokio::time::timeout(SMTP_TIMEOUT, greeted).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(e)) => Err(SendError::Transient(format!(
                "the relay {}:{} did not open a session: {e}",
                self.host, self.port
            ))),
            Err(_) => Err(unreachable(format!(
                "no greeting, TLS or login within {} s",
                SMTP_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// One open session to the relay, for one message.
pub struct Session {
    relay: Arc<Relay>,
    open: Option<AsyncSmtpConnection>,
}

impl Session {
    /// Sends `bytes` to the envelope's recipients. A session that failed is closed; one that
    /// sent is kept for the next message.
    pub async fn send(mut self, envelope: &Envelope, bytes: &[u8]) -> Result<(), SendError> {
        let Some(mut session) = self.open.take() else {
            return Err(SendError::Transient("the session was used up".into()));
        };
        match session.send(envelope, bytes).await {
            Ok(_) => {
                self.relay.keep_idle(session);
                Ok(())
            }
            Err(e) => Err(classify(e)),
        }
    }
}

impl Drop for Session {
    /// Unused (nothing claimed, or the claim found nothing to send): back to the idle ones.
    fn drop(&mut self) {
        if let Some(session) = self.open.take() {
            self.relay.keep_idle(session);
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// A TLS stream of lettre's, as the stream lettre's session reads from (lettre's TLS speaks the
/// `futures` I/O traits; a session given a stream speaks tokio's).
#[allow(deprecated)]
#[derive(Debug)]
struct Encrypted(lettre::transport::smtp::client::AsyncNetworkStream);

impl tokio::io::AsyncRead for Encrypted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let unfilled = buf.initialize_unfilled();
        match futures_util::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, unfilled) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncWrite for Encrypted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        futures_util::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        futures_util::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        futures_util::io::AsyncWrite::poll_close(Pin::new(&mut self.0), cx)
    }
}

impl AsyncTokioStream for Encrypted {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_status_codes_are_found_in_a_reply() {
        assert_eq!(
            enhanced_status("permanent error (550): 5.1.1 <x@y>: no such mailbox"),
            Some((5, 1, 1))
        );
        assert_eq!(
            enhanced_status("554 5.7.1 Relay access denied"),
            Some((5, 7, 1))
        );
        assert_eq!(enhanced_status("550 mailbox unavailable 1.2"), None);
    }

    #[test]
    fn urls_read_as_lettre_reads_them() {
        let relay = Relay::parse("smtp://127.0.0.1:2525", None, 4).expect("plain");
        assert_eq!((relay.host.as_str(), relay.port), ("127.0.0.1", 2525));
        assert!(matches!(relay.tls, Tls::None) && relay.credentials.is_none());
        let relay =
            Relay::parse("smtp://relay.example.com?tls=required", None, 4).expect("starttls");
        assert_eq!(relay.port, 587);
        assert!(matches!(relay.tls, Tls::Required(_)));
        let relay = Relay::parse(
            "smtps://postmaster%40mg.example.com:in%20url@smtp.example.com/shop.example.com",
            None,
            4,
        )
        .expect("smtps");
        assert_eq!(relay.port, 465);
        assert!(matches!(relay.tls, Tls::Wrapper(_)));
        assert!(matches!(&relay.hello, ClientId::Domain(name) if name == "shop.example.com"));
        assert_eq!(
            relay.credentials,
            Some(Credentials::new(
                "postmaster@mg.example.com".into(),
                "in url".into()
            ))
        );
        let relay =
            Relay::parse("smtp://mailer:x@relay:25", Some("from the secret"), 4).expect("pw");
        assert_eq!(
            relay.credentials,
            Some(Credentials::new("mailer".into(), "from the secret".into()))
        );
        assert!(Relay::parse("http://relay", None, 4).is_err());
        assert!(Relay::parse("smtp://relay?tls=sometimes", None, 4).is_err());
    }
}
