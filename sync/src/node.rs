//! The sync process: [`SyncNode`] served over QUIC with its RocksDB store.
//!
//! ```text
//!  mesh inbox ──► SyncNode ──Persist──► SyncStore (term, vote, log; one fsync per step)
//!                          ──Send────► sync peers (Draft, PickChallenger, Vote),
//!                                      ndbs and entries (Resolved)
//! ```

use crate::log::{SyncConfig, SyncNode, SyncWrite};
use crate::store::{SyncStore, SyncStoreError};
use ordo_common::cluster::ClusterSpec;
use ordo_common::proto::NodeId;
use ordo_common::quic::node::{serve, Durable, Every, RunError};
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
}

impl Durable<SyncWrite> for SyncStore {
    type Error = SyncStoreError;

    fn persist(&self, writes: &[SyncWrite]) -> Result<(), SyncStoreError> {
        SyncStore::persist(self, writes)
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
    tracing::info!(%me, term = disk.term, log_len = disk.log.len(), "store opened");
    // Election jitter differs per node and per start.
    let seed = u64::from(opts.id) ^ std::process::id() as u64 ^ disk.term.rotate_left(17);
    let cfg = SyncConfig::new(
        opts.id,
        opts.spec.sync_ids(),
        opts.spec.ndb_ids(),
        opts.spec.entry_ids(),
        seed,
    );
    let mut heartbeat = Every::new(Duration::from_secs(10));
    let mut leader = false;
    serve(
        &opts.spec,
        me,
        |now| SyncNode::recover(cfg, disk, now),
        Arc::new(store),
        shutdown,
        |node: &SyncNode| {
            if node.is_leader() != leader {
                leader = node.is_leader();
                tracing::info!(%me, term = node.term(), leader, "role changed");
            }
            if heartbeat.due() {
                tracing::info!(%me, term = node.term(), leader = node.is_leader(),
                    commit = node.commit_index(), next_id = node.machine().next_id().0,
                    "heartbeat");
            }
        },
    )
    .await
}
