//! The cluster file: every node of every role, its id and its QUIC address.
//!
//! All processes of one cluster read the same file, so they agree on who the
//! peers are (membership is static). Example, as `ClusterSpec::example` prints:
//!
//! ```toml
//! cert_dir = "certs"
//! [[sync]]
//! id = 1
//! addr = "127.0.0.1:7101"
//! [[ndb]]
//! id = 1
//! addr = "127.0.0.1:7201"
//! [[entry]]
//! id = 1
//! addr = "127.0.0.1:7301"
//! ```

use crate::proto::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why a cluster file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClusterSpecError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a cluster.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The file parsed but describes an unusable cluster.
    #[error("cluster file: {0}")]
    Invalid(String),
}

/// One node's id and address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The node's id within its role.
    pub id: u64,
    /// Its QUIC (UDP) address.
    pub addr: SocketAddr,
}

/// Every node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Folder with `ca.pem` and each node's `<role><id>.pem`/`.key`; relative paths are
    /// taken from the cluster file's folder.
    pub cert_dir: PathBuf,
    /// Sync (ordering) nodes: 1, 3 or 5.
    pub sync: Vec<Member>,
    /// Storage nodes: 1, 3 or 5.
    pub ndb: Vec<Member>,
    /// Entries (front doors); each id is the owner id in advance ids.
    pub entry: Vec<Member>,
}

impl ClusterSpec {
    /// Read and check a cluster file; resolve `cert_dir` against its folder.
    pub fn load(path: &Path) -> Result<ClusterSpec, ClusterSpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterSpecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut spec: ClusterSpec = toml::from_str(&text).map_err(|e| ClusterSpecError::Parse {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if spec.cert_dir.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            spec.cert_dir = base.join(&spec.cert_dir);
        }
        spec.check()?;
        Ok(spec)
    }

    /// Refuse empty roles, duplicate ids and ids that do not fit their role.
    pub fn check(&self) -> Result<(), ClusterSpecError> {
        for (role, members) in [("sync", &self.sync), ("ndb", &self.ndb)] {
            if members.is_empty() {
                return Err(ClusterSpecError::Invalid(format!("no {role} nodes")));
            }
            if members.iter().any(|m| m.id > u64::from(u32::MAX)) {
                return Err(ClusterSpecError::Invalid(format!("{role} id above 2^32")));
            }
        }
        let seen = self.addresses();
        if seen.len() != self.sync.len() + self.ndb.len() + self.entry.len() {
            return Err(ClusterSpecError::Invalid(
                "an id is listed twice within one role".into(),
            ));
        }
        Ok(())
    }

    /// Return every node and its address.
    pub fn addresses(&self) -> BTreeMap<NodeId, SocketAddr> {
        let mut out = BTreeMap::new();
        for m in &self.sync {
            out.insert(NodeId::Sync(m.id as u32), m.addr);
        }
        for m in &self.ndb {
            out.insert(NodeId::Ndb(m.id as u32), m.addr);
        }
        for m in &self.entry {
            out.insert(NodeId::Entry(m.id), m.addr);
        }
        out
    }

    /// Return the address of one node, if it is a member.
    pub fn addr_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.addresses().get(&node).copied()
    }

    /// Return the sync ids.
    pub fn sync_ids(&self) -> Vec<u32> {
        self.sync.iter().map(|m| m.id as u32).collect()
    }

    /// Return the ndb ids.
    pub fn ndb_ids(&self) -> Vec<u32> {
        self.ndb.iter().map(|m| m.id as u32).collect()
    }

    /// Return the entry ids.
    pub fn entry_ids(&self) -> Vec<u64> {
        self.entry.iter().map(|m| m.id).collect()
    }

    /// Return the certificate names of every node (`sync1`, `ndb1`, `entry1`, ...).
    pub fn cert_names(&self) -> Vec<String> {
        self.addresses().keys().map(|n| n.to_string()).collect()
    }

    /// Return a loopback cluster of `syncs`/`ndbs`/`entries` nodes with ports from `base`:
    /// sync `base+100+i`, ndb `base+200+i`, entry `base+300+i` (i from 1).
    pub fn loopback(base: u16, syncs: u64, ndbs: u64, entries: u64) -> ClusterSpec {
        let members = |offset: u16, n: u64| {
            (1..=n)
                .map(|id| Member {
                    id,
                    addr: SocketAddr::from(([127, 0, 0, 1], base + offset + id as u16)),
                })
                .collect()
        };
        ClusterSpec {
            cert_dir: PathBuf::from("certs"),
            sync: members(100, syncs),
            ndb: members(200, ndbs),
            entry: members(300, entries),
        }
    }

    /// Return this spec as a TOML document.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_spec_round_trips_and_checks() {
        let spec = ClusterSpec::loopback(7000, 3, 3, 3);
        let text = spec.to_toml();
        let back: ClusterSpec = toml::from_str(&text).expect("parse");
        assert_eq!(back, spec);
        back.check().expect("valid");
        assert_eq!(
            back.addr_of(NodeId::Ndb(2)),
            Some("127.0.0.1:7202".parse().expect("addr"))
        );
        assert_eq!(back.cert_names().len(), 9);
    }

    #[test]
    fn duplicates_and_empty_roles_are_refused() {
        let mut spec = ClusterSpec::loopback(7000, 3, 3, 1);
        spec.ndb.push(spec.ndb[0].clone());
        assert!(spec.check().is_err());
        let mut spec = ClusterSpec::loopback(7000, 3, 3, 1);
        spec.sync.clear();
        assert!(spec.check().is_err());
    }
}
