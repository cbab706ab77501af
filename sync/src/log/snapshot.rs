//! Snapshots of the segment machine for [`SyncNode`]: taken when the applied log grows past
//! the threshold, and sent to a follower that needs entries the leader no longer holds.
//!
//! Safety (docs/protocol.md §4, §7): a snapshot covers only applied, so committed, entries;
//! its write drops the covered prefix atomically, and a follower acks an installed snapshot
//! only after the write (the Persist rule), so no committed entry is lost from a quorum.
//! A snapshot holds the machine's window only; what left it is archived in a write before the
//! snapshot's (archive.rs), so both stay bounded by `resolution_window`.

use super::machine::Machine;
use super::{Role, SyncNode, SyncWrite};
use ordo_common::proto::{Msg, NodeId, SyncSnapshot};

impl SyncNode {
    /// Snapshot the machine at `applied` once that is `snapshot_threshold` past the last one.
    ///
    /// Memory drops the covered prefix at once; the disk in the same write, so the log
    /// entries are never gone from disk before the snapshot that covers them is durable.
    pub(super) fn maybe_take_snapshot(&mut self) {
        let threshold = self.cfg.snapshot_threshold.max(1);
        if self.applied < self.snap_index + threshold {
            return;
        }
        let Some(last_term) = self.term_at(self.applied) else {
            return;
        };
        let snapshot = self.machine.snapshot(self.applied, last_term);
        self.compact_to(self.applied, last_term);
        // What left the window goes to the archive before the entries deriving it go.
        self.archive_unarchived();
        self.persist(SyncWrite::Snapshot(snapshot));
    }

    /// Drop the in-memory log up to `index`, which becomes the snapshot's position.
    fn compact_to(&mut self, index: u64, term: u64) {
        let covered = self.position(index + 1).min(self.disk.log.len());
        self.disk.log.drain(..covered);
        (self.snap_index, self.snap_term) = (index, term);
    }

    /// Send `peer` the machine at the applied index (committed), at most once per election
    /// timeout while it stays unanswered: a snapshot can be large.
    pub(super) fn send_snapshot(&mut self, peer: u32) {
        let resend_after = self.cfg.election_timeout.1;
        let (now, applied) = (self.now, self.applied);
        let Some(last_term) = self.term_at(applied) else {
            return;
        };
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if l.snapshot_sent
            .get(&peer)
            .is_some_and(|at| now < at.saturating_add(resend_after))
        {
            return;
        }
        l.snapshot_sent.insert(peer, now);
        l.sent.insert(peer, applied);
        let msg = Msg::InstallSnapshot {
            term: self.disk.term,
            snapshot: self.machine.snapshot(applied, last_term),
        };
        self.send(NodeId::Sync(peer), msg);
    }

    /// Install a leader's snapshot unless the applied machine already covers it; ack after
    /// the write (the Persist rule orders the ack behind it).
    pub(super) fn on_install_snapshot(
        &mut self,
        now: u64,
        peer: u32,
        term: u64,
        snapshot: SyncSnapshot,
    ) {
        if !self.heed_leader(now, peer, term) {
            let ack = Msg::SnapshotAck {
                term: self.disk.term,
                last_index: 0,
            };
            self.send(NodeId::Sync(peer), ack);
            return;
        }
        let last_index = snapshot.last_index;
        if last_index > self.applied {
            self.install(snapshot);
        }
        // Up to `last_index` this log is the committed one: applied, or just installed.
        let ack = Msg::SnapshotAck { term, last_index };
        self.send(NodeId::Sync(peer), ack);
    }

    fn install(&mut self, snapshot: SyncSnapshot) {
        let (index, term) = (snapshot.last_index, snapshot.last_term);
        if self.term_at(index) != Some(term) && self.last_index() > index {
            // The entries after it do not follow the committed entry at `index`, so none is
            // committed (log matching): drop them, as a Draft's conflict would.
            let keep = self.position(index + 1).min(self.disk.log.len());
            self.disk.log.truncate(keep);
            self.persist(SyncWrite::Log {
                from: index + 1,
                entries: Vec::new(),
            });
        }
        let start = snapshot
            .resolutions
            .first()
            .map_or(snapshot.next, |r| r.base);
        self.archive_before_install(start);
        self.machine = Machine::from_snapshot(&snapshot, self.cfg.abandon_moves_last)
            .with_window(self.cfg.resolution_window);
        self.collect_spilled();
        self.applied = index;
        self.commit = self.commit.max(index);
        self.compact_to(index, term);
        self.persist(SyncWrite::Snapshot(snapshot));
    }

    /// A follower holds the log up to `last_index`: go on with Drafts from there.
    pub(super) fn on_snapshot_ack(&mut self, peer: u32, term: u64, last_index: u64) {
        if term != self.disk.term || last_index == 0 {
            return;
        }
        let last = self.last_index();
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        l.snapshot_sent.remove(&peer);
        let m = l.matched.entry(peer).or_insert(0);
        *m = (*m).max(last_index.min(last));
        let m = *m;
        let n = l.next.entry(peer).or_insert(1);
        *n = (*n).max(m + 1);
        let more = *n <= last;
        self.advance_commit();
        if more {
            self.send_draft(peer);
        }
    }
}
