//! Mail through a real SMTP server (aiosmtpd, started per test): one message per order and kind,
//! with the order in it; a refused address is recorded once and not retried; a relay that is
//! down loses nothing.

use fulfillment_core::Service;
use fulfillment_events::states::NotificationKind;
use fulfillment_testing::smtp::{SmtpOptions, TestSmtp};
use fulfillment_testing::{Harness, SECONDS_10, TestSettings, UPSTREAM_OF_NOTIFICATION};
use secrecy::SecretString;
use serde_json::json;
use std::time::Duration;

fn with_relay(h: &Harness, smtp: &TestSmtp) -> TestSettings {
    let mut settings = h.settings.clone();
    settings.services.notification.smtp_url = Some(SecretString::from(smtp.url()));
    settings
}

async fn place_for(h: &Harness, email: &str, token: &str) -> String {
    let (status, body) = h
        .post(
            "/orders",
            json!({
                "customer_id": "cust-mail",
                "customer_email": email,
                "items": [{"product_id": "product-A", "quantity": 1}],
                "payment_token": token,
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

/// A completed order gets one confirmation with its tracking number, a declined one one
/// cancellation saying nobody was charged; each with the order's Message-ID, id and total.
#[tokio::test]
async fn each_order_gets_one_message_of_its_kind_with_the_order_in_it() {
    let smtp = TestSmtp::start();
    let h = Harness::start().await;
    let consumers = h.consumers_with("", &with_relay(&h, &smtp)).await;
    let completed = place_for(&h, "buyer@example.com", "tok_visa").await;
    let declined = place_for(&h, "buyer@example.com", "tok_chargeDeclined").await;
    h.wait_status(&completed, "COMPLETED", SECONDS_10).await;
    h.wait_status(&declined, "CANCELLED", SECONDS_10).await;
    h.settled().await;

    let confirmation = smtp.messages_for(&completed);
    assert_eq!(confirmation.len(), 1, "one confirmation");
    let mail = &confirmation[0];
    assert_eq!(mail.rcpt_tos, ["buyer@example.com"]);
    assert_eq!(
        mail.header("Message-ID").as_deref(),
        Some(format!("<{completed}.order_confirmed@fulfillment.localhost>").as_str())
    );
    assert!(
        mail.header("Subject")
            .is_some_and(|s| s.contains(&completed[..8]))
    );
    let tracking = h.events_of(&completed, "ShipmentPrepared").await[0]
        .text("payload")
        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
        .and_then(|p| p["tracking_number"].as_str().map(str::to_owned))
        .expect("tracking number");
    assert!(mail.raw.contains(&tracking), "{}", mail.raw);
    assert!(mail.raw.contains("text/html"), "an HTML alternative");

    let cancellation = smtp.messages_for(&declined);
    assert_eq!(cancellation.len(), 1, "one cancellation");
    assert_eq!(
        cancellation[0].header("Message-ID").as_deref(),
        Some(format!("<{declined}.order_cancelled@fulfillment.localhost>").as_str())
    );
    assert!(
        cancellation[0].raw.contains("You were not charged"),
        "{}",
        cancellation[0].raw
    );
    assert_eq!(h.notification_kinds(&completed).await, ["order_confirmed"]);
    assert_eq!(h.notification_kinds(&declined).await, ["order_cancelled"]);

    // What the console shows: the message as sent, its text readable.
    let (status, said) = h.get(&format!("/orders/{completed}/messages")).await;
    assert_eq!(status, 200, "{said}");
    let messages = said["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{said}");
    assert_eq!(messages[0]["kind"], "order_confirmed");
    assert_eq!(messages[0]["state"], "sent");
    assert_eq!(messages[0]["to"], "buyer@example.com");
    assert_eq!(
        messages[0]["message_id"].as_str(),
        mail.header("Message-ID").as_deref()
    );
    assert_eq!(
        messages[0]["subject"].as_str(),
        mail.header("Subject").as_deref()
    );
    assert!(
        messages[0]["text"]
            .as_str()
            .is_some_and(|text| text.contains(&tracking)),
        "{said}"
    );
    let (_, said) = h.get(&format!("/orders/{declined}/messages")).await;
    assert_eq!(said["messages"][0]["kind"], "order_cancelled", "{said}");
    assert!(
        said["messages"][0]["text"]
            .as_str()
            .is_some_and(|text| text.contains("You were not charged")),
        "{said}"
    );
    consumers.stop().await;
    h.stop().await;
}

/// A relay that refuses the address for good (550) is asked once: the notification is recorded
/// `failed` with `NotificationFailed`, the order keeps its status, and the retry worker has
/// nothing to retry.
#[tokio::test]
async fn a_refused_address_is_recorded_once_and_not_retried() {
    let smtp = TestSmtp::start_with(SmtpOptions {
        refuse: vec!["nobody@example.com".into()],
        ..SmtpOptions::default()
    });
    let h = Harness::start().await;
    let settings = with_relay(&h, &smtp);
    let consumers = h.consumers_with("", &settings).await;
    let id = place_for(&h, "nobody@example.com", "tok_visa").await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    h.settled().await;
    let failed = h.events_of(&id, "NotificationFailed").await;
    assert_eq!(failed.len(), 1, "one NotificationFailed");
    let payload: serde_json::Value =
        serde_json::from_str(&failed[0].text("payload").expect("payload")).expect("json");
    assert_eq!(payload["kind"], "order_confirmed");
    assert_eq!(payload["to"], "nobody@example.com");
    assert!(
        payload["reason"]
            .as_str()
            .is_some_and(|r| r.contains("550")),
        "{payload}"
    );
    assert!(smtp.messages_for(&id).is_empty());
    let report = h.retry_pass(&settings).await;
    assert_eq!(report.retried, 0, "nothing left to retry");
    assert_eq!(
        h.counter(&fulfillment_events::keys::counter::notifications_failed(
            NotificationKind::OrderConfirmed.as_str()
        ))
        .await,
        1
    );
    assert_eq!(h.order(&id).await["status"], "COMPLETED");
    let (_, said) = h.get(&format!("/orders/{id}/messages")).await;
    assert_eq!(said["messages"][0]["state"], "failed", "{said}");
    assert!(
        said["messages"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("550")),
        "{said}"
    );
    assert!(
        said["messages"][0]["text"].is_null(),
        "nothing was sent: {said}"
    );
    consumers.stop().await;
    h.stop().await;
}

/// The relay down while orders complete: their notifications stay pending, and once it is back
/// the retry worker sends each exactly once.
#[tokio::test]
async fn a_relay_down_loses_nothing_and_sends_each_message_once_when_back() {
    let mut smtp = TestSmtp::start();
    let h = Harness::start().await;
    let settings = with_relay(&h, &smtp);
    smtp.stop();
    let consumers = h.consumers_with("", &settings).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(place_for(&h, "later@example.com", "tok_visa").await);
    }
    for id in &ids {
        h.wait_status(id, "COMPLETED", SECONDS_10).await;
    }
    h.eventually(SECONDS_10, "every notification pending", || async {
        h.pending("notification_group").await == ids.len() as i64
    })
    .await;
    smtp.restart();
    h.eventually(Duration::from_secs(30), "every message sent", || async {
        h.retry_pass(&settings).await;
        ids.iter().all(|id| smtp.messages_for(id).len() == 1)
    })
    .await;
    h.settled().await;
    for id in &ids {
        assert_eq!(smtp.messages_for(id).len(), 1, "{id}: exactly one message");
        assert_eq!(h.notification_kinds(id).await, ["order_confirmed"]);
    }
    // Nothing was claimed while the relay refused connections: no attempt to count again.
    assert_eq!(
        h.counter(&fulfillment_events::keys::counter::notifications_resent(
            NotificationKind::OrderConfirmed.as_str()
        ))
        .await,
        0
    );
    consumers.stop().await;
    h.stop().await;
}

/// Four entries of one notification (a repeated step announces its event again; a replay adds
/// one), read in one batch by one consumer while the relay answers slowly: each delivery holds a
/// lease of its own, so one sends and the others wait, then find it sent. One message.
#[tokio::test]
async fn duplicate_entries_in_one_batch_send_one_message() {
    let smtp = TestSmtp::start_with(SmtpOptions {
        delay: Some(0.3),
        ..SmtpOptions::default()
    });
    let h = Harness::start().await;
    let settings = with_relay(&h, &smtp);
    let upstream = h.consumers_of(&UPSTREAM_OF_NOTIFICATION).await;
    let id = place_for(&h, "twice@example.com", "tok_visa").await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    let shipped = h.events_of(&id, "ShipmentPrepared").await;
    let stream = h.partition_of(&id).stream.clone();
    for _ in 0..3 {
        h.xadd_to(&stream, &shipped[0].fields).await;
    }
    let notifier = h
        .consumers_of_with(&[Service::Notification], &settings)
        .await;
    h.eventually(Duration::from_secs(30), "every entry handled", || async {
        h.retry_pass(&settings).await;
        h.pending("notification_group").await == 0
    })
    .await;
    assert_eq!(smtp.messages_for(&id).len(), 1, "one message");
    assert_eq!(
        h.counter(&fulfillment_events::keys::counter::notifications_resent(
            NotificationKind::OrderConfirmed.as_str()
        ))
        .await,
        0,
        "nothing sent twice"
    );
    notifier.stop().await;
    upstream.stop().await;
    h.stop().await;
}

/// An address not in ASCII reaches a relay that takes such addresses (aiosmtpd does): one
/// message, nothing retried. (A relay that cannot carry it makes lettre refuse the send before a
/// byte goes out: recorded as refused for good, see `relay::classify`.)
#[tokio::test]
async fn an_address_not_in_ascii_is_delivered_once() {
    let smtp = TestSmtp::start();
    let h = Harness::start().await;
    let settings = with_relay(&h, &smtp);
    let consumers = h.consumers_with("", &settings).await;
    let id = place_for(&h, "jos\u{e9}@example.com", "tok_visa").await;
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    h.settled().await;
    let mails = smtp.messages_for(&id);
    assert_eq!(mails.len(), 1, "one message");
    assert_eq!(mails[0].rcpt_tos, ["jos\u{e9}@example.com"]);
    assert_eq!(h.retry_pass(&settings).await.retried, 0, "nothing to retry");
    assert_eq!(h.dlq_length().await, 0);
    consumers.stop().await;
    h.stop().await;
}
