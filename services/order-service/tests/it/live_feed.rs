//! The live feed as a hostile caller meets it: followers of orders that do not exist, one client
//! taking every slot, followers that never leave, peers that vanished.

use fulfillment_testing::{Harness, SECONDS_10};
use futures_util::StreamExt;
use order_service::api::{LiveFeed, LiveFeedConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens `/ws{query}` on `base` from the address `from` (any 127.x.y.z is this machine's), with
/// `token` as bearer; the open socket, or the refusal's status.
async fn connect_from(
    base: &str,
    from: &str,
    query: &str,
    token: Option<&str>,
) -> Result<Socket, u16> {
    use tungstenite::client::IntoClientRequest;
    let address = base.trim_start_matches("http://");
    let mut request = format!("ws://{address}/ws{query}")
        .into_client_request()
        .expect("request");
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("from"))
        .expect("bind");
    let stream = socket
        .connect(address.parse().expect("address"))
        .await
        .expect("connect");
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("ws: {e}"),
    }
}

async fn connect(base: &str, query: &str, token: Option<&str>) -> Result<Socket, u16> {
    connect_from(base, "127.0.0.1", query, token).await
}

/// The case, scaled down: with only the admin token set, one anonymous client opens 200
/// followers of orders that do not exist (the follower room is 200). Each is 404 before any
/// upgrade, so the operator's all-orders feed and a customer following a real order still get in.
#[tokio::test]
async fn followers_of_unknown_orders_get_404_and_the_feed_stays_open_to_others() {
    let h = Harness::start_with(|s| {
        s.api.admin_token = Some("adm1n".into());
        s.api.ws_max_connections = 200;
    })
    .await;
    let real = h.place("product-A", 1, "tok_visa").await;
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        match connect(&h.base, &format!("?order_id=does-not-exist-{i}"), None).await {
            Ok(socket) => held.push(socket),
            Err(status) => {
                assert_eq!(status, 404);
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 200, "every follower of an unknown order refused");
    let (status, body) = h.get("/ws?order_id=does-not-exist-0").await;
    assert_eq!(status, 400, "not a WebSocket: {body}");
    let refusal = h
        .http
        .get(format!("{}/ws?order_id=does-not-exist-0", h.base))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("request");
    assert_eq!(refusal.status().as_u16(), 404);
    let body: serde_json::Value = refusal.json().await.expect("json");
    assert_eq!(body["error"]["code"], "order_not_found");
    assert!(
        connect(&h.base, "", Some("adm1n")).await.is_ok(),
        "admin feed"
    );
    assert!(
        connect(&h.base, &format!("?order_id={real}"), None)
            .await
            .is_ok(),
        "a real order's follower"
    );
    drop(held);
    h.stop().await;
}

/// One client (an address, no token) follows a real order until it holds its share of the
/// follower room (a quarter of 8: 2); then it is refused with 429, while another address, the
/// same address with the admin token, and the all-orders feed still get in.
#[tokio::test]
async fn one_client_cannot_take_the_whole_follower_room() {
    let h = Harness::start_with(|s| {
        s.api.admin_token = Some("adm1n".into());
        s.api.ws_max_connections = 8;
    })
    .await;
    let id = h.place("product-A", 1, "tok_visa").await;
    let query = format!("?order_id={id}");
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            connect(&h.base, &query, None)
                .await
                .expect("within its share"),
        );
    }
    match connect(&h.base, &query, None).await {
        Err(status) => assert_eq!(status, 429),
        Ok(_) => panic!("a third follower from one client was let in"),
    }
    held.push(
        connect_from(&h.base, "127.0.0.2", &query, None)
            .await
            .expect("another address"),
    );
    held.push(
        connect(&h.base, &query, Some("adm1n"))
            .await
            .expect("the same address with the admin token"),
    );
    held.push(
        connect(&h.base, "", Some("adm1n"))
            .await
            .expect("admin feed"),
    );
    // A closed follower gives its client's place back.
    let mut first = held.remove(0);
    first.close(None).await.expect("close");
    drop(first);
    let deadline = tokio::time::Instant::now() + SECONDS_10;
    loop {
        match connect(&h.base, &query, None).await {
            Ok(socket) => {
                held.push(socket);
                break;
            }
            Err(status) if tokio::time::Instant::now() < deadline => {
                assert_eq!(status, 429);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(status) => panic!("the place was not given back: {status}"),
        }
    }
    h.stop().await;
}

/// The review's case: with only the admin token set, an anonymous client sends a new junk token
/// with every follower (`?access_token=`, or a bearer token of 200 KB). A token that opens
/// nothing names nobody: every one counts as the same anonymous client, so its share (2 of 8)
/// is all it gets, and the room stays open to others; its huge tokens are not kept per connection.
#[tokio::test]
async fn junk_tokens_do_not_make_one_client_many() {
    let h = Harness::start_with(|s| {
        s.api.admin_token = Some("adm1n".into());
        s.api.ws_max_connections = 8;
    })
    .await;
    let id = h.place("product-A", 1, "tok_visa").await;
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..8 {
        let huge = format!("junk{i}-{}", "x".repeat(200 * 1024));
        let attempt = if i % 2 == 0 {
            connect(
                &h.base,
                &format!("?order_id={id}&access_token=junk{i}"),
                None,
            )
            .await
        } else {
            connect(&h.base, &format!("?order_id={id}"), Some(&huge)).await
        };
        match attempt {
            Ok(socket) => held.push(socket),
            Err(status) => {
                assert_eq!(status, 429);
                refused += 1;
            }
        }
    }
    assert_eq!(held.len(), 2, "one anonymous client, one share");
    assert_eq!(refused, 6);
    held.push(
        connect_from(&h.base, "127.0.0.2", &format!("?order_id={id}"), None)
            .await
            .expect("a customer elsewhere still gets in"),
    );
    held.push(
        connect(&h.base, &format!("?order_id={id}"), Some("adm1n"))
            .await
            .expect("the operator behind the same address keeps a share of their own"),
    );
    h.stop().await;
}

/// An API on `h`'s Redis with this live feed; its base URL and its stop.
async fn api_with(
    h: &Harness,
    tune: impl FnOnce(&mut LiveFeedConfig),
) -> (String, CancellationToken) {
    let settings = Arc::new(h.settings.settings.clone());
    let mut state = order_service::prepare(settings.clone(), h.redis.clone())
        .await
        .expect("state");
    let mut config = LiveFeedConfig::from_settings(&settings);
    tune(&mut config);
    state.live_feed = Arc::new(LiveFeed::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    tokio::spawn(order_service::serve(state, listener, stop.clone()));
    (base, stop)
}

/// What the server does next on `socket` within `within`: `Some(reason)` of its close frame,
/// texts collected into `texts` meanwhile; panics when nothing closes it in time.
async fn closed_within(socket: &mut Socket, within: Duration, texts: &mut Vec<String>) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => panic!("not closed within {within:?}"),
            Ok(None) => return "(no close frame)".into(),
            Ok(Some(Err(e))) => return format!("(error: {e})"),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return frame.map(|f| f.reason.to_string()).unwrap_or_default();
            }
            Ok(Some(Ok(Message::Text(text)))) => texts.push(text.to_string()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A follower gets its order's final change, then a close frame after the grace; a follower of
/// an order already final is closed after the grace; one whose order does not change is closed
/// when idle too long. The all-orders feed is not closed for either.
#[tokio::test]
async fn followers_are_closed_once_their_order_is_final_or_idle() {
    let h = Harness::start().await;
    let (base, stop) = api_with(&h, |c| {
        c.final_grace = Duration::from_millis(300);
        c.idle_timeout = Duration::from_millis(1_500);
    })
    .await;
    let cancelled = h.place("product-A", 1, "tok_visa").await;
    let quiet = h.place("product-A", 1, "tok_visa").await;
    let mut follower = connect(&base, &format!("?order_id={cancelled}"), None)
        .await
        .expect("follower");
    let mut idle = connect(&base, &format!("?order_id={quiet}"), None)
        .await
        .expect("follower");
    let mut all = connect(&base, "", None).await.expect("all orders");
    let (status, body) = h
        .post(
            &format!("/orders/{cancelled}/cancel"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let mut texts = Vec::new();
    let reason = closed_within(&mut follower, Duration::from_secs(3), &mut texts).await;
    assert_eq!(reason, "the order is final");
    assert!(texts.iter().any(|t| t.contains("CANCELLED")), "{texts:?}");
    // Following an order that is final already: closed after the grace.
    let mut late = connect(&base, &format!("?order_id={cancelled}"), None)
        .await
        .expect("follower");
    let reason = closed_within(&mut late, Duration::from_secs(3), &mut Vec::new()).await;
    assert_eq!(reason, "the order is final");
    let reason = closed_within(&mut idle, Duration::from_secs(5), &mut Vec::new()).await;
    assert_eq!(reason, "no change of the order for too long");
    // The all-orders feed saw the change and is still open.
    let mut seen = Vec::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(200), all.next()).await
    {
        seen.push(message);
    }
    assert!(
        seen.iter()
            .any(|m| matches!(m, Message::Text(t) if t.contains("CANCELLED"))),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|m| matches!(m, Message::Close(_))));
    stop.cancel();
    h.stop().await;
}

/// The server pings every interval; a peer that answers stays, one that never reads (so never
/// answers) is dropped after the next interval.
#[tokio::test]
async fn a_peer_that_does_not_answer_pings_is_dropped() {
    let h = Harness::start().await;
    let (base, stop) = api_with(&h, |c| c.ping_interval = Duration::from_millis(200)).await;
    let mut answering = connect(&base, "", None).await.expect("feed");
    let mut silent = connect(&base, "", None).await.expect("feed");
    // Reading answers pings (tungstenite replies to each as it reads it).
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1_500);
    let mut pings = 0;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, answering.next()).await {
        assert!(
            !matches!(message, Message::Close(_)),
            "an answering peer was closed"
        );
        if matches!(message, Message::Ping(_)) {
            pings += 1;
        }
    }
    assert!(pings >= 3, "pinged {pings} times in 1.5 s");
    // The silent one read nothing for 1.5 s: the server has given up on it.
    let mut ended = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(next) = tokio::time::timeout_at(deadline, silent.next()).await {
        match next {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                ended = true;
                break;
            }
            Some(Ok(_)) => {}
        }
    }
    assert!(ended, "a peer that never answered is still connected");
    stop.cancel();
    h.stop().await;
}
