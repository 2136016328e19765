//! The API as a hostile caller meets it: tokens, an ambiguous failure, memory a caller could grow,
//! probes a caller could starve, a lag that lied after a restart, and the small ones.

use fulfillment_testing::{Harness, SECONDS_10};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn order() -> Value {
    json!({"customer_id": "c", "customer_email": "c@example.com",
        "items": [{"product_id": "product-A", "quantity": 1}]})
}

/// Connects a WebSocket; the HTTP status of the handshake (101 on success).
async fn ws_status(h: &Harness, query: &str, token: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/ws{query}", h.base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("request");
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("ws: {e}"),
    }
}

/// 6. With both tokens set: orders, the catalog and `/ws` need a token; listing, the all-orders
/// feed, cancelling and catalog writes need the admin one; the probes and the console stay open.
#[tokio::test]
async fn the_callers_token_and_the_admin_token_guard_what_the_contract_says() {
    let h = Harness::start_with(|s| {
        s.api.api_token = Some("api-t0ken".into());
        s.api.admin_token = Some("adm1n".into());
    })
    .await;
    let (api, admin) = (Some("api-t0ken"), Some("adm1n"));
    let (status, body) = h
        .request_as(Method::POST, "/orders", None, Some(order()))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, body) = h
        .request_as(Method::POST, "/orders", Some("wrong"), Some(order()))
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, placed) = h
        .request_as(Method::POST, "/orders", api, Some(order()))
        .await;
    assert_eq!(status, 201, "{placed}");
    let id = placed["id"].as_str().expect("id").to_owned();
    for (method, path, token, expected) in [
        (Method::GET, format!("/orders/{id}"), None, 401),
        (Method::GET, format!("/orders/{id}"), api, 200),
        (Method::GET, format!("/orders/{id}"), admin, 200),
        (Method::GET, format!("/orders/{id}/events"), None, 401),
        (Method::GET, format!("/orders/{id}/events"), api, 200),
        (Method::GET, format!("/orders/{id}/messages"), None, 401),
        (Method::GET, format!("/orders/{id}/messages"), api, 200),
        (Method::GET, "/products".into(), None, 401),
        (Method::GET, "/products".into(), api, 200),
        (Method::GET, "/orders".into(), None, 401),
        (Method::GET, "/orders".into(), api, 401),
        (Method::GET, "/orders".into(), admin, 200),
        (Method::GET, "/dlq".into(), api, 401),
        (Method::GET, "/dlq".into(), admin, 200),
        (Method::POST, "/products/product-A/stock".into(), api, 401),
        (Method::POST, format!("/orders/{id}/cancel"), None, 401),
        (Method::POST, format!("/orders/{id}/cancel"), api, 401),
        (Method::POST, format!("/orders/{id}/cancel"), admin, 202),
        (Method::GET, "/healthz".into(), None, 200),
        (Method::GET, "/readyz".into(), None, 200),
        (Method::GET, "/openapi.json".into(), None, 200),
        (Method::GET, "/stats".into(), None, 200),
    ] {
        let body =
            (method == Method::POST && path.ends_with("/stock")).then(|| json!({"delta": 1}));
        let (status, reply) = h.request_as(method.clone(), &path, token, body).await;
        assert_eq!(status, expected, "{method} {path} with {token:?}: {reply}");
        if status == 401 {
            assert_eq!(reply["error"]["code"], "unauthorized");
        }
    }
    let metrics = h
        .http
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status().as_u16(), 200);
    let console = h.http.get(&h.base).send().await.expect("console");
    assert_eq!(console.status().as_u16(), 200);

    assert_eq!(ws_status(&h, &format!("?order_id={id}"), None).await, 401);
    assert_eq!(ws_status(&h, &format!("?order_id={id}"), api).await, 101);
    assert_eq!(
        ws_status(&h, &format!("?order_id={id}&access_token=api-t0ken"), None).await,
        101,
        "a browser passes the token in the query"
    );
    assert_eq!(
        ws_status(&h, "", api).await,
        401,
        "every order's feed is the admin's"
    );
    assert_eq!(ws_status(&h, "", admin).await, 101);
    h.stop().await;
}

/// 6. With only the admin token set (the hostile run's setting): listing orders, the all-orders
/// feed and cancelling need it; placing and reading one order do not.
#[tokio::test]
async fn with_only_an_admin_token_nobody_else_lists_watches_or_cancels() {
    let h = Harness::start_with(|s| s.api.admin_token = Some("adm1n".into())).await;
    let id = h.place("product-A", 1, "tok_visa").await;
    let (status, _) = h.get("/orders").await;
    assert_eq!(status, 401);
    let (status, _) = h.get(&format!("/orders/{id}")).await;
    assert_eq!(status, 200);
    let (status, _) = h.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(ws_status(&h, "", None).await, 401);
    assert_eq!(ws_status(&h, &format!("?order_id={id}"), None).await, 101);
    let (status, _) = h
        .request_as(
            Method::POST,
            &format!("/orders/{id}/cancel"),
            Some("adm1n"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    h.stop().await;
}

/// 7. Redis pauses writes: the placement's outcome is unknown. The answer says so with its own
/// code and names the order that was attempted; once Redis resumes, that order exists, and a
/// retry with the same Idempotency-Key returns it instead of placing a second one.
#[tokio::test]
async fn an_ambiguous_failure_names_the_order_it_attempted() {
    let h = Harness::start_with(|s| s.api.request_timeout_ms = 1_500).await;
    // One order first, as on any running system: Redis has the script, so the paused call is the
    // placement itself (not a first EVALSHA that would come back NOSCRIPT after the pause).
    h.place("product-A", 1, "tok_visa").await;
    h.server.single().pause(3_000, "WRITE").await;
    let post = || {
        h.http
            .post(format!("{}/orders", h.base))
            .header("idempotency-key", "ambiguous-1")
            .json(&order())
            .send()
    };
    let unknown = post().await.expect("post");
    assert_eq!(unknown.status().as_u16(), 503);
    let body: Value = unknown.json().await.expect("json");
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    let attempted = body["error"]["details"]["order_id"]
        .as_str()
        .expect("order id named")
        .to_owned();
    h.eventually(SECONDS_10, "the paused placement lands", || async {
        h.get(&format!("/orders/{attempted}")).await.0 == 200
    })
    .await;
    let retried = post().await.expect("post");
    assert_eq!(retried.status().as_u16(), 201);
    let retried: Value = retried.json().await.expect("json");
    assert_eq!(
        retried["id"],
        attempted.as_str(),
        "the first order, not a second"
    );
    assert_eq!(
        h.stream_length().await,
        2,
        "one OrderPlaced for the retried order"
    );
    h.stop().await;
}

/// 8. Invented methods share one `other` label; `/metrics` stays small.
#[tokio::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let h = Harness::start().await;
    for i in 0..300 {
        let method = Method::from_bytes(format!("X{i}AB").as_bytes()).expect("method");
        h.http
            .request(method, format!("{}/orders", h.base))
            .send()
            .await
            .expect("request");
    }
    let metrics = h.metrics().await;
    assert!(!metrics.contains("X17AB"), "a raw method became a label");
    assert!(metrics.contains(r#"method="other""#));
    assert!(
        metrics.len() < 60_000,
        "/metrics is {} bytes",
        metrics.len()
    );
    h.stop().await;
}

/// 8. WebSocket connections are capped; over the cap a clear refusal; a closed one frees a slot.
#[tokio::test]
async fn live_status_connections_are_capped() {
    let h = Harness::start_with(|s| s.api.ws_max_connections = 3).await;
    let url = format!("{}/ws", h.base.replacen("http", "ws", 1));
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(tokio_tungstenite::connect_async(&url).await.expect("ws").0);
    }
    let refused = h
        .http
        .get(format!("{}/ws", h.base))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status().as_u16(), 503);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_many_connections");
    let mut first = open.remove(0);
    first.close(None).await.expect("close");
    drop(first);
    let deadline = Instant::now() + SECONDS_10;
    loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the freed slot was not given back: {e}"),
        }
    }
    h.stop().await;
}

/// 9. Connections that send headers and no body fill the API's in-flight limit; health,
/// readiness and metrics still answer at once, and the slow bodies are cut off with a JSON 408.
#[tokio::test]
async fn probes_answer_while_slow_bodies_hold_every_api_turn() {
    let h = Harness::start_with(|s| s.api.max_in_flight = 8).await;
    let addr = h.base.trim_start_matches("http://").to_owned();
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut conn = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        conn.write_all(
            b"POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
        )
        .await
        .expect("headers");
        stalled.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let started = Instant::now();
        let response = h
            .http
            .get(format!("{}{path}", h.base))
            .send()
            .await
            .expect("probe");
        assert_eq!(response.status().as_u16(), 200, "{path}");
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    let (status, body) = h.get("/products").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("overloaded")),
        "the API itself is full"
    );
    let mut first = stalled.remove(0);
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(8), first.read_to_string(&mut reply))
        .await
        .expect("the stalled body is cut off within BODY_TIMEOUT")
        .ok();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"body_timeout\""), "{reply}");
    h.stop().await;
}

/// A raw request on a fresh connection; the whole reply.
async fn raw(h: &Harness, request: &[u8]) -> String {
    let addr = h.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(request).await.expect("write");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(SECONDS_10, conn.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

/// The JSON body of a raw reply, and its status line.
fn json_of(reply: &str) -> (String, Value) {
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((reply, ""));
    let status = head.lines().next().unwrap_or("").to_owned();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// 11. Every error is JSON, hyper's own included; cursors and paths that no id can match are
/// refused cleanly; control characters stay out of emails.
#[tokio::test]
async fn every_error_is_json_even_hypers_own() {
    let h = Harness::start().await;
    let (status, body) = h
        .get("/dlq?cursor=18446744073709551615-18446744073709551615")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entries"], json!([]));
    let (status, body) = h.get("/orders/%FF%FE").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_path"))
    );

    let (status, body) = json_of(&raw(&h, b"GARBAGE\r\n\r\n").await);
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    assert_eq!(body["error"]["code"], "bad_request");
    let long_uri = format!(
        "GET /orders/{} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let (status, body) = json_of(&raw(&h, long_uri.as_bytes()).await);
    assert!(status.starts_with("HTTP/1.1 414"), "{status}");
    assert_eq!(body["error"]["code"], "uri_too_long");
    let big_headers = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..2_000)
            .map(|i| format!("x-h{i}: {}\r\n", "v".repeat(200)))
            .collect::<String>()
    );
    let (status, body) = json_of(&raw(&h, big_headers.as_bytes()).await);
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    assert_eq!(body["error"]["code"], "headers_too_large");

    let (status, body) = h
        .post(
            "/orders",
            json!({"customer_id": "c", "customer_email": "a\u{0}\u{7}@b.com",
                "items": [{"product_id": "product-A", "quantity": 1}]}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_order"))
    );
    assert_eq!(h.stream_length().await, 0);
    h.stop().await;
}

/// 11. Readiness means Redis takes writes; `/metrics` does not wait on a Redis that hangs.
#[tokio::test]
async fn readiness_needs_writes_and_metrics_never_hang_on_redis() {
    let h = Harness::start().await;
    let mut admin = redis::Client::open(h.server.single().url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query_async(&mut admin)
        .await
        .expect("maxmemory");
    let (status, body) = h.get("/readyz").await;
    assert_eq!(status, 503, "ready while Redis refuses writes: {body}");
    assert_eq!(body["error"]["code"], "redis_unavailable");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut admin)
        .await
        .expect("maxmemory");
    assert_eq!(h.get("/readyz").await.0, 200);

    h.server.single().pause(6_000, "ALL").await;
    let started = Instant::now();
    let metrics = h
        .http
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status().as_u16(), 200);
    let text = metrics.text().await.expect("text");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        text.contains("fulfillment_http_requests_total"),
        "the process's own metrics"
    );
    h.stop().await;
}
