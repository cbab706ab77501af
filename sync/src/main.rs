//! `ordo-sync`: run one ordering node of an Ordo cluster.

use clap::Parser;
use ordo_common::cluster::ClusterSpec;
use ordo_sync::node::{run, SyncOptions};
use std::path::PathBuf;

/// Ordo sync node: votes each closed segment into the one global order (Raft-replicated log).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Cluster file listing every node (see `ordo-entry generate-cluster`).
    #[arg(long, value_name = "FILE")]
    cluster: PathBuf,
    /// This node's sync id in the cluster file.
    #[arg(long)]
    id: u32,
    /// Data folder [default: ./ordo-data/sync<ID>].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let spec = ClusterSpec::load(&cli.cluster)?;
    let data_dir = cli
        .data_dir
        .unwrap_or_else(|| PathBuf::from(format!("ordo-data/sync{}", cli.id)));
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        ordo_common::quic::node::shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    run(
        SyncOptions {
            spec,
            id: cli.id,
            data_dir,
            metrics: cli.metrics,
        },
        rx,
    )
    .await?;
    Ok(())
}
