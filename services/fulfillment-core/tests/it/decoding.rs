//! Property tests: decoding never panics, whatever a stream entry or a Redis reply holds, a
//! well-formed event always survives encoding, and the blocking reader's own `XREADGROUP` parser
//! reads every reply as redis-rs's parser does.

use fulfillment_core::ops::telemetry::canonical_traceparent;
use fulfillment_events::events::{Event, EventType};
use fulfillment_redis::stream_entry::{RawEntry, is_entry_id, parse_entries, parse_read_reply};
use fulfillment_redis::stream_reader;
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

/// RESP2 bytes of a bulk string.
fn bulk(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

type StreamReply = Vec<(String, Vec<(String, Option<Vec<(Vec<u8>, Vec<u8>)>>)>)>;

/// An `XREADGROUP` reply as Redis writes it: streams, their entries, each entry's fields (nil for
/// an entry deleted while pending).
fn read_reply_bytes(streams: &StreamReply) -> Vec<u8> {
    let mut out = format!("*{}\r\n", streams.len()).into_bytes();
    for (stream, entries) in streams {
        out.extend_from_slice(b"*2\r\n");
        bulk(&mut out, stream.as_bytes());
        out.extend_from_slice(format!("*{}\r\n", entries.len()).as_bytes());
        for (id, fields) in entries {
            out.extend_from_slice(b"*2\r\n");
            bulk(&mut out, id.as_bytes());
            match fields {
                None => out.extend_from_slice(b"*-1\r\n"),
                Some(fields) => {
                    out.extend_from_slice(format!("*{}\r\n", fields.len() * 2).as_bytes());
                    for (k, v) in fields {
                        bulk(&mut out, k);
                        bulk(&mut out, v);
                    }
                }
            }
        }
    }
    out
}

fn stream_reply() -> impl Strategy<Value = StreamReply> {
    let fields = proptest::option::weighted(
        0.9,
        proptest::collection::vec(
            (field_name().prop_map(String::into_bytes), field_value()),
            0..8,
        ),
    );
    let entry = ("[0-9]{1,13}-[0-9]{1,3}", fields);
    proptest::collection::vec(
        ("[a-z_:{}0-9]{1,20}", proptest::collection::vec(entry, 0..6)),
        0..3,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_readers_parser_reads_a_reply_as_redis_rs_does_and_waits_for_a_cut_one(streams in stream_reply(), cut in any::<prop::sample::Index>()) {
        let bytes = read_reply_bytes(&streams);
        let expected = parse_read_reply(redis::parse_redis_value(&bytes).expect("well-formed"))
            .expect("a read reply");
        let (entries, used) = stream_reader::parse_read_reply(&bytes).expect("parses").expect("whole");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(entries, expected);
        let cut = cut.index(bytes.len());
        prop_assert!(stream_reader::parse_read_reply(&bytes[..cut]).expect("a prefix is no error").is_none());
    }

    #[test]
    fn the_readers_parser_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = stream_reader::parse_read_reply(&bytes);
    }

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
        if let Ok(entries) = parse_entries(value) {
            for RawEntry { fields, .. } in &entries {
                prop_assert!(fields.len() <= 64);
            }
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
