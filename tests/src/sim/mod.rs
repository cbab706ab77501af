//! Deterministic cluster simulator: 3 sync, 3 ndb and 2 entry cores on a
//! virtual clock, driven by one seed.
//!
//! ```text
//!  seed ──► schedule: publishes, crashes/restarts, partitions, maybe a power cut (all nodes)
//!           network: loss, duplication, random delay (so reordering)
//!           disks: a write is durable only after a simulated fsync; a crash drops the rest
//!  some seeds: an entry dies for good, the operator abandons it, maybe it returns (abandon.rs)
//!  fault phase (2 s) ──► heal phase (all up, reliable network) ──► invariants (check.rs)
//! ```
//!
//! [`run`] returns the first violated invariant; `tests/tests/sim.rs` runs seed
//! ranges and prints how to replay a failure. A [`Mutation`] re-creates a known
//! bug so the checker can be shown to catch it.

pub mod abandon;
pub mod check;
pub mod node;
pub mod rng;

use node::{Effect, SimNode};
use ordo_common::proto::{Action, Body, Micros, Msg, NodeId};
use ordo_common::PermanentId;
use ordo_entry::cluster::{EntryConfig, EntryCore};
use ordo_ndb::cluster::{NdbConfig, NdbNode};
use ordo_sync::log::{answer_from_archive, SyncConfig, SyncDisk, SyncNode, SyncWrite};
use rng::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// A deliberate bug, to prove the invariant checks can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// The protocol as designed.
    None,
    /// Sync nodes keep term, vote and log in memory only (fox-wamp's drafts): a
    /// restarted sync forgets what it voted and accepted.
    SyncInMemory,
    /// A sync leader commits on its own view (quorum 1): decisions from a partial view,
    /// like fox-wamp's "first quorum of ELECTs seen".
    MinorityCommit,
    /// Entries send OVER on the first TRIM (fox-wamp's entry).
    FirstTrim,
    /// Ndbs apply an abandon notice on arrival, not once every segment elected before the
    /// Abandon is applied (the one-line `last[owner] = below - 1` plan).
    AbandonEarly,
    /// Sync nodes evict resolutions from their window without archiving them.
    EvictUnarchived,
    /// Ndbs write temporary bodies behind (`WriteBehind`), so a `Trim` may count bodies a
    /// crash then loses: what the ndb's `Apply` may do, its `Temp` may not.
    NdbTempBehind,
}

/// Knobs of one run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed everything derives from.
    pub seed: u64,
    /// The bug to inject, if any.
    pub mutation: Mutation,
    /// Length of the fault phase.
    pub fault_phase: Micros,
    /// Longest heal phase before liveness is declared failed.
    pub heal_limit: Micros,
}

impl SimConfig {
    /// The standard run for `seed`.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            mutation: Mutation::None,
            fault_phase: 2_000_000,
            heal_limit: 30_000_000,
        }
    }
}

/// What a run did, for reporting.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Messages published.
    pub published: usize,
    /// Messages acked.
    pub acked: usize,
    /// Permanent ids assigned.
    pub ordered: u64,
    /// Crashes (a power cut counts each node).
    pub crashes: usize,
    /// Whether this schedule cut power to every node.
    pub power_cut: bool,
    /// Whether an entry died for good and the operator abandoned it.
    pub abandoned: bool,
    /// Whether that entry came back afterwards.
    pub returned: bool,
    /// Acks to the returned entry's first publisher sessions.
    pub acked_after_return: usize,
    /// Whether the returned entry started below the floor and renumbered above it.
    pub renumbered: bool,
    /// Snapshots made durable on sync disks (taken or installed).
    pub snapshots: usize,
    /// InstallSnapshot messages a sync leader sent.
    pub installs_sent: usize,
    /// InstallSnapshot messages a follower installed (its snapshot moved).
    pub installs: usize,
    /// Sync restarts that started from a snapshot.
    pub snapshot_restarts: usize,
    /// Messages a sync shell answered from its archive (old Over, FetchResolved below memory).
    pub archive_answers: usize,
    /// Installed snapshots that left the follower's archive a gap to fetch from peers.
    pub archive_gaps: usize,
    /// An ndb's writes behind (`Apply`) that a crash lost before any `Persist` covered them.
    pub behind_lost: usize,
    /// `Stored` reports delivered to a sync node (ndbs reporting a direct Begin).
    pub stored_reports: usize,
}

const TICK: Micros = 5_000;
const SYNCS: u32 = 3;
const NDBS: u32 = 3;
const OWNERS: [u64; 2] = [1, 2];
const SNAPSHOT_THRESHOLDS: [u64; 3] = [4, 8, 16];
/// Resolutions a sync machine keeps in memory: a run orders a few hundred segments, so every
/// window evicts, and old Overs and FetchResolved go to the archive.
const RESOLUTION_WINDOWS: [usize; 3] = [1, 4, 32];

#[derive(Clone, Debug)]
enum Ev {
    Deliver { to: NodeId, from: NodeId, msg: Msg },
    Tick,
    Fsync { node: NodeId, epoch: u64, upto: u64 },
    Crash(NodeId),
    Restart(NodeId),
    PowerCut,
    Publish(u64),
    Partition { gen: u64, side: BTreeSet<NodeId> },
    Unpartition { gen: u64 },
    EndFault,
    CrashForGood(u64),
    Operator { owner: u64, below: u64 },
    Return(u64),
}

/// Per-publisher history of one run.
#[derive(Debug, Default)]
pub struct History {
    /// Every publish: body → (publisher, seq).
    pub published: BTreeMap<Body, (u64, u64)>,
    /// Acks: (publisher, seq) → id.
    pub acked: BTreeMap<(u64, u64), PermanentId>,
    /// Deliveries per entry incarnation, in order.
    pub delivered: BTreeMap<(u64, u64), Vec<(PermanentId, Body)>>,
}

/// The simulated cluster.
pub struct World {
    cfg: SimConfig,
    rng: Rng,
    now: Micros,
    seq: u64,
    events: BTreeMap<(Micros, u64), Ev>,
    /// Sync nodes.
    pub syncs: Vec<SimNode<SyncNode>>,
    /// Storage nodes.
    pub ndbs: Vec<SimNode<NdbNode>>,
    /// Entries.
    pub entries: Vec<SimNode<EntryCore>>,
    incarnation: BTreeMap<u64, u64>,
    publishers: BTreeMap<u64, Vec<(u64, u64)>>,
    loss: f64,
    dup: f64,
    max_delay: Micros,
    partition: Option<(u64, BTreeSet<NodeId>)>,
    faulty: bool,
    /// What happened, for the checks.
    pub history: History,
    /// The first violation seen while running.
    pub violation: Option<String>,
    /// Counters.
    pub stats: Stats,
    /// This seed's operator abandon, if any.
    pub abandon: Option<abandon::AbandonPlan>,
    /// Entries down for good (not restarted by faults or the heal phase).
    pub gone: BTreeSet<u64>,
    returned_publishers: BTreeSet<u64>,
    /// The dead entry's high-water mark and the operator's `below`.
    abandon_floor: Option<(u64, u64)>,
}

/// Body of publisher `p`'s message `s`: unique, and decodable by the checker.
pub fn body(p: u64, s: u64) -> Body {
    let mut v = p.to_be_bytes().to_vec();
    v.extend_from_slice(&s.to_be_bytes());
    Body::from(v)
}

/// Decode a body made by [`body`].
pub fn decode(b: &Body) -> Option<(u64, u64)> {
    let p = u64::from_be_bytes(b.get(0..8)?.try_into().ok()?);
    let s = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
    Some((p, s))
}

impl World {
    /// Build the cluster and the fault schedule for `cfg.seed`.
    pub fn new(cfg: SimConfig) -> World {
        let mut rng = Rng::new(cfg.seed);
        let sync_ids: Vec<u32> = (0..SYNCS).collect();
        let ndb_ids: Vec<u32> = (0..NDBS).collect();
        let syncs = sync_ids
            .iter()
            .map(|i| {
                let mut c = SyncConfig::new(
                    *i,
                    sync_ids.clone(),
                    ndb_ids.clone(),
                    OWNERS.to_vec(),
                    cfg.seed,
                );
                if cfg.mutation == Mutation::MinorityCommit {
                    c.commit_quorum_override = Some(1);
                }
                // The ndbs' Stored reports stand for the entry's Trims: one is not enough.
                if cfg.mutation == Mutation::FirstTrim {
                    c.stored_quorum_override = Some(1);
                }
                // Small, so that snapshots, restarts from them and InstallSnapshot happen under
                // crashes and loss (a run orders a few hundred entries).
                c.snapshot_threshold = SNAPSHOT_THRESHOLDS[(cfg.seed / 3 % 3) as usize];
                c.resolution_window = RESOLUTION_WINDOWS[(cfg.seed / 27 % 3) as usize];
                c.skip_archive = cfg.mutation == Mutation::EvictUnarchived;
                let mut n = SimNode::new(NodeId::Sync(*i), c);
                n.memory_only = cfg.mutation == Mutation::SyncInMemory;
                n
            })
            .collect();
        let ndbs = ndb_ids
            .iter()
            .map(|i| {
                let mut c = NdbConfig::new(*i, ndb_ids.clone(), sync_ids.clone());
                c.abandon_early = cfg.mutation == Mutation::AbandonEarly;
                let mut n = SimNode::new(NodeId::Ndb(*i), c);
                n.persist_behind = cfg.mutation == Mutation::NdbTempBehind;
                n
            })
            .collect();
        let entries = OWNERS
            .iter()
            .map(|o| {
                let mut c = EntryConfig::new(*o, ndb_ids.clone(), sync_ids.clone());
                c.max_segment = 16;
                c.window = 3;
                c.reserve = 4;
                // Two thirds of the runs hold new segments back while one is in flight: 2 ms,
                // or the shell's default (15 ms).
                let default = ordo_entry::Config::default().cluster_segment_linger_us;
                c.linger = [0, default, 2_000][(cfg.seed / 9 % 3) as usize];
                // Entries learn operator abandons (to adopt wills) by polling a sync node.
                c.notice_poll = 200_000;
                if cfg.mutation == Mutation::FirstTrim {
                    c.trim_quorum_override = Some(1);
                }
                SimNode::new(NodeId::Entry(*o), c)
            })
            .collect();
        let loss = [0.0, 0.02, 0.1, 0.25][rng.range(0, 4) as usize];
        let dup = [0.0, 0.05, 0.2][rng.range(0, 3) as usize];
        let max_delay = [500, 3_000, 20_000][rng.range(0, 3) as usize];
        let mut w = World {
            rng,
            now: 0,
            seq: 0,
            events: BTreeMap::new(),
            syncs,
            ndbs,
            entries,
            incarnation: BTreeMap::new(),
            publishers: BTreeMap::new(),
            loss,
            dup,
            max_delay,
            partition: None,
            faulty: true,
            history: History::default(),
            violation: None,
            stats: Stats::default(),
            abandon: abandon::AbandonPlan::for_seed(cfg.seed, cfg.fault_phase),
            gone: BTreeSet::new(),
            returned_publishers: BTreeSet::new(),
            abandon_floor: None,
            cfg,
        };
        for o in OWNERS {
            w.new_incarnation(o);
            let at = w.rng.range(0, 10_000);
            w.at(at, Ev::Publish(o));
        }
        w.schedule_faults();
        w.schedule_abandon();
        w.at(TICK, Ev::Tick);
        w.at(w.cfg.fault_phase, Ev::EndFault);
        w
    }

    fn all_ids(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = (0..SYNCS).map(NodeId::Sync).collect();
        v.extend((0..NDBS).map(NodeId::Ndb));
        v.extend(OWNERS.iter().map(|o| NodeId::Entry(*o)));
        v
    }

    fn schedule_faults(&mut self) {
        let t = self.cfg.fault_phase;
        let ids = self.all_ids();
        for _ in 0..self.rng.range(0, 7) {
            let node = ids[self.rng.range(0, ids.len() as u64) as usize];
            let at = self.rng.range(0, t);
            let back = at + self.rng.range(10_000, 600_000);
            self.at(at, Ev::Crash(node));
            self.at(back, Ev::Restart(node));
        }
        for gen in 0..self.rng.range(0, 4) {
            let side: BTreeSet<NodeId> = ids
                .iter()
                .copied()
                .filter(|_| self.rng.chance(0.5))
                .collect();
            let at = self.rng.range(0, t);
            let until = at + self.rng.range(50_000, 700_000);
            self.at(at, Ev::Partition { gen, side });
            self.at(until, Ev::Unpartition { gen });
        }
        if self.cfg.seed.is_multiple_of(3) {
            self.stats.power_cut = true;
            let at = self.rng.range(t / 5, t * 9 / 10);
            self.at(at, Ev::PowerCut);
        }
    }

    fn at(&mut self, time: Micros, ev: Ev) {
        self.seq += 1;
        self.events.insert((time, self.seq), ev);
    }

    fn new_incarnation(&mut self, owner: u64) {
        let inc = self.incarnation.entry(owner).or_insert(0);
        *inc += 1;
        let base = owner * 1_000_000 + *inc * 10;
        self.publishers
            .insert(owner, vec![(base, 0), (base + 1, 0)]);
    }

    /// Run the fault phase, then heal until settled or the limit; return the stats.
    pub fn run(&mut self) -> Stats {
        let limit = self.cfg.fault_phase + self.cfg.heal_limit;
        let mut next_check = self.cfg.fault_phase;
        while let Some(((time, _), ev)) = self.events.pop_first() {
            if time > limit || self.violation.is_some() {
                break;
            }
            self.now = time;
            self.step(ev);
            if !self.faulty && self.now >= next_check {
                next_check = self.now + 100_000;
                if check::settled(self).is_ok() {
                    break;
                }
            }
        }
        self.stats.published = self.history.published.len();
        self.stats.acked = self.history.acked.len();
        self.stats.acked_after_return = self
            .history
            .acked
            .keys()
            .filter(|(p, _)| self.returned_publishers.contains(p))
            .count();
        self.stats.renumbered = self.renumbered();
        self.stats.clone()
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, from, msg } => {
                if self.cut(from, to) {
                    return;
                }
                if let Some(reply) = self.answer_from_sync_archive(to, &msg) {
                    self.stats.archive_answers += 1;
                    self.send(to, from, reply);
                    return;
                }
                let now = self.now;
                let install = matches!(msg, Msg::InstallSnapshot { .. });
                if matches!(msg, Msg::Stored(_)) {
                    self.stats.stored_reports += 1;
                }
                let before = self.snapshot_index(to);
                let gap_before = self.archive_gap(to);
                // As in the shell, every step ends with a tick (a sync leader proposes there).
                self.drive(to, |r| {
                    r.message(now, from, msg);
                    r.tick(now);
                });
                if install && self.snapshot_index(to) > before {
                    self.stats.installs += 1;
                    if self.archive_gap(to) != gap_before {
                        self.stats.archive_gaps += 1;
                    }
                }
            }
            Ev::Tick => {
                let now = self.now;
                for id in self.all_ids() {
                    self.drive(id, |r| r.tick(now));
                }
                self.at(now + TICK, Ev::Tick);
            }
            Ev::Fsync { node, epoch, upto } => self.fsync(node, epoch, upto),
            Ev::Crash(node) => {
                if self.faulty {
                    self.crash(node);
                    check::durable_after_crash(self);
                }
            }
            Ev::Restart(NodeId::Entry(o)) if self.gone.contains(&o) => {}
            Ev::Restart(node) => self.restart(node),
            Ev::CrashForGood(owner) => {
                if self.faulty {
                    self.crash_for_good(owner);
                }
            }
            Ev::Operator { owner, below } => self.operator(owner, below),
            Ev::Return(owner) => self.come_back(owner),
            Ev::PowerCut => {
                if self.faulty {
                    for id in self.all_ids() {
                        self.crash(id);
                    }
                    check::durable_after_crash(self);
                    for id in self.all_ids() {
                        let back = self.now + self.rng.range(1_000, 100_000);
                        self.at(back, Ev::Restart(id));
                    }
                }
            }
            Ev::Publish(owner) => self.publish(owner),
            Ev::Partition { gen, side } => {
                if self.faulty {
                    self.partition = Some((gen, side));
                }
            }
            Ev::Unpartition { gen } => {
                if self.partition.as_ref().is_some_and(|(g, _)| *g == gen) {
                    self.partition = None;
                }
            }
            Ev::EndFault => {
                self.faulty = false;
                self.partition = None;
                self.loss = 0.0;
                self.dup = 0.0;
                for id in self.all_ids() {
                    if !matches!(id, NodeId::Entry(o) if self.gone.contains(&o)) {
                        self.restart(id);
                    }
                }
            }
        }
    }

    fn publish(&mut self, owner: u64) {
        if !self.faulty {
            return;
        }
        let next = self.now + self.rng.range(500, 12_000);
        self.at(next, Ev::Publish(owner));
        let up = self.entry(owner).is_some_and(|e| e.up());
        if !up {
            return;
        }
        let Some(pubs) = self.publishers.get_mut(&owner) else {
            return;
        };
        let k = self.rng.range(0, pubs.len() as u64) as usize;
        pubs[k].1 += 1;
        let (p, s) = pubs[k];
        let b = body(p, s);
        self.history.published.insert(b.clone(), (p, s));
        let now = self.now;
        if let Some(i) = OWNERS.iter().position(|o| *o == owner) {
            let effects = self.entries[i].drive(|e| e.handle_publish(now, p, s, b));
            self.after_drive(NodeId::Entry(owner), effects);
        }
    }

    fn entry(&self, owner: u64) -> Option<&SimNode<EntryCore>> {
        OWNERS
            .iter()
            .position(|o| *o == owner)
            .map(|i| &self.entries[i])
    }

    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        self.partition
            .as_ref()
            .is_some_and(|(_, side)| side.contains(&a) != side.contains(&b))
    }

    /// Feed a node through the common role interface and route what comes out.
    fn drive(&mut self, id: NodeId, f: impl FnOnce(&mut dyn node::DynRole)) {
        let effects = match id {
            NodeId::Sync(i) => self.syncs[i as usize].drive(|c| f(c)),
            NodeId::Ndb(i) => self.ndbs[i as usize].drive(|c| f(c)),
            NodeId::Entry(o) => match OWNERS.iter().position(|x| *x == o) {
                Some(i) => self.entries[i].drive(|c| f(c)),
                None => Vec::new(),
            },
            NodeId::Operator => Vec::new(),
        };
        self.after_drive(id, effects);
    }

    fn after_drive(&mut self, id: NodeId, effects: Vec<Effect>) {
        self.execute(id, effects);
        let fsync = match id {
            NodeId::Sync(i) => self.syncs[i as usize]
                .start_fsync()
                .map(|u| (u, self.syncs[i as usize].epoch)),
            NodeId::Ndb(i) => self.ndbs[i as usize]
                .start_fsync()
                .map(|u| (u, self.ndbs[i as usize].epoch)),
            NodeId::Entry(o) => match OWNERS.iter().position(|x| *x == o) {
                Some(i) => self.entries[i]
                    .start_fsync()
                    .map(|u| (u, self.entries[i].epoch)),
                None => None,
            },
            NodeId::Operator => None,
        };
        if let Some((upto, epoch)) = fsync {
            let at = self.now + self.rng.range(100, 2_000);
            self.at(
                at,
                Ev::Fsync {
                    node: id,
                    epoch,
                    upto,
                },
            );
        }
    }

    fn fsync(&mut self, id: NodeId, epoch: u64, upto: u64) {
        let effects = match id {
            NodeId::Sync(i) => {
                let n = &mut self.syncs[i as usize];
                if n.epoch != epoch || !n.up() {
                    return;
                }
                let before = n.synced.snapshot_index();
                let out = n.fsync_done(upto);
                if n.synced.snapshot_index() > before {
                    self.stats.snapshots += 1;
                }
                out
            }
            NodeId::Ndb(i) => {
                let n = &mut self.ndbs[i as usize];
                if n.epoch != epoch || !n.up() {
                    return;
                }
                let before = n.synced.temp.keys().copied().collect();
                let out = n.fsync_done(upto);
                self.check_ndb_drops(i as usize, before);
                out
            }
            NodeId::Entry(o) => {
                let Some(i) = OWNERS.iter().position(|x| *x == o) else {
                    return;
                };
                let n = &mut self.entries[i];
                if n.epoch != epoch || !n.up() {
                    return;
                }
                n.fsync_done(upto)
            }
            NodeId::Operator => return,
        };
        self.after_drive(id, effects);
    }

    fn execute(&mut self, from: NodeId, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Action::Send { to, msg } => self.send(from, to, msg),
                Action::Ack { publisher, seq, id } => {
                    if let Some(old) = self.history.acked.insert((publisher, seq), id) {
                        if old != id {
                            self.fail(format!("publish {publisher}:{seq} acked as {old} and {id}"));
                        }
                    }
                    check::durable_at_ack(self, publisher, seq, id);
                }
                Action::Deliver { id, body } => {
                    if let NodeId::Entry(o) = from {
                        let inc = self.incarnation.get(&o).copied().unwrap_or(0);
                        self.history
                            .delivered
                            .entry((o, inc))
                            .or_default()
                            .push((id, body));
                    }
                }
                Action::Persist(()) | Action::WriteBehind(()) => {}
            }
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: Msg) {
        if matches!(msg, Msg::InstallSnapshot { .. }) {
            self.stats.installs_sent += 1;
        }
        if self.cut(from, to) || (self.loss > 0.0 && self.rng.chance(self.loss)) {
            return;
        }
        let copies = if self.dup > 0.0 && self.rng.chance(self.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now + self.rng.range(50, self.max_delay);
            self.at(
                at,
                Ev::Deliver {
                    to,
                    from,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn crash(&mut self, id: NodeId) {
        self.stats.crashes += 1;
        match id {
            NodeId::Sync(i) => {
                self.syncs[i as usize].crash();
            }
            NodeId::Ndb(i) => self.stats.behind_lost += self.ndbs[i as usize].crash(),
            NodeId::Entry(o) => {
                if let Some(i) = OWNERS.iter().position(|x| *x == o) {
                    if self.entries[i].up() {
                        self.entries[i].crash();
                        // Its publisher sessions die with it; a restart brings new ones.
                        self.new_incarnation(o);
                    }
                }
            }
            NodeId::Operator => {}
        }
    }

    fn restart(&mut self, id: NodeId) {
        let now = self.now;
        match id {
            NodeId::Sync(i) => {
                let n = &mut self.syncs[i as usize];
                if !n.up() && n.synced.snapshot.is_some() {
                    self.stats.snapshot_restarts += 1;
                }
                n.restart(now);
            }
            NodeId::Ndb(i) => self.ndbs[i as usize].restart(now),
            NodeId::Entry(o) => {
                if let Some(i) = OWNERS.iter().position(|x| *x == o) {
                    self.entries[i].restart(now);
                }
            }
            NodeId::Operator => {}
        }
    }

    fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(format!("t={}us: {what}", self.now));
        }
    }

    /// A sync shell's answer from its archive, as `ordo_sync::node` gives it: the store's
    /// reads see every write emitted so far, synced or not (the real shell runs a step's
    /// writes before its next input).
    fn answer_from_sync_archive(&self, to: NodeId, msg: &Msg) -> Option<Msg> {
        let NodeId::Sync(i) = to else {
            return None;
        };
        let n = &self.syncs[i as usize];
        let core = n.core.as_ref()?;
        answer_from_archive(core, msg, || {
            let mut written = SyncDisk {
                archive: n.synced.archive.clone(),
                ..SyncDisk::default()
            };
            for w in n.pending_writes() {
                if matches!(w, SyncWrite::Archive { .. }) {
                    written.apply(w);
                }
            }
            written
        })
    }

    fn archive_gap(&self, id: NodeId) -> Option<(PermanentId, PermanentId)> {
        match id {
            NodeId::Sync(i) => self.syncs[i as usize]
                .core
                .as_ref()
                .and_then(|c| c.archive_gap()),
            _ => None,
        }
    }

    /// Return a running sync node's snapshot index (0 for other nodes or while down).
    fn snapshot_index(&self, id: NodeId) -> u64 {
        match id {
            NodeId::Sync(i) => self.syncs[i as usize]
                .core
                .as_ref()
                .map_or(0, |c| c.snapshot_index()),
            _ => 0,
        }
    }

    /// Return the current virtual time.
    pub fn now(&self) -> Micros {
        self.now
    }

    /// Return the current incarnation of each entry.
    pub fn incarnations(&self) -> &BTreeMap<u64, u64> {
        &self.incarnation
    }
}

/// Run one seed; `Err` names the first violated invariant.
pub fn run(cfg: SimConfig) -> Result<Stats, String> {
    let mut world = World::new(cfg);
    let mut stats = world.run();
    if let Some(v) = world.violation.take() {
        return Err(v);
    }
    check::all(&world)?;
    stats.ordered = check::tip(&world).0.saturating_sub(1);
    Ok(stats)
}
