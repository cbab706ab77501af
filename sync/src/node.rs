//! The sync process: [`SyncNode`] served over QUIC with its RocksDB store.
//!
//! ```text
//!  mesh inbox ──► old Over / FetchResolved? ──► SyncStore archive ──► Resolved (shortcut)
//!            └───► SyncNode ──Persist──► SyncStore (term, vote, snapshot, log, archive; one fsync per step)
//!                          ──Send────► sync peers (Draft, PickChallenger, Vote),
//!                                      ndbs and entries (Resolved, Abandoned)
//!  operator (`ordo-sync abandon`) ──Abandon──► mesh inbox
//! ```

use crate::log::{answer_from_archive, SyncConfig, SyncNode, SyncWrite};
use crate::store::{SyncStore, SyncStoreError};
use ordo_common::cluster::ClusterSpec;
use ordo_common::proto::{Msg, NodeId};
use ordo_common::quic::metrics::{Heartbeat, Metrics};
use ordo_common::quic::node::{serve, Durable, Hooks, RunError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What one sync process needs.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// The cluster.
    pub spec: ClusterSpec,
    /// This node's sync id.
    pub id: u32,
    /// Folder for its RocksDB.
    pub data_dir: PathBuf,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Resolutions the segment machine keeps in memory ([`SyncConfig::resolution_window`]).
    pub resolution_window: usize,
    /// Most uncommitted log entries the leader keeps in flight ([`SyncConfig::max_inflight`]).
    pub max_inflight: u64,
    /// The shortest election timeout; each wait is drawn from `[this, 2 * this)`
    /// ([`SyncConfig::election_timeout`]).
    pub election_timeout: Duration,
}

impl Durable<SyncWrite> for SyncStore {
    type Error = SyncStoreError;

    fn persist(&self, writes: &[SyncWrite], sync: bool) -> Result<(), SyncStoreError> {
        SyncStore::commit(self, writes, sync)
    }
}

/// Open the store, join the cluster and serve until `shutdown` turns true.
pub async fn run(opts: SyncOptions, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let me = NodeId::Sync(opts.id);
    let dir = opts.data_dir.join("sync");
    let (store, disk) = tokio::task::spawn_blocking(move || SyncStore::open(&dir))
        .await
        .map_err(|e| RunError::Store(e.to_string()))?
        .map_err(|e| RunError::Store(e.to_string()))?;
    let snapshot_at = disk.snapshot_index();
    tracing::info!(%me, term = disk.term, snapshot_index = snapshot_at, log_len = disk.log.len(),
        "store opened; recovering from the snapshot and the log after it");
    // Election jitter differs per node and per start.
    let seed = u64::from(opts.id) ^ std::process::id() as u64 ^ disk.term.rotate_left(17);
    let mut cfg = SyncConfig::new(
        opts.id,
        opts.spec.sync_ids(),
        opts.spec.ndb_ids(),
        opts.spec.entry_ids(),
        seed,
    );
    cfg.resolution_window = opts.resolution_window.max(1);
    cfg.max_inflight = opts.max_inflight.max(1);
    // Above the heartbeat, or a follower would stand between two of them.
    let election = (opts.election_timeout.as_micros() as u64).max(2 * cfg.heartbeat);
    cfg.election_timeout = (election, 2 * election);
    let metrics = Metrics::new("sync");
    if let Some(addr) = opts.metrics {
        metrics
            .serve(addr)
            .await
            .map_err(|e| RunError::Store(format!("metrics listener {addr}: {e}")))?;
    }
    let term = metrics.gauge("term", "Current term");
    let is_leader = metrics.gauge("leader", "1 while this node leads");
    let commit = metrics.gauge("commit_index", "Highest committed log index known here");
    let next_id = metrics.gauge("next_id", "Next permanent id the applied log assigns");
    let log_len = metrics.gauge("log_entries", "Entries in the log after the snapshot");
    let snapshot_index = metrics.gauge(
        "snapshot_index",
        "Last log index the newest snapshot covers",
    );
    let in_memory = metrics.gauge(
        "resolutions_in_memory",
        "Resolutions the segment machine holds in memory (window and not yet archived)",
    );
    let gap_ids = metrics.gauge(
        "archive_gap_ids",
        "Ids whose resolutions an installed snapshot skipped and peers have not yet sent",
    );
    let mut snapshot_seen = snapshot_at;
    let abandons = metrics.gauge("abandons", "Operator abandons applied (floors raised)");
    let mut notices = 0;
    let mut heartbeat = Heartbeat::new(&metrics, Duration::from_secs(10));
    let mut leader = false;
    let archive = store.clone();
    let shortcut =
        |node: &SyncNode, _: NodeId, msg: &Msg| answer_from_archive(node, msg, || archive.clone());
    let observe = |node: &SyncNode| {
        term.set(node.term() as i64);
        is_leader.set(i64::from(node.is_leader()));
        commit.set(node.commit_index() as i64);
        next_id.set(node.machine().next_id().0 as i64);
        log_len.set(node.log().len() as i64);
        in_memory.set(node.resolutions_in_memory() as i64);
        gap_ids.set(
            node.archive_gap()
                .map_or(0, |(f, t)| t.0.saturating_sub(f.0)) as i64,
        );
        if node.snapshot_index() != snapshot_seen {
            snapshot_seen = node.snapshot_index();
            tracing::info!(
                %me,
                index = snapshot_seen,
                applied = node.applied_index(),
                log_len = node.log().len(),
                "snapshot taken or installed"
            );
        }
        snapshot_index.set(snapshot_seen as i64);
        let applied = node.machine().notice_count();
        for n in node.machine().notices_from(notices, usize::MAX) {
            tracing::info!(%me, owner = n.owner, below = n.below, at = n.at.0, "abandon applied");
        }
        notices = applied;
        abandons.set(applied as i64);
        if node.is_leader() != leader {
            leader = node.is_leader();
            tracing::info!(%me, term = node.term(), leader, "role changed");
        }
        if let Some((mean_commit_ms, errors)) = heartbeat.due() {
            tracing::info!(
                %me,
                term = node.term(),
                leader = node.is_leader(),
                commit = node.commit_index(),
                revision = node.machine().next_id().0.saturating_sub(1),
                mean_commit_ms,
                errors,
                "heartbeat"
            );
        }
    };
    serve(
        &opts.spec,
        me,
        |now| SyncNode::recover(cfg, disk, now),
        Arc::new(store.clone()),
        shutdown,
        &metrics,
        Hooks { shortcut, observe },
    )
    .await
}
