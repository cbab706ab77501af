//! Shared helpers for Ordo's integration tests.
//!
//! ```text
//!  TestNode::start() ── ordo_entry::start(Config { 127.0.0.1:0, tempdir }) ── Running { mqtt, wamp, wamp_rawsocket }
//!        │
//!        ├── mqtt_raw::RawMqtt        byte-exact MQTT 3.1.1 / 5 client (ordo_common::mqtt codecs)
//!        ├── Rumqtt                   rumqttc AsyncClient with its event loop in a task
//!        ├── rumqtt5::Rumqtt5         the same with rumqttc's MQTT 5 client
//!        └── wamp_client::WampClient  WAMP over tokio-tungstenite (ordo_common::wamp codec)
//! ```
//!
//! Everything binds to 127.0.0.1, and every wait is bounded by a timeout.

pub mod cluster;
pub mod mqtt_raw;
pub mod rumqtt5;
pub mod sim;
pub mod wamp_client;

use anyhow::{bail, Context};
use ordo_entry::Config;
use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a single expected delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Install a tracing subscriber once (level from `RUST_LOG`, default `warn`).
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// An embedded Ordo node on ephemeral 127.0.0.1 ports with its own data folder.
pub struct TestNode {
    /// Bound MQTT address.
    pub mqtt: SocketAddr,
    /// Bound WAMP address.
    pub wamp: SocketAddr,
    /// Bound WAMP RawSocket address.
    pub wamp_rawsocket: SocketAddr,
    /// Bound MQTT-over-WebSocket address, when the test set `mqtt_ws`.
    pub mqtt_ws: Option<SocketAddr>,
    /// Bound MQTT-over-TLS address, when the test set `mqtt_tls`.
    pub mqtt_tls: Option<SocketAddr>,
    /// Bound WAMP wss address, when the test set `wamp_tls`.
    pub wamp_tls: Option<SocketAddr>,
    /// Bound MQTT-over-wss address, when the test set `mqtt_ws_tls`.
    pub mqtt_ws_tls: Option<SocketAddr>,
    /// How the node's router was brought back at start-up.
    pub restored: ordo_entry::Restored,
    config: Config,
    running: Option<ordo_entry::Running>,
    /// The data folder (deleted on drop).
    pub dir: tempfile::TempDir,
}

impl TestNode {
    /// Start a node with the default configuration.
    pub async fn start() -> anyhow::Result<TestNode> {
        Self::start_with(|_| {}).await
    }

    /// Start a node after `tweak` adjusts the configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> anyhow::Result<TestNode> {
        init_tracing();
        let dir = tempfile::tempdir()?;
        let mut config = Config {
            mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
            wamp: SocketAddr::from(([127, 0, 0, 1], 0)),
            wamp_rawsocket: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        tweak(&mut config);
        Self::start_in(dir, config).await
    }

    async fn start_in(dir: tempfile::TempDir, config: Config) -> anyhow::Result<TestNode> {
        let running = ordo_entry::start(config.clone()).await?;
        Ok(TestNode {
            mqtt: running.mqtt,
            wamp: running.wamp,
            wamp_rawsocket: running.wamp_rawsocket,
            mqtt_ws: running.mqtt_ws,
            mqtt_tls: running.mqtt_tls,
            wamp_tls: running.wamp_tls,
            mqtt_ws_tls: running.mqtt_ws_tls,
            restored: running.restored,
            config,
            running: Some(running),
            dir,
        })
    }

    /// Stop the node as [`TestNode::shutdown`] does and hand back its folder
    /// (the store is in `data/db`), to read what it left on disk.
    pub async fn shutdown_keeping_data(mut self) -> anyhow::Result<tempfile::TempDir> {
        if let Some(running) = self.running.take() {
            running.shutdown(TIMEOUT).await;
        }
        Ok(std::mem::replace(&mut self.dir, tempfile::tempdir()?))
    }

    /// Stop the node as [`TestNode::shutdown`] does and start it again on the
    /// same data folder after `tweak` adjusts its configuration (the
    /// listeners get new ports).
    pub async fn restart(self, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<TestNode> {
        let mut config = self.config.clone();
        tweak(&mut config);
        let dir = self.shutdown_keeping_data().await?;
        if let Some(file) = &config.cluster {
            // A cluster entry's QUIC endpoint drains after the stop; wait for its UDP port.
            let spec = ordo_common::cluster::ClusterSpec::load(file)?;
            let addr = spec
                .addr_of(ordo_common::proto::NodeId::Entry(config.owner))
                .context("the entry is not in its cluster file")?;
            let deadline = Instant::now() + TIMEOUT;
            while std::net::UdpSocket::bind(addr).is_err() {
                if Instant::now() >= deadline {
                    bail!("{addr} still bound {TIMEOUT:?} after the stop");
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        Self::start_in(dir, config).await
    }
}

impl TestNode {
    /// Stop the node and wait (at most [`TIMEOUT`]) until its store is closed.
    ///
    /// Call it at the end of a test. A node that is only dropped stops in the
    /// background, and a test binary that exits while RocksDB is still closing
    /// on the sequencer thread can abort ("pthread lock: Invalid argument").
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown(TIMEOUT).await;
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }
}

/// A rumqttc `AsyncClient` whose event loop runs in its own task.
///
/// Incoming packets arrive on [`Rumqtt::incoming`]; an event-loop error ends
/// the stream with an `Err`.
pub struct Rumqtt {
    /// The client handle.
    pub client: rumqttc::AsyncClient,
    incoming: mpsc::UnboundedReceiver<anyhow::Result<rumqttc::Packet>>,
    task: tokio::task::JoinHandle<()>,
}

impl Rumqtt {
    /// Connect a clean-session client and wait for its CONNACK.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> anyhow::Result<Rumqtt> {
        let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(4 << 20, 4 << 20);
        Self::connect_with(options).await
    }

    /// Connect with explicit options and wait for the CONNACK.
    pub async fn connect_with(options: rumqttc::MqttOptions) -> anyhow::Result<Rumqtt> {
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1024);
        let (tx, incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(packet)) => {
                        if tx.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(rumqttc::Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::anyhow!("rumqttc event loop: {e}")));
                        return;
                    }
                }
            }
        });
        let mut this = Rumqtt {
            client,
            incoming,
            task,
        };
        this.wait_for(|p| matches!(p, rumqttc::Packet::ConnAck(_)).then_some(()))
            .await
            .context("waiting for CONNACK")?;
        Ok(this)
    }

    /// Return the first incoming packet `pick` maps to `Some`, skipping the others.
    pub async fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(&rumqttc::Packet) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Err(_) => bail!("no matching packet within {TIMEOUT:?}"),
                Ok(None) => bail!("rumqttc event loop ended"),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(packet))) => {
                    if let Some(v) = pick(&packet) {
                        return Ok(v);
                    }
                }
            }
        }
    }

    /// Return the next incoming PUBLISH.
    pub async fn next_publish(&mut self) -> anyhow::Result<rumqttc::Publish> {
        self.wait_for(|p| match p {
            rumqttc::Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribe and wait for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) -> anyhow::Result<()> {
        self.client.subscribe(filter, qos).await?;
        let codes = self
            .wait_for(|p| match p {
                rumqttc::Packet::SubAck(ack) => Some(ack.return_codes.clone()),
                _ => None,
            })
            .await?;
        match codes.as_slice() {
            [rumqttc::SubscribeReasonCode::Success(_)] => Ok(()),
            other => bail!("subscription to {filter} refused: {other:?}"),
        }
    }

    /// Publish at QoS 1 and wait for the PUBACK (the next PUBACK seen).
    pub async fn publish_acked(
        &mut self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        retain: bool,
    ) -> anyhow::Result<()> {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload.into())
            .await?;
        self.wait_for(|p| matches!(p, rumqttc::Packet::PubAck(_)).then_some(()))
            .await
    }
}

impl Drop for Rumqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Wait until `check` returns `Some`, polling every few milliseconds, for at most `within`.
pub async fn eventually<T>(
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("condition not reached within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
