//! `ordo-ndb`: run one storage node of an Ordo cluster.

// glibc malloc took about a tenth of a loaded cluster's CPU (docs/performance.md, fourteenth day).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use ordo_common::cluster::ClusterSpec;
use ordo_ndb::node::{run, NdbOptions};
use std::path::PathBuf;

/// Ordo storage node: keeps segment bodies, moves them to permanent ids once resolved.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Cluster file listing every node (see `ordo-entry generate-cluster`).
    #[arg(long, value_name = "FILE")]
    cluster: PathBuf,
    /// This node's ndb id in the cluster file.
    #[arg(long)]
    id: u32,
    /// Data folder [default: ./ordo-data/ndb<ID>].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Newest permanent records kept in memory; older ones are read from RocksDB on demand.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    cache_records: usize,
    /// Tokio worker threads: 1 (the default) runs the node on one thread, 0 uses one per core.
    #[arg(long, value_name = "N", env = "ORDO_NODE_THREADS", default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ordo_common::quic::node::runtime(cli.threads)?.block_on(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    ordo_common::quic::node::init_logging();
    let spec = ClusterSpec::load(&cli.cluster)?;
    let data_dir = cli
        .data_dir
        .unwrap_or_else(|| PathBuf::from(format!("ordo-data/ndb{}", cli.id)));
    let rx = ordo_common::quic::node::shutdown_on_signal();
    run(
        NdbOptions {
            spec,
            id: cli.id,
            data_dir,
            metrics: cli.metrics,
            cache_records: cli.cache_records,
        },
        rx,
    )
    .await?;
    Ok(())
}
