//! Router snapshots: the part of the router that is a function of the log, as of one id.
//!
//! ```text
//!  Router::snapshot ──(under the lock: share the messages, copy the rest)──► RouterSnapshot { at }
//!        RouterSnapshot::encode (off the lock) ──► bytes ──► store
//!  start-up: store ──► RouterSnapshot::decode ──► Router::restore ──► dispatch (at, last] only
//! ```
//!
//! What the log decides, and so what a snapshot holds: the retained value of
//! every topic (WAMP objects deep-merged, MQTT persistent sessions, which are
//! retained records in `$ordo`), the parked `watch` publishes, the wills, and
//! which ids were not delivered where they stand ([`crate::kv`]). Sessions,
//! subscriptions and shared-subscription cursors belong to live connections;
//! a restarted node has none, so a snapshot leaves them out, as a full replay
//! of the log would.
//!
//! Correctness: restoring the snapshot taken at `at`, then dispatching the
//! messages after `at`, gives the state dispatching the whole log gives
//! (`tests/snapshot.rs` checks it over random logs).

use crate::kv::{KvSnapshot, KvState};
use crate::{Router, SessionId, State};
use ordo_common::{PermanentId, StoredMessage};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The format byte in front of an encoded snapshot; bump it when the layout changes.
pub const SNAPSHOT_FORMAT: u8 = 1;

/// The router's log-derived state after dispatching every id up to `at` and none after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouterSnapshot {
    at: PermanentId,
    /// Retained messages with the id of their last write, in (realm, topic) order.
    retained: Vec<(PermanentId, Arc<StoredMessage>)>,
    kv: KvSnapshot,
}

/// Why bytes did not decode into a [`RouterSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotDecodeError {
    /// No bytes at all.
    #[error("empty snapshot")]
    Empty,
    /// Written by a build with another snapshot layout.
    #[error("unknown snapshot format {0}")]
    UnknownFormat(u8),
    /// The bytes after the format byte are not a snapshot.
    #[error("undecodable snapshot: {0}")]
    Corrupt(String),
}

impl RouterSnapshot {
    /// Return the id the snapshot was taken at: every id up to it is in, none after.
    pub fn at(&self) -> PermanentId {
        self.at
    }

    /// Return how many topics hold a retained message.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Return how many `watch` publishes are parked.
    pub fn parked_count(&self) -> usize {
        self.kv.parked_count()
    }

    /// Encode behind the [`SNAPSHOT_FORMAT`] byte (msgpack). Slow for a large
    /// state: call it off the router's lock and off async tasks.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_FORMAT];
        // Encoding plain data into a Vec cannot fail.
        #[allow(clippy::expect_used)]
        rmp_serde::encode::write(&mut out, self).expect("encode router snapshot");
        out
    }

    /// Decode bytes written by [`RouterSnapshot::encode`].
    pub fn decode(bytes: &[u8]) -> Result<RouterSnapshot, SnapshotDecodeError> {
        match bytes.split_first() {
            Some((&SNAPSHOT_FORMAT, body)) => {
                rmp_serde::from_slice(body).map_err(|e| SnapshotDecodeError::Corrupt(e.to_string()))
            }
            Some((format, _)) => Err(SnapshotDecodeError::UnknownFormat(*format)),
            None => Err(SnapshotDecodeError::Empty),
        }
    }
}

impl Router {
    /// Copy the log-derived state as of the last dispatched id.
    ///
    /// Call from any task; it holds the lock only to share the retained and
    /// parked messages and copy the wills and undelivered ids, so dispatch
    /// waits for that copy and not for any encoding or write.
    pub fn snapshot(&self) -> RouterSnapshot {
        let state = self.lock();
        RouterSnapshot {
            at: state.last_dispatched,
            retained: state.retained.values().cloned().collect(),
            kv: state.kv.to_snapshot(),
        }
    }

    /// Create a router in the state `snapshot` was taken in, with no sessions;
    /// dispatch the messages after [`RouterSnapshot::at`] next.
    ///
    /// `queue_capacity` and `first_session` are as in [`Router::new`].
    pub fn restore(
        snapshot: RouterSnapshot,
        queue_capacity: usize,
        first_session: SessionId,
    ) -> Arc<Router> {
        let state = State {
            next_session: first_session.max(1),
            next_subscription: 1,
            last_dispatched: snapshot.at,
            retained: snapshot
                .retained
                .into_iter()
                .map(|(id, message)| {
                    (
                        (message.realm.clone(), message.topic.clone()),
                        (id, message),
                    )
                })
                .collect(),
            kv: KvState::from_snapshot(snapshot.kv),
            ..Default::default()
        };
        Router::with_state(state, queue_capacity)
    }
}
