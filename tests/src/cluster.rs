//! An Ordo cluster inside the test process: 3 sync and 3 ndb nodes with their
//! real RocksDB stores, and entries as [`TestNode`]s, all over QUIC with mutual
//! TLS on loopback.

use crate::TestNode;
use ordo_common::cluster::{ClusterSpec, Member};
use ordo_common::quic::generate_dev_certs;
use ordo_ndb::node::NdbOptions;
use ordo_sync::node::SyncOptions;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Return `n` distinct free UDP addresses (all bound at once, then released).
pub fn free_udp(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let sockets = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(sockets
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<std::io::Result<Vec<_>>>()?)
}

/// A node run in this process: its task and the switch that stops it.
pub struct InProcess {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl InProcess {
    /// Stop the node and wait until its UDP port is free again (its QUIC endpoint has drained).
    pub async fn stop(self, addr: SocketAddr) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        for _ in 0..200 {
            if UdpSocket::bind(addr).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Start ndb `id` of `spec` with its data under `root`.
pub fn spawn_ndb(spec: &ClusterSpec, id: u32, root: &Path) -> InProcess {
    let (stop, rx) = watch::channel(false);
    let opts = NdbOptions {
        spec: spec.clone(),
        id,
        data_dir: root.join(format!("ndb{id}")),
        metrics: None,
        // Small, so catch-up and replay read older records from the store.
        cache_records: 64,
    };
    let task = tokio::spawn(async move {
        if let Err(e) = ordo_ndb::node::run(opts, rx).await {
            panic!("ndb{id} stopped: {e}");
        }
    });
    InProcess { stop, task }
}

/// Start sync node `id` of `spec` with its data under `root`.
pub fn spawn_sync(spec: &ClusterSpec, id: u32, root: &Path) -> InProcess {
    let (stop, rx) = watch::channel(false);
    let opts = SyncOptions {
        spec: spec.clone(),
        id,
        data_dir: root.join(format!("sync{id}")),
        metrics: None,
        resolution_window: ordo_sync::log::DEFAULT_RESOLUTION_WINDOW,
        max_inflight: ordo_sync::log::DEFAULT_MAX_INFLIGHT,
        election_timeout: std::time::Duration::from_millis(
            ordo_sync::log::DEFAULT_ELECTION_TIMEOUT_MS,
        ),
    };
    let task = tokio::spawn(async move {
        if let Err(e) = ordo_sync::node::run(opts, rx).await {
            panic!("sync{id} stopped: {e}");
        }
    });
    InProcess { stop, task }
}

/// A cluster file with its certificates in a temporary folder.
pub struct Cluster {
    /// 3 sync, 3 ndb and the entries, on free loopback UDP ports.
    pub spec: ClusterSpec,
    /// The cluster file the entries are started with.
    pub file: PathBuf,
    /// Holds the certificates and every node's data.
    pub root: tempfile::TempDir,
}

impl Cluster {
    /// Write the cluster file and certificates for 3 sync, 3 ndb and `entries` entries.
    pub fn new(entries: u64) -> anyhow::Result<Cluster> {
        let root = tempfile::tempdir()?;
        let mut addrs = free_udp(6 + entries as usize)?.into_iter();
        let mut members = |n: u64| -> Vec<Member> {
            (1..=n)
                .zip(addrs.by_ref())
                .map(|(id, addr)| Member { id, addr })
                .collect()
        };
        let spec = ClusterSpec {
            cert_dir: root.path().join("certs"),
            sync: members(3),
            ndb: members(3),
            entry: members(entries),
        };
        let mut names = spec.cert_names();
        names.push(ordo_sync::operator::OPERATOR_CERT.to_owned());
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        generate_dev_certs(&spec.cert_dir, &names)?;
        let file = root.path().join("cluster.toml");
        std::fs::write(&file, spec.to_toml())?;
        Ok(Cluster { spec, file, root })
    }

    /// Start every sync and ndb node.
    pub fn spawn_storage(&self) -> Vec<InProcess> {
        let root = self.root.path();
        (1..=3)
            .flat_map(|id| {
                [
                    spawn_sync(&self.spec, id, root),
                    spawn_ndb(&self.spec, id, root),
                ]
            })
            .collect()
    }

    /// Start entry `id` as an embedded-API node joined to this cluster.
    pub async fn entry(&self, id: u64) -> anyhow::Result<TestNode> {
        let file = self.file.clone();
        TestNode::start_with(move |cfg| {
            cfg.cluster = Some(file);
            cfg.owner = id;
        })
        .await
    }
}
