//! The notification service binary: one consumer of its group plus health, readiness and metrics.

// mimalloc: the system allocator spent a quarter of the services' CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use notification_service::MailSettings;

fn main() -> std::process::ExitCode {
    fulfillment_core::runtime::startup::run_main(
        None,
        fulfillment_core::runtime::startup::main_for_worker(
            "notification-service",
            MailSettings::read,
            |redis, mail| {
                // One line at start: where mail goes (a relay, files, or only the log).
                if mail.smtp_url.is_none() && mail.dir.is_none() {
                    tracing::warn!("{}", mail.describe());
                } else {
                    tracing::info!("{}", mail.describe());
                }
                std::sync::Arc::new(notification_service::handler(redis, &mail))
            },
        ),
    )
}
