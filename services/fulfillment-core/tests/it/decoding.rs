//! Property tests: decoding never panics, whatever a stream entry or a Redis reply holds, and a
//! well-formed event always survives encoding.

use fulfillment_core::events::{Event, EventType};
use fulfillment_core::stream_entry::{RawEntry, is_entry_id, parse_entries, parse_read_reply};
use fulfillment_core::telemetry::canonical_traceparent;
use proptest::prelude::*;
use redis::Value;
use std::collections::HashMap;

const NAMES: &[&str] = &[
    "event_id",
    "type",
    "order_id",
    "occurred_at",
    "payload",
    "traceparent",
    "producer",
    "replay_for",
];

/// Field names: mostly the real ones, sometimes anything.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(NAMES).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

/// Field values: well-formed pieces, near misses, and arbitrary bytes.
fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(uuid::Uuid::new_v4().to_string().into_bytes()),
        proptest::sample::select(EventType::ALL).prop_map(|t| t.as_str().as_bytes().to_vec()),
        Just(b"{}".to_vec()),
        Just(br#"{"items": [{"product_id": "p", "quantity": 1, "unit_price": 5}]}"#.to_vec()),
        Just(b"[1, 2]".to_vec()),
        Just(b"{\"a\":".to_vec()),
        Just(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec()),
        "\\PC{0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

fn redis_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<i64>().prop_map(Value::Int),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::BulkString),
        "[a-z0-9-]{0,8}".prop_map(Value::SimpleString),
        Just(Value::Okay),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoding_any_entry_never_panics(fields in proptest::collection::hash_map(field_name(), field_value(), 0..10)) {
        let decoded = Event::from_fields(&fields);
        if let Ok(event) = decoded {
            // Whatever decodes encodes back to fields that decode to the same event.
            let again: HashMap<String, Vec<u8>> = event
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into_bytes()))
                .collect();
            prop_assert_eq!(Event::from_fields(&again), Ok(event));
        }
    }

    #[test]
    fn parsing_any_redis_reply_never_panics(value in redis_value()) {
        let _ = parse_read_reply(value.clone());
        let entries = parse_entries(value);
        for RawEntry { fields, .. } in &entries {
            prop_assert!(fields.len() <= 64);
        }
    }

    #[test]
    fn a_well_formed_event_survives_encoding(order_id in "[a-z0-9-]{1,40}", kind in proptest::sample::select(EventType::ALL), n in any::<u32>()) {
        let event = Event::new(kind, &order_id, &serde_json::json!({"n": n, "text": "ünïcode"}));
        let raw: HashMap<String, Vec<u8>> = event
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_bytes()))
            .collect();
        prop_assert_eq!(Event::from_fields(&raw), Ok(event));
    }

    #[test]
    fn id_and_header_checks_never_panic(text in "\\PC{0,80}") {
        let _ = is_entry_id(&text);
        let _ = canonical_traceparent(&text);
    }
}
