//! The `eventstore` command line: `serve` runs a node, `client` talks to a
//! cluster, `health` probes a node, `cluster` administers membership, and
//! `bench` measures a running node.

pub mod admin;
pub mod bench;
pub mod client;
pub mod connect;
pub mod log;
pub mod serve;

use clap::{Parser, Subcommand};

/// EventStore: a small replicated store for short-lived event-pipeline state.
#[derive(Debug, Parser)]
#[command(name = "eventstore", version, about)]
pub struct Cli {
    /// Log format on stderr: `text` for people, `json` (one object per
    /// line) for log pipelines. The level comes from RUST_LOG (default
    /// `info,openraft=warn`).
    #[arg(long, global = true, env = "EVENTSTORE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (with no flags: a single-node store on 0.0.0.0:8080, data in ./data).
    Serve(Box<serve::ServeArgs>),
    /// Save, load or delete a value.
    Client(client::ClientArgs),
    /// Exit 0 if the node at --server reports SERVING, 1 otherwise.
    Health(client::HealthArgs),
    /// Inspect and change cluster membership (talks to the peer port).
    #[command(subcommand)]
    Cluster(admin::ClusterCommand),
    /// Do nothing until SIGTERM or SIGINT: the main process of a client pod
    /// that users `kubectl exec` into to run `eventstore client`.
    Idle,
    /// Measure Save and Load throughput and latency against a running node,
    /// with the transport alone (health checks) as a baseline in the same run.
    Bench(bench::BenchArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    log::init(cli.log_format == LogFormat::Json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Client(args) => client::run(args).await,
            Command::Health(args) => client::health(args).await,
            Command::Cluster(cmd) => admin::run(cmd).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Idle => {
                serve::shutdown_signal().await;
                0
            }
        }
    })
}
