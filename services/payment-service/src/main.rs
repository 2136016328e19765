//! The payment service binary: one consumer of its group plus health, readiness and metrics.

// mimalloc: the system allocator spent a quarter of the services' CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fulfillment_core::runtime::startup::run_main(
        None,
        fulfillment_core::runtime::startup::main_for_worker(
            "payment-service",
            payment_service::ChargeSettings::read,
            |redis, charges| std::sync::Arc::new(payment_service::handler(redis, charges)),
        ),
    )
}
