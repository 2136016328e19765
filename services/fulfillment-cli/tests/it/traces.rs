//! One order is one trace: from `POST /orders` through every step's group to its notification, retries
//! included, carried by the `traceparent` field of every entry. Its own test binary, because it
//! installs the process's global trace pipeline (an in-memory exporter).

use fulfillment_core::ops::telemetry;
use fulfillment_core::settings::LogFormat;
use fulfillment_events::keys;
use fulfillment_testing::{Harness, SECONDS_10};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use std::collections::HashSet;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test]
async fn an_order_is_one_trace_across_every_service_retries_included() {
    let exporter = InMemorySpanExporter::default();
    let _guard =
        telemetry::init_with_exporter(LogFormat::Json, "fulfillment-test", exporter.clone());
    let h = Harness::start().await;
    let (_, failing_consumers, id) = h.order_stuck_in_failing_inventory(1).await;
    failing_consumers.stop().await;
    let healthy = h.consumers().await;
    let report = h.retry_pass(&h.settings).await;
    assert_eq!(report.recovered, 1);
    h.wait_status(&id, "COMPLETED", SECONDS_10).await;
    h.wait_counter(&keys::counter::notifications("order_confirmed"), 1)
        .await;
    h.eventually(SECONDS_10, "projection caught up", || async {
        h.pending("order_group").await == 0
    })
    .await;
    healthy.stop().await;

    let spans = exporter.get_finished_spans().expect("spans");
    let root = spans
        .iter()
        .find(|s| s.name == "POST /orders")
        .expect("the API's span");
    assert_eq!(
        root.parent_span_id,
        SpanId::INVALID,
        "the API starts the trace"
    );
    let trace = root.span_context.trace_id();
    assert_ne!(trace, TraceId::INVALID);

    let handler_spans: Vec<&SpanData> = spans
        .iter()
        .filter(|s| {
            attribute(s, "order_id").as_deref() == Some(id.as_str())
                && attribute(s, "group").is_some()
        })
        .collect();
    assert!(
        handler_spans
            .iter()
            .all(|s| s.span_context.trace_id() == trace),
        "every handler span of the order is in the API's trace"
    );
    let groups: HashSet<String> = handler_spans
        .iter()
        .filter_map(|s| attribute(s, "group"))
        .collect();
    // Every step records its own event in the order's projection, so the order group handles
    // none of a completed order's entries (it acknowledges them unread) and has no span here.
    for group in fulfillment_events::service::all_groups() {
        if group == "order_group" {
            assert!(!groups.contains(group), "order_group handled an entry");
        } else {
            assert!(groups.contains(group), "no span from {group}: {groups:?}");
        }
    }
    let retry = handler_spans
        .iter()
        .find(|s| attribute(s, "consumer").as_deref() == Some("retry-worker"))
        .expect("the retry worker's span");
    assert_eq!(
        attribute(retry, "group").as_deref(),
        Some("inventory_group")
    );
    assert_eq!(attribute(retry, "attempt").as_deref(), Some("2"));
    assert!(
        handler_spans
            .iter()
            .all(|s| s.parent_span_id != SpanId::INVALID),
        "each continues a parent"
    );

    for entry in h.all_entries().await {
        let traceparent = entry
            .text("traceparent")
            .expect("every entry carries a traceparent");
        assert_eq!(
            traceparent.split('-').nth(1),
            Some(trace.to_string().as_str()),
            "{}",
            entry.id
        );
    }
    h.stop().await;
}
