//! The order service binary: the HTTP API and one `order_group` projection consumer.

// mimalloc: the system allocator spent a quarter of the services' CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use fulfillment_core::runtime::startup::{bind, exit_code, prepare_redis, settings_or_exit};

fn main() -> std::process::ExitCode {
    fulfillment_core::runtime::startup::run_main(None, async {
        let settings = settings_or_exit();
        let _telemetry =
            fulfillment_core::ops::telemetry::init(settings.log_format, "order-service");
        let result = async {
            let redis = prepare_redis(&settings).await?;
            let listener = bind(&settings).await?;
            order_service::run(
                settings,
                redis,
                listener,
                fulfillment_core::runtime::shutdown::on_signal(),
            )
            .await
        }
        .await;
        exit_code(result)
    })
}
