//! Ordo storage node.
//!
//! ```text
//!   KEEP_ADVANCE_HISTORY ──► NdbCore ──(temporary history, keyed by AdvanceId)
//!   ADVANCE_SEGMENT_RESOLVED ──► NdbCore ──► Persist { PermanentId -> StoredMessage }
//!                                                  │
//!                                                  ▼
//!                                      Store (RocksDB, one synced WriteBatch)
//! ```
//!
//! [`NdbCore`] is sans-IO: it decides what to persist; [`Store`] does the disk
//! work. In the embedded mode both live in the entry process and share its disk.
//! In the cluster, [`cluster::NdbNode`] is the sans-IO core and
//! [`NdbClusterStore`] makes its `Persist` writes durable.
#![warn(missing_docs)]

pub mod cluster;
pub mod cluster_store;
pub mod core;
pub mod node;
pub mod store;

pub use crate::cluster_store::NdbClusterStore;
pub use crate::core::{NdbCore, ResolveError};
pub use crate::store::{CommitBatch, Store, StoreError};
