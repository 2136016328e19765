//! The in-process hot paths of every consumer, measured with criterion (`cargo bench`):
//! encoding an event into stream fields, decoding an entry, parsing an `XREADGROUP` reply, and
//! dispatching an entry to a handler (decode, span, handler call, metrics) or past it when the
//! group does not handle its type. Redis round trips are not in here: `fulfillment bench`
//! measures the whole pipeline.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fulfillment_core::runtime::consumer::decide;
use fulfillment_core::{Delivery, Event, EventHandler, EventType, Handled, HandlerFuture, Service};
use fulfillment_events::events::{LineItem, OrderPlaced};
use fulfillment_redis::stream_entry::{RawEntry, parse_read_reply};
use redis::Value;
use std::hint::black_box;

// The allocator the binaries use, so the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn order_placed() -> Event {
    let mut event = Event::of(
        "8f14e45f-ceea-467a-9575-3f5a8e2e5a10",
        &OrderPlaced {
            customer_id: "customer-42".into(),
            customer_email: "ada@example.com".into(),
            items: vec![
                LineItem {
                    product_id: "product-A".into(),
                    quantity: 2,
                    unit_price: 1999,
                },
                LineItem {
                    product_id: "product-B".into(),
                    quantity: 1,
                    unit_price: 4999,
                },
            ],
            total: 8997,
            payment_token: "tok_visa".into(),
        },
    );
    event.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    event.producer = Some("order/api".into());
    event
}

fn raw_entry(event: &Event) -> RawEntry {
    RawEntry {
        id: "1700000000000-0".into(),
        fields: event
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
            .collect(),
    }
}

/// An `XREADGROUP` reply of `n` entries, as redis-rs hands it over (RESP2).
fn read_reply(entry: &RawEntry, n: usize) -> Value {
    let bulk = |b: &[u8]| Value::BulkString(b.to_vec());
    let entries = (0..n)
        .map(|i| {
            let fields = entry
                .fields
                .iter()
                .flat_map(|(k, v)| [bulk(k), bulk(v)])
                .collect();
            Value::Array(vec![
                bulk(format!("1700000000000-{i}").as_bytes()),
                Value::Array(fields),
            ])
        })
        .collect();
    Value::Array(vec![Value::Array(vec![
        bulk(b"order_events"),
        Value::Array(entries),
    ])])
}

/// Handles `OrderPlaced` by doing nothing, so only the dispatch around it is measured.
struct NoOp;

impl EventHandler for NoOp {
    fn service(&self) -> Service {
        Service::Inventory
    }
    fn handles(&self, event_type: EventType) -> bool {
        event_type == EventType::OrderPlaced
    }
    fn handle<'a>(&'a self, delivery: Delivery<'a>) -> HandlerFuture<'a> {
        black_box(delivery.event);
        Box::pin(async { Ok(Handled::Done) })
    }
}

fn events(c: &mut Criterion) {
    let event = order_placed();
    let entry = raw_entry(&event);
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_fields", |b| {
        b.iter(|| black_box(&event).to_fields())
    });
    group.bench_function("encode_fields_json", |b| {
        b.iter(|| black_box(&event).to_fields_json())
    });
    group.bench_function("decode", |b| {
        b.iter(|| Event::from_field_list(black_box(&entry.fields)))
    });
    group.finish();

    let reply = read_reply(&entry, 64);
    let mut group = c.benchmark_group("read_reply");
    group.throughput(Throughput::Elements(64));
    group.bench_function("parse_64_entries", |b| {
        b.iter_batched(|| reply.clone(), parse_read_reply, BatchSize::SmallInput)
    });
    group.finish();
}

fn dispatch(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    let handled = raw_entry(&order_placed());
    let mut shipped = order_placed();
    shipped.event_type = EventType::ShipmentPrepared;
    let for_others = raw_entry(&shipped);
    let layout =
        fulfillment_events::keys::Layout::new("order_events", "order_events:dlq", 1, false);
    let partition = &layout.partitions()[0];
    let stopping = tokio_util::sync::CancellationToken::new();
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(1));
    group.bench_function("handled", |b| {
        b.to_async(&runtime).iter(|| {
            decide(
                &NoOp,
                partition,
                black_box(&handled),
                "inventory-1",
                1,
                &stopping,
            )
        })
    });
    group.bench_function("not_this_groups", |b| {
        b.to_async(&runtime).iter(|| {
            decide(
                &NoOp,
                partition,
                black_box(&for_others),
                "inventory-1",
                1,
                &stopping,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, events, dispatch);
criterion_main!(benches);
