//! Command line of `ordo-bench`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;

use crate::broker::Peer;
use crate::wire::MIN_PAYLOAD;

/// Compare Ordo's MQTT front door with mosquitto and fox-wamp, in one run, on 127.0.0.1.
///
/// For each broker in turn: start it on a free loopback port, run a PEAK phase (every publisher
/// flat out; at QoS 1 with at most --window un-PUBACKed messages per connection), then a PACED
/// phase at 50% of that broker's own sustained peak, where the latency percentiles come from;
/// then kill it. The built-in sink (PUBACKs at once, forwards nothing) is measured first so the
/// generator's own ceiling is visible. Prints medians over --runs and Ordo/peer ratios (median of
/// the per-run ratios).
#[derive(Debug, Clone, Parser)]
#[command(name = "ordo-bench", version)]
pub struct Args {
    /// Brokers to measure (always run in the order sink, ordo, cluster1-3, mosquitto, foxwamp).
    /// clusterN = 3 ordo-sync + 3 ordo-ndb + N ordo-entry processes, clients spread over the
    /// entries.
    #[arg(
        long,
        alias = "brokers",
        value_delimiter = ',',
        default_value = "ordo,mosquitto,foxwamp"
    )]
    pub peers: Vec<Peer>,

    /// WAMP mode: compare WAMP routers (--wamp-peers) on pub/sub with acknowledge and on RPC,
    /// over WebSocket with JSON, instead of the MQTT comparison.
    #[arg(long)]
    pub wamp: bool,

    /// Routers measured by --wamp (always in the order ordo, foxwamp, crossbar).
    #[arg(long, value_delimiter = ',', default_value = "ordo,foxwamp,crossbar")]
    pub wamp_peers: Vec<Peer>,

    /// --wamp: caller sessions of the RPC phases (all call one callee).
    #[arg(long, default_value_t = 4)]
    pub callers: usize,

    /// Crossbar's `crossbar` command [default: <workspace>/bench/.crossbar-venv/bin/crossbar].
    #[arg(long)]
    pub crossbar_bin: Option<PathBuf>,

    /// Do not measure the built-in sink first (it is measured unless this is given).
    #[arg(long)]
    pub no_sink: bool,

    /// MQTT QoS of every PUBLISH and SUBSCRIBE (fox-wamp's subscribers always use 0, see notes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,

    /// Publisher connections; publisher i publishes to its own topic.
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,

    /// Subscriber connections; each subscribes to every publisher's topic (fan-out = this many).
    #[arg(long, default_value_t = 2)]
    pub subscribers: usize,

    /// Payload bytes per message (at least 42: the payload carries publisher, sequence, send time).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,

    /// Seconds each phase sends for (the first fifth, at most 1 s, is warm-up and not measured).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,

    /// QoS 1 messages in flight (un-PUBACKed) per publisher connection, below 65535.
    #[arg(long, default_value_t = 256)]
    pub window: usize,

    /// Pace the latency phase at this total msg/s for every broker instead of 50% of its peak.
    #[arg(long)]
    pub paced_rate: Option<f64>,

    /// Run mosquitto and fox-wamp exactly as they ship. Without this flag the harness tunes them
    /// for this workload: Nagle's algorithm off in both (`set_tcp_nodelay true`,
    /// `socket.setNoDelay()`; with Nagle a broker holds small PUBACKs back by milliseconds) and
    /// `max_queued_messages 0` in mosquitto (its default of 1000 silently drops acked QoS 1
    /// messages for a subscriber that falls behind).
    #[arg(long)]
    pub peer_defaults: bool,

    /// Extra line for the generated mosquitto.conf (repeatable), e.g. "set_tcp_nodelay true".
    #[arg(long = "mosquitto-conf", value_name = "LINE")]
    pub mosquitto_conf: Vec<String>,

    /// Ordo's entry binary [default: $CARGO_TARGET_DIR or <workspace>/target, + release/ordo-entry].
    #[arg(long)]
    pub ordo_bin: Option<PathBuf>,

    /// ordo-ndb binary for the cluster peers [default: beside the entry binary].
    #[arg(long)]
    pub ndb_bin: Option<PathBuf>,

    /// ordo-sync binary for the cluster peers [default: beside the entry binary].
    #[arg(long)]
    pub sync_bin: Option<PathBuf>,

    /// mosquitto binary [default: /usr/sbin/mosquitto, else mosquitto on PATH].
    #[arg(long)]
    pub mosquitto_bin: Option<PathBuf>,

    /// Node.js binary used to launch fox-wamp.
    #[arg(long, default_value = "node")]
    pub node_bin: PathBuf,

    /// fox-wamp launcher script [default: <workspace>/bench/peers/foxwamp.js].
    #[arg(long)]
    pub foxwamp_js: Option<PathBuf>,

    /// Where brokers get their scratch directories (Ordo's data dir, mosquitto.conf, logs)
    /// [default: the system temp dir]. Keep it on a real disk: on tmpfs an fsync costs nothing.
    #[arg(long)]
    pub scratch_dir: Option<PathBuf>,

    /// Pass `--config FILE` to every Ordo entry (standalone and cluster), e.g. to try
    /// `cluster_segments_in_flight` or `max_batch`; flags the harness sets still win.
    #[arg(long, value_name = "FILE")]
    pub entry_config: Option<PathBuf>,

    /// Cluster peers: serve every node's Prometheus metrics and save a scrape of each taken just
    /// before and just after the paced phase to DIR/<peer>-r<run>-<node>-{before,after}.prom;
    /// `scripts/stage-latency.py DIR` prints what the paced phase added (stage latencies, fsyncs).
    #[arg(long, value_name = "DIR")]
    pub node_metrics: Option<PathBuf>,

    /// Repeat the whole comparison this many times; the table shows medians.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,

    /// Also write every measurement as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Seconds a broker may take to accept connections after it is started (a cluster: until
    /// every entry has PUBACKed a probe message).
    #[arg(long, default_value_t = 30.0)]
    pub startup_timeout: f64,
}

impl Args {
    /// Reject combinations the harness cannot measure meaningfully.
    pub fn validate(&self) -> Result<()> {
        if self.peers.is_empty() {
            bail!("--peers is empty");
        }
        if self.peers.contains(&Peer::Crossbar) {
            bail!("crossbar is a WAMP router: measure it with --wamp (--wamp-peers)");
        }
        if self.wamp && (self.wamp_peers.is_empty() || self.callers == 0 || self.callers > 1000) {
            bail!("--wamp needs --wamp-peers and --callers 1..=1000");
        }
        if self.publishers == 0 || self.publishers > 10_000 {
            bail!("--publishers must be 1..=10000");
        }
        if self.subscribers > 1_000 {
            bail!("--subscribers must be at most 1000");
        }
        if self.qos == 0 && self.subscribers == 0 && self.peers.iter().any(|p| *p != Peer::Sink) {
            bail!("--qos 0 needs --subscribers >= 1: only deliveries show a QoS 0 broker's rate");
        }
        if self.payload < MIN_PAYLOAD || self.payload > 256 * 1024 {
            bail!("--payload must be {MIN_PAYLOAD}..=262144 bytes");
        }
        if self.window == 0 || self.window >= 65_535 {
            bail!("--window must be 1..=65534 (MQTT packet ids are 16 bits)");
        }
        if !(self.duration >= 0.5 && self.duration <= 3600.0) {
            bail!("--duration must be 0.5..=3600 seconds");
        }
        if self.paced_rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            bail!("--paced-rate must be a positive number of msg/s");
        }
        if self.mosquitto_conf.iter().any(|l| l.contains('\n')) {
            bail!("--mosquitto-conf takes one line per flag");
        }
        if self.runs == 0 || self.runs > 100 {
            bail!("--runs must be 1..=100");
        }
        if !(self.startup_timeout > 0.0 && self.startup_timeout <= 600.0) {
            bail!("--startup-timeout must be in (0, 600] seconds");
        }
        Ok(())
    }

    /// `--peers` plus the sink (unless `--no-sink`), without repeats, sink first.
    pub fn peer_list(&self) -> Vec<Peer> {
        let mut peers = self.peers.clone();
        if !self.no_sink {
            peers.push(Peer::Sink);
        }
        peers.sort();
        peers.dedup();
        peers
    }
}
