//! The binaries as processes: bad settings refused in one line, SIGTERM drains and exits 0,
//! Ctrl-C at a terminal stops `fulfillment up` before its private Redis, the DLQ commands.

use fulfillment_core::Service;
use fulfillment_testing::{
    Backend, Harness, SECONDS_10, SpawnGuarded, free_port, on_every_backend, terminate,
    workspace_binary,
};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_bad_setting_is_refused_with_one_line_naming_it() {
    for (binary, name, value) in [
        ("fulfillment", "BATCH_SIZE", "lots"),
        ("order-service", "BATCH_SIZE", "lots"),
        ("inventory-service", "BATCH_SIZE", "lots"),
        ("retry-worker", "BATCH_SIZE", "lots"),
        // Read before the runtime starts: tokio itself would panic on it.
        ("fulfillment", "TOKIO_WORKER_THREADS", "two"),
        ("shipping-service", "TOKIO_WORKER_THREADS", "0"),
    ] {
        let mut command = Command::new(workspace_binary(binary));
        if binary == "fulfillment" {
            command.args(["dlq", "list"]);
        }
        let output = command
            .env(name, value)
            .env("REDIS_URL", "redis://127.0.0.1:1")
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2), "{binary}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{binary}: {stderr}");
        assert!(
            stderr.starts_with(&format!("invalid setting {name}=\"{value}\"")),
            "{binary}: {stderr}"
        );
    }
}

#[test]
fn an_unreachable_redis_stops_a_service_with_a_clear_error() {
    let output = Command::new(workspace_binary("inventory-service"))
        .env(
            "REDIS_URL",
            format!("redis://:hunter2@127.0.0.1:{}", free_port()),
        )
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("LOG_FORMAT", "json")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: cannot connect to Redis at redis://***@127.0.0.1:"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "the password never reaches the logs"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_work_and_exits_zero() {
    let h = Harness::start().await;
    h.create_product("bulk", 1_000).await;
    for _ in 0..100 {
        h.place("bulk", 1, "tok_visa").await;
    }
    let mut child = Command::new(workspace_binary("inventory-service"))
        .envs(h.env())
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("CONSUMER_NAME", "inventory-proc")
        .env("BATCH_SIZE", "10")
        .env("BLOCK_MS", "100")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_guarded()
        .expect("spawn");
    h.eventually(SECONDS_10, "some reservations", || async {
        h.counter("reservations").await >= 10
    })
    .await;
    terminate(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "did not exit within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    // What it read was acknowledged; what it did not read is pending for the group from its
    // publication, for the next reader.
    assert_eq!(
        h.pending_read("inventory_group").await,
        0,
        "what was in hand was acknowledged"
    );
    let reserved = h.counter("reservations").await;
    assert_eq!(h.stock("bulk").await, 1_000 - reserved);
    h.stop().await;
}

on_every_backend!(the_dlq_commands_list_replay_and_delete);

async fn the_dlq_commands_list_replay_and_delete(backend: Backend) {
    let h = Harness::on(backend).await;
    let consumers = h.consumers().await;
    h.xadd(&[(b"type".to_vec(), b"Nonsense".to_vec())]).await;
    h.eventually(SECONDS_10, "dead-lettered", || async {
        h.dlq_length().await == 1
    })
    .await;
    consumers.stop().await;
    let id = h.dead_letters().await[0].0.clone();
    let run = |args: &[&str]| h.fulfillment(args);
    let listed = run(&["dlq", "list"]);
    assert!(listed.status.success());
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains(&id) && text.contains("field event_id is missing"),
        "{text}"
    );
    let json = run(&["dlq", "list", "--json"]);
    let page: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(page["entries"][0]["id"], id.as_str());

    let missing = run(&["dlq", "replay", "1-1"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no dead letter 1-1"));
    let replayed = run(&["dlq", "replay", &id]);
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(h.dlq_length().await, 0);
    let again = h.consumers().await;
    h.eventually(SECONDS_10, "dead-lettered again", || async {
        h.dlq_length().await == 1
    })
    .await;
    again.stop().await;
    let id = h.dead_letters().await[0].0.clone();
    assert!(run(&["dlq", "delete", &id]).status.success());
    assert_eq!(h.dlq_length().await, 0);
    let empty = run(&["dlq", "list"]);
    assert!(String::from_utf8_lossy(&empty.stdout).contains("is empty"));
    h.stop().await;
}

#[tokio::test]
async fn the_retry_worker_binary_makes_one_pass_and_reports_it() {
    let h = Harness::start().await;
    let (_, consumers, id) = h.order_stuck_in_failing_inventory(1).await;
    consumers.stop().await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let output = Command::new(workspace_binary("retry-worker"))
        .envs(h.env())
        .env("RETRY_MIN_IDLE_MS", "100")
        .env("LOG_FORMAT", "json")
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON summary");
    assert_eq!(report["retried"], 1);
    assert_eq!(report["recovered"], 1);
    let healthy = h.consumers().await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    healthy.stop().await;
    h.stop().await;
}

#[tokio::test]
async fn stats_show_groups_consumers_pending_retries_and_the_dlq() {
    let h = Harness::start().await;
    let (failing, consumers, _) = h.order_stuck_in_failing_inventory(1).await;
    h.retry_pass(&failing).await;
    h.xadd(&[(b"junk".to_vec(), b"1".to_vec())]).await;
    h.eventually(SECONDS_10, "poison dead-lettered", || async {
        h.dlq_length().await == 1
    })
    .await;
    h.pending_settles_at("inventory_group", 1).await;
    let run = |args: &[&str]| h.fulfillment(args);
    let json = run(&["stats", "--json"]);
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(stats["dlq_length"], 1);
    let inventory = stats["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["group"] == "inventory_group")
        .expect("inventory_group");
    assert_eq!(inventory["pending"], 1);
    assert_eq!(inventory["retries"], 1);
    assert!(
        inventory["consumers"]
            .as_array()
            .expect("consumers")
            .iter()
            .any(|c| c["name"] == "inventory-1" && c["active"] == true)
    );
    let table = run(&["stats"]);
    let text = String::from_utf8_lossy(&table.stdout);
    for needle in [
        "order_events length",
        "order_events:dlq length 1",
        "inventory_group",
        "inventory-1",
        "RETRIES",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    consumers.stop().await;
    h.stop().await;
}

#[tokio::test]
async fn json_handler_lines_carry_order_event_group_consumer_and_trace_ids() {
    let h = Harness::start().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = h
        .http
        .post(format!("{}/orders", h.base))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({
            "customer_id": "c", "customer_email": "c@example.com",
            "items": [{"product_id": "product-A", "quantity": 1}],
        }))
        .send()
        .await
        .expect("post");
    let order: serde_json::Value = response.json().await.expect("order");
    let id = order["id"].as_str().expect("id").to_owned();
    let log = std::env::temp_dir().join(format!("inventory-{}.log", uuid::Uuid::new_v4().simple()));
    let mut child = Command::new(workspace_binary("inventory-service"))
        .envs(h.env())
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("CONSUMER_NAME", "inventory-logs")
        .env("LOG_FORMAT", "json")
        // Per-event lines are debug: the default level logs what an operator acts on.
        .env("RUST_LOG", "info,inventory_service=debug")
        .env("BLOCK_MS", "100")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn_guarded()
        .expect("spawn");
    h.eventually(SECONDS_10, "reserved", || async {
        h.counter("reservations").await == 1
    })
    .await;
    terminate(child.id());
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    let text = std::fs::read_to_string(&log).expect("log");
    let _ = std::fs::remove_file(&log);
    let line: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "stock reserved")
        .unwrap_or_else(|| panic!("no 'stock reserved' line in:\n{text}"));
    let span = &line["span"];
    assert_eq!(span["order_id"], id.as_str());
    assert_eq!(span["group"], "inventory_group");
    assert_eq!(span["consumer"], "inventory-logs");
    assert_eq!(span["trace_id"], trace_id);
    assert!(
        span["event_id"].as_str().is_some_and(|e| e.len() == 36),
        "{line}"
    );
    h.stop().await;
}

/// Scaling a group down loses nothing: of three inventory processes one is killed mid-flight
/// (SIGKILL, entries in hand) and one stopped (SIGTERM, drains); the retry worker binary recovers
/// the killed one's pending entries and later removes both gone consumers; stock is exact.
#[tokio::test]
async fn scaling_inventory_down_loses_nothing() {
    let h = Harness::start().await;
    h.create_product("bulk", 10_000).await;
    let others = h
        .consumers_of(&[
            Service::Order,
            Service::Payment,
            Service::Shipping,
            Service::Notification,
        ])
        .await;
    let spawn = |name: &str| {
        Command::new(workspace_binary("inventory-service"))
            .envs(h.env())
            .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("CONSUMER_NAME", name)
            .env("BATCH_SIZE", "50")
            .env("BLOCK_MS", "100")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn_guarded()
            .expect("spawn")
    };
    let mut replicas: Vec<_> = ["inventory-a", "inventory-b", "inventory-c"]
        .iter()
        .map(|n| spawn(n))
        .collect();
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.extend(
            futures_util::future::join_all((0..10).map(|_| h.place("bulk", 1, "tok_visa"))).await,
        );
    }
    // Replica a dies (SIGKILL) with entries in its hands: after the kill, entries are delivered
    // in its name and never acknowledged, as when a pod is killed between reading a batch and
    // acknowledging it. The live replicas are paused (SIGSTOP) meanwhile, so that delivery does
    // not race them.
    replicas[0].kill().expect("SIGKILL");
    replicas[0].wait().expect("reaped");
    let signal = |signal: &str, pid: u32| {
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal}");
    };
    for replica in &replicas[1..] {
        signal("-STOP", replica.id());
    }
    let mut conn = h.redis.conn();
    let mut held = 0;
    for _ in 0..10 {
        if held > 0 {
            break;
        }
        ids.extend(
            futures_util::future::join_all((0..10).map(|_| h.place("bulk", 1, "tok_visa"))).await,
        );
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("inventory_group")
            .arg("inventory-a")
            .arg("COUNT")
            .arg(10)
            .arg("STREAMS")
            .arg(&h.layout().partitions()[0].stream)
            .arg(">")
            .query_async(&mut conn)
            .await
            .expect("read");
        held = h.held_by("inventory_group", "inventory-a").await;
    }
    assert!(held > 0, "nothing delivered in the dead replica's name");
    for replica in &replicas[1..] {
        signal("-CONT", replica.id());
    }
    terminate(replicas[1].id());
    assert_eq!(
        replicas[1].wait().expect("wait").code(),
        Some(0),
        "SIGTERM drains and exits 0"
    );
    ids.extend(
        futures_util::future::join_all((0..20).map(|_| h.place("bulk", 1, "tok_visa"))).await,
    );

    let retry = |gone_after: &str| {
        Command::new(workspace_binary("retry-worker"))
            .envs(h.env())
            .env("RETRY_MIN_IDLE_MS", "200")
            .env("CONSUMER_NAME", "retry-worker")
            .env("CONSUMER_GONE_AFTER_MS", gone_after)
            .env("LOG_FORMAT", "json")
            .output()
            .expect("retry-worker")
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pass = retry("600000");
    assert!(
        pass.status.success(),
        "{}",
        String::from_utf8_lossy(&pass.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&pass.stdout).expect("report");
    assert!(
        report["recovered"].as_i64().unwrap_or(0) >= held,
        "held {held}: {report}"
    );
    for id in &ids {
        h.wait_status(id, "COMPLETED", SECONDS_10).await;
    }
    assert_eq!(
        h.stock("bulk").await,
        10_000 - ids.len() as i64,
        "stock exact"
    );
    assert_eq!(
        h.counter("reservations").await,
        ids.len() as i64,
        "each reserved once"
    );
    h.pending_settles_at("inventory_group", 0).await;

    // The stopped replicas are unseen for 2.5 s; the live one beats every second.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let cleanup = retry("2500");
    let report: serde_json::Value = serde_json::from_slice(&cleanup.stdout).expect("report");
    assert!(
        report["consumers_removed"].as_u64().unwrap_or(0) >= 2,
        "{report}"
    );
    let consumers = fulfillment_core::ops::stream_stats::consumer_figures(
        &h.redis,
        &h.layout().partitions()[0],
        "inventory_group",
    )
    .await
    .expect("consumers");
    let names: Vec<&str> = consumers.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.contains(&"inventory-c"),
        "the live replica stays: {names:?}"
    );
    assert!(
        !names.contains(&"inventory-a") && !names.contains(&"inventory-b"),
        "{names:?}"
    );
    terminate(replicas[2].id());
    assert_eq!(replicas[2].wait().expect("wait").code(), Some(0));
    others.stop().await;
    h.stop().await;
}

/// Redis over TLS with a password: `fulfillment up` against a TLS-only redis-server whose
/// certificate is signed by a test CA (trusted through SSL_CERT_FILE); the password never reaches
/// the logs.
#[tokio::test]
async fn the_pipeline_runs_over_rediss_with_a_password() {
    let dir =
        std::env::temp_dir().join(format!("fulfillment-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    fulfillment_testing::test_certificates(&dir);
    let port = free_port();
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args([
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.pem",
        ])
        .args(["--tls-auth-clients", "no", "--requirepass", "s3cret-pw"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_guarded()
        .expect("redis-server");
    let http_port = free_port();
    let log = dir.join("up.log");
    let mut up = Command::new(workspace_binary("fulfillment"))
        .args(["up", "--http", &format!("127.0.0.1:{http_port}")])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("REDIS_URL", format!("rediss://:s3cret-pw@localhost:{port}"))
        .env("SSL_CERT_FILE", dir.join("ca.pem"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn_guarded()
        .expect("fulfillment up");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http_port}");
    let deadline = Instant::now() + SECONDS_10;
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(
            Instant::now() < deadline,
            "not ready over TLS: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let order: serde_json::Value = http
        .post(format!("{base}/orders"))
        .json(
            &serde_json::json!({"customer_id": "tls", "customer_email": "tls@example.com",
            "items": [{"product_id": "product-A", "quantity": 1}]}),
        )
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("order");
    let id = order["id"].as_str().expect("id");
    let deadline = Instant::now() + SECONDS_10;
    loop {
        let current = fulfillment_testing::get_json(&http, &format!("{base}/orders/{id}")).await;
        if current["status"] == "COMPLETED" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "order is {} over TLS",
            current["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    terminate(up.id());
    assert_eq!(up.wait().expect("wait").code(), Some(0));
    let logs = std::fs::read_to_string(&log).expect("log");
    assert!(
        !logs.contains("s3cret-pw"),
        "the Redis password reached the logs"
    );
    let _ = redis.kill();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bench_places_orders_follows_them_and_reports() {
    let h = Harness::start().await;
    let consumers = h.consumers().await;
    let output = tokio::process::Command::new(workspace_binary("fulfillment"))
        .args([
            "bench",
            "--api-url",
            &h.base,
            "--orders",
            "60",
            "--concurrency",
            "4",
            "--json",
        ])
        .args(["--pid", &std::process::id().to_string()])
        .args(["--redis-url", &h.server.single().url])
        .envs(h.env())
        .env("LOG_FORMAT", "json")
        .output()
        .await
        .expect("bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["accepted"], 60);
    assert_eq!(report["completed"], 60);
    assert_eq!(report["unfinished"], 0);
    assert_eq!(report["errors"], 0);
    let p50 = report["latency_ms"]["p50"].as_f64().expect("p50");
    let p99 = report["latency_ms"]["p99"].as_f64().expect("p99");
    assert!(p50 > 0.0 && p50 <= p99, "{report}");
    assert!(report["orders_per_second"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(
        report["processes"][0]["max_rss_mb"].as_f64().unwrap_or(0.0) > 1.0,
        "{report}"
    );
    let memory = &report["redis_memory"];
    assert!(memory["start_mb"].as_f64().unwrap_or(0.0) > 0.1, "{report}");
    assert!(!memory["samples"].as_array().expect("samples").is_empty());
    let cpu = &report["redis_cpu"];
    assert!(
        cpu["us_per_order"].as_f64().unwrap_or(0.0) > 0.0,
        "{report}"
    );
    assert!(
        cpu["calls_per_order"].as_f64().unwrap_or(0.0) > 1.0,
        "{report}"
    );
    assert!(
        cpu["commands"]
            .as_array()
            .expect("commands")
            .iter()
            .any(|c| c["command"] == "evalsha"),
        "{report}"
    );
    consumers.stop().await;
    h.stop().await;
}

/// Ctrl-C at a terminal sends SIGINT to the whole foreground process group. `fulfillment up`, run
/// in its own group as a shell runs it, with no Redis answering, starts a private redis-server;
/// the signal must not reach that Redis: the pipeline finishes and acknowledges its work in hand
/// on a Redis that still answers, then stops it, and nothing of it is left behind.
#[tokio::test]
async fn ctrl_c_to_the_group_of_up_stops_the_pipeline_before_its_private_redis() {
    let dir = std::env::temp_dir().join(format!(
        "fulfillment-ctrl-c-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let state = dir.join("state");
    std::fs::create_dir_all(&dir).expect("dir");
    let redis_port = free_port();
    let http_port = free_port();
    let log = dir.join("up.log");
    let mut up = spawn_up_in_its_own_group(&state, redis_port, http_port, &log);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http_port}");
    wait_ready(&http, &base, &log).await;
    let redis_pid = redis_process_id(redis_port).await;
    let _leftover = KillOnDrop(redis_pid);

    // Steady load from a few clients, so that batches are in hand when the signal comes.
    let placing = tokio_util::sync::CancellationToken::new();
    let clients: Vec<_> = (0..6)
        .map(|c| {
            let (http, base, placing) = (http.clone(), base.clone(), placing.clone());
            tokio::spawn(async move {
                let mut accepted = 0u32;
                while !placing.is_cancelled() {
                    let placed = http
                        .post(format!("{base}/orders"))
                        .json(&serde_json::json!({
                            "customer_id": format!("ctrl-c-{c}"),
                            "customer_email": "ctrl-c@example.com",
                            "items": [{"product_id": "product-A", "quantity": 1}],
                        }))
                        .send()
                        .await;
                    match placed {
                        Ok(r) if r.status().as_u16() == 201 => accepted += 1,
                        Ok(_) => {}
                        // The API has stopped listening.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                accepted
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    interrupt_group(up.id());
    let exit = wait_exit(&mut up, Duration::from_secs(20)).await;
    placing.cancel();
    let mut accepted = 0;
    for client in clients {
        accepted += client.await.expect("client");
    }
    let text = std::fs::read_to_string(&log).expect("log");
    assert_eq!(exit.code(), Some(0), "{text}");
    assert!(accepted > 0, "no order was placed");

    // Nothing went wrong between the signal and the exit: no reader, acknowledgement or request
    // lost its Redis.
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let stop = lines
        .iter()
        .position(|l| l["message"] == "stop requested; finishing work in hand")
        .unwrap_or_else(|| panic!("no 'stop requested' line in:\n{text}"));
    let troubles: Vec<&serde_json::Value> = lines[stop..]
        .iter()
        .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
        .collect();
    assert!(
        troubles.is_empty(),
        "after the signal: {troubles:#?}\nwhole log:\n{text}"
    );
    assert_private_redis_gone(redis_port, redis_pid).await;

    // What it wrote: the work in hand was acknowledged (nothing pending in any group that its
    // readers read; what was published and not read yet is pending for its groups from the
    // start, and waits for the next run).
    let check_port = free_port();
    let _check = Command::new("redis-server")
        .args(["--port", &check_port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(&state)
        .args(["--appendonly", "yes", "--save", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_guarded()
        .expect("redis-server");
    let client = redis::Client::open(format!("redis://127.0.0.1:{check_port}")).expect("client");
    let deadline = Instant::now() + SECONDS_10;
    let mut conn = loop {
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        {
            break conn;
        }
        assert!(
            Instant::now() < deadline,
            "the state dir's Redis did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut groups = 0;
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        if kind != "stream" {
            continue;
        }
        let reply: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("XINFO GROUPS");
        for g in reply.groups {
            groups += 1;
            let read_and_pending: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
                .arg(&key)
                .arg(&g.name)
                .arg("-")
                .arg(&g.last_delivered_id)
                .arg(10)
                .query_async(&mut conn)
                .await
                .expect("XPENDING");
            assert_eq!(
                read_and_pending.ids.len(),
                0,
                "{key} {}: entries read and left pending",
                g.name
            );
        }
    }
    assert!(groups >= 5, "only {groups} groups in the state dir");
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `up` killed outright (SIGKILL) cannot stop its private Redis, which is out of its group; the
/// next `up` on the same state dir adopts that Redis and stops it on its own way out.
#[tokio::test]
async fn the_next_up_stops_the_private_redis_a_killed_up_left_behind() {
    let dir = std::env::temp_dir().join(format!(
        "fulfillment-left-behind-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let state = dir.join("state");
    std::fs::create_dir_all(&dir).expect("dir");
    let redis_port = free_port();
    let http = reqwest::Client::new();

    let http_port = free_port();
    let log = dir.join("killed.log");
    let mut killed = spawn_up_in_its_own_group(&state, redis_port, http_port, &log);
    wait_ready(&http, &format!("http://127.0.0.1:{http_port}"), &log).await;
    let redis_pid = redis_process_id(redis_port).await;
    let _leftover = KillOnDrop(redis_pid);
    killed.kill().expect("SIGKILL");
    killed.wait().expect("reaped");
    assert_eq!(
        redis_process_id(redis_port).await,
        redis_pid,
        "the private Redis outlives an up killed outright"
    );

    let http_port = free_port();
    let log = dir.join("next.log");
    let mut next = spawn_up_in_its_own_group(&state, redis_port, http_port, &log);
    wait_ready(&http, &format!("http://127.0.0.1:{http_port}"), &log).await;
    interrupt_group(next.id());
    let exit = wait_exit(&mut next, SECONDS_10).await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert_eq!(exit.code(), Some(0), "{text}");
    assert!(text.contains("adopted the private redis-server"), "{text}");
    assert_private_redis_gone(redis_port, redis_pid).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `fulfillment up` with its private Redis (none answers at `redis_port`) in `state`, in a process
/// group of its own as a shell starts a foreground job (Ctrl-C signals that group), logging JSON
/// to `log`.
fn spawn_up_in_its_own_group(
    state: &std::path::Path,
    redis_port: u16,
    http_port: u16,
    log: &std::path::Path,
) -> fulfillment_testing::Spawned {
    Command::new(workspace_binary("fulfillment"))
        .args(["up", "--http", &format!("127.0.0.1:{http_port}")])
        .arg("--state-dir")
        .arg(state)
        .env("REDIS_URL", format!("redis://127.0.0.1:{redis_port}"))
        .env("LOG_FORMAT", "json")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn_guarded()
        .expect("fulfillment up")
}

async fn wait_ready(http: &reqwest::Client, base: &str, log: &std::path::Path) {
    let deadline = Instant::now() + SECONDS_10;
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(
            Instant::now() < deadline,
            "not ready: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The process id of the Redis answering on `port`.
async fn redis_process_id(port: u16) -> u32 {
    let redis = fulfillment_testing::redis_at(&format!("redis://127.0.0.1:{port}")).await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut redis.conn())
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.trim().strip_prefix("process_id:"))
        .and_then(|p| p.parse().ok())
        .expect("process_id")
}

/// SIGINT to every process in the group `group`, as a terminal sends on Ctrl-C.
fn interrupt_group(group: u32) {
    let status = Command::new("kill")
        .args(["-INT", "--", &format!("-{group}")])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -INT -- -{group}");
}

async fn wait_exit(
    child: &mut fulfillment_testing::Spawned,
    within: Duration,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The private Redis's port no longer answers and its process is no more (a zombie, waiting for
/// a reaper that is not ours, counts as gone).
async fn assert_private_redis_gone(port: u16, pid: u32) {
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the private redis-server still answers"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_runs(pid) {
        assert!(
            Instant::now() < deadline,
            "the private redis-server (pid {pid}) outlived up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn process_runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, fields)| fields.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// SIGKILLs a process when dropped, if it still runs: a failing test leaves no redis-server
/// behind (one in a group of its own is out of reach of the guard on `up`).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if process_runs(self.0) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}
