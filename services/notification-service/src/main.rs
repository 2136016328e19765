//! The notification service binary: one consumer of its group plus health, readiness and metrics.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    fulfillment_core::service::main_for_worker("notification-service", |redis, settings| {
        std::sync::Arc::new(notification_service::handler(redis, settings))
    })
    .await
}
