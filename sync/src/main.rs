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
    ordo_common::quic::node::init_logging();
    let spec = ClusterSpec::load(&cli.cluster)?;
    let data_dir = cli
        .data_dir
        .unwrap_or_else(|| PathBuf::from(format!("ordo-data/sync{}", cli.id)));
    let rx = ordo_common::quic::node::shutdown_on_signal();
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
