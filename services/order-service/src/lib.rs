//! The order service: the public HTTP API (orders, catalog, DLQ admin, live status, OpenAPI,
//! console), and its process also runs the `order_group` projection (`order-projection`) that
//! keeps each order's status and history.

pub mod api;
pub mod catalog;
pub mod error;
pub mod orders;
pub mod status_feed;

use api::AppState;

use fulfillment_core::runtime::startup::with_consumer;
use fulfillment_core::{Redis, Settings};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Seeds the catalog when asked and empty, and builds the API's state.
pub async fn prepare(settings: Arc<Settings>, redis: Redis) -> anyhow::Result<AppState> {
    if settings.api.seed_catalog && catalog::seed_if_empty(&redis).await? {
        tracing::info!("catalog was empty; seeded product-A, product-B, product-C");
    }
    Ok(AppState {
        redis,
        status_feed: status_feed::channel(),
        live_feed: Arc::new(api::LiveFeed::new(api::LiveFeedConfig::from_settings(
            &settings,
        ))),
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
    // As `ops_http::serve`, with each connection's peer address (the live feed counts a client's
    // followers by it).
    let app = api::router(state).into_make_service_with_connect_info::<api::Peer>();
    axum::serve(
        fulfillment_core::ops::ops_http::JsonParseErrors(listener),
        app,
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await?;
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
    let projection = Arc::new(order_projection::handler(redis.clone()));
    let serving = serve(state, listener, shutdown.clone());
    with_consumer(&settings, &redis, projection, &shutdown, serving).await
}
