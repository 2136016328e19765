//! A step's repeat publishes the same entry again: by the id its state hash keeps, from a copy a
//! hash written before kept, and not at all once the entry is trimmed (every group had it).

use fulfillment_core::Redis;
use fulfillment_core::saga::transition::{Step, StepOutcome, transition};
use fulfillment_core::settings::Settings;
use fulfillment_events::events::{Event, EventType};
use fulfillment_events::keys::Partition;
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
