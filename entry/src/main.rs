//! `ordo-entry`: run an Ordo entry; `--standalone` runs ndb and sync in-process too.

// glibc malloc took about a tenth of a loaded cluster's CPU (docs/performance.md, fourteenth day).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use ordo_common::cluster::ClusterSpec;
use ordo_entry::Config;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Ordo entry node: MQTT and WAMP front doors over one durable total order.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Run entry, ndb and sync in this one process (the embedded default).
    #[arg(long, conflicts_with = "cluster")]
    standalone: bool,
    /// Join the cluster in this file as an entry (with `--id`); see `generate-cluster`.
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,
    /// This entry's id in the cluster file [default: 1].
    #[arg(long)]
    id: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// MQTT listen address [default: 127.0.0.1:1883].
    #[arg(long, value_name = "ADDR")]
    mqtt: Option<SocketAddr>,
    /// WAMP WebSocket listen address, also MQTT over WebSocket [default: 127.0.0.1:9000].
    #[arg(long, value_name = "ADDR")]
    wamp: Option<SocketAddr>,
    /// MQTT-over-WebSocket listen address of its own [default: off].
    #[arg(long, value_name = "ADDR")]
    mqtt_ws: Option<SocketAddr>,
    /// WAMP RawSocket listen address [default: 127.0.0.1:9001].
    #[arg(long, value_name = "ADDR")]
    wamp_rawsocket: Option<SocketAddr>,
    /// MQTT-over-TLS listen address, e.g. 127.0.0.1:8883 [default: off]; needs --tls-cert/--tls-key.
    #[arg(long, value_name = "ADDR")]
    mqtt_tls: Option<SocketAddr>,
    /// WAMP WebSocket-over-TLS (wss) listen address, also MQTT over wss [default: off].
    #[arg(long, value_name = "ADDR")]
    wamp_tls: Option<SocketAddr>,
    /// MQTT-over-wss listen address of its own [default: off].
    #[arg(long, value_name = "ADDR")]
    mqtt_ws_tls: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listeners (see `dev-cert`).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the TLS listeners.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Data folder [default: ./ordo-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Messages between router snapshots; 0 writes none [default: 1000000].
    #[arg(long, value_name = "N")]
    router_snapshot_every: Option<u64>,
    /// TOML configuration file; flags override it (see `generate-config`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Tokio worker threads: 1 runs the entry on one thread (best when nodes share a machine), 0 one per core.
    #[arg(
        long,
        value_name = "N",
        env = "ORDO_ENTRY_THREADS",
        default_value_t = 0
    )]
    threads: usize,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the default configuration file.
    GenerateConfig,
    /// Print a loopback cluster file (sync ports BASE+101.., ndb BASE+201.., entry BASE+301..).
    GenerateCluster {
        /// Base port.
        #[arg(long, default_value_t = 7000)]
        base: u16,
        /// Sync nodes.
        #[arg(long, default_value_t = 3)]
        syncs: u64,
        /// Storage nodes.
        #[arg(long, default_value_t = 3)]
        ndbs: u64,
        /// Entries.
        #[arg(long, default_value_t = 3)]
        entries: u64,
    },
    /// Write a development CA and a certificate for every node of a cluster file, and
    /// one named `operator` for `ordo-sync abandon`, into its `cert_dir` (the CA is
    /// reused when present).
    ClusterCerts {
        /// The cluster file.
        #[arg(long, value_name = "FILE")]
        cluster: PathBuf,
    },
    /// Write a self-signed certificate for localhost (cert.pem, key.pem) for the TLS
    /// listeners; clients trust it by using cert.pem as their CA file. Development only.
    DevCert {
        /// Folder to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ordo_common::quic::node::runtime(cli.threads)?.block_on(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::GenerateConfig) => {
            print!("{}", Config::default_toml());
            return Ok(());
        }
        Some(Command::GenerateCluster {
            base,
            syncs,
            ndbs,
            entries,
        }) => {
            let spec = ClusterSpec::loopback(base, syncs, ndbs, entries);
            print!("{}", spec.to_toml());
            return Ok(());
        }
        Some(Command::ClusterCerts { cluster }) => {
            let spec = ClusterSpec::load(&cluster)?;
            let mut names = spec.cert_names();
            names.push(ordo_common::proto::NodeId::Operator.to_string());
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            ordo_common::quic::generate_dev_certs(&spec.cert_dir, &names)?;
            println!(
                "wrote {} certificates to {}",
                names.len(),
                spec.cert_dir.display()
            );
            return Ok(());
        }
        Some(Command::DevCert { out }) => {
            let (cert, key) = ordo_entry::tls::write_dev_cert(&out)?;
            println!("wrote {} and {}", cert.display(), key.display());
            return Ok(());
        }
        None => {}
    }
    ordo_common::quic::node::init_logging();
    let mut config = match &cli.config {
        Some(path) => toml::from_str(&std::fs::read_to_string(path)?)?,
        None => Config::default(),
    };
    config.mqtt = cli.mqtt.unwrap_or(config.mqtt);
    config.wamp = cli.wamp.unwrap_or(config.wamp);
    config.mqtt_ws = cli.mqtt_ws.or(config.mqtt_ws);
    config.wamp_rawsocket = cli.wamp_rawsocket.unwrap_or(config.wamp_rawsocket);
    config.mqtt_tls = cli.mqtt_tls.or(config.mqtt_tls);
    config.wamp_tls = cli.wamp_tls.or(config.wamp_tls);
    config.mqtt_ws_tls = cli.mqtt_ws_tls.or(config.mqtt_ws_tls);
    config.tls_cert = cli.tls_cert.or(config.tls_cert);
    config.tls_key = cli.tls_key.or(config.tls_key);
    config.data_dir = cli.data_dir.unwrap_or(config.data_dir);
    config.router_snapshot_every = cli
        .router_snapshot_every
        .unwrap_or(config.router_snapshot_every);
    config.owner = cli.id.unwrap_or(config.owner);
    config.metrics = cli.metrics.or(config.metrics);
    config.cluster = cli.cluster.or(config.cluster);
    if cli.standalone {
        config.cluster = None;
    }
    if !cli.standalone && config.cluster.is_none() {
        anyhow::bail!(
            "say how to run: `ordo-entry --standalone` (entry, ndb and sync in this process) \
             or `ordo-entry --cluster FILE --id N` (an entry of a cluster)"
        );
    }
    let mut running = ordo_entry::start(config).await?;
    tokio::select! {
        _ = ordo_common::quic::node::shutdown_signal() => {}
        why = running.failure() => {
            tracing::error!(error = %why, "storage failed; stopping so clients move to another entry");
            running.stop_failed(std::time::Duration::from_secs(10)).await;
            anyhow::bail!("storage failed, stopping: {why}");
        }
    }
    tracing::info!("shutting down");
    running.shutdown(std::time::Duration::from_secs(10)).await;
    Ok(())
}
