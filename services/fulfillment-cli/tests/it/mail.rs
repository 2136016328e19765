//! Email as a process boundary: the notification service binary against a real SMTP server
//! (aiosmtpd), over TLS with a certificate trusted through `SSL_CERT_FILE`, and SIGKILLed under
//! load.

use fulfillment_testing::smtp::{ReceivedMail, SmtpOptions, TestSmtp};
use fulfillment_testing::{
    Harness, SECONDS_10, SpawnGuarded, Spawned, UPSTREAM_OF_NOTIFICATION, free_port,
    test_certificates, workspace_binary,
};
use secrecy::SecretString;
use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn notifier(h: &Harness, smtp_url: &str, name: &str, extra: &[(&str, String)]) -> Spawned {
    Command::new(workspace_binary("notification-service"))
        .envs(h.env())
        .envs(extra.iter().cloned())
        .env("SMTP_URL", smtp_url)
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("CONSUMER_NAME", name)
        // Below the retry worker's idle time here (2 s), as the defaults are (45 s and 60 s): a
        // killed sender's lease has run out when its entry is retried.
        .env("SMTP_SEND_LEASE_MS", "1500")
        .env("BLOCK_MS", "100")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_guarded()
        .expect("spawn notification-service")
}

/// The messages of each order, by the order's id (`X-Order-Id`).
pub(super) fn by_order(mails: Vec<ReceivedMail>) -> HashMap<String, Vec<ReceivedMail>> {
    let mut orders: HashMap<String, Vec<ReceivedMail>> = HashMap::new();
    for mail in mails {
        if let Some(id) = mail.header("X-Order-Id") {
            orders.entry(id).or_default().push(mail);
        }
    }
    orders
}

/// TLS from the first byte (`smtps://`) and by STARTTLS (`?tls=required`, the relay refusing
/// mail before it) to a relay whose certificate a test CA signed: the binary trusts it through
/// `SSL_CERT_FILE`, and every order gets its one message of the right kind.
#[tokio::test]
async fn mail_over_tls_reaches_the_relay_once_per_order() {
    let certs = tempdir("mail-tls");
    test_certificates(&certs);
    let pair = || Some((certs.join("server.pem"), certs.join("server.key")));
    for (how, options) in [
        (
            "smtps",
            SmtpOptions {
                tls: pair(),
                ..SmtpOptions::default()
            },
        ),
        (
            "starttls",
            SmtpOptions {
                starttls: pair(),
                ..SmtpOptions::default()
            },
        ),
    ] {
        let smtp = TestSmtp::start_with(options);
        let h = Harness::start().await;
        let upstream = h.consumers_of(&UPSTREAM_OF_NOTIFICATION).await;
        let mut notification = notifier(
            &h,
            &smtp.url(),
            &format!("notification-{how}"),
            &[(
                "SSL_CERT_FILE",
                certs.join("ca.pem").to_string_lossy().into_owned(),
            )],
        );
        let completed = h.place("product-A", 1, "tok_visa").await;
        let cancelled = h.place("product-A", 1, "tok_chargeDeclined").await;
        h.wait_status(&completed, "COMPLETED", SECONDS_10).await;
        h.wait_status(&cancelled, "CANCELLED", SECONDS_10).await;
        h.eventually(SECONDS_10, &format!("both messages over {how}"), || async {
            smtp.messages_for(&completed).len() == 1 && smtp.messages_for(&cancelled).len() == 1
        })
        .await;
        h.settled().await;
        let kind = |id: &str| smtp.messages_for(id)[0].header("Message-ID");
        assert!(kind(&completed).is_some_and(|m| m.contains(".order_confirmed@")));
        assert!(kind(&cancelled).is_some_and(|m| m.contains(".order_cancelled@")));
        notification.kill().expect("stop");
        upstream.stop().await;
        h.stop().await;
    }
    let _ = std::fs::remove_dir_all(&certs);
}

/// The notification process SIGKILLed while it sends (the relay answers `DATA` slowly, so some
/// sends are in flight): a new process and the retry worker finish the work, every completed or
/// cancelled order has its message, an order with two has them under one `Message-ID`, and each
/// such duplicate is counted as a resend.
#[tokio::test]
async fn a_notifier_killed_under_load_leaves_no_order_without_its_message() {
    let smtp = TestSmtp::start_with(SmtpOptions {
        delay: Some(0.02),
        ..SmtpOptions::default()
    });
    let h = Harness::start().await;
    h.create_product("bulk", 10_000).await;
    let mut settings = h.settings.clone();
    settings.services.notification.smtp_url = Some(SecretString::from(smtp.url()));
    // Longer than any send here takes (as RETRY_MIN_IDLE_MS, 60 s, is longer than a send's 30 s
    // deadline): the retry worker takes only what the killed process left, never what the live
    // one is still sending.
    settings.retry.min_idle_ms = 2_000;
    let upstream = h.consumers_of(&UPSTREAM_OF_NOTIFICATION).await;
    let mut first = notifier(&h, &smtp.url(), "notification-a", &[]);
    let mut ids = Vec::new();
    for round in 0..20 {
        let token = if round % 4 == 3 {
            "tok_chargeDeclined"
        } else {
            "tok_visa"
        };
        ids.extend(
            futures_util::future::join_all((0..10).map(|_| h.place("bulk", 1, token))).await,
        );
        if round == 10 {
            h.eventually(SECONDS_10, "the first messages arrive", || async {
                !smtp.messages().is_empty()
            })
            .await;
            first.kill().expect("SIGKILL");
            first.wait().expect("reaped");
        }
    }
    let mut second = notifier(&h, &smtp.url(), "notification-b", &[]);
    h.eventually(Duration::from_secs(60), "every order told", || async {
        h.retry_pass(&settings).await;
        let told = by_order(smtp.messages());
        ids.iter().all(|id| told.contains_key(id))
    })
    .await;
    h.settled().await;

    let told = by_order(smtp.messages());
    let mut twice = 0;
    for id in &ids {
        let mails = &told[id];
        let message_ids: HashSet<Option<String>> =
            mails.iter().map(|m| m.header("Message-ID")).collect();
        assert_eq!(
            message_ids.len(),
            1,
            "{id}: one Message-ID for all its messages"
        );
        // A redelivery announces the same NotificationSent again (same event id): one kind.
        let kinds: HashSet<String> = h.notification_kinds(id).await.into_iter().collect();
        assert_eq!(kinds.len(), 1, "{id}: one kind told: {kinds:?}");
        if mails.len() > 1 {
            twice += 1;
        }
    }
    let mut counted = 0;
    for kind in ["order_confirmed", "order_cancelled"] {
        counted += h
            .counter(&fulfillment_events::keys::counter::notifications_resent(
                kind,
            ))
            .await;
    }
    eprintln!(
        "{} orders, {} messages, {twice} orders told twice (same Message-ID), {counted} resends counted",
        ids.len(),
        smtp.messages().len()
    );
    assert!(
        twice as i64 <= counted,
        "every second message is a counted resend: {twice} > {counted}"
    );
    second.kill().expect("stop");
    upstream.stop().await;
    h.stop().await;
}

/// The relay down for 20 s while orders flow (20 a second): orders complete without waiting for
/// mail, their notifications stay pending, the retry worker (a pass a second, entries idle 12 s,
/// 3 retries, so 20 s of outage fit in the budget as they do in the default 60 s) retries them,
/// and once the relay is back every order has its message, under one `Message-ID`; nothing is
/// dead-lettered.
#[tokio::test]
async fn a_relay_down_for_20_s_under_load_loses_nothing() {
    let mut smtp = TestSmtp::start();
    let h = Harness::start().await;
    h.create_product("bulk", 10_000).await;
    let mut settings = h.settings.clone();
    settings.services.notification.smtp_url = Some(SecretString::from(smtp.url()));
    settings.retry.min_idle_ms = 12_000;
    let upstream = h.consumers_of(&UPSTREAM_OF_NOTIFICATION).await;
    let mut notification = notifier(&h, &smtp.url(), "notification-outage", &[]);
    let worker = h.retry_worker(&settings);
    let started = Instant::now();
    let (mut down_at, mut back) = (None::<Instant>, false);
    let (mut ids, mut during): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let mut last_pass = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while started.elapsed() < Duration::from_secs(26) {
        tick.tick().await;
        if down_at.is_none() && started.elapsed() >= Duration::from_secs(3) {
            smtp.stop();
            down_at = Some(Instant::now());
        }
        if let Some(down) = down_at
            && !back
            && down.elapsed() >= Duration::from_secs(20)
        {
            // Completion does not wait for mail: what was placed in the outage is COMPLETED.
            for id in &during {
                h.wait_status(id, "COMPLETED", SECONDS_10).await;
            }
            smtp.restart();
            back = true;
        }
        let placed =
            futures_util::future::join_all((0..5).map(|_| h.place("bulk", 1, "tok_visa"))).await;
        if down_at.is_some() && !back {
            during.extend(placed.iter().cloned());
        }
        ids.extend(placed);
        if last_pass.elapsed() >= Duration::from_secs(1) {
            worker.run_pass().await.expect("retry pass");
            last_pass = Instant::now();
        }
    }
    assert!(back, "the relay came back");
    h.eventually(Duration::from_secs(60), "every order told", || async {
        worker.run_pass().await.expect("retry pass");
        let told = by_order(smtp.messages());
        ids.iter().all(|id| told.contains_key(id))
    })
    .await;
    h.settled().await;
    let told = by_order(smtp.messages());
    let twice = ids.iter().filter(|id| told[*id].len() > 1).count();
    for id in &ids {
        let message_ids: HashSet<Option<String>> =
            told[id].iter().map(|m| m.header("Message-ID")).collect();
        assert_eq!(message_ids.len(), 1, "{id}: one Message-ID");
    }
    assert_eq!(h.dlq_length().await, 0, "nothing dead-lettered");
    eprintln!(
        "{} orders ({} placed while the relay was down), {} messages, {twice} orders told twice",
        ids.len(),
        during.len(),
        smtp.messages().len()
    );
    notification.kill().expect("stop");
    upstream.stop().await;
    h.stop().await;
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fulfillment-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}
