//! Ordo entry: the MQTT and WAMP front doors, the router and the advance-segment owner.
//!
//! ```text
//!   MQTT (TCP) ──┐                         ┌──► sequencer thread ── Store (RocksDB)
//!                ├─► connection tasks ─────┤         │ committed, ids ascending
//!   WAMP (WS,RS)─┘        ▲                │         ▼
//!                         └── session queue ◄── Router::dispatch
//! ```
//!
//! WAMP comes in over WebSocket and RawSocket (RS), on two listeners. MQTT also
//! comes in over WebSocket: on the WAMP WebSocket port (subprotocol `mqtt`) and
//! on its own `mqtt_ws` listener when set.
//!
//! Optional TLS listeners ([`tls`]: `mqtt_tls`, `wamp_tls`, `mqtt_ws_tls`) do
//! the handshake in the connection's task, then run the same per-connection
//! code as their plain twins over the TLS stream.
//!
//! At start-up the router is restored from the newest snapshot in the store
//! and only the log after it is dispatched; snapshots are written every
//! `router_snapshot_every` ids and on a clean stop (`router_snapshot.rs`).
//!
//! In `--standalone` mode the ndb and sync roles run inside this process
//! through the same cores ([`ordo_ndb::NdbCore`], [`ordo_sync::Elector`]) the
//! separate binaries use.
#![warn(missing_docs)]

mod adopt;
pub mod cluster;
mod cluster_shell;
pub mod config;
pub mod mqtt;
pub use ordo_router as router;
mod router_snapshot;
pub mod sequencer;
pub mod tls;
pub mod wamp;

use anyhow::Context;
pub use config::Config;
use router::Router;
pub use router_snapshot::Restored;
use router_snapshot::Snapshotter;
use sequencer::Sequencer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What the front doors share.
#[derive(Clone)]
pub struct Shared {
    /// The routing table.
    pub router: Arc<Router>,
    /// Where publishes go to be ordered and stored.
    pub sequencer: Sequencer,
    /// The store, for replay reads.
    pub store: ordo_ndb::Store,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// MQTT client-id registry and persistent sessions.
    pub mqtt_sessions: Arc<mqtt::SessionRegistry>,
    /// WAMP RPC registrations.
    pub dealer: Arc<wamp::dealer::Dealer>,
    /// WAMP sessions and subscriptions, for the meta API.
    pub broker: Arc<wamp::broker::Broker>,
    /// Turns `true` when the node is stopping; connections close on it.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// A running embedded node: the bound addresses, and a handle to stop it.
pub struct Running {
    /// Bound MQTT address.
    pub mqtt: SocketAddr,
    /// Bound WAMP address.
    pub wamp: SocketAddr,
    /// Bound WAMP RawSocket address.
    pub wamp_rawsocket: SocketAddr,
    /// Bound MQTT-over-WebSocket address, when `mqtt_ws` is set.
    pub mqtt_ws: Option<SocketAddr>,
    /// Bound MQTT-over-TLS address, when `mqtt_tls` is set.
    pub mqtt_tls: Option<SocketAddr>,
    /// Bound WAMP WebSocket-over-TLS (wss) address, when `wamp_tls` is set.
    pub wamp_tls: Option<SocketAddr>,
    /// Bound MQTT-over-wss address, when `mqtt_ws_tls` is set.
    pub mqtt_ws_tls: Option<SocketAddr>,
    /// How the router was brought back at start-up (snapshot, messages replayed).
    pub restored: Restored,
    snapshots: Arc<Snapshotter>,
    /// Ends on the shutdown signal, after the write it may be in.
    snapshot_task: tokio::task::JoinHandle<()>,
    snapshot_on_stop: bool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    owner: SegmentOwner,
    clean_stop: CleanStopMark,
    /// A cluster entry's shell says here why it stopped on its own (its storage failed).
    failed: Option<tokio::sync::oneshot::Receiver<String>>,
}

/// Notes in the local store that this run stopped cleanly, so the next start
/// does not publish the wills of the MQTT connections the stop ended.
struct CleanStopMark {
    store: ordo_ndb::Store,
    incarnation: u64,
}

impl CleanStopMark {
    fn write(self) {
        let batch = ordo_ndb::CommitBatch {
            meta: vec![(
                mqtt::live_wills::META_CLEAN_STOP.into(),
                self.incarnation.to_be_bytes().to_vec(),
            )],
            ..Default::default()
        };
        if let Err(e) = self.store.commit(&batch) {
            tracing::warn!(error = %e, "clean stop not noted: the next start publishes the wills");
        }
    }
}

/// Whoever turns publishes into permanent ids: the embedded sequencer thread or the cluster shell.
enum SegmentOwner {
    /// The sequencer thread and the task that dispatches its commits.
    Embedded(std::thread::JoinHandle<()>, tokio::task::JoinHandle<()>),
    Cluster(tokio::task::JoinHandle<()>),
}

impl Running {
    /// Wait until this entry can no longer work: a cluster entry whose storage failed can
    /// neither cache what it delivers nor ack, so it should stop and let its clients move to
    /// another entry. Returns why; never returns for an embedded broker, which keeps serving
    /// reads on a full disk and refuses publishes.
    pub async fn failure(&mut self) -> String {
        match self.failed.as_mut() {
            Some(failed) => match failed.await {
                Ok(why) => why,
                // The shell ended without a failure (a shutdown): nothing to report.
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// Stop after [`Running::failure`]: close listeners and connections like a crash would,
    /// without the clean-stop mark or a router snapshot (the disk may be full). The next
    /// start publishes the wills of the connections this ended, as after a crash.
    pub async fn stop_failed(self, timeout: std::time::Duration) {
        for t in &self.tasks {
            t.abort();
        }
        self.snapshot_task.abort();
        let _ = self.shutdown.send(true);
        if let SegmentOwner::Cluster(task) = self.owner {
            let _ = tokio::time::timeout(timeout, task).await;
        }
    }

    /// Begin stopping without waiting: listeners close, connections end, and
    /// the sequencer thread finishes on its own once they have.
    pub fn stop(self) {
        self.clean_stop.write();
        for t in &self.tasks {
            t.abort();
        }
        self.snapshot_task.abort();
        let _ = self.shutdown.send(true);
    }

    /// Stop: close listeners and connections, let the sequencer finish its
    /// segment, write a router snapshot (unless `router_snapshot_every` is 0),
    /// and close the store. Returns once the store is closed (or after
    /// `timeout`, with a warning).
    ///
    /// Acknowledged messages are durable whether or not this runs; it exists so
    /// RocksDB is closed by its owner rather than torn down under a live thread.
    pub async fn shutdown(self, timeout: std::time::Duration) {
        self.clean_stop.write();
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.shutdown.send(true);
        // The sequencer thread ends when the last publish handle (held by the
        // connections) is dropped; it owns the last store handle but replay readers'.
        // The cluster shell ends on the shutdown signal.
        let joined: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            match self.owner {
                SegmentOwner::Embedded(thread, dispatcher) => Box::pin(async move {
                    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                    // The thread's end closes the dispatcher's channel; once it has routed
                    // the last commit, the stop's snapshot covers the whole store.
                    let _ = dispatcher.await;
                }),
                SegmentOwner::Cluster(task) => Box::pin(async move {
                    let _ = task.await;
                }),
            };
        let deadline = tokio::time::Instant::now() + timeout;
        if tokio::time::timeout_at(deadline, joined).await.is_err() {
            tracing::warn!("connections did not close in time; exiting without closing the store");
            return;
        }
        if tokio::time::timeout_at(deadline, self.snapshot_task)
            .await
            .is_err()
        {
            tracing::warn!("a router snapshot took too long; exiting while it is written");
            return;
        }
        if self.snapshot_on_stop {
            // Nothing is dispatched any more: the next start replays nothing.
            let snapshots = self.snapshots.clone();
            let write = tokio::task::spawn_blocking(move || snapshots.write_now());
            match tokio::time::timeout_at(deadline, write).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "router snapshot not written"),
                Ok(Err(e)) => tracing::warn!(error = %e, "router snapshot write panicked"),
                Err(_) => {
                    tracing::warn!("router snapshot took too long; exiting while it is written");
                    return;
                }
            }
        }
        drop(self.snapshots);
        tracing::info!("stopped; store closed");
    }
}

const META_INCARNATION: &str = "entry/incarnation";

async fn bind_optional(
    addr: Option<SocketAddr>,
    what: &str,
) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind {what} {addr}"))?,
        )),
        None => Ok(None),
    }
}

fn local_addr(listener: &Option<TcpListener>) -> std::io::Result<Option<SocketAddr>> {
    listener.as_ref().map(TcpListener::local_addr).transpose()
}

/// Open the store, start the sequencer and bind the listeners.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    anyhow::ensure!(
        !config.mqtt_realm.starts_with('$'),
        "mqtt_realm {:?}: realms starting with '$' are the node's own",
        config.mqtt_realm
    );
    wamp::auth::check_users(&config.users)?;
    // Before the store opens: a bad certificate is a configuration error, found at once.
    let tls = tls::from_config(&config)?;
    if tls.is_none() && (config.tls_cert.is_some() || config.tls_key.is_some()) {
        tracing::warn!(
            "tls_cert/tls_key set but no TLS listener (mqtt_tls, wamp_tls, mqtt_ws_tls): unused"
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create data dir {}", config.data_dir.display()))?;
    let db_dir = config.data_dir.join("db");
    // A cluster entry's store is a cache beside the ndb and sync nodes on the same disk.
    let store = if config.cluster.is_some() {
        ordo_ndb::Store::open_paced(&db_dir)
    } else {
        ordo_ndb::Store::open(&db_dir)
    }
    .with_context(|| format!("open store {}", db_dir.display()))?;
    let last = store.last_id()?;
    tracing::info!(data_dir = %config.data_dir.display(), last_id = last.0, "store opened");
    // Session ids are (incarnation << 32) + n: unique across restarts, so a
    // stored message's publisher id never matches a later session (WAMP ids stay below 2^53).
    let clean_stop = store
        .get_meta(mqtt::live_wills::META_CLEAN_STOP)?
        .and_then(|v| v.try_into().ok())
        .map(u64::from_be_bytes);
    let incarnation = store
        .get_meta(META_INCARNATION)?
        .and_then(|v| v.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
        + 1;
    store.commit(&ordo_ndb::CommitBatch {
        meta: vec![(META_INCARNATION.into(), incarnation.to_be_bytes().to_vec())],
        ..Default::default()
    })?;
    let (router, restored) = router_snapshot::restore_router(
        &store,
        last,
        config.session_queue,
        (incarnation % (1 << 20)) << 32,
    )?;
    let snapshots = Snapshotter::new(
        store.clone(),
        router.clone(),
        config.router_snapshot_every,
        restored.snapshot_at,
    );
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let metrics = ordo_common::quic::metrics::Metrics::new("entry");
    if let Some(addr) = config.metrics {
        metrics
            .serve(addr)
            .await
            .with_context(|| format!("bind metrics {addr}"))?;
    }
    let (sequencer, owner, abandons, failed) = match &config.cluster {
        None => {
            let (sequencer, thread, dispatcher) = sequencer::start(
                store.clone(),
                router.clone(),
                config.owner,
                config.max_batch,
                metrics,
            )?;
            (
                sequencer,
                SegmentOwner::Embedded(thread, dispatcher),
                None,
                None,
            )
        }
        Some(path) => {
            let spec = ordo_common::cluster::ClusterSpec::load(path)?;
            let shell = cluster_shell::start(
                store.clone(),
                router.clone(),
                &spec,
                &config,
                shutdown_rx.clone(),
                metrics,
            )?;
            (
                shell.sequencer,
                SegmentOwner::Cluster(shell.task),
                Some(shell.abandons),
                Some(shell.failed),
            )
        }
    };
    let mqtt_listener = TcpListener::bind(config.mqtt)
        .await
        .with_context(|| format!("bind MQTT {}", config.mqtt))?;
    let wamp_listener = TcpListener::bind(config.wamp)
        .await
        .with_context(|| format!("bind WAMP {}", config.wamp))?;
    let rawsocket_listener = TcpListener::bind(config.wamp_rawsocket)
        .await
        .with_context(|| format!("bind WAMP RawSocket {}", config.wamp_rawsocket))?;
    let rawsocket_addr = rawsocket_listener.local_addr()?;
    let mqtt_ws_listener = match config.mqtt_ws {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind MQTT WebSocket {addr}"))?,
        ),
        None => None,
    };
    let mqtt_ws_addr = mqtt_ws_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let mqtt_tls_listener = bind_optional(config.mqtt_tls, "MQTT TLS").await?;
    let wamp_tls_listener = bind_optional(config.wamp_tls, "WAMP TLS").await?;
    let mqtt_ws_tls_listener = bind_optional(config.mqtt_ws_tls, "MQTT WebSocket TLS").await?;
    let tls_addrs = (
        local_addr(&mqtt_tls_listener)?,
        local_addr(&wamp_tls_listener)?,
        local_addr(&mqtt_ws_tls_listener)?,
    );
    let mqtt_addr = mqtt_listener.local_addr()?;
    let wamp_addr = wamp_listener.local_addr()?;
    let mqtt_sessions = Arc::new(mqtt::SessionRegistry::new(
        Some(mqtt::SessionWriter::start(sequencer.clone())),
        config.owner,
        incarnation,
    ));
    mqtt_sessions.rearm(&router, &sequencer, &shutdown_rx);
    mqtt::live_wills::recover(
        mqtt_sessions.clone(),
        router.clone(),
        sequencer.clone(),
        shutdown_rx.clone(),
        clean_stop,
        // A cluster entry's local copy of the log may lag behind the ndbs.
        config.cluster.is_some(),
    );
    let stop_mark = CleanStopMark {
        store: store.clone(),
        incarnation,
    };
    let shared = Shared {
        router,
        sequencer,
        store,
        config: Arc::new(config),
        mqtt_sessions,
        dealer: Arc::new(wamp::dealer::Dealer::default()),
        broker: Arc::new(wamp::broker::Broker::default()),
        shutdown: shutdown_rx,
    };
    tracing::info!(addr = %mqtt_addr, "MQTT listening on mqtt://{mqtt_addr}");
    tracing::info!(addr = %wamp_addr, "WAMP listening on ws://{wamp_addr}/");
    tracing::info!(addr = %rawsocket_addr, "WAMP RawSocket listening on tcp://{rawsocket_addr}");
    // Sessions of this entry's previous run that never ended (it was killed):
    // end them now, as their connections would have, so their parked publishes
    // are dropped and their wills written on every node.
    if let Some(notices) = abandons {
        adopt::start(shared.clone(), notices);
    }
    let lost = shared.router.fox_sessions_of(shared.config.owner);
    if !lost.is_empty() {
        tracing::info!(
            sessions = lost.len(),
            "ending WAMP sessions lost in the last stop"
        );
        let shared = shared.clone();
        tokio::spawn(async move {
            for (session, realm) in lost {
                wamp::fox::end_session(&shared, session, &realm).await;
            }
        });
    }
    let snapshot_on_stop = shared.config.router_snapshot_every > 0;
    let snapshot_task = tokio::spawn(snapshots.clone().run(shared.shutdown.clone()));
    let mut tasks = vec![
        tokio::spawn(mqtt::serve(mqtt_listener, shared.clone())),
        tokio::spawn(wamp::serve(wamp_listener, shared.clone())),
        tokio::spawn(wamp::rawsocket::serve(rawsocket_listener, shared.clone())),
    ];
    if let Some(listener) = mqtt_ws_listener {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "MQTT over WebSocket listening on ws://{addr}/");
        tasks.push(tokio::spawn(mqtt::ws::serve(listener, shared.clone())));
    }
    if let Some(acceptor) = tls {
        if let Some(listener) = mqtt_tls_listener {
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "MQTT over TLS listening on mqtts://{addr}");
            tasks.push(tokio::spawn(tls::serve(
                listener,
                acceptor.clone(),
                shared.clone(),
                "mqtt",
                mqtt::run_stream,
            )));
        }
        if let Some(listener) = wamp_tls_listener {
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "WAMP over TLS listening on wss://{addr}/");
            tasks.push(tokio::spawn(tls::serve(
                listener,
                acceptor.clone(),
                shared.clone(),
                "wamp",
                wamp::accept,
            )));
        }
        if let Some(listener) = mqtt_ws_tls_listener {
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "MQTT over WebSocket over TLS listening on wss://{addr}/");
            tasks.push(tokio::spawn(tls::serve(
                listener,
                acceptor,
                shared,
                "mqtt websocket",
                mqtt::ws::accept,
            )));
        }
    }
    Ok(Running {
        mqtt: mqtt_addr,
        wamp: wamp_addr,
        wamp_rawsocket: rawsocket_addr,
        mqtt_ws: mqtt_ws_addr,
        mqtt_tls: tls_addrs.0,
        wamp_tls: tls_addrs.1,
        mqtt_ws_tls: tls_addrs.2,
        restored,
        snapshots,
        snapshot_task,
        snapshot_on_stop,
        tasks,
        shutdown: shutdown_tx,
        owner,
        clean_stop: stop_mark,
        failed,
    })
}
