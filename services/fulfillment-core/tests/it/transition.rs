//! A step's repeat publishes the same entry again: by the id its state hash keeps, from a copy a
//! hash written before kept, and not at all once the entry is trimmed (every group had it).

use fulfillment_core::Redis;
use fulfillment_core::saga::transition::{Step, StepOutcome, transition};
use fulfillment_core::settings::Settings;
use fulfillment_events::events::{Event, EventType, field, field_value};
use fulfillment_events::keys::Partition;
use fulfillment_events::routing;
use fulfillment_events::states::ShipmentState;
use fulfillment_testing::{TestRedis, stream_entries as entries};
use redis::AsyncCommands;

fn label_step<'a>(
    partition: &Partition,
    order_id: &'a str,
    event: &'a Event,
) -> Step<'a, ShipmentState> {
    Step {
        order_id,
        key: partition.keys.shipment(order_id),
        from: &[None],
        to: ShipmentState::Labelled,
        event: Some(event),
        event_field: "event",
        counter: None,
        facts: &[],
        guards: &[],
        recorder: None,
    }
}

#[tokio::test]
async fn a_repeat_publishes_the_same_fields_by_id_from_an_old_copy_or_not_once_trimmed() {
    let server = TestRedis::start();
    let redis = Redis::connect(&Settings::for_redis(&server.url))
        .await
        .expect("connects");
    let partition = redis.layout().partitions()[0].clone();
    let mut conn = redis.conn();
    for order in ["o-1", "o-2"] {
        let _: () = conn
            .hset(partition.keys.order(order), "id", order)
            .await
            .expect("order");
    }
    let payload = serde_json::json!({"label_id": "l-1", "tracking_number": "FUL1"});

    // Applied: one entry, and the state hash keeps its id, not a copy of the event. The id has a
    // field of its own: an earlier version, reading `event` for a copy, finds none and skips.
    let event = Event::new(EventType::ShipmentPrepared, "o-1", &payload);
    let step = label_step(&partition, "o-1", &event);
    let outcome = transition(&redis, &partition, &step).await.expect("step");
    assert!(
        matches!(outcome, StepOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let published = entries(&redis, &partition.stream).await;
    assert_eq!(published.len(), 1);
    let kept: String = conn
        .hget(partition.keys.shipment("o-1"), "event_entry")
        .await
        .expect("kept");
    assert_eq!(kept, published[0].id, "the entry's id");
    let copy: Option<String> = conn
        .hget(partition.keys.shipment("o-1"), "event")
        .await
        .expect("no copy");
    assert_eq!(copy, None);

    // Repeated: the same fields again, in the same order.
    let outcome = transition(&redis, &partition, &step).await.expect("repeat");
    assert_eq!(outcome, StepOutcome::Repeated);
    let published = entries(&redis, &partition.stream).await;
    assert_eq!(published.len(), 2);
    assert_eq!(
        published[0].fields, published[1].fields,
        "published unchanged"
    );

    // A hash written before this change kept a copy: a repeat publishes the copy.
    let old = Event::new(EventType::ShipmentPrepared, "o-2", &payload);
    let _: () = conn
        .hset_multiple(
            partition.keys.shipment("o-2"),
            &[("state", "labelled"), ("event", &old.to_fields_json())],
        )
        .await
        .expect("old hash");
    let outcome = transition(&redis, &partition, &label_step(&partition, "o-2", &old))
        .await
        .expect("repeat of an old hash");
    assert_eq!(outcome, StepOutcome::Repeated);
    let published = entries(&redis, &partition.stream).await;
    assert_eq!(published.len(), 3);
    // The stream has no groups here, so nothing is marked as pending for them.
    let copy: Vec<(Vec<u8>, Vec<u8>)> = old
        .to_fields()
        .into_iter()
        .map(|(name, value)| (name.as_bytes().to_vec(), value.into_bytes()))
        .collect();
    assert_eq!(published[2].fields, copy);

    // Trimmed (every group acknowledged it): nothing left to repeat, and nothing published.
    let _: () = redis::cmd("XTRIM")
        .arg(&partition.stream)
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("trim");
    let outcome = transition(&redis, &partition, &step)
        .await
        .expect("repeat after trim");
    assert_eq!(outcome, StepOutcome::Repeated);
    assert!(entries(&redis, &partition.stream).await.is_empty());
}

/// A published entry is pending, from the script that publishes it, for exactly the groups that
/// act on it (held by `(unread)`), and marked `routed`; when one of those groups does not exist,
/// it goes unmarked instead (a reader of a group made later claims it), and nothing pending is
/// left for the entry it replaced.
#[tokio::test]
async fn a_published_entry_is_pending_for_the_groups_that_act_on_it() {
    let server = TestRedis::start();
    let redis = Redis::connect(&Settings::for_redis(&server.url))
        .await
        .expect("connects");
    fulfillment_core::store::ensure_groups(&redis, &fulfillment_events::service::all_groups())
        .await
        .expect("groups");
    let partition = redis.layout().partitions()[0].clone();
    let mut conn = redis.conn();
    let _: () = conn
        .hset(partition.keys.order("o-1"), "id", "o-1")
        .await
        .expect("order");
    let _: () = conn
        .hset(partition.keys.order("o-2"), "id", "o-2")
        .await
        .expect("order");
    let payload = serde_json::json!({"label_id": "l-1", "tracking_number": "FUL1"});
    let pending_ids = |group: &'static str| {
        let redis = redis.clone();
        let stream = partition.stream.clone();
        async move {
            let reply: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
                .arg(&stream)
                .arg(group)
                .arg("-")
                .arg("+")
                .arg(10)
                .query_async(&mut redis.conn())
                .await
                .expect("XPENDING");
            reply
                .ids
                .into_iter()
                .map(|p| (p.id, p.consumer))
                .collect::<Vec<_>>()
        }
    };

    let event = Event::new(EventType::ShipmentPrepared, "o-1", &payload);
    let step = label_step(&partition, "o-1", &event);
    assert!(matches!(
        transition(&redis, &partition, &step).await.expect("step"),
        StepOutcome::Applied { .. }
    ));
    let published = entries(&redis, &partition.stream).await;
    let id = published[0].id.clone();
    assert_eq!(
        published[0].fields[0],
        (b"routed".to_vec(), routing::VERSION.as_bytes().to_vec()),
        "marked first"
    );
    for group in ["notification_group", "order_group"] {
        assert_eq!(
            pending_ids(group).await,
            vec![(id.clone(), routing::UNREAD.to_owned())],
            "{group} acts on ShipmentPrepared"
        );
    }
    for group in ["inventory_group", "payment_group", "shipping_group"] {
        assert!(pending_ids(group).await.is_empty(), "{group}");
    }

    // The notification group removed: the entry goes again, unmarked, pending for the order
    // group alone; the one it replaced is neither in the stream nor pending.
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&partition.stream)
        .arg("notification_group")
        .query_async(&mut conn)
        .await
        .expect("destroy");
    let event = Event::new(EventType::ShipmentPrepared, "o-2", &payload);
    let step = label_step(&partition, "o-2", &event);
    transition(&redis, &partition, &step).await.expect("step");
    let published = entries(&redis, &partition.stream).await;
    assert_eq!(published.len(), 2, "{published:?}");
    let unmarked = &published[1];
    assert!(
        field_value(&unmarked.fields, field::ROUTED).is_none(),
        "{:?}",
        unmarked.fields
    );
    assert_eq!(
        field_value(&unmarked.fields, field::ORDER_ID),
        Some(b"o-2".as_slice())
    );
    assert_eq!(
        pending_ids("order_group").await,
        vec![
            (id, routing::UNREAD.to_owned()),
            (unmarked.id.clone(), routing::UNREAD.to_owned())
        ]
    );
    let kept: Option<String> = conn
        .hget(partition.keys.shipment("o-2"), "event_entry")
        .await
        .expect("kept");
    assert_eq!(
        kept.as_deref(),
        Some(unmarked.id.as_str()),
        "the step keeps the id it published"
    );
}
