//! The order service: the public HTTP API (orders, catalog, DLQ admin, live status, OpenAPI,
//! console) and the `order_group` projection that keeps each order's status and history.

pub mod api;
pub mod catalog;
pub mod error;
pub mod orders;
pub mod projection;
pub mod status_feed;

use api::AppState;
use fulfillment_core::consumer::run_consumer;
use fulfillment_core::service::consumer_config;
use fulfillment_core::{Redis, Settings};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "order";

/// Seeds the catalog when asked and empty, and builds the API's state.
pub async fn prepare(settings: Arc<Settings>, redis: Redis) -> anyhow::Result<AppState> {
    if settings.seed_catalog && catalog::seed_if_empty(&redis).await? {
        tracing::info!("catalog was empty; seeded product-A, product-B, product-C");
    }
    Ok(AppState {
        redis,
        status_feed: status_feed::channel(),
        ws_slots: Arc::new(tokio::sync::Semaphore::new(settings.ws_max_connections)),
        settings,
    })
}

/// Serves the API on `listener` until `shutdown`, with the live status feed running.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let feed = tokio::spawn(status_feed::run(
        state.redis.clone(),
        state.status_feed.clone(),
        shutdown.clone(),
    ));
    fulfillment_core::ops_http::serve(listener, api::router(state), shutdown).await?;
    feed.abort();
    Ok(())
}

/// The order service as its image runs it: the API and one projection consumer named
/// `CONSUMER_NAME`, until `shutdown`; then the projection finishes its batch.
pub async fn run(
    settings: Settings,
    redis: Redis,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let state = prepare(settings.clone(), redis.clone()).await?;
    let consumer = tokio::spawn(run_consumer(
        redis.clone(),
        Arc::new(projection::handler(redis, &settings)),
        consumer_config(&settings, &settings.consumer_name),
        shutdown.clone(),
    ));
    serve(state, listener, shutdown).await?;
    match tokio::time::timeout(settings.shutdown_grace(), consumer).await {
        Ok(joined) => joined?,
        Err(_) => tracing::warn!("projection did not finish within the grace period"),
    }
    Ok(())
}
