//! The ndb process: [`NdbNode`] served over QUIC with its RocksDB store.
//!
//! ```text
//!  mesh inbox ──► NdbNode ──Persist──► NdbClusterStore (one fsync per step)
//!                         ──Send────► entries (Trim, Permanent), syncs (FetchResolved), ndbs
//! ```

use crate::cluster::{NdbConfig, NdbNode, NdbWrite};
use crate::cluster_store::NdbClusterStore;
use crate::StoreError;
use ordo_common::cluster::ClusterSpec;
use ordo_common::proto::NodeId;
use ordo_common::proto::{Msg, NodeId as Node};
use ordo_common::quic::metrics::{Heartbeat, Metrics};
use ordo_common::quic::node::{serve, Durable, Hooks, RunError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What one ndb process needs.
#[derive(Clone, Debug)]
pub struct NdbOptions {
    /// The cluster.
    pub spec: ClusterSpec,
    /// This node's ndb id.
    pub id: u32,
    /// Folder for its RocksDB.
    pub data_dir: PathBuf,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Newest permanent records kept in memory; older reads go to the store.
    pub cache_records: usize,
}

impl Durable<NdbWrite> for NdbClusterStore {
    type Error = StoreError;

    fn persist(&self, writes: &[NdbWrite], sync: bool) -> Result<(), StoreError> {
        NdbClusterStore::commit(self, writes, sync)
    }
}

/// Open the store, join the cluster and serve until `shutdown` turns true.
pub async fn run(opts: NdbOptions, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let me = NodeId::Ndb(opts.id);
    let dir = opts.data_dir.join("ndb");
    let mut cfg = NdbConfig::new(opts.id, opts.spec.ndb_ids(), opts.spec.sync_ids());
    cfg.cache_records = opts.cache_records.max(1);
    let keep = cfg.cache_records;
    let (store, disk) =
        tokio::task::spawn_blocking(move || NdbClusterStore::open_with_cache(&dir, keep))
            .await
            .map_err(|e| RunError::Store(e.to_string()))?
            .map_err(|e| RunError::Store(e.to_string()))?;
    tracing::info!(%me, next_id = disk.next.0, temp_segments = disk.temp.len(), "store opened");
    let metrics = Metrics::new("ndb");
    if let Some(addr) = opts.metrics {
        metrics
            .serve(addr)
            .await
            .map_err(|e| RunError::Store(format!("metrics listener {addr}: {e}")))?;
    }
    let next_id = metrics.gauge(
        "next_id",
        "Next permanent id to apply; all below are stored here",
    );
    let lag = metrics.gauge(
        "lag_ids",
        "Resolved ids heard of but not yet applied here (replication lag)",
    );
    let temp = metrics.gauge("temp_segments", "Segments held in temporary history");
    let mut heartbeat = Heartbeat::new(&metrics, Duration::from_secs(10));
    serve(
        &opts.spec,
        me,
        |now| NdbNode::recover(cfg, disk, now),
        Arc::new(store.clone()),
        shutdown,
        &metrics,
        Hooks {
            shortcut: |node: &NdbNode, from: Node, msg: &Msg| from_store(&store, node, from, msg),
            observe: |node: &NdbNode| {
                let disk = node.disk();
                next_id.set(disk.next.0 as i64);
                lag.set(node.known_end().0.saturating_sub(disk.next.0) as i64);
                temp.set(disk.temp.len() as i64);
                if let Some((mean_commit_ms, errors)) = heartbeat.due() {
                    tracing::info!(
                        %me,
                        revision = disk.next.0.saturating_sub(1),
                        temp_segments = disk.temp.len(),
                        mean_commit_ms,
                        errors,
                        "heartbeat"
                    );
                }
            },
        },
    )
    .await
}

/// Answer reads of history older than what the node keeps in memory straight from the store.
fn from_store(store: &NdbClusterStore, node: &NdbNode, from: Node, msg: &Msg) -> Option<Msg> {
    let floor = node.first_cached();
    let answer = match msg {
        Msg::FetchPermanent { from: first, max } if *first < floor => {
            let max = (*max).clamp(1, 256) as usize;
            store
                .read_permanent(*first, max)
                .map(|records| Msg::Permanent {
                    from: *first,
                    tip: node.disk().next,
                    records,
                })
        }
        Msg::FetchBodies { owner, segment } => {
            let r = node.disk().applied.get(&(*owner, *segment))?;
            if r.base >= floor {
                return None;
            }
            store
                .read_permanent(r.base, r.count as usize)
                .map(|bodies| Msg::Bodies {
                    owner: *owner,
                    segment: *segment,
                    bodies,
                })
        }
        _ => return None,
    };
    match answer {
        Ok(Msg::Bodies { bodies, .. }) if bodies.is_empty() => None,
        Ok(reply) => Some(reply),
        Err(e) => {
            tracing::warn!(%from, error = %e, "reading history from the store failed");
            None
        }
    }
}
