//! A simulated node: a core, its disk (synced state plus unsynced writes), and
//! the shell's FIFO that enforces the Persist rule.

use ordo_common::proto::{Action, Micros, Msg, NodeId};
use ordo_entry::cluster::{EntryConfig, EntryCore, EntryDisk, EntryWrite};
use ordo_ndb::cluster::{NdbConfig, NdbDisk, NdbNode, NdbWrite};
use ordo_sync::log::{SyncConfig, SyncDisk, SyncNode, SyncWrite};
use std::collections::VecDeque;

/// What the simulator needs from a role's core.
pub trait Role: Sized {
    /// Its static configuration.
    type Config: Clone;
    /// Its durable state.
    type Disk: Clone + Default;
    /// One durable write.
    type Write: Clone;
    /// Rebuild from the synced disk.
    fn recover(cfg: Self::Config, disk: Self::Disk, now: Micros) -> Self;
    /// Apply a write to a disk.
    fn apply(disk: &mut Self::Disk, w: &Self::Write);
    /// Feed a message.
    fn message(&mut self, now: Micros, from: NodeId, msg: Msg);
    /// Feed a timer tick.
    fn tick(&mut self, now: Micros);
    /// Drain actions.
    fn actions(&mut self) -> Vec<Action<Self::Write>>;
}

impl Role for SyncNode {
    type Config = SyncConfig;
    type Disk = SyncDisk;
    type Write = SyncWrite;
    fn recover(cfg: SyncConfig, disk: SyncDisk, now: Micros) -> Self {
        SyncNode::recover(cfg, disk, now)
    }
    fn apply(disk: &mut SyncDisk, w: &SyncWrite) {
        disk.apply(w)
    }
    fn message(&mut self, now: Micros, from: NodeId, msg: Msg) {
        self.handle_message(now, from, msg)
    }
    fn tick(&mut self, now: Micros) {
        self.handle_tick(now)
    }
    fn actions(&mut self) -> Vec<Action<SyncWrite>> {
        self.take_actions()
    }
}

impl Role for NdbNode {
    type Config = NdbConfig;
    type Disk = NdbDisk;
    type Write = NdbWrite;
    fn recover(cfg: NdbConfig, disk: NdbDisk, now: Micros) -> Self {
        NdbNode::recover(cfg, disk, now)
    }
    fn apply(disk: &mut NdbDisk, w: &NdbWrite) {
        disk.apply(w)
    }
    fn message(&mut self, now: Micros, from: NodeId, msg: Msg) {
        self.handle_message(now, from, msg)
    }
    fn tick(&mut self, now: Micros) {
        self.handle_tick(now)
    }
    fn actions(&mut self) -> Vec<Action<NdbWrite>> {
        self.take_actions()
    }
}

impl Role for EntryCore {
    type Config = EntryConfig;
    type Disk = EntryDisk;
    type Write = EntryWrite;
    fn recover(cfg: EntryConfig, disk: EntryDisk, now: Micros) -> Self {
        EntryCore::recover(cfg, disk, now)
    }
    fn apply(disk: &mut EntryDisk, w: &EntryWrite) {
        disk.apply(w)
    }
    fn message(&mut self, now: Micros, from: NodeId, msg: Msg) {
        self.handle_message(now, from, msg)
    }
    fn tick(&mut self, now: Micros) {
        self.handle_tick(now)
    }
    fn actions(&mut self) -> Vec<Action<EntryWrite>> {
        self.take_actions()
    }
}

/// An action that left the node (the world routes it).
pub type Effect = Action<()>;

/// One simulated node of role `R`.
pub struct SimNode<R: Role> {
    /// Its address.
    pub id: NodeId,
    /// Its configuration (reused on restart).
    pub cfg: R::Config,
    /// The running core, `None` while crashed.
    pub core: Option<R>,
    /// What survives a crash.
    pub synced: R::Disk,
    /// Writes not yet synced, with their sequence numbers.
    pending: VecDeque<(u64, R::Write)>,
    written: u64,
    /// The newest write emitted as `Persist` (a `WriteBehind` holds nothing back and starts
    /// no fsync; the next `Persist`'s covers it).
    persisted: u64,
    synced_seq: u64,
    /// Whether an fsync is in flight.
    pub fsync_busy: bool,
    /// Bumped on every crash, so stale fsync completions are ignored.
    pub epoch: u64,
    /// Actions waiting for an fsync: (writes that must be synced first, action).
    blocked: VecDeque<(u64, Effect)>,
    /// Mutation: keep writes in memory only and act at once (fox-wamp's in-memory drafts).
    pub memory_only: bool,
    /// Mutation: run every `Persist` as a `WriteBehind` (act at once, sync only with a later
    /// real `Persist`, of which there is none: a crash loses them).
    pub persist_behind: bool,
}

impl<R: Role> SimNode<R> {
    /// Create a node with an empty disk.
    pub fn new(id: NodeId, cfg: R::Config) -> Self {
        let core = R::recover(cfg.clone(), R::Disk::default(), 0);
        SimNode {
            id,
            cfg,
            core: Some(core),
            synced: R::Disk::default(),
            pending: VecDeque::new(),
            written: 0,
            persisted: 0,
            synced_seq: 0,
            fsync_busy: false,
            epoch: 0,
            blocked: VecDeque::new(),
            memory_only: false,
            persist_behind: false,
        }
    }

    /// Tell whether the node is up.
    pub fn up(&self) -> bool {
        self.core.is_some()
    }

    /// Run `f` on the core, then route its actions: writes to the disk, the rest
    /// out now or after the fsync covering every write emitted before them.
    pub fn drive(&mut self, f: impl FnOnce(&mut R)) -> Vec<Effect> {
        let Some(core) = self.core.as_mut() else {
            return Vec::new();
        };
        f(core);
        let actions = core.actions();
        let mut out = Vec::new();
        for a in actions {
            let effect = match a {
                Action::Persist(w) if !self.persist_behind => {
                    self.written += 1;
                    self.persisted = self.written;
                    self.pending.push_back((self.written, w));
                    continue;
                }
                Action::Persist(w) | Action::WriteBehind(w) => {
                    self.written += 1;
                    self.pending.push_back((self.written, w));
                    continue;
                }
                Action::Send { to, msg } => Action::Send { to, msg },
                Action::Ack { publisher, seq, id } => Action::Ack { publisher, seq, id },
                Action::Deliver { id, body } => Action::Deliver { id, body },
            };
            let needed = if self.memory_only { 0 } else { self.persisted };
            if self.blocked.is_empty() && needed <= self.synced_seq {
                out.push(effect);
            } else {
                self.blocked.push_back((needed, effect));
            }
        }
        out
    }

    /// Return the writes emitted and not yet synced, oldest first (a store's reads see them).
    pub fn pending_writes(&self) -> impl Iterator<Item = &R::Write> {
        self.pending.iter().map(|(_, w)| w)
    }

    /// Start an fsync if writes are pending and none is running; return what it will cover.
    pub fn start_fsync(&mut self) -> Option<u64> {
        if self.fsync_busy
            || self.persisted <= self.synced_seq
            || self.core.is_none()
            || self.memory_only
        {
            return None;
        }
        self.fsync_busy = true;
        Some(self.written)
    }

    /// Complete an fsync covering writes up to `upto`; return the actions it releases.
    pub fn fsync_done(&mut self, upto: u64) -> Vec<Effect> {
        self.fsync_busy = false;
        while self.pending.front().is_some_and(|(s, _)| *s <= upto) {
            if let Some((_, w)) = self.pending.pop_front() {
                R::apply(&mut self.synced, &w);
            }
        }
        self.synced_seq = self.synced_seq.max(upto);
        let mut out = Vec::new();
        while self
            .blocked
            .front()
            .is_some_and(|(n, _)| *n <= self.synced_seq)
        {
            if let Some((_, e)) = self.blocked.pop_front() {
                out.push(e);
            }
        }
        out
    }

    /// Lose power: unsynced writes and queued actions vanish with the core. Returns how many
    /// of the lost writes were written behind after the last `Persist` (nothing covered them).
    pub fn crash(&mut self) -> usize {
        let behind = self
            .pending
            .iter()
            .filter(|(seq, _)| *seq > self.persisted)
            .count();
        self.core = None;
        self.pending.clear();
        self.blocked.clear();
        self.written = self.synced_seq;
        self.persisted = self.persisted.min(self.synced_seq);
        self.fsync_busy = false;
        self.epoch += 1;
        behind
    }

    /// Start again from the synced disk.
    pub fn restart(&mut self, now: Micros) {
        if self.core.is_none() {
            self.core = Some(R::recover(self.cfg.clone(), self.synced.clone(), now));
        }
    }
}

/// The object-safe part of [`Role`] the world drives.
pub trait DynRole {
    /// Feed a message.
    fn message(&mut self, now: Micros, from: NodeId, msg: Msg);
    /// Feed a timer tick.
    fn tick(&mut self, now: Micros);
}

impl<R: Role> DynRole for R {
    fn message(&mut self, now: Micros, from: NodeId, msg: Msg) {
        Role::message(self, now, from, msg)
    }
    fn tick(&mut self, now: Micros) {
        Role::tick(self, now)
    }
}
