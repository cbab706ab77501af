//! `ordo-sync`: run one ordering node of an Ordo cluster, or send it an operator command.

// glibc malloc took about a tenth of a loaded cluster's CPU (docs/performance.md, fourteenth day).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use ordo_common::cluster::ClusterSpec;
use ordo_sync::node::{run, SyncOptions};
use std::path::PathBuf;
use std::time::Duration;

/// Ordo sync node: votes each closed segment into the one global order (Raft-replicated log).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Cluster file listing every node (see `ordo-entry generate-cluster`).
    #[arg(long, value_name = "FILE", global = true)]
    cluster: Option<PathBuf>,
    /// This node's sync id in the cluster file.
    #[arg(long)]
    id: Option<u32>,
    /// Data folder [default: ./ordo-data/sync<ID>].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Resolutions kept in memory; older ones are read from the store. Use one value on
    /// every sync node of a cluster.
    #[arg(long, value_name = "N", default_value_t = ordo_sync::log::DEFAULT_RESOLUTION_WINDOW)]
    resolution_window: usize,
    /// Log entries the leader keeps in flight (replicated, not yet committed) before it batches
    /// further OVERs into the next one. More shortens an OVER's wait for a free slot; fewer
    /// makes larger batches (one fsync on each sync node per entry).
    #[arg(
        long,
        value_name = "N",
        env = "ORDO_SYNC_MAX_INFLIGHT",
        default_value_t = ordo_sync::log::DEFAULT_MAX_INFLIGHT,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    max_inflight: u64,
    /// Milliseconds without a word from a leader before a node stands for election (it waits
    /// a random time between this and twice this). Above the longest fsync stall you expect:
    /// a leader stuck in one sends no heartbeats, and each needless election stops ordering
    /// for a moment.
    #[arg(
        long,
        value_name = "MS",
        env = "ORDO_SYNC_ELECTION_TIMEOUT_MS",
        default_value_t = ordo_sync::log::DEFAULT_ELECTION_TIMEOUT_MS,
        value_parser = clap::value_parser!(u64).range(100..)
    )]
    election_timeout_ms: u64,
    /// Tokio worker threads: 1 (the default) runs the node on one thread, 0 uses one per core.
    #[arg(long, value_name = "N", env = "ORDO_NODE_THREADS", default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Abandon, for good, the unordered segments of an entry that will not come back.
    ///
    /// Sends `Abandon {owner, below}` to every sync node of the cluster file, authenticated by
    /// the certificate `operator.pem`/`operator.key` in its `cert_dir` (`ordo-entry
    /// cluster-certs` writes it). Every segment of OWNER below BELOW that is not ordered yet
    /// never will be; ordered ones keep their ids. Pick BELOW above every segment the entry
    /// began (docs/operations.md). Idempotent: run it again if unsure.
    Abandon {
        /// The entry's id (`[[entry]] id` in the cluster file).
        #[arg(long)]
        owner: u64,
        /// The floor: segments of OWNER below it are abandoned.
        #[arg(long)]
        below: u64,
        /// How many times to send it to every sync node (a leader may change in between).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ordo_common::quic::node::runtime(cli.threads)?.block_on(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    ordo_common::quic::node::init_logging();
    let Some(cluster) = cli.cluster else {
        anyhow::bail!("--cluster FILE is required");
    };
    let spec = ClusterSpec::load(&cluster)?;
    if let Some(Command::Abandon {
        owner,
        below,
        rounds,
    }) = cli.command
    {
        let sent =
            ordo_sync::operator::abandon(&spec, owner, below, rounds, Duration::from_secs(1));
        println!(
            "abandon {{owner: {owner}, below: {below}}}: delivered {} times",
            sent.await?
        );
        return Ok(());
    }
    let Some(id) = cli.id else {
        anyhow::bail!("--id N is required to run a sync node");
    };
    let data_dir = cli
        .data_dir
        .unwrap_or_else(|| PathBuf::from(format!("ordo-data/sync{id}")));
    let rx = ordo_common::quic::node::shutdown_on_signal();
    run(
        SyncOptions {
            spec,
            id,
            data_dir,
            metrics: cli.metrics,
            resolution_window: cli.resolution_window,
            max_inflight: cli.max_inflight,
            election_timeout: Duration::from_millis(cli.election_timeout_ms),
        },
        rx,
    )
    .await?;
    Ok(())
}
