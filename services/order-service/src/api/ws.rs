//! `/ws`: a JSON message for every order status change; `?order_id=` follows one order.
//!
//! Following one order is the caller tier's, the all-orders feed the admin tier's ([`Tier`]); a
//! browser cannot send headers on a WebSocket, so the token may come as `?access_token=`.
//!
//! Nobody can lock the feed for the others ([`LiveFeed`]): the all-orders feed and the followers
//! have separate rooms (`WS_MAX_CONNECTIONS` each, the all-orders feed at most
//! [`ADMIN_FEED_ROOM`]), answered 503 `too_many_connections` when full; a follower of an order
//! that does not exist is 404 `order_not_found` before any upgrade; one client (its peer address
//! and the identity its token proves: admin, the callers' token, or nobody) holds at most a [`FOLLOWER_SHARE`]th of the follower room (429
//! `too_many_client_connections` past it); a follower is closed (close frame 1000) a short
//! [`FINAL_GRACE`] after its order is final, or after [`IDLE_TIMEOUT`] without a change of it;
//! every connection is pinged every [`PING_INTERVAL`] and closed when a ping goes unanswered
//! until the next. Each connection has small buffers, and a client that cannot keep up is told
//! how much it missed (the feed is a bounded broadcast ring, never a per-client queue that grows).

use super::{ApiQuery, AppState, Tier, auth};
use crate::error::ApiError;
use crate::orders::{self, OrderStatus};
use crate::status_feed::Change;
use axum::extract::State;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use fulfillment_core::Settings;
use fulfillment_core::ops::ops_http::JsonParseErrors;
use futures_util::SinkExt;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Bytes a connection buffers for reading and writing: clients send nothing but control frames,
/// and a status message is a few hundred bytes.
const BUFFER_BYTES: usize = 4 * 1024;
/// Largest message a client may send.
const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// Most bytes queued for a client that does not read; past it the connection is closed.
const MAX_WRITE_BUFFER: usize = 64 * 1024;
/// A client that takes longer than this to take one write of messages is dropped (its slot
/// freed).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Most messages sent in one write: those already waiting when one arrives, up to this many.
const MAX_MESSAGES_PER_WRITE: usize = 64;
/// Most changes looked at before writing (a follower of one order skips most), so the loop
/// yields even while changes keep arriving.
const MAX_TAKEN: usize = 1024;

/// Most all-orders feeds at once (operators' consoles, `fulfillment bench`), and never more than
/// `WS_MAX_CONNECTIONS`: a room of its own, so followers cannot fill it.
pub const ADMIN_FEED_ROOM: usize = 100;
/// One client holds at most `1 / FOLLOWER_SHARE` of the follower room (at least one
/// connection): 500 of the default 2,000. A client is its peer address together with the identity
/// its token proves (admin, the callers' token, or nobody: a token that opens nothing counts as
/// none), so the operator behind the same proxy as a noisy caller keeps a share of their own;
/// callers behind one proxy with no valid token share one.
pub const FOLLOWER_SHARE: usize = 4;
/// A follower stays open this long after its order became final (`COMPLETED`, `CANCELLED`), so a
/// change published with the final one still reaches it; then it is closed.
pub const FINAL_GRACE: Duration = Duration::from_secs(5);
/// A follower whose order did not change for this long is closed (it can reconnect).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Every connection gets a WebSocket ping this often; one that has not answered the previous
/// ping by the next is closed (a peer gone without a FIN otherwise holds its slot forever).
pub const PING_INTERVAL: Duration = Duration::from_secs(25);

/// The live feed's rooms and timings. The defaults are the constants above, with the follower
/// room `WS_MAX_CONNECTIONS`; a test shrinks them.
#[derive(Debug, Clone)]
pub struct LiveFeedConfig {
    /// Followers at once (`WS_MAX_CONNECTIONS`).
    pub follower_room: usize,
    /// All-orders feeds at once.
    pub admin_room: usize,
    /// Followers one client may hold.
    pub per_client: usize,
    /// See [`FINAL_GRACE`].
    pub final_grace: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`PING_INTERVAL`].
    pub ping_interval: Duration,
}

impl LiveFeedConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        let room = settings.api.ws_max_connections;
        Self {
            follower_room: room,
            admin_room: room.min(ADMIN_FEED_ROOM),
            per_client: (room / FOLLOWER_SHARE).max(1),
            final_grace: FINAL_GRACE,
            idle_timeout: IDLE_TIMEOUT,
            ping_interval: PING_INTERVAL,
        }
    }
}

/// A connection's peer address, as the router sees it (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, JsonParseErrors>> for Peer {
    fn connect_info(stream: IncomingStream<'_, JsonParseErrors>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Who a connection counts against: the peer's address and the identity its token proves (never
/// the token itself, so sending junk tokens does not make a client many, and a key is small).
type ClientKey = (IpAddr, auth::Identity);

/// The address a client counts by: an IPv4 peer (also one mapped into IPv6, `::ffff:a.b.c.d`) by
/// its address, an IPv6 peer by its /64 (what one host or subscriber is usually given, so a
/// client rotating through its own addresses stays one client).
fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The rooms of `/ws` and what each client holds.
#[derive(Debug)]
pub struct LiveFeed {
    config: LiveFeedConfig,
    admin: Arc<Semaphore>,
    followers: Arc<Semaphore>,
    held: Arc<Mutex<HashMap<ClientKey, usize>>>,
}

impl LiveFeed {
    pub fn new(config: LiveFeedConfig) -> Self {
        Self {
            admin: Arc::new(Semaphore::new(config.admin_room)),
            followers: Arc::new(Semaphore::new(config.follower_room)),
            held: Arc::default(),
            config,
        }
    }

    pub fn config(&self) -> &LiveFeedConfig {
        &self.config
    }

    /// A place for one follower of `client`: `None` when the client holds its share already.
    fn client_place(&self, client: ClientKey) -> Option<ClientPlace> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(client).or_insert(0);
        if *count >= self.config.per_client {
            return None;
        }
        *count += 1;
        Some(ClientPlace {
            client,
            held: self.held.clone(),
        })
    }
}

/// One follower counted against its client until dropped.
#[derive(Debug)]
struct ClientPlace {
    client: ClientKey,
    held: Arc<Mutex<HashMap<ClientKey, usize>>>,
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// What a connection holds while it is open.
#[derive(Debug)]
struct Slot {
    _room: OwnedSemaphorePermit,
    _client: Option<ClientPlace>,
}

#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    order_id: Option<String>,
    access_token: Option<String>,
}

pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    ApiQuery(query): ApiQuery<FeedQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let order_id = query.order_id.filter(|id| !id.is_empty());
    let tier = if order_id.is_some() {
        Tier::Caller
    } else {
        Tier::Admin
    };
    let token = auth::bearer(&headers).or(query.access_token.as_deref());
    if !tier.allows(&state.settings, token) {
        return tier.refusal();
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            return ApiError::bad_request("websocket_required", rejection.body_text())
                .into_response();
        }
    };
    let feed = state.live_feed.clone();
    // Subscribed before the order's status is read: a change made meanwhile is not missed.
    let updates = state.status_feed.subscribe();
    let (room, followed) = match &order_id {
        None => (feed.admin.clone(), None),
        Some(id) => match orders::status(&state.redis, id).await {
            Ok(Some(status)) => (feed.followers.clone(), Some((id.clone(), status))),
            Ok(None) => {
                return ApiError::not_found("order_not_found", format!("no order {id}"))
                    .into_response();
            }
            Err(e) => return ApiError::from(e).into_response(),
        },
    };
    let Ok(room) = room.try_acquire_owned() else {
        let limit = if followed.is_some() {
            feed.config.follower_room
        } else {
            feed.config.admin_room
        };
        let what = if followed.is_some() {
            "order followers"
        } else {
            "all-orders feeds"
        };
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!("this server holds its limit of {limit} {what}; retry later"),
        )
        .into_response();
    };
    let client = match &followed {
        None => None,
        Some(_) => {
            let address = extensions
                .get::<ConnectInfo<Peer>>()
                .map(|ConnectInfo(Peer(peer))| client_address(peer.ip()))
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            // The identity the token proves, not the token: junk names nobody, and the key stays
            // a few bytes however long a token was sent.
            let identity = auth::Identity::of(&state.settings, token);
            match feed.client_place((address, identity)) {
                Some(place) => Some(place),
                None => {
                    return ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_client_connections",
                        format!(
                            "this client follows {} orders already, its share; close one first",
                            feed.config.per_client
                        ),
                    )
                    .into_response();
                }
            }
        }
    };
    let slot = Slot {
        _room: room,
        _client: client,
    };
    upgrade
        .read_buffer_size(BUFFER_BYTES)
        .write_buffer_size(BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| follow(socket, feed.config.clone(), updates, followed, slot))
}

/// Why the server closes a connection, as its close frame says.
const CLOSE_FINAL: &str = "the order is final";
const CLOSE_IDLE: &str = "no change of the order for too long";

async fn follow(
    mut socket: WebSocket,
    config: LiveFeedConfig,
    mut updates: Receiver<Arc<Change>>,
    followed: Option<(String, OrderStatus)>,
    _slot: Slot,
) {
    let order_id = followed.as_ref().map(|(id, _)| id.clone());
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    // When a follower closes: its order's final status plus the grace, or too long idle.
    let mut closing_at = match &followed {
        Some((_, status)) if status.is_final() => Instant::now() + config.final_grace,
        _ => far,
    };
    let mut idle_at = match &followed {
        Some(_) => Instant::now() + config.idle_timeout,
        None => far,
    };
    let mut ping = ping_timer(config.ping_interval);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            update = updates.recv() => {
                // This update and those already waiting behind it go out in one write.
                let mut texts: Vec<Utf8Bytes> = Vec::new();
                let mut next = Some(update);
                let mut closed = false;
                let mut taken = 0;
                while let Some(update) = next.take() {
                    taken += 1;
                    match update {
                        Ok(change) => {
                            if order_id.as_deref().is_none_or(|id| id == change.order_id) {
                                texts.push(change.text.clone());
                                if order_id.is_some() {
                                    idle_at = Instant::now() + config.idle_timeout;
                                    if closing_at == far && is_final(&change) {
                                        closing_at = Instant::now() + config.final_grace;
                                    }
                                }
                            }
                        }
                        Err(RecvError::Lagged(missed)) => texts.push(
                            serde_json::json!({"type": "lagged", "missed": missed})
                                .to_string()
                                .into(),
                        ),
                        Err(RecvError::Closed) => closed = true,
                    }
                    if !closed && texts.len() < MAX_MESSAGES_PER_WRITE && taken < MAX_TAKEN {
                        next = match updates.try_recv() {
                            Ok(change) => Some(Ok(change)),
                            Err(TryRecvError::Lagged(missed)) => {
                                Some(Err(RecvError::Lagged(missed)))
                            }
                            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
                        };
                    }
                }
                if !send(&mut socket, texts).await || closed {
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if awaiting_pong {
                    // Gone without a word: no close handshake to wait for.
                    return;
                }
                awaiting_pong = true;
                let pinging = socket.send(Message::Ping(axum::body::Bytes::new()));
                if !matches!(tokio::time::timeout(SEND_TIMEOUT, pinging).await, Ok(Ok(()))) {
                    return;
                }
            },
            _ = tokio::time::sleep_until(closing_at) => return close(socket, CLOSE_FINAL).await,
            _ = tokio::time::sleep_until(idle_at) => return close(socket, CLOSE_IDLE).await,
        }
    }
}

/// The ping interval's timer: first tick one interval from now; a tick missed while the loop was
/// busy (a slow write to the client, up to [`SEND_TIMEOUT`]) fires once, then the next is a whole
/// interval later. Ticks in a burst would find the ping just sent unanswered and drop a live peer.
fn ping_timer(interval: Duration) -> tokio::time::Interval {
    let mut timer = tokio::time::interval_at(Instant::now() + interval, interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

/// Whether a change moves its order to a final status.
fn is_final(change: &Change) -> bool {
    serde_json::from_str::<serde_json::Value>(change.text.as_str())
        .ok()
        .and_then(|v| v.get("status")?.as_str().and_then(OrderStatus::parse))
        .is_some_and(OrderStatus::is_final)
}

/// Sends a close frame (1000, `reason`), within [`SEND_TIMEOUT`].
async fn close(mut socket: WebSocket, reason: &'static str) {
    let frame = CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

/// Sends messages and flushes once; false when the client is gone or too slow to take them.
async fn send(socket: &mut WebSocket, texts: Vec<Utf8Bytes>) -> bool {
    if texts.is_empty() {
        return true;
    }
    let sending = async {
        for text in texts {
            socket.feed(Message::Text(text)).await?;
        }
        socket.flush().await
    };
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sending).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_its_ipv4_address_or_its_ipv6_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(client_address(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(client_address(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(
            client_address(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_address(ip("2001:db8:1:2::1")),
            client_address(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            client_address(ip("2001:db8:1:2::1")),
            client_address(ip("2001:db8:1:3::1"))
        );
    }

    #[tokio::test]
    async fn missed_pings_do_not_come_in_a_burst() {
        let interval = Duration::from_millis(50);
        let mut ping = ping_timer(interval);
        // Busy for several intervals without looking at the timer.
        std::thread::sleep(interval * 4);
        ping.tick().await;
        let next = tokio::time::timeout(Duration::from_millis(10), ping.tick()).await;
        assert!(next.is_err(), "a second ping right after the first");
    }
}
