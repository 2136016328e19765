//! Running one consumer service: its consumer loop and its ops endpoints, until shutdown.
//!
//! The binaries' `main` and the local runner both come through here, so what a test composes is
//! what an image runs.

use crate::consumer::{ConsumerConfig, EventHandler, run_consumer};
use crate::keys;
use crate::ops_http::{OpsState, ops_router, serve};
use crate::redis_io::{Redis, ensure_groups, warn_if_keys_may_be_evicted};
use crate::settings::Settings;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Reads the settings or exits with one line naming the bad variable (status 2).
pub fn settings_or_exit() -> Settings {
    match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}

/// Connects to Redis, checks its eviction policy and creates every group.
pub async fn prepare_redis(settings: &Settings) -> anyhow::Result<Redis> {
    use anyhow::Context;
    let redis = Redis::connect(&settings.redis_url)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", redact(&settings.redis_url)))?;
    warn_if_keys_may_be_evicted(&redis).await;
    ensure_groups(&redis, &settings.stream, keys::group::ALL)
        .await
        .context("cannot create consumer groups")?;
    Ok(redis)
}

/// The consumer configuration for `consumer` under these settings.
pub fn consumer_config(settings: &Settings, consumer: &str) -> ConsumerConfig {
    ConsumerConfig {
        stream: settings.stream.clone(),
        dlq_stream: settings.dlq_stream.clone(),
        consumer: consumer.to_owned(),
        batch_size: settings.batch_size,
        max_in_flight: settings.max_in_flight,
        block: settings.block(),
    }
}

pub fn ops_state(settings: &Settings, redis: &Redis) -> OpsState {
    OpsState {
        redis: redis.clone(),
        stream: settings.stream.as_str().into(),
        dlq_stream: settings.dlq_stream.as_str().into(),
    }
}

/// Runs one consumer of `handler`'s group and the ops endpoints on `listener` until `shutdown`;
/// then finishes the batch in hand and returns.
pub async fn run_worker_service(
    settings: Settings,
    redis: Redis,
    handler: Arc<dyn EventHandler>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let consumer = tokio::spawn(run_consumer(
        redis.clone(),
        handler,
        consumer_config(&settings, &settings.consumer_name),
        shutdown.clone(),
    ));
    serve(
        listener,
        ops_router(ops_state(&settings, &redis)),
        shutdown.clone(),
    )
    .await?;
    match tokio::time::timeout(settings.shutdown_grace(), consumer).await {
        Ok(joined) => joined?,
        Err(_) => tracing::warn!("consumer did not finish within the grace period"),
    }
    Ok(())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The whole `main` of a consumer service: settings (or one line and exit 2), logs, Redis, then
/// one consumer of the group `build` makes plus the ops endpoints, until SIGTERM or Ctrl-C.
pub async fn main_for_worker(
    service_name: &'static str,
    build: impl FnOnce(Redis, &Settings) -> Arc<dyn EventHandler>,
) -> std::process::ExitCode {
    let settings = settings_or_exit();
    let _telemetry = crate::telemetry::init(settings.log_format, service_name);
    let result = async {
        let redis = prepare_redis(&settings).await?;
        let listener = bind(&settings).await?;
        let handler = build(redis.clone(), &settings);
        run_worker_service(
            settings,
            redis,
            handler,
            listener,
            crate::shutdown::on_signal(),
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
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            super::redact("redis://:s3cret@redis:6379/0"),
            "redis://***@redis:6379/0"
        );
        assert_eq!(
            super::redact("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
