//! The entry's router snapshots: written now and then, read once at start-up.
//!
//! ```text
//!  every `router_snapshot_every` ids ──► Router::snapshot (lock held for a copy)
//!  and on shutdown                          │ blocking task: encode, Store::commit_snapshot (fsync)
//!                                           ▼
//!  start-up ◄── newest usable snapshot ── store ──► Router::restore, dispatch (at, last] only
//! ```
//!
//! A snapshot at `at` is written after every id up to `at` was written to the
//! store (the sequencer and the cluster delivery task dispatch only what they
//! wrote), and its write is synced, which makes those writes durable too, the
//! unsynced cache writes of a cluster entry included. So the store always
//! holds the log up to a snapshot's `at`, and the replay after it starts where
//! the snapshot ends. A snapshot that cannot be read, does not decode, has an
//! unknown format or does not fit the stored log is skipped with a warning, and
//! the next older one (or the whole log) is used: slower, never wrong.

use crate::router::{Router, RouterSnapshot, SessionId};
use ordo_common::PermanentId;
use ordo_ndb::{Store, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Snapshots kept in the store: the newest, and one to fall back on if it is unreadable.
const KEEP: usize = 2;
/// How often the snapshot task looks at how far dispatch has come.
const POLL: Duration = Duration::from_millis(200);
/// Messages read from the store per step of the replay.
const REPLAY_CHUNK: usize = 4096;

/// How the router was brought back at start-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// The id of the snapshot restored, if one was usable.
    pub snapshot_at: Option<PermanentId>,
    /// Messages dispatched from the stored log after it (the whole log without one).
    pub replayed: u64,
    /// The store's last id at start-up.
    pub last: PermanentId,
}

/// Bring a new router to the state it had before the node stopped: restore
/// the newest usable snapshot, then dispatch the stored log after it, with no
/// session listening.
///
/// Retained values, parked `watch` publishes, wills and which ids were
/// delivered are functions of the log in id order, the same on every node;
/// `last` is the store's last id.
pub(crate) fn restore_router(
    store: &Store,
    last: PermanentId,
    queue_capacity: usize,
    first_session: SessionId,
) -> Result<(Arc<Router>, Restored), StoreError> {
    let started = Instant::now();
    let snapshot = newest_usable(store, last);
    let snapshot_at = snapshot.as_ref().map(RouterSnapshot::at);
    let router = match snapshot {
        Some(snapshot) => Router::restore(snapshot, queue_capacity, first_session),
        None => Router::new(PermanentId::ZERO, Vec::new(), queue_capacity, first_session),
    };
    let from = snapshot_at.unwrap_or(PermanentId::ZERO);
    let replayed = replay(store, &router, from, last)?;
    let ms = started.elapsed().as_millis() as u64;
    let retained = router.retained_count();
    match snapshot_at {
        Some(at) => tracing::info!(
            at = at.0,
            replayed,
            last = last.0,
            retained,
            ms,
            "router restored from snapshot"
        ),
        None => tracing::info!(
            messages = replayed,
            retained,
            ms,
            "router rebuilt from the log"
        ),
    }
    Ok((
        router,
        Restored {
            snapshot_at,
            replayed,
            last,
        },
    ))
}

/// Return the newest snapshot that decodes and fits a log ending at `last`.
fn newest_usable(store: &Store, last: PermanentId) -> Option<RouterSnapshot> {
    let ids = match store.snapshot_ids() {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "router snapshots unreadable; replaying the whole log");
            return None;
        }
    };
    for at in ids {
        match usable(store, at, last) {
            Ok(snapshot) => return Some(snapshot),
            Err(reason) => {
                tracing::warn!(at = at.0, last = last.0, reason, "router snapshot ignored")
            }
        }
    }
    None
}

fn usable(store: &Store, at: PermanentId, last: PermanentId) -> Result<RouterSnapshot, String> {
    if at > last {
        return Err("it is ahead of the stored log".into());
    }
    if at > PermanentId::ZERO && !matches!(store.get(at), Ok(Some(_))) {
        return Err("the store lacks the message it was taken at".into());
    }
    let bytes = store
        .get_snapshot(at)
        .map_err(|e| e.to_string())?
        .ok_or("it vanished")?;
    let snapshot = RouterSnapshot::decode(&bytes).map_err(|e| e.to_string())?;
    if snapshot.at() != at {
        return Err(format!("it says it was taken at {}", snapshot.at()));
    }
    Ok(snapshot)
}

/// Dispatch the stored messages in `(after, last]` in id order; return how many.
fn replay(
    store: &Store,
    router: &Router,
    after: PermanentId,
    last: PermanentId,
) -> Result<u64, StoreError> {
    let mut at = after;
    let mut count = 0u64;
    let mut next_log = count + 1_000_000;
    while at < last {
        let chunk = store.read_range(at, last, REPLAY_CHUNK)?;
        let Some(&(top, _)) = chunk.last() else {
            break;
        };
        count += chunk.len() as u64;
        let batch: Vec<_> = chunk.into_iter().map(|(id, m)| (id, Arc::new(m))).collect();
        router.dispatch(&batch);
        at = top;
        if count >= next_log {
            tracing::info!(
                at = at.0,
                last = last.0,
                "replaying the log into the router"
            );
            next_log += 1_000_000;
        }
    }
    Ok(count)
}

/// Writes router snapshots to the store, one at a time.
pub(crate) struct Snapshotter {
    store: Store,
    router: Arc<Router>,
    /// Write one when this many ids were dispatched since the last (0: never on its own).
    every: u64,
    /// The `at` of the newest snapshot written; held for a whole write, so writes never overlap.
    written: Mutex<PermanentId>,
    /// The same id, for the snapshot task to read without waiting on a write.
    written_at: AtomicU64,
}

impl Snapshotter {
    /// Take over from a start-up that restored the snapshot at `restored_at` (or none).
    pub(crate) fn new(
        store: Store,
        router: Arc<Router>,
        every: u64,
        restored_at: Option<PermanentId>,
    ) -> Arc<Snapshotter> {
        Arc::new(Snapshotter {
            store,
            router,
            every,
            written: Mutex::new(restored_at.unwrap_or(PermanentId::ZERO)),
            written_at: AtomicU64::new(restored_at.map_or(0, |at| at.0)),
        })
    }

    /// Write a snapshot of the router as it is now, unless it is the newest
    /// already stored; return its id. Blocks: run it on a blocking thread.
    pub(crate) fn write_now(&self) -> Result<Option<PermanentId>, StoreError> {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = Instant::now();
        let snapshot = self.router.snapshot();
        let at = snapshot.at();
        if at <= *written {
            return Ok(None);
        }
        let bytes = snapshot.encode();
        drop(snapshot);
        self.store.commit_snapshot(at, &bytes, KEEP)?;
        *written = at;
        self.written_at.store(at.0, Ordering::Release);
        tracing::info!(
            at = at.0,
            bytes = bytes.len(),
            ms = started.elapsed().as_millis() as u64,
            "router snapshot written"
        );
        Ok(Some(at))
    }

    /// Write a snapshot whenever `every` ids were dispatched since the last
    /// one, until `shutdown` turns `true` or a write fails.
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.every == 0 {
            return;
        }
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let written = self.written_at.load(Ordering::Acquire);
            if self.router.last_dispatched().0 < written.saturating_add(self.every) {
                continue;
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.write_now()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "router snapshot not written; no more snapshots");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "router snapshot task panicked; no more snapshots");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "router_snapshot_tests.rs"]
mod tests;
