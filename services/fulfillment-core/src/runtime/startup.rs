//! Running one consumer service: its consumer loop and its ops endpoints, until shutdown.
//!
//! The binaries' `main` and the local runner both come through here, so what a test composes is
//! what an image runs.

use crate::ops::ops_http::{OpsState, ops_router, serve};
use crate::runtime::consumer::{ConsumerConfig, run_consumer};
use crate::runtime::handler::EventHandler;
use crate::settings::{Env, Settings, SettingsError};
use crate::store::{Redis, ensure_groups};
use fulfillment_redis::connection::warn_if_keys_may_be_evicted;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Reads the settings or exits with one line naming the bad variable (status 2).
pub fn settings_or_exit() -> Settings {
    or_exit(Settings::from_env())
}

/// The settings read, or the one line naming the bad variable and exit status 2 (no panic trace).
pub fn or_exit<T>(read: Result<T, SettingsError>) -> T {
    match read {
        Ok(value) => value,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}

/// `TOKIO_WORKER_THREADS`: the runtime's worker threads, 1..=1024, or `None` when unset (the
/// caller's default). Read here rather than by tokio, which panics on a bad value.
pub fn worker_threads(env: &Env) -> Result<Option<usize>, SettingsError> {
    match env.optional("TOKIO_WORKER_THREADS") {
        None => Ok(None),
        Some(_) => env.ranged("TOKIO_WORKER_THREADS", 1, 1, 1024).map(Some),
    }
}

/// The CPUs this process may use (its cgroup quota and CPU affinity count), at least 1.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Runs a binary's `main` on a multi-thread tokio runtime: `TOKIO_WORKER_THREADS` workers when
/// set (a bad value is refused with one line and exit status 2), otherwise `default_workers`, or
/// one per CPU ([`cpus`]) when that is `None`, as `#[tokio::main]` would.
pub fn run_main(
    default_workers: Option<usize>,
    main: impl Future<Output = std::process::ExitCode>,
) -> std::process::ExitCode {
    let workers = or_exit(worker_threads(&Env::from_process()))
        .or(default_workers)
        .unwrap_or_else(cpus);
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(main),
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Connects to Redis, checks its eviction policy and creates every group.
pub async fn prepare_redis(settings: &Settings) -> anyhow::Result<Redis> {
    use anyhow::Context;
    let redis = connect(settings).await?;
    warn_if_keys_may_be_evicted(&redis).await;
    ensure_groups(&redis, &fulfillment_events::service::all_groups())
        .await
        .context("cannot create consumer groups")?;
    Ok(redis)
}

/// Connects to Redis (one server, or the cluster), with a message naming where when it fails.
pub async fn connect(settings: &Settings) -> anyhow::Result<Redis> {
    use anyhow::Context;
    Redis::connect(settings).await.with_context(|| {
        format!(
            "cannot connect to Redis at {}",
            settings.redis.redacted_url()
        )
    })
}

/// The consumer configuration for `consumer` under these settings.
pub fn consumer_config(settings: &Settings, consumer: &str) -> ConsumerConfig {
    ConsumerConfig {
        consumer: consumer.to_owned(),
        batch_size: settings.stream.batch_size,
        max_in_flight: settings.stream.max_in_flight,
        block: settings.block(),
        linger: settings.read_linger(),
        stall_bound: crate::runtime::consumer::stall_bound(settings.block()),
        claim_after: Duration::from_millis(settings.retry.min_idle_ms / 2),
    }
}

pub fn ops_state(redis: &Redis) -> OpsState {
    OpsState {
        redis: redis.clone(),
    }
}

/// Runs one consumer of `handler`'s group (named `CONSUMER_NAME`) beside `serving`, the
/// process's HTTP server, which returns once `shutdown` fires; then gives the consumer the grace
/// period to finish and acknowledge the batches in hand.
pub async fn with_consumer(
    settings: &Settings,
    redis: &Redis,
    handler: Arc<dyn EventHandler>,
    shutdown: &CancellationToken,
    serving: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let consumer = tokio::spawn(run_consumer(
        redis.clone(),
        handler,
        consumer_config(settings, &settings.consumer_name),
        shutdown.clone(),
    ));
    serving.await?;
    match tokio::time::timeout(settings.shutdown_grace(), consumer).await {
        Ok(joined) => joined?,
        Err(_) => tracing::warn!("consumer did not finish within the grace period"),
    }
    Ok(())
}

/// A consumer service: one consumer of `handler`'s group and the ops endpoints on `listener`,
/// until `shutdown`.
pub async fn run_worker_service(
    settings: Settings,
    redis: Redis,
    handler: Arc<dyn EventHandler>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = ops_router(ops_state(&redis));
    let serving = async { Ok(serve(listener, app, shutdown.clone()).await?) };
    with_consumer(&settings, &redis, handler, &shutdown, serving).await
}

/// The whole `main` of a consumer service: settings, its own settings (`read_own`, from the same
/// environment; either refused with one line and exit 2), logs, Redis, then one consumer of the
/// group `build` makes plus the ops endpoints, until SIGTERM or Ctrl-C.
pub async fn main_for_worker<T>(
    service_name: &'static str,
    read_own: impl FnOnce(&Env) -> Result<T, SettingsError>,
    build: impl FnOnce(Redis, T) -> Arc<dyn EventHandler>,
) -> std::process::ExitCode {
    let env = Env::from_process();
    let settings = or_exit(Settings::read(&env));
    let own = or_exit(read_own(&env));
    let _telemetry = crate::ops::telemetry::init(settings.log_format, service_name);
    let result = async {
        let redis = prepare_redis(&settings).await?;
        let listener = bind(&settings).await?;
        let handler = build(redis.clone(), own);
        run_worker_service(
            settings,
            redis,
            handler,
            listener,
            crate::runtime::shutdown::on_signal(),
        )
        .await
    }
    .await;
    exit_code(result)
}

/// Binds `HTTP_ADDR`, with a message naming it when that fails.
pub async fn bind(settings: &Settings) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen on HTTP_ADDR={}", settings.http_addr))
}

/// Exit status 0 on success; otherwise the error in one line and status 1.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped by an error");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_are_refused_in_one_line_naming_the_variable() {
        let env = |value: &'static str| {
            Env::new(move |n| (n == "TOKIO_WORKER_THREADS").then(|| value.to_owned()))
        };
        assert_eq!(worker_threads(&Env::new(|_| None)).expect("unset"), None);
        assert_eq!(worker_threads(&env("3")).expect("3"), Some(3));
        for bad in ["0", "two", "-1", "5000", ""] {
            let err = worker_threads(&env(bad)).expect_err(bad).to_string();
            assert!(
                err.starts_with("invalid setting TOKIO_WORKER_THREADS="),
                "{err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
