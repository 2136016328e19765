//! `fulfillment`: run the whole pipeline locally, and operate a running one.

// mimalloc: the system allocator spent a quarter of the services' CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use fulfillment_cli::local_runner::{self, Replicas, UpOptions};
use fulfillment_cli::{bench, dlq_commands, partitions, stats};
use fulfillment_core::Redis;
use fulfillment_core::runtime::startup::{exit_code, or_exit};
use fulfillment_core::settings::{Env, Settings};
use fulfillment_pipeline::ServiceSettings;
use secrecy::ExposeSecret;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Event-driven order fulfillment on Redis Streams.
///
/// Settings come from the environment (REDIS_URL, STREAM, DLQ_STREAM, RETRY_MIN_IDLE_MS,
/// INVENTORY_FAILURE_RATE, ...; see docs/configuration.md); a bad one stops the command with one line.
#[derive(Debug, Parser)]
#[command(name = "fulfillment", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in this process until Ctrl-C: the API and console on --http, each
    /// replica as its own consumer, the retry worker every RETRY_INTERVAL_MS. Starts a private
    /// redis-server (append-only file under --state-dir) when none answers at REDIS_URL. With
    /// Redis on this machine, runs on one tokio worker fewer than the CPUs (at least one), leaving
    /// Redis a core; TOKIO_WORKER_THREADS sets the count.
    Up {
        /// Where the API and console listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// Consumers per service, e.g. inventory=3,shipping=2 (services: order, inventory,
        /// payment, shipping, notification; each defaults to 1).
        #[arg(long, value_parser = Replicas::parse, default_value = "")]
        replicas: Replicas,
        /// Demo preset: inventory fails 40% of deliveries (INVENTORY_FAILURE_RATE=0.4), so
        /// retries and dead letters show up.
        #[arg(long)]
        unstable: bool,
        /// Directory for a private Redis's data.
        #[arg(long, default_value = ".fulfillment")]
        state_dir: PathBuf,
    },
    /// Load generator: place orders through the API of any deployment, follow each to its final
    /// status, and report orders/s, completion latency, errors, and CPU and memory of --pid.
    /// Sends ADMIN_TOKEN (or API_TOKEN when only that is set) as its bearer token.
    Bench {
        /// Base URL of the order API.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api_url: String,
        /// Orders to place.
        #[arg(long, default_value_t = 1000)]
        orders: usize,
        /// Orders per second; without it, as fast as --concurrency allows.
        #[arg(long)]
        rate: Option<f64>,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// A process to sample for CPU and resident memory (repeat for several).
        #[arg(long = "pid")]
        pids: Vec<u32>,
        /// The deployment's Redis: its memory is sampled (`INFO memory`, every 5 s) to see whether
        /// it stays flat, and its CPU time and commands per order are reported (`INFO cpu`,
        /// `INFO commandstats`, before and after).
        #[arg(long)]
        redis_url: Option<String>,
        /// Like --redis-url for a Redis Cluster: its seed URLs, comma-separated (every master is
        /// read).
        #[arg(long, conflicts_with = "redis_url")]
        redis_cluster_nodes: Option<String>,
        /// Longest wait, in seconds, for the last orders to finish.
        #[arg(long, default_value_t = 120)]
        drain_timeout_secs: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One screen of the stream: groups, consumers, pending, lag, retries, dead letters.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The partition streams these settings name (STREAM, DLQ_STREAM, STREAM_PARTITIONS, and
    /// REDIS_CLUSTER_NODES for the hash tags): index, stream, dead-letter stream, hash slot. Reads
    /// no Redis.
    Partitions {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Print the chart's table of partition hash tags for 1 to this many partitions (what
        /// deploy/helm/fulfillment/files/partition-tags.json holds) and nothing else.
        #[arg(long, hide = true)]
        chart_table: Option<usize>,
    },
    /// Inspect and act on the dead-letter stream.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// List dead letters, oldest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put a dead letter back on the stream for its own group, and remove it from the DLQ.
    Replay { id: String },
    /// Remove a dead letter (it no longer counts against its order).
    Delete { id: String },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    let settings = or_exit(Settings::read(&env));
    let own = or_exit(ServiceSettings::read(&env));
    // `up` next to its Redis leaves that Redis a CPU: on two cores, one worker for every service
    // finished more orders per second with less CPU per order than two (docs/performance.md).
    let workers = match cli.command {
        Command::Up { .. } if settings.redis.is_on_this_machine() => Some(
            fulfillment_core::runtime::startup::cpus()
                .saturating_sub(1)
                .max(1),
        ),
        _ => None,
    };
    fulfillment_core::runtime::startup::run_main(workers, run(cli, settings, own))
}

async fn run(cli: Cli, settings: Settings, own: ServiceSettings) -> std::process::ExitCode {
    let _telemetry = fulfillment_core::ops::telemetry::init(settings.log_format, "fulfillment");
    let result = async {
        match cli.command {
            Command::Up {
                http,
                replicas,
                unstable,
                state_dir,
            } => {
                let options = UpOptions {
                    http,
                    replicas,
                    unstable,
                    state_dir,
                };
                local_runner::up(
                    settings,
                    own,
                    options,
                    fulfillment_core::runtime::shutdown::on_signal(),
                )
                .await
            }
            Command::Bench {
                api_url,
                orders,
                rate,
                concurrency,
                pids,
                redis_url,
                redis_cluster_nodes,
                drain_timeout_secs,
                json,
            } => {
                let redis = match (redis_url, redis_cluster_nodes) {
                    (Some(url), _) => Some(Settings::for_redis(&url)),
                    (None, Some(nodes)) => Some(or_exit(Settings::from_lookup(move |name| {
                        (name == "REDIS_CLUSTER_NODES").then(|| nodes.clone())
                    }))),
                    (None, None) => None,
                };
                let report = bench::run(bench::BenchOptions {
                    api_url: api_url.trim_end_matches('/').to_owned(),
                    orders,
                    rate,
                    concurrency,
                    token: settings
                        .api
                        .admin_token
                        .as_ref()
                        .or(settings.api.api_token.as_ref())
                        .map(|t| t.expose_secret().to_owned()),
                    pids,
                    redis,
                    drain_timeout: std::time::Duration::from_secs(drain_timeout_secs),
                })
                .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    println!("{}", bench::render(&report));
                }
                Ok(())
            }
            Command::Stats { json } => {
                let redis = connect(&settings).await?;
                let stats = stats::collect(&redis).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&stats)?);
                } else {
                    println!("{}", stats::render(&stats));
                }
                Ok(())
            }
            Command::Partitions { json, chart_table } => {
                let output = match chart_table {
                    Some(max) => partitions::chart_table(max)?,
                    None => partitions::render(&settings.layout(), json)?,
                };
                println!("{output}");
                Ok(())
            }
            Command::Dlq { action } => {
                let redis = connect(&settings).await?;
                let output = match action {
                    DlqAction::List { limit, json } => {
                        dlq_commands::list(&redis, limit.clamp(1, 10_000), json).await?
                    }
                    DlqAction::Replay { id } => dlq_commands::replay(&redis, &id).await?,
                    DlqAction::Delete { id } => dlq_commands::delete(&redis, &id).await?,
                };
                println!("{output}");
                Ok(())
            }
        }
    }
    .await;
    exit_code(result)
}

async fn connect(settings: &fulfillment_core::Settings) -> anyhow::Result<Redis> {
    fulfillment_core::runtime::startup::connect(settings).await
}
