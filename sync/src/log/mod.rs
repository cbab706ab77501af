//! The sync cluster's replicated log: Raft with the blueprint's names, sans-IO.
//!
//! ```text
//!  Stored (f+1 distinct ndbs, one Elect) ──► leader: as an Over
//!  Over (entries) ──► leader: pending ──► LogEntry{term, elects} ──Persist──► Draft ──► followers
//!                                                     ▲                              │ Persist
//!                                                     └──────────── DraftAck ◄───────┘
//!  Abandon (operator) ──► leader: abandons ──► appended with the next entry
//!  commit (f+1 durable, own term) ──► Machine::apply in log order ──► Resolved ──► ndbs, entries
//!                                     (abandons applied after the entry's elects: notices)
//!  election: PickChallenger / Vote, term and vote persisted before answering
//!  applied - snapshot >= threshold ──► SyncWrite::Snapshot (machine at applied; covered prefix dropped)
//!  follower's next below the leader's log ──► InstallSnapshot ──Persist──► SnapshotAck
//!  machine window full ──► oldest resolution evicted ──► unarchived ──SyncWrite::Archive──►
//!      store (with the next snapshot); old Over / FetchResolved ──► shell answers from the store
//!  installed past its own next ──► archive gap ──FetchResolved──► peers ──Resolved──► Archive
//! ```
//!
//! [`SyncNode`] is a plain struct: feed it with [`SyncNode::handle_message`] and
//! [`SyncNode::handle_tick`], drain [`SyncNode::poll_action`], wake it at
//! [`SyncNode::poll_timeout`]. It reads no clock; randomness for election
//! timeouts comes from a seed in its config. See `docs/protocol.md`.

mod archive;
pub mod machine;
mod raft;
mod snapshot;
#[cfg(test)]
mod tests;

pub use archive::{answer_from_archive, ArchiveRead};
use machine::Machine;
use ordo_common::proto::{Action, Elect, LogEntry, Micros, NodeId, Resolution, SyncSnapshot};
use ordo_common::rng::XorShift64Star;
use ordo_common::PermanentId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A running node's election timeout, in milliseconds: it stands for leader after a random
/// time in `[T, 2T)` without hearing from one. A leader blocked in a slow fsync sends nothing
/// meanwhile, and on a shared disk every node's fsyncs stalled together for 0.2-0.4 s now and
/// then; with 150-300 ms such stalls deposed healthy leaders (three elections in one 30 s run),
/// and each change held acks back for up to 0.8 s (docs/performance.md, nineteenth day). etcd
/// and Kafka's KRaft default to 1 s as well. [`SyncConfig::new`] keeps a shorter one, for the
/// simulator's and tests' virtual time.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1_000;

/// Default of [`SyncConfig::resolution_window`]: about 3.5 MB of resolutions in memory.
pub const DEFAULT_RESOLUTION_WINDOW: usize = 100_000;
/// Default [`SyncConfig::max_inflight`].
pub const DEFAULT_MAX_INFLIGHT: u64 = 2;

/// Static configuration of one sync node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SyncConfig {
    /// This node's id.
    pub id: u32,
    /// Every sync node's id, this one included.
    pub peers: Vec<u32>,
    /// Every ndb (receives ADVANCE_SEGMENT_RESOLVED).
    pub ndbs: Vec<u32>,
    /// Every entry owner (receives ADVANCE_SEGMENT_RESOLVED).
    pub entries: Vec<u64>,
    /// Election timeout range in microseconds, `[min, max)`.
    pub election_timeout: (Micros, Micros),
    /// Leader heartbeat (and Draft resend) interval.
    pub heartbeat: Micros,
    /// Most uncommitted entries the leader keeps in flight before batching further.
    pub max_inflight: u64,
    /// Most log entries in one Draft.
    pub max_draft: usize,
    /// Most resolutions in one answer to FetchResolved.
    pub max_resolutions: usize,
    /// Seed for election-timeout jitter.
    pub seed: u64,
    /// Take a snapshot once this many applied entries follow the last one (at least 1).
    pub snapshot_threshold: u64,
    /// Most resolutions the segment machine keeps in memory (at least 1); older ones are
    /// archived in the store with the next snapshot and answered from there. Every sync node
    /// of a cluster must use the same value (machines are compared by applied index).
    pub resolution_window: usize,
    /// Testing only: commit with this many nodes instead of a majority (breaks safety).
    pub commit_quorum_override: Option<usize>,
    /// Testing only: propose a segment on this many ndbs' `Stored` instead of a majority
    /// (breaks durability, as an entry's `Over` on its first `Trim` does).
    pub stored_quorum_override: Option<usize>,
    /// Testing only: an abandon also moves the owner's last segment to `below - 1` (the
    /// one-line plan), so a segment chained to an abandoned one can be elected (breaks FIFO).
    pub abandon_moves_last: bool,
    /// Testing only: drop evicted resolutions without archiving them (loses old answers).
    pub skip_archive: bool,
}

impl SyncConfig {
    /// Return a configuration for node `id` with the defaults, and an election timeout of
    /// 150-300 ms (virtual time in the simulator and tests; a running node sets its own,
    /// [`DEFAULT_ELECTION_TIMEOUT_MS`]).
    pub fn new(id: u32, peers: Vec<u32>, ndbs: Vec<u32>, entries: Vec<u64>, seed: u64) -> Self {
        SyncConfig {
            id,
            peers,
            ndbs,
            entries,
            election_timeout: (150_000, 300_000),
            heartbeat: 50_000,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_draft: 64,
            max_resolutions: 256,
            seed,
            snapshot_threshold: 10_000,
            resolution_window: DEFAULT_RESOLUTION_WINDOW,
            commit_quorum_override: None,
            stored_quorum_override: None,
            abandon_moves_last: false,
            skip_archive: false,
        }
    }

    fn quorum(&self) -> usize {
        self.commit_quorum_override
            .unwrap_or_else(|| ordo_common::proto::majority(self.peers.len()))
    }

    /// How many ndbs' `Stored` stand for an entry's `Over`: as many as its `Trim`s.
    fn stored_quorum(&self) -> usize {
        self.stored_quorum_override
            .unwrap_or_else(|| ordo_common::proto::majority(self.ndbs.len()))
    }
}

/// What a sync node keeps on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SyncDisk {
    /// Current term.
    pub term: u64,
    /// Whom this node voted for in `term`.
    pub voted_for: Option<u32>,
    /// The newest snapshot: the machine after the log up to its `last_index`.
    pub snapshot: Option<Box<SyncSnapshot>>,
    /// The log after the snapshot; index `i` (from 1) is `log[i - snapshot_index() - 1]`.
    pub log: Vec<LogEntry>,
    /// Resolutions evicted from the machine's window, by `base`. [`crate::SyncStore`] keeps
    /// them on disk and does not load them (its shell reads them on demand); a recovering
    /// core drops this map: it never reads the archive itself.
    pub archive: BTreeMap<PermanentId, Resolution>,
    /// Ids `[from, to)` whose resolutions the archive may lack (left by an InstallSnapshot
    /// past this node's own `next`); filled from peers.
    pub archive_gap: Option<(PermanentId, PermanentId)>,
}

/// One durable write of a sync node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SyncWrite {
    /// Term and vote.
    Hard {
        /// Current term.
        term: u64,
        /// Vote in that term.
        voted_for: Option<u32>,
    },
    /// Drop every entry from index `from` on, then append `entries` there.
    ///
    /// Entries at or below the snapshot's index are committed and covered: they are skipped.
    Log {
        /// First index written (from 1).
        from: u64,
        /// Entries from that index on.
        entries: Vec<LogEntry>,
    },
    /// Keep this snapshot and drop every log entry it covers, in one atomic write; entries
    /// after its `last_index` stay. A snapshot not newer than the one held changes nothing.
    Snapshot(SyncSnapshot),
    /// Add resolutions to the archive and set its gap. Emitted before the `Snapshot` whose
    /// machine no longer holds them, so a recovered prefix of writes never loses one.
    Archive {
        /// Resolutions to keep (a re-archived one is the same record again).
        resolutions: Vec<Resolution>,
        /// The archive's gap after this write.
        gap: Option<(PermanentId, PermanentId)>,
    },
}

impl SyncDisk {
    /// Apply a write, as the shell does when it makes it durable.
    pub fn apply(&mut self, w: &SyncWrite) {
        match w {
            SyncWrite::Hard { term, voted_for } => {
                self.term = *term;
                self.voted_for = *voted_for;
            }
            SyncWrite::Log { from, entries } => {
                let snap = self.snapshot_index();
                let (at, skip) = log_write_position(*from, snap, self.last_index());
                self.log
                    .truncate(usize::try_from(at - snap - 1).unwrap_or(usize::MAX));
                self.log.extend(entries.iter().skip(skip).cloned());
            }
            SyncWrite::Snapshot(snapshot) => {
                let snap = self.snapshot_index();
                if snapshot.last_index <= snap {
                    return;
                }
                let covered = usize::try_from(snapshot.last_index - snap).unwrap_or(usize::MAX);
                self.log.drain(..covered.min(self.log.len()));
                self.snapshot = Some(Box::new(snapshot.clone()));
            }
            SyncWrite::Archive { resolutions, gap } => {
                self.archive
                    .extend(resolutions.iter().map(|r| (r.base, *r)));
                self.archive_gap = *gap;
            }
        }
    }

    /// Return the index of the last entry the snapshot covers (0 without one).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.last_index)
    }

    /// Return the index of the last log entry (the snapshot's if the log after it is empty).
    pub fn last_index(&self) -> u64 {
        self.snapshot_index() + self.log.len() as u64
    }
}

/// Return where a `SyncWrite::Log {from, ..}` lands on a log holding `snap + 1 ..= last`,
/// and how many of its leading entries the snapshot covers (skipped).
///
/// `from` 0 counts as 1, and a write past the end lands at the end: the store and
/// [`SyncDisk::apply`] both follow this one rule.
pub fn log_write_position(from: u64, snap: u64, last: u64) -> (u64, usize) {
    let start = from.max(1);
    let skip = usize::try_from((snap + 1).saturating_sub(start)).unwrap_or(usize::MAX);
    let at = start.max(snap + 1).min(last + 1);
    (at, skip)
}

/// The role a node plays in its current term.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows `leader` (if known).
    Follower {
        /// The leader of this term, once heard from.
        leader: Option<u32>,
    },
    /// Asks for votes.
    Candidate {
        /// Votes granted so far, its own included.
        votes: BTreeSet<u32>,
    },
    /// Leads this term.
    Leader(Box<Leading>),
}

/// A leader's volatile state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Leading {
    /// Next index to send to each peer.
    next: BTreeMap<u32, u64>,
    /// Highest index known durable on each peer.
    matched: BTreeMap<u32, u64>,
    /// Highest index sent to each peer: an ack does not resend what is already on its way.
    sent: BTreeMap<u32, u64>,
    /// OVERs waiting to be proposed, by `(owner, segment)`.
    pending: BTreeMap<(u64, u64), Elect>,
    /// Segments some ndbs reported `Stored`, with who did, until a quorum makes an OVER.
    stored: BTreeMap<Elect, BTreeSet<u32>>,
    /// Operator abandons waiting to be proposed: owner → highest `below` asked.
    abandons: BTreeMap<u64, u64>,
    /// When each lagging peer was last sent an InstallSnapshot (resent only after a while).
    snapshot_sent: BTreeMap<u32, Micros>,
}

/// One sync node: the consensus log plus the segment machine it feeds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SyncNode {
    /// Boxed: the node is moved and cloned whole by the simulator and the model.
    cfg: Box<SyncConfig>,
    /// Term, vote and the log after the snapshot; `disk.snapshot` stays `None` (its state
    /// is in `machine` or applied past it, its position in `snap_index`/`snap_term`).
    disk: SyncDisk,
    snap_index: u64,
    snap_term: u64,
    role: Role,
    commit: u64,
    applied: u64,
    machine: Machine,
    /// Resolutions evicted from the window since the last snapshot: the log entries after
    /// the snapshot derive them, and the next snapshot's write archives them first.
    unarchived: BTreeMap<PermanentId, Resolution>,
    /// The archive's gap, as durable (or about to be).
    archive_gap: Option<(PermanentId, PermanentId)>,
    /// When to ask peers for the gap again.
    gap_fetch_due: Micros,
    /// The latest time an input brought (for resend intervals outside `handle_tick`).
    now: Micros,
    election_deadline: Micros,
    heartbeat_due: Micros,
    rng: XorShift64Star,
    out: VecDeque<Action<SyncWrite>>,
}

impl SyncNode {
    /// Start (or restart) a node from what its disk holds, at time `now`.
    ///
    /// The machine starts from the disk's snapshot (committed and applied up to its index);
    /// the log after it is applied again once a leader tells the commit index.
    pub fn recover(cfg: SyncConfig, mut disk: SyncDisk, now: Micros) -> Self {
        let rng = XorShift64Star(
            cfg.seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(u64::from(cfg.id) + 1)
                | 1,
        );
        // The archive stays on disk; the shell answers from it.
        disk.archive = BTreeMap::new();
        let archive_gap = disk.archive_gap;
        let (machine, snap_index, snap_term) = match disk.snapshot.take() {
            Some(s) => (
                Machine::from_snapshot(&s, cfg.abandon_moves_last),
                s.last_index,
                s.last_term,
            ),
            None => (
                Machine::default().with_abandon_moving_last(cfg.abandon_moves_last),
                0,
                0,
            ),
        };
        let mut machine = machine.with_window(cfg.resolution_window);
        // A window smaller than the snapshot's (a changed setting): its next write archives them.
        let unarchived = machine
            .take_spilled()
            .into_iter()
            .map(|r| (r.base, r))
            .collect();
        let mut node = SyncNode {
            cfg: Box::new(cfg),
            disk,
            snap_index,
            snap_term,
            role: Role::Follower { leader: None },
            commit: snap_index,
            applied: snap_index,
            machine,
            unarchived,
            archive_gap,
            gap_fetch_due: now,
            now,
            election_deadline: 0,
            heartbeat_due: 0,
            rng,
            out: VecDeque::new(),
        };
        node.reset_election(now);
        node
    }

    /// Return the next action to run, obeying the Persist rule of [`Action`].
    pub fn poll_action(&mut self) -> Option<Action<SyncWrite>> {
        self.out.pop_front()
    }

    /// Return every queued action, in order.
    pub fn take_actions(&mut self) -> Vec<Action<SyncWrite>> {
        self.out.drain(..).collect()
    }

    /// Return when [`SyncNode::handle_tick`] should next be called.
    pub fn poll_timeout(&self) -> Micros {
        match self.role {
            Role::Leader(_) => self.heartbeat_due,
            _ => self.election_deadline,
        }
    }

    /// Return the current term.
    pub fn term(&self) -> u64 {
        self.disk.term
    }

    /// Tell whether this node leads its current term.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    /// Return the commit index this node knows.
    pub fn commit_index(&self) -> u64 {
        self.commit
    }

    /// Return the applied segment machine.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Return this node's view of its disk (durable or about to be): term, vote and the log
    /// after the snapshot. Its `snapshot` is `None`: the snapshot's state is in
    /// [`SyncNode::machine`] (applied on from there), its index in [`SyncNode::snapshot_index`].
    pub fn disk(&self) -> &SyncDisk {
        &self.disk
    }

    /// Return this node's view of its log after the snapshot (durable or about to be): the
    /// entry at index `i` is `log()[i - snapshot_index() - 1]`.
    pub fn log(&self) -> &[LogEntry] {
        &self.disk.log
    }

    /// Return the index of the last entry the newest snapshot covers (0 without one).
    pub fn snapshot_index(&self) -> u64 {
        self.snap_index
    }

    /// Return the index of the last entry applied to the machine.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Return the index of the last log entry.
    pub fn last_index(&self) -> u64 {
        self.snap_index + self.disk.log.len() as u64
    }

    /// Return the entry at `index`, if the log after the snapshot holds it.
    pub fn entry(&self, index: u64) -> Option<&LogEntry> {
        let i = usize::try_from(index.checked_sub(self.snap_index + 1)?).ok()?;
        self.disk.log.get(i)
    }

    /// Return the term of the entry at `index`; `None` if beyond the log or compacted away.
    fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snap_index {
            return Some(self.snap_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// Return the position in `disk.log` of `index` (which must be after the snapshot).
    fn position(&self, index: u64) -> usize {
        usize::try_from(index.saturating_sub(self.snap_index + 1)).unwrap_or(usize::MAX)
    }

    fn send(&mut self, to: NodeId, msg: ordo_common::proto::Msg) {
        self.out.push_back(Action::Send { to, msg });
    }

    fn persist(&mut self, w: SyncWrite) {
        self.out.push_back(Action::Persist(w));
    }

    fn reset_election(&mut self, now: Micros) {
        let (lo, hi) = self.cfg.election_timeout;
        let jitter = self.rng.below(hi.saturating_sub(lo));
        self.election_deadline = now + lo + jitter;
    }
}

impl ordo_common::proto::Core for SyncNode {
    type Write = SyncWrite;

    fn handle_message(&mut self, now: Micros, from: NodeId, msg: ordo_common::proto::Msg) {
        SyncNode::handle_message(self, now, from, msg);
    }

    fn handle_tick(&mut self, now: Micros) {
        SyncNode::handle_tick(self, now);
    }

    fn poll_timeout(&self) -> Micros {
        SyncNode::poll_timeout(self)
    }

    fn take_actions(&mut self) -> Vec<Action<SyncWrite>> {
        SyncNode::take_actions(self)
    }
}
