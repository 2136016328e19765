//! The retry worker binary: one pass and exit (the CronJob), or `--loop`.

// mimalloc: the system allocator spent a quarter of the services' CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use fulfillment_core::ops::ops_http::{ops_router, serve};
use fulfillment_core::runtime::startup::{bind, exit_code, ops_state, or_exit, prepare_redis};
use fulfillment_core::settings::{Env, Settings};
use fulfillment_pipeline::{ServiceSettings, all_handlers};
use retry_worker::RetryWorker;

/// Retries entries left pending in every consumer group, dead-letters those that keep failing,
/// removes gone consumers and trims the stream. Settings come from the environment
/// (RETRY_MIN_IDLE_MS, RETRY_MAX_RETRIES, RETRY_INTERVAL_MS, REDIS_URL, ...).
#[derive(Debug, Parser)]
#[command(name = "retry-worker", version)]
struct Args {
    /// Keep passing every RETRY_INTERVAL_MS (serving /healthz, /readyz, /metrics on HTTP_ADDR)
    /// instead of one pass and exit.
    #[arg(long = "loop")]
    run_loop: bool,
}

fn main() -> std::process::ExitCode {
    fulfillment_core::runtime::startup::run_main(None, async {
        let args = Args::parse();
        let env = Env::from_process();
        let settings = or_exit(Settings::read(&env));
        let own = or_exit(ServiceSettings::read(&env));
        let _telemetry =
            fulfillment_core::ops::telemetry::init(settings.log_format, "retry-worker");
        let result = async {
            let redis = prepare_redis(&settings).await?;
            let worker =
                RetryWorker::new(redis.clone(), settings.clone(), all_handlers(&redis, &own));
            if !args.run_loop {
                let report = worker.run_pass().await?;
                println!("{}", serde_json::to_string(&report)?);
                return Ok(());
            }
            let shutdown = fulfillment_core::runtime::shutdown::on_signal();
            let listener = bind(&settings).await?;
            let app = ops_router(ops_state(&redis));
            let server = tokio::spawn(serve(listener, app, shutdown.clone()));
            worker.run_loop(shutdown).await;
            server.await??;
            Ok(())
        }
        .await;
        exit_code(result)
    })
}
