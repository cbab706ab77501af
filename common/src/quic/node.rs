//! The tokio shell around one sans-IO core: one owner task that drains the
//! inbox, feeds the core, group-commits its writes and then sends what waited.
//!
//! ```text
//!  inbox (from the mesh) ──► handle_message × up to MAX_DRAIN ──► handle_tick
//!        ▲                                                           │ take_actions
//!        │                          Send before any Persist ◄────────┤
//!   Mesh::send ◄── Send after ◄── one fsync (Durable::persist) ◄─────┘ Persist(w) ...
//! ```
//!
//! Correctness: the Persist rule of [`crate::proto::Action`]. A `Send` that
//! follows a `Persist` in the core's action list leaves only after
//! [`Durable::persist`] returned for every write before it; writes arriving
//! while one commit runs queue in the inbox and share the next fsync.

use super::mesh::Mesh;
use super::metrics::Metrics;
use crate::proto::{Action, Core, Micros, Msg, NodeId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Messages taken from the inbox before the actions they caused are run.
const MAX_DRAIN: usize = 4096;

/// Durable storage for a core's writes.
///
/// Correctness: `persist` applies the writes in order, each one atomically, after every
/// earlier call's; with `sync` it returns `Ok` only once all of them, and every earlier
/// one, are on disk (fsynced).
pub trait Durable<W>: Send + Sync + 'static {
    /// Why a write failed.
    type Error: std::fmt::Display + Send + 'static;
    /// Apply `writes` in order; with `sync`, return after one sync covering them all.
    fn persist(&self, writes: &[W], sync: bool) -> Result<(), Self::Error>;
}

/// Why a node stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A write failed; the node stops rather than answer past a lost write.
    #[error("storage failed, stopping: {0}")]
    Storage(String),
    /// The storage thread panicked or was cancelled.
    #[error("storage task failed: {0}")]
    Task(String),
}

/// Microseconds since the node started: the clock every core reads through its shell.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    /// Start a clock at zero.
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    /// Return the time now.
    pub fn now(&self) -> Micros {
        self.0.elapsed().as_micros() as Micros
    }

    /// Return the instant a core's time stands for.
    pub fn instant(&self, at: Micros) -> Instant {
        self.0 + Duration::from_micros(at)
    }
}

/// A node's connection to its peers: where it sends, and what it receives.
#[derive(Debug)]
pub struct Link {
    /// Outgoing messages.
    pub mesh: Mesh,
    /// Incoming messages with their sender.
    pub inbox: mpsc::Receiver<(NodeId, Msg)>,
}

/// What a role adds to the driver loop.
pub struct Hooks<O, S> {
    /// Sees the core after every step (metrics, heartbeat lines).
    pub observe: O,
    /// Answers a message from storage instead of the core, when it returns `Some(reply)`
    /// (reads of history the core no longer keeps in memory). It runs before the message
    /// would reach the core, after every earlier write is durable.
    pub shortcut: S,
}

impl<C> Hooks<fn(&C), fn(&C, NodeId, &Msg) -> Option<Msg>> {
    /// No observer, no shortcut.
    pub fn none() -> Self {
        Hooks {
            observe: |_| {},
            shortcut: |_, _, _| None,
        }
    }
}

/// Run `core` until `shutdown` turns true or the inbox closes.
pub async fn drive<C, D, O, S>(
    mut core: C,
    disk: Arc<D>,
    link: Link,
    mut shutdown: watch::Receiver<bool>,
    clock: Clock,
    metrics: &Metrics,
    hooks: Hooks<O, S>,
) -> Result<(), NodeError>
where
    C: Core,
    C::Write: Send + 'static,
    D: Durable<C::Write>,
    O: FnMut(&C),
    S: FnMut(&C, NodeId, &Msg) -> Option<Msg>,
{
    let Link { mesh, mut inbox } = link;
    let Hooks {
        mut observe,
        mut shortcut,
    } = hooks;
    let mut feed = |core: &mut C, from: NodeId, msg: Msg| match shortcut(core, from, &msg) {
        Some(reply) => mesh.send(from, reply),
        None => core.handle_message(clock.now(), from, msg),
    };
    loop {
        let deadline = tokio::time::Instant::from_std(clock.instant(core.poll_timeout()));
        tokio::select! {
            biased;
            _ = shutdown.changed() => return Ok(()),
            got = inbox.recv() => {
                let Some((from, msg)) = got else { return Ok(()) };
                feed(&mut core, from, msg);
                for _ in 1..MAX_DRAIN {
                    match inbox.try_recv() {
                        Ok((from, msg)) => feed(&mut core, from, msg),
                        Err(_) => break,
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
        }
        core.handle_tick(clock.now());
        run_actions(core.take_actions(), &disk, &mesh, metrics).await?;
        metrics.observe_mesh(&mesh);
        observe(&core);
    }
}

/// Run one step's actions: sends before the first `Persist` at once, then one
/// commit of every write (synced if any is a `Persist`), then the rest.
pub async fn run_actions<W, D>(
    actions: Vec<Action<W>>,
    disk: &Arc<D>,
    mesh: &Mesh,
    metrics: &Metrics,
) -> Result<(), NodeError>
where
    W: Send + 'static,
    D: Durable<W>,
{
    let mut writes = Vec::new();
    let mut sync = false;
    let mut gated = Vec::new();
    for action in actions {
        match action {
            Action::Persist(w) => {
                writes.push(w);
                sync = true;
            }
            Action::WriteBehind(w) => writes.push(w),
            Action::Send { to, msg } if !sync => mesh.send(to, msg),
            other => gated.push(other),
        }
    }
    if !writes.is_empty() {
        let disk = disk.clone();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || disk.persist(&writes, sync))
            .await
            .map_err(|e| NodeError::Task(e.to_string()))?
            .map_err(|e| {
                metrics.storage_errors.inc();
                NodeError::Storage(e.to_string())
            })?;
        if sync {
            metrics.observe_persist(started.elapsed());
        }
    }
    for action in gated {
        if let Action::Send { to, msg } = action {
            mesh.send(to, msg);
        }
    }
    Ok(())
}

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The node is not in the cluster file.
    #[error("{0} is not in the cluster file")]
    NotMember(NodeId),
    /// Its certificate could not be loaded.
    #[error("certificate of {node}: {source}")]
    Identity {
        /// The node.
        node: NodeId,
        /// What went wrong.
        source: super::QuicError,
    },
    /// Its QUIC endpoint could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// What went wrong.
        source: super::QuicError,
    },
    /// Its store could not be opened.
    #[error("open store: {0}")]
    Store(String),
    /// It stopped on an error.
    #[error(transparent)]
    Stopped(#[from] NodeError),
}

/// Join the mesh of `spec` as `me` and run `core` until shutdown.
///
/// `make_core` receives the clock's start time, so timers are in the shell's time.
pub async fn serve<C, D, O, S>(
    spec: &crate::cluster::ClusterSpec,
    me: NodeId,
    make_core: impl FnOnce(Micros) -> C,
    disk: Arc<D>,
    shutdown: watch::Receiver<bool>,
    metrics: &Metrics,
    hooks: Hooks<O, S>,
) -> Result<(), RunError>
where
    C: Core,
    C::Write: Send + 'static,
    D: Durable<C::Write>,
    O: FnMut(&C),
    S: FnMut(&C, NodeId, &Msg) -> Option<Msg>,
{
    let addr = spec.addr_of(me).ok_or(RunError::NotMember(me))?;
    let identity = super::load_identity(&spec.cert_dir, &me.to_string())
        .map_err(|source| RunError::Identity { node: me, source })?;
    let (tx, inbox) = mpsc::channel(65_536);
    let mesh = Mesh::start(me, addr, &spec.addresses(), &identity, tx)
        .map_err(|source| RunError::Bind { addr, source })?;
    let clock = Clock::start();
    let core = make_core(clock.now());
    tracing::info!(%me, %addr, "serving the cluster over QUIC");
    let result = drive(
        core,
        disk,
        Link {
            mesh: mesh.clone(),
            inbox,
        },
        shutdown,
        clock,
        metrics,
        hooks,
    )
    .await;
    mesh.close();
    Ok(result?)
}

/// Calls `f` at most once per `every`: for periodic heartbeat log lines.
#[derive(Debug)]
pub struct Every {
    every: Duration,
    last: Instant,
}

impl Every {
    /// Fire first after `every`.
    pub fn new(every: Duration) -> Every {
        Every {
            every,
            last: Instant::now(),
        }
    }

    /// Tell whether `every` has passed since the last time this returned true.
    pub fn due(&mut self) -> bool {
        if self.last.elapsed() >= self.every {
            self.last = Instant::now();
            true
        } else {
            false
        }
    }
}

/// Log to stderr through `tracing`: level from `RUST_LOG` (default `info`), colours only on a terminal.
///
/// Every Ordo binary calls this first.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Build the tokio runtime a node runs on: `threads == 1` runs every task on the calling
/// thread, more gives that many worker threads, 0 one per core.
///
/// Blocking work (fsyncs, RocksDB reads) goes to tokio's blocking pool either way. On a
/// machine shared by several nodes, one thread each saves the cross-thread wake-ups that a
/// work-stealing scheduler pays per message (docs/performance.md).
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b
    };
    builder.enable_all().build()
}

/// Return a switch that turns `true` on Ctrl-C or SIGTERM (for a node's `run`).
pub fn shutdown_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

/// Wait for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
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
