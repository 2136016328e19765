//! The inventory service binary: one consumer of its group plus health, readiness and metrics.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    fulfillment_core::service::main_for_worker("inventory-service", |redis, settings| {
        std::sync::Arc::new(inventory_service::handler(redis, settings))
    })
    .await
}
