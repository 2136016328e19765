//! Logs and traces.
//!
//! Logs: JSON lines for collectors or compact lines for people, filtered by `RUST_LOG`; handler
//! lines carry the handler span's fields (`order_id`, `event_id`, `group`, `consumer`,
//! `trace_id`). Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans go to it over OTLP/HTTP
//! with this process's `service.name`. Trace context crosses services in the `traceparent` field
//! of every entry: [`continue_trace`] makes a span the child of an entry's context, and
//! [`traceparent_of`] writes a span's context for the entries it publishes.

use crate::settings::LogFormat;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Keeps the trace pipeline alive; dropping it flushes the spans not yet exported.
#[must_use = "dropping the guard stops trace export"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("trace export did not flush: {e}");
        }
    }
}

/// Installs logging, and trace export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Later calls in
/// the same process (tests composing several services) change nothing.
pub fn init(format: LogFormat, service_name: &'static str) -> TelemetryGuard {
    let endpoint_set = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty());
    if !endpoint_set {
        install(format, None);
        return TelemetryGuard::default();
    }
    match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => {
            let provider = batch_provider(exporter, service_name);
            install(format, Some(&provider));
            TelemetryGuard {
                provider: Some(provider),
            }
        }
        Err(e) => {
            install(format, None);
            tracing::error!(error = %e, "OTEL_EXPORTER_OTLP_ENDPOINT is set but the exporter failed; traces are off");
            TelemetryGuard::default()
        }
    }
}

/// Like [`init`] with a given exporter, exporting each span as it ends (tests use the in-memory one).
pub fn init_with_exporter(
    format: LogFormat,
    service_name: &'static str,
    exporter: impl SpanExporter + 'static,
) -> TelemetryGuard {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(resource(service_name))
        .build();
    install(format, Some(&provider));
    TelemetryGuard {
        provider: Some(provider),
    }
}

fn batch_provider(
    exporter: impl SpanExporter + 'static,
    service_name: &'static str,
) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service_name))
        .build()
}

fn resource(service_name: &'static str) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name)
        .build()
}

fn install(format: LogFormat, provider: Option<&SdkTracerProvider>) {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let traces = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("fulfillment"))
            .boxed()
    });
    let _ = Registry::default()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init();
}

/// The trace context a W3C `traceparent` names, as the propagator reads it; `None` when it finds
/// no valid span context there (malformed, uppercase, all-zero ids).
fn parent_context(traceparent: &str) -> Option<opentelemetry::Context> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// `traceparent` in the canonical form the propagator writes, when it is valid: what may be
/// carried along the saga from an outside caller (a malformed header is dropped, not passed on).
pub fn canonical_traceparent(traceparent: &str) -> Option<String> {
    let context = parent_context(traceparent)?;
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the W3C `traceparent` (when there is a valid one).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(parent) = traceparent.and_then(parent_context) {
        let _ = span.set_parent(parent);
    }
}

/// The `traceparent` of `span`, or `None` when traces are off (no valid span context).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// The trace id inside a `traceparent`, for log lines.
pub fn trace_id_of(traceparent: Option<&str>) -> Option<String> {
    traceparent
        .and_then(parent_context)
        .map(|c| c.span().span_context().trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_traceparents_are_carried_in_their_canonical_form() {
        let valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(canonical_traceparent(valid).as_deref(), Some(valid));
        assert_eq!(
            trace_id_of(Some(valid)).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "hello",
            "",
        ] {
            assert_eq!(canonical_traceparent(bad), None, "{bad}");
        }
        assert_eq!(trace_id_of(None), None);
    }
}
