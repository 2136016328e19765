//! The notification service binary: one consumer of its group plus health, readiness and metrics.

// mimalloc: the system allocator spent a quarter of the services' CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fulfillment_core::runtime::startup::run_main(
        None,
        fulfillment_core::runtime::startup::main_for_worker(
            "notification-service",
            |_| Ok(()),
            |redis, ()| std::sync::Arc::new(notification_service::handler(redis)),
        ),
    )
}
