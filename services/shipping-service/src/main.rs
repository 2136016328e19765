//! The shipping service binary: one consumer of its group plus health, readiness and metrics.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    fulfillment_core::service::main_for_worker("shipping-service", |redis, settings| {
        std::sync::Arc::new(shipping_service::handler(redis, settings))
    })
    .await
}
