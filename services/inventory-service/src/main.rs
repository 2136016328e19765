//! The inventory service binary: one consumer of its group plus health, readiness and metrics.

// mimalloc: the system allocator spent a quarter of the services' CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fulfillment_core::runtime::startup::run_main(
        None,
        fulfillment_core::runtime::startup::main_for_worker(
            "inventory-service",
            inventory_service::Instability::read,
            |redis, instability| {
                std::sync::Arc::new(inventory_service::handler(redis, instability))
            },
        ),
    )
}
