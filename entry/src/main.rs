//! `ordo-entry`: run an Ordo entry; `--standalone` runs ndb and sync in-process too.

use clap::{Parser, Subcommand};
use ordo_entry::Config;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Ordo entry node: MQTT and WAMP front doors over one durable total order.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Run entry, ndb and sync in this one process (the embedded default).
    #[arg(long)]
    standalone: bool,
    /// MQTT listen address [default: 127.0.0.1:1883].
    #[arg(long, value_name = "ADDR")]
    mqtt: Option<SocketAddr>,
    /// WAMP WebSocket listen address [default: 127.0.0.1:9000].
    #[arg(long, value_name = "ADDR")]
    wamp: Option<SocketAddr>,
    /// WAMP RawSocket listen address [default: 127.0.0.1:9001].
    #[arg(long, value_name = "ADDR")]
    wamp_rawsocket: Option<SocketAddr>,
    /// Data folder [default: ./ordo-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML configuration file; flags override it (see `generate-config`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the default configuration file.
    GenerateConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::GenerateConfig) = cli.command {
        print!("{}", Config::default_toml());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = match &cli.config {
        Some(path) => toml::from_str(&std::fs::read_to_string(path)?)?,
        None => Config::default(),
    };
    config.mqtt = cli.mqtt.unwrap_or(config.mqtt);
    config.wamp = cli.wamp.unwrap_or(config.wamp);
    config.wamp_rawsocket = cli.wamp_rawsocket.unwrap_or(config.wamp_rawsocket);
    config.data_dir = cli.data_dir.unwrap_or(config.data_dir);
    if !cli.standalone {
        anyhow::bail!(
            "run `ordo-entry --standalone`: the cluster roles (ordo-ndb, ordo-sync over QUIC) are not built yet"
        );
    }
    let running = ordo_entry::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown(std::time::Duration::from_secs(10)).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
