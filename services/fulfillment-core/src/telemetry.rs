//! Log set-up: JSON lines for collectors or pretty lines for people, filtered by `RUST_LOG`.

use crate::settings::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (tests composing several services) are no-ops.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
