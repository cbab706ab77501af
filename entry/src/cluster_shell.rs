//! The entry's cluster shell: the tokio task that runs [`EntryCore`] against
//! real ndb and sync nodes over QUIC.
//!
//! ```text
//!  front doors ──PublishRequest──► [shell task] ──handle_publish──► EntryCore
//!                                       │  Send ──► Mesh (QUIC) ──► ndbs, syncs
//!       Mesh inbox (Trim, Resolved, ────┘  Persist(Reserve) ──► entry-reserved-segment (fsync)
//!        Permanent) ──handle_message──►    Ack ──► PUBACK / PUBLISHED {id}
//!                                          Deliver ──► [delivery task] local store (cache)
//!                                                        ──► Router::dispatch
//! ```
//!
//! The publisher's ack leaves on RESOLVED (the core's `Ack`: durable on a quorum
//! of ndbs, id final), not after this entry's own delivery of the id: waiting
//! for that would add an ndb fsync and a fetch round trip to every ack. A
//! replay (`after`) right after the ack still sees the message, live if not yet
//! from disk, through the router's seam. The local RocksDB keeps the delivered
//! permanent log as a cache for replay and retained messages; it is written
//! without fsync because the ndbs hold the truth and a restart re-fetches from
//! the local store's last id.

use crate::cluster::{EntryConfig, EntryCore, EntryDisk, EntryWrite};
use crate::router::Router;
use crate::sequencer::{PublishError, PublishRequest, Sequencer};
use anyhow::Context;
use bytes::Bytes;
use ordo_common::cluster::ClusterSpec;
use ordo_common::proto::{AbandonNotice, Action, Msg, NodeId};
use ordo_common::quic::metrics::Metrics;
use ordo_common::quic::node::{Clock, Every};
use ordo_common::quic::{load_identity, Mesh};
use ordo_common::{PermanentId, StoredMessage};
use ordo_ndb::Store;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

/// Metadata key of the entry's segment reservation (`EntryDisk::next_segment`).
const META_RESERVED: &str = "entry/reserved_segment";
/// Messages taken from a queue before the actions they caused are run.
const MAX_DRAIN: usize = 4096;
/// Segments reserved by one fsynced write of the high-water mark. The write is awaited in the
/// shell loop, stalling acks behind it; at 64 (the core's default) it came every ~90 ms under
/// load. A restart skips at most this many segment numbers, which costs nothing.
const RESERVE_SEGMENTS: u64 = 4096;
/// The reservation's own file in the data folder. Not the RocksDB store: the store's WAL holds
/// the delivered records written without fsync, and syncing them all with the reservation
/// stalled the shell for tens of milliseconds.
const RESERVE_FILE: &str = "entry-reserved-segment";
/// Delivered batches queued for the delivery task before the shell stops fetching more.
const DELIVERY_QUEUE: usize = 8;
/// How often a sync node is asked for operator abandon notices: an abandoned entry's wills
/// wait at most this long (plus a log round trip) to be adopted.
const NOTICE_POLL_US: u64 = 1_000_000;

/// A batch of delivered records, in id order: decoded for the router, and the bytes they
/// came as for the local store (so they are not encoded a second time).
#[derive(Default)]
struct Delivered {
    messages: Vec<(PermanentId, Arc<StoredMessage>)>,
    bodies: Vec<Bytes>,
}

/// A publisher's reply and when its publish was accepted.
type Reply = (oneshot::Sender<Result<PermanentId, PublishError>>, Instant);

/// A running cluster shell.
pub(crate) struct Shell {
    pub(crate) sequencer: Sequencer,
    pub(crate) task: tokio::task::JoinHandle<()>,
    /// Other owners' abandons, in notice order (for [`crate::adopt`]).
    pub(crate) abandons: mpsc::UnboundedReceiver<AbandonNotice>,
    /// Why the shell stopped on its own (its storage failed): the entry can neither cache
    /// what it delivers nor ack, so the process should stop and its clients go elsewhere.
    pub(crate) failed: oneshot::Receiver<String>,
}

/// Join the cluster described by `spec` as entry `config.owner`, delivering into `router`.
pub(crate) fn start(
    store: Store,
    router: Arc<Router>,
    spec: &ClusterSpec,
    config: &crate::Config,
    shutdown: watch::Receiver<bool>,
    metrics: Metrics,
) -> anyhow::Result<Shell> {
    let (owner, max_batch) = (config.owner, config.max_batch);
    let me = NodeId::Entry(owner);
    let addr = spec
        .addr_of(me)
        .with_context(|| format!("{me} is not in the cluster file"))?;
    let identity = load_identity(&spec.cert_dir, &me.to_string())
        .with_context(|| format!("load {me}'s certificate from {}", spec.cert_dir.display()))?;
    let (inbox_tx, inbox) = mpsc::channel(65_536);
    let mesh = Mesh::start(me, addr, &spec.addresses(), &identity, inbox_tx)
        .with_context(|| format!("bind cluster address {addr}"))?;
    let reserve_file = config.data_dir.join(RESERVE_FILE);
    // Stores written before the reservation had its own file keep it in their metadata.
    let reserved = [META_RESERVED, crate::sequencer::META_NEXT_SEGMENT]
        .into_iter()
        .filter_map(|key| store.get_meta(key).ok().flatten())
        .filter_map(|v| v.try_into().ok().map(u64::from_be_bytes))
        .chain(read_reservation(&reserve_file)?)
        .max()
        .unwrap_or(1);
    let mut cfg = EntryConfig::new(owner, spec.ndb_ids(), spec.sync_ids());
    cfg.max_segment = max_batch;
    cfg.window = config.cluster_segments_in_flight.max(1);
    cfg.linger = config.cluster_segment_linger_us;
    cfg.notice_poll = NOTICE_POLL_US;
    cfg.reserve = RESERVE_SEGMENTS;
    cfg.deliver_from = store.last_id()?.next();
    let clock = Clock::start();
    let core = EntryCore::recover(
        cfg,
        EntryDisk {
            next_segment: reserved,
        },
        clock.now(),
    );
    tracing::info!(%me, %addr, next_segment = reserved, deliver_from = core.next_delivery().0,
        "joined the cluster");
    let (tx, rx) = mpsc::channel(max_batch * 4);
    let (abandons_tx, abandons) = mpsc::unbounded_channel();
    let (deliveries, delivery_rx) = mpsc::channel(DELIVERY_QUEUE);
    let delivery = tokio::spawn(deliver(store, router, delivery_rx));
    let shell = ShellTask {
        core,
        clock,
        reserve_file,
        deliveries,
        overflow: VecDeque::new(),
        delivery_paused: false,
        mesh: mesh.clone(),
        replies: HashMap::new(),
        seq: 0,
        limit: max_batch * 8,
        gauges: Gauges {
            segments_open: metrics.gauge("segments_open", "Segments begun and not yet resolved"),
            unacked: metrics.gauge("unacked", "Publishes waiting for their permanent id"),
            next_id: metrics.gauge("next_delivery_id", "Next permanent id to deliver here"),
            lag: metrics.gauge(
                "lag_ids",
                "Ids known to be ordered but not yet delivered here (replication lag)",
            ),
            ack_seconds: metrics.histogram(
                "ack_seconds",
                "Publish accepted to ack released (durable on a quorum of ndbs, id final)",
            ),
            wait_seconds: metrics.histogram(
                "segment_wait_seconds",
                "Oldest publish of a segment taken in to the segment begun (linger, full window)",
            ),
            flight_seconds: metrics.histogram(
                "segment_flight_seconds",
                "Segment begun to ADVANCE_SEGMENT_RESOLVED received (stored and ordered)",
            ),
            store_seconds: metrics.histogram(
                "segment_store_seconds",
                "Segments that took the entry's way: begun to trimmed by a quorum of ndbs",
            ),
            order_seconds: metrics.histogram(
                "segment_order_seconds",
                "Segments that took the entry's way: ADVANCE_SEGMENT_OVER sent to RESOLVED",
            ),
        },
        metrics,
        heartbeat: Every::new(std::time::Duration::from_secs(10)),
        acks_since: (0, 0),
        stages_since: StageTotals::default(),
        abandons: abandons_tx,
    };
    // The shell's task ends once the delivery task has routed what it was handed, so a
    // clean stop's router snapshot covers everything this entry cached.
    let (failed_tx, failed) = oneshot::channel();
    let task = tokio::spawn(async move {
        let stopped = shell.run(rx, inbox, shutdown).await;
        let delivery = delivery.await;
        if let Some(why) = stopped {
            // The delivery task's own error says what its storage did.
            let why = match delivery {
                Ok(Err(e)) => format!("{why}: {e}"),
                _ => why,
            };
            let _ = failed_tx.send(why);
        }
    });
    Ok(Shell {
        sequencer: Sequencer::from_sender(tx),
        task,
        abandons,
        failed,
    })
}

struct ShellTask {
    core: EntryCore,
    clock: Clock,
    /// Where the segment reservation (`EntryDisk::next_segment`) is kept.
    reserve_file: std::path::PathBuf,
    /// To the delivery task, which caches and routes delivered records off the ack path.
    deliveries: mpsc::Sender<Delivered>,
    /// Delivered batches the full queue could not take yet, in id order. While any wait here
    /// the core fetches nothing more, so this holds at most the answer already on its way.
    overflow: VecDeque<Delivered>,
    /// Whether the core was told to pause its follow path.
    delivery_paused: bool,
    mesh: Mesh,
    /// Replies by the core's publish sequence number.
    replies: HashMap<u64, Reply>,
    seq: u64,
    /// Most unacknowledged publishes taken in before the front doors are made to wait.
    limit: usize,
    gauges: Gauges,
    metrics: Metrics,
    heartbeat: Every,
    /// Acks and their total latency since the last heartbeat.
    acks_since: (u64, u64),
    /// Resolved segments and their stage times since the last heartbeat.
    stages_since: StageTotals,
    /// Other owners' abandons, to the adoption task.
    abandons: mpsc::UnboundedSender<AbandonNotice>,
}

/// Segments resolved and the microseconds they spent in each stage, summed.
#[derive(Debug, Default)]
struct StageTotals {
    segments: u64,
    wait: u64,
    flight: u64,
    /// Segments that took the entry's way (Trims, then its Over), and their two stages.
    via_entry: u64,
    store: u64,
    order: u64,
}

struct Gauges {
    segments_open: Gauge,
    unacked: Gauge,
    next_id: Gauge,
    lag: Gauge,
    ack_seconds: Histogram,
    wait_seconds: Histogram,
    flight_seconds: Histogram,
    store_seconds: Histogram,
    order_seconds: Histogram,
}

impl ShellTask {
    /// Run until shutdown (`None`) or until storage fails (`Some(why)`).
    async fn run(
        mut self,
        mut publishes: mpsc::Receiver<PublishRequest>,
        mut inbox: mpsc::Receiver<(NodeId, Msg)>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<String> {
        let mut failure = None;
        loop {
            let deadline =
                tokio::time::Instant::from_std(self.clock.instant(self.core.poll_timeout()));
            let room = self.core.unacked() < self.limit;
            // A sender of its own, so waiting for queue room borrows nothing of `self`.
            let room_for_overflow = (!self.overflow.is_empty()).then(|| self.deliveries.clone());
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                got = inbox.recv() => {
                    let Some((from, msg)) = got else { break };
                    self.core.handle_message(self.clock.now(), from, msg);
                    for _ in 1..MAX_DRAIN {
                        match inbox.try_recv() {
                            Ok((from, msg)) => self.core.handle_message(self.clock.now(), from, msg),
                            Err(_) => break,
                        }
                    }
                }
                got = publishes.recv(), if room => {
                    let Some(req) = got else { break };
                    self.publish(req);
                    for _ in 1..MAX_DRAIN {
                        match publishes.try_recv() {
                            Ok(req) => self.publish(req),
                            Err(_) => break,
                        }
                    }
                }
                permit = async { room_for_overflow.clone()?.reserve_owned().await.ok() },
                    if room_for_overflow.is_some() => {
                    let Some(permit) = permit else {
                        tracing::error!("the delivery task stopped; no further acks from this entry");
                        failure = Some("the delivery task stopped".to_string());
                        break;
                    };
                    if let Some(batch) = self.overflow.pop_front() {
                        permit.send(batch);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
            self.core.handle_tick(self.clock.now());
            self.pause_follow_while_overflowing();
            if let Err(e) = self.run_actions().await {
                tracing::error!(error = %e, "entry storage failed; no further acks from this entry");
                failure = Some(format!("{e:#}"));
                break;
            }
        }
        for (_, (reply, _)) in self.replies.drain() {
            let _ = reply.send(Err(PublishError::Stopped));
        }
        self.mesh.close();
        // Dropping `self` closes the delivery queue: the delivery task drains it and ends.
        failure
    }

    fn publish(&mut self, req: PublishRequest) {
        let body = match rmp_serde::to_vec(&req.message) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!(error = %e, "could not encode a message");
                return;
            }
        };
        self.seq += 1;
        if let Some(reply) = req.reply {
            self.replies.insert(self.seq, (reply, Instant::now()));
        }
        self.core
            .handle_publish(self.clock.now(), 0, self.seq, body);
    }

    /// Tell the core to pause its follow path while batches wait in `overflow`, and to
    /// resume once they are handed over.
    fn pause_follow_while_overflowing(&mut self) {
        let paused = !self.overflow.is_empty();
        if paused != self.delivery_paused {
            self.delivery_paused = paused;
            self.core.pause_delivery(self.clock.now(), paused);
        }
    }

    /// Hand a batch to the delivery task without waiting: if its queue is full, keep the batch
    /// and pause the follow path, so TRIMs, RESOLVEDs and acks never wait on delivery.
    fn queue_delivery(&mut self, batch: Delivered) -> anyhow::Result<()> {
        if !self.overflow.is_empty() {
            self.overflow.push_back(batch);
            return Ok(());
        }
        match self.deliveries.try_send(batch) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(batch)) => {
                self.overflow.push_back(batch);
                self.pause_follow_while_overflowing();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => anyhow::bail!("the delivery task stopped"),
        }
    }

    async fn run_actions(&mut self) -> anyhow::Result<()> {
        let mut delivered = Delivered::default();
        // Actions run in order and a write is awaited in place, so whatever
        // follows a Persist runs after it is durable (the Persist rule).
        for action in self.core.take_actions() {
            match action {
                // The entry core writes nothing behind; a reservation is always awaited.
                Action::Persist(EntryWrite::Reserve(mark))
                | Action::WriteBehind(EntryWrite::Reserve(mark)) => {
                    // Rare (one per `reserve` segments): write it before anything behind it.
                    let path = self.reserve_file.clone();
                    let started = Instant::now();
                    tokio::task::spawn_blocking(move || write_reservation(&path, mark))
                        .await?
                        .inspect_err(|_| {
                            self.metrics.storage_errors.inc();
                        })
                        .context("write the segment reservation")?;
                    self.metrics.observe_persist(started.elapsed());
                }
                Action::Send { to, msg } => self.mesh.send(to, msg),
                Action::Deliver { id, body } => match rmp_serde::from_slice(&body) {
                    Ok(message) => {
                        delivered.messages.push((id, Arc::new(message)));
                        delivered.bodies.push(body);
                    }
                    Err(e) => tracing::error!(id = id.0, error = %e, "undecodable record; skipped"),
                },
                Action::Ack { seq, id, .. } => {
                    if let Some((reply, accepted)) = self.replies.remove(&seq) {
                        let took = accepted.elapsed();
                        self.gauges.ack_seconds.observe(took.as_secs_f64());
                        self.acks_since.0 += 1;
                        self.acks_since.1 += took.as_micros() as u64;
                        let _ = reply.send(Ok(id));
                    }
                }
            }
        }
        if !delivered.messages.is_empty() {
            self.queue_delivery(delivered)?;
        }
        for notice in self.core.take_abandon_notices() {
            tracing::info!(
                owner = notice.owner,
                below = notice.below,
                at = notice.at.0,
                "entry abandoned by the operator"
            );
            let _ = self.abandons.send(notice);
        }
        for t in self.core.take_stage_timings() {
            let g = &self.gauges;
            g.wait_seconds.observe(t.wait as f64 / 1e6);
            g.flight_seconds.observe(t.flight as f64 / 1e6);
            let s = &mut self.stages_since;
            s.segments += 1;
            s.wait += t.wait;
            s.flight += t.flight;
            if let Some(store) = t.store {
                let order = t.flight.saturating_sub(store);
                g.store_seconds.observe(store as f64 / 1e6);
                g.order_seconds.observe(order as f64 / 1e6);
                s.via_entry += 1;
                s.store += store;
                s.order += order;
            }
        }
        let next = self.core.next_delivery();
        let g = &self.gauges;
        g.segments_open.set(self.core.open_segments_count() as i64);
        g.unacked.set(self.core.unacked() as i64);
        g.next_id.set(next.0 as i64);
        g.lag
            .set(self.core.known_tip().0.saturating_sub(next.0) as i64);
        self.metrics.observe_mesh(&self.mesh);
        if self.heartbeat.due() {
            let (acks, micros) = std::mem::take(&mut self.acks_since);
            let StageTotals {
                segments,
                wait,
                flight,
                via_entry,
                store,
                order,
            } = std::mem::take(&mut self.stages_since);
            let mean_ms =
                |total: u64, n: u64| format!("{:.2}", total as f64 / n.max(1) as f64 / 1e3);
            tracing::info!(me = %self.mesh.me(), revision = next.0.saturating_sub(1),
                unacked = self.core.unacked(), acks, mean_ack_ms = mean_ms(micros, acks),
                segments, mean_wait_ms = mean_ms(wait, segments),
                mean_flight_ms = mean_ms(flight, segments), via_entry,
                mean_store_ms = mean_ms(store, via_entry),
                mean_order_ms = mean_ms(order, via_entry),
                dropped = self.mesh.stats().dropped.load(std::sync::atomic::Ordering::Relaxed),
                "heartbeat");
        }
        Ok(())
    }
}

/// Cache each delivered batch in the local store (unsynced: the ndbs hold the truth), then route
/// it, in id order. It runs beside the shell so that writing and routing deliveries never holds
/// up TRIMs, RESOLVEDs and acks; when it falls behind, its full queue pauses the follow path.
async fn deliver(
    store: Store,
    router: Arc<Router>,
    mut batches: mpsc::Receiver<Delivered>,
) -> Result<(), String> {
    while let Some(Delivered { messages, bodies }) = batches.recv().await {
        let store = store.clone();
        let written = tokio::task::spawn_blocking(move || {
            let ids = messages.iter().map(|(id, _)| *id);
            store
                .cache_encoded(ids.zip(bodies.iter().map(|b| &b[..])))
                .map(|()| messages)
        })
        .await;
        match written {
            Ok(Ok(messages)) => router.dispatch(&messages),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "entry storage failed; no further deliveries");
                return Err(e.to_string());
            }
            Err(e) => {
                tracing::error!(error = %e, "delivery write panicked; no further deliveries");
                return Err(e.to_string());
            }
        }
    }
    Ok(())
}

/// Read the reservation file, if there is one.
fn read_reservation(path: &std::path::Path) -> anyhow::Result<Option<u64>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let raw: [u8; 8] = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("{} is not 8 bytes", path.display()))?;
            Ok(Some(u64::from_be_bytes(raw)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Replace the reservation durably: write a temporary file, sync it, rename it over the old one
/// and sync the folder, so a crash leaves the old value or the new one.
fn write_reservation(path: &std::path::Path, mark: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&mark.to_be_bytes())?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{read_reservation, write_reservation};

    #[test]
    fn the_reservation_file_keeps_the_last_mark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(super::RESERVE_FILE);
        assert_eq!(read_reservation(&path).expect("read"), None);
        write_reservation(&path, 4097).expect("write");
        write_reservation(&path, 8193).expect("write");
        assert_eq!(read_reservation(&path).expect("read"), Some(8193));
        std::fs::write(&path, b"short").expect("write");
        assert!(
            read_reservation(&path).is_err(),
            "a torn file is an error, not 0"
        );
    }
}
