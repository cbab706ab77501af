//! The storage node of the cluster, sans-IO: temporary history, TRIM (or STORED to
//! the sync leader) after durability, resolutions applied strictly in id order,
//! catch-up from peers.
//!
//! ```text
//!  Begin/Keep ──► Persist(Temp) ──► Trim ──► entry
//!  Begin{direct}/Keep, leader known ──► Persist(Temp) ──(all held)──► Stored ──► sync leader
//!  Resolved ──► buffer by base ──(base == next, bodies held)──► Persist(Apply): temp -> base+offset
//!                   │ gap: FetchResolved ──► sync          │ missing bodies: FetchBodies ──► peers
//!  abandon notices (in Resolved) ──(seq in order, once next >= at)──► Persist(Abandon): drop temp
//!  FetchPermanent (entry) ──► Permanent {records from `from`, tip}
//! ```
//!
//! See `docs/protocol.md`. [`NdbNode`] keeps its whole disk view in memory;
//! [`NdbClusterStore`](crate::cluster_store::NdbClusterStore) makes its writes
//! durable and loads that whole view back on open (no paging yet).

use ordo_common::proto::{AbandonNotice, Action, Body, Elect, Micros, Msg, NodeId, Resolution};
use ordo_common::PermanentId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[cfg(test)]
mod tests;

/// Static configuration of one ndb.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NdbConfig {
    /// This node's id.
    pub id: u32,
    /// Every ndb id, this one included.
    pub peers: Vec<u32>,
    /// Every sync id.
    pub syncs: Vec<u32>,
    /// How often to poll for resolutions and re-ask for missing bodies.
    pub retry: Micros,
    /// Most records in one Permanent answer.
    pub max_records: u32,
    /// Permanent records kept in memory (the newest); older ones are served from the store by
    /// the shell (see [`NdbNode::first_cached`]).
    pub cache_records: usize,
    /// Testing only: apply abandon notices on arrival, without waiting for their place in
    /// the id order (drops bodies of segments elected before the Abandon: breaks durability).
    pub abandon_early: bool,
}

impl NdbConfig {
    /// Return a configuration with default timings.
    pub fn new(id: u32, peers: Vec<u32>, syncs: Vec<u32>) -> Self {
        NdbConfig {
            id,
            peers,
            syncs,
            retry: 50_000,
            max_records: 256,
            cache_records: 100_000,
            abandon_early: false,
        }
    }
}

/// A segment held in the temporary keyspace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TempSegment {
    /// The segment's message count, once a BEGIN (or peer's Bodies) said it.
    pub count: Option<u32>,
    /// Bodies by offset.
    pub bodies: BTreeMap<u32, Body>,
}

impl TempSegment {
    /// Return how many offsets from 0 are held without a gap.
    pub fn held(&self) -> u32 {
        self.bodies
            .keys()
            .enumerate()
            .take_while(|(i, o)| *i as u32 == **o)
            .count() as u32
    }
}

/// What an ndb keeps on disk.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NdbDisk {
    /// Temporary history by `(owner, segment)`.
    pub temp: BTreeMap<(u64, u64), TempSegment>,
    /// The permanent log (a running [`NdbNode`] keeps only its newest `cache_records` here;
    /// the store holds all of it).
    pub perm: BTreeMap<PermanentId, Body>,
    /// Resolutions applied here, by `(owner, segment)`.
    pub applied: BTreeMap<(u64, u64), Resolution>,
    /// Last applied segment per owner.
    pub last: BTreeMap<u64, u64>,
    /// The next permanent id to apply (end of the last applied range).
    pub next: PermanentId,
    /// Operator floors applied here: owner → `below`.
    pub floor: BTreeMap<u64, u64>,
    /// Abandon notices applied here (the next notice's `seq`).
    pub abandons: u64,
}

impl Default for NdbDisk {
    fn default() -> Self {
        NdbDisk {
            temp: BTreeMap::new(),
            perm: BTreeMap::new(),
            applied: BTreeMap::new(),
            last: BTreeMap::new(),
            next: PermanentId(1),
            floor: BTreeMap::new(),
            abandons: 0,
        }
    }
}

/// One durable write of an ndb.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NdbWrite {
    /// Keep bodies of offsets `offset..` of a segment (missing ones only); set its count if known.
    Temp {
        /// Owner entry.
        owner: u64,
        /// Segment.
        segment: u64,
        /// Segment count, if known.
        count: Option<u32>,
        /// First offset.
        offset: u32,
        /// Bodies.
        bodies: Vec<Body>,
    },
    /// Move a fully held segment to `base + offset`, record it, drop abandoned lower segments.
    Apply(Resolution),
    /// Record an operator floor and drop the owner's unapplied temporary segments below it.
    Abandon(AbandonNotice),
}

impl NdbDisk {
    /// Apply a write, as the shell does when it makes it durable (one atomic batch).
    pub fn apply(&mut self, w: &NdbWrite) {
        match w {
            NdbWrite::Temp {
                owner,
                segment,
                count,
                offset,
                bodies,
            } => {
                // The core never writes to an applied segment; the store keeps its permanent
                // records in the segment's own runs, so such a write must change nothing.
                if self.applied.contains_key(&(*owner, *segment)) {
                    return;
                }
                let seg = self.temp.entry((*owner, *segment)).or_default();
                if seg.count.is_none() {
                    seg.count = *count;
                }
                for (k, b) in bodies.iter().enumerate() {
                    seg.bodies
                        .entry(offset + k as u32)
                        .or_insert_with(|| b.clone());
                }
            }
            NdbWrite::Apply(r) => {
                let Some(seg) = self.temp.remove(&(r.owner, r.segment)) else {
                    return;
                };
                for (o, body) in seg.bodies.into_iter().take(r.count as usize) {
                    self.perm.insert(PermanentId(r.base.0 + u64::from(o)), body);
                }
                self.temp
                    .retain(|(owner, segment), _| *owner != r.owner || *segment > r.segment);
                self.applied.insert((r.owner, r.segment), *r);
                self.last.insert(r.owner, r.segment);
                self.next = r.end();
            }
            NdbWrite::Abandon(n) => {
                // Applied segments left temp when they were applied: only leftovers go.
                self.temp
                    .retain(|(owner, segment), _| *owner != n.owner || *segment >= n.below);
                let floor = self.floor.entry(n.owner).or_insert(0);
                *floor = (*floor).max(n.below);
                self.abandons = self.abandons.max(n.seq + 1);
            }
        }
    }

    /// Return the lowest segment of `owner` that may still be ordered, as far as this disk knows.
    pub fn floor_of(&self, owner: u64) -> u64 {
        let floor = self.floor.get(&owner).copied().unwrap_or(0);
        let last = self.last.get(&owner).map_or(0, |l| l.saturating_add(1));
        floor.max(last)
    }

    /// Return the body at a permanent id.
    pub fn permanent(&self, id: PermanentId) -> Option<&Body> {
        self.perm.get(&id)
    }

    /// Return a body of the temporary history.
    pub fn temporary(&self, owner: u64, segment: u64, offset: u32) -> Option<&Body> {
        self.temp.get(&(owner, segment))?.bodies.get(&offset)
    }

    fn abandoned(&self, owner: u64, segment: u64) -> bool {
        !self.applied.contains_key(&(owner, segment)) && segment < self.floor_of(owner)
    }

    fn segment_bodies(&self, owner: u64, segment: u64) -> Option<Vec<Body>> {
        if let Some(r) = self.applied.get(&(owner, segment)) {
            return (0..u64::from(r.count))
                .map(|o| self.perm.get(&PermanentId(r.base.0 + o)).cloned())
                .collect();
        }
        let seg = self.temp.get(&(owner, segment))?;
        let count = seg.count?;
        (seg.held() >= count).then(|| seg.bodies.values().take(count as usize).cloned().collect())
    }
}

/// One storage node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NdbNode {
    cfg: NdbConfig,
    disk: NdbDisk,
    pending: BTreeMap<PermanentId, Resolution>,
    /// Abandon notices heard of and not yet applied, by `seq`.
    notices: BTreeMap<u64, AbandonNotice>,
    poll_due: Micros,
    sync_turn: usize,
    asked_bodies: Option<((u64, u64), Micros)>,
    /// FetchPermanent asks that found nothing new, answered as soon as ids are applied
    /// (a long poll: the entry learns of new ids one apply later, not one retry later).
    parked: BTreeMap<NodeId, (PermanentId, u32)>,
    /// The sync node taken for the leader: the last to send a `Resolved` this node did not
    /// ask for (only a leader announces). A wrong guess costs the entry one retry.
    leader: Option<u32>,
    /// Sync nodes asked for resolutions that have not answered since.
    asked_syncs: BTreeSet<u32>,
    /// Segments of a `direct` Begin, to report to the leader (`Stored`) once all held.
    reports: BTreeMap<(u64, u64), Elect>,
    out: VecDeque<Action<NdbWrite>>,
    /// Answers to readers that leave ahead of this step's writes (see [`NdbNode::reply_now`]).
    replies: Vec<Action<NdbWrite>>,
}

impl NdbNode {
    /// Start (or restart) from what the disk holds.
    pub fn recover(cfg: NdbConfig, disk: NdbDisk, now: Micros) -> Self {
        let mut node = NdbNode {
            poll_due: now + cfg.retry,
            sync_turn: cfg.id as usize,
            cfg,
            disk,
            pending: BTreeMap::new(),
            notices: BTreeMap::new(),
            asked_bodies: None,
            parked: BTreeMap::new(),
            leader: None,
            asked_syncs: BTreeSet::new(),
            reports: BTreeMap::new(),
            out: VecDeque::new(),
            replies: Vec::new(),
        };
        node.evict();
        node
    }

    /// Return the lowest permanent id this node holds in memory (`next` when it holds none).
    ///
    /// Ids below it are durable in the shell's store; the shell answers `FetchPermanent` from
    /// below it, and `FetchBodies` of segments applied below it, from there.
    pub fn first_cached(&self) -> PermanentId {
        self.disk
            .perm
            .keys()
            .next()
            .copied()
            .unwrap_or(self.disk.next)
    }

    /// Drop the oldest permanent records from memory beyond `cache_records`.
    fn evict(&mut self) {
        while self.disk.perm.len() > self.cfg.cache_records.max(1) {
            self.disk.perm.pop_first();
        }
    }

    /// Return the next action to run, obeying the Persist rule of [`Action`].
    pub fn poll_action(&mut self) -> Option<Action<NdbWrite>> {
        self.out.pop_front()
    }

    /// Return every queued action, in order.
    pub fn take_actions(&mut self) -> Vec<Action<NdbWrite>> {
        let mut actions = std::mem::take(&mut self.replies);
        actions.extend(self.out.drain(..));
        actions
    }

    /// Return when [`NdbNode::handle_tick`] should next be called.
    pub fn poll_timeout(&self) -> Micros {
        self.poll_due
    }

    /// Return the end of the highest resolution this node has heard of (at least `next`).
    pub fn known_end(&self) -> PermanentId {
        self.pending
            .values()
            .map(Resolution::end)
            .max()
            .unwrap_or(self.disk.next)
            .max(self.disk.next)
    }

    /// Return this node's view of its disk (durable or about to be).
    pub fn disk(&self) -> &NdbDisk {
        &self.disk
    }

    /// Poll a sync node for resolutions and re-ask for missing bodies when due.
    pub fn handle_tick(&mut self, now: Micros) {
        if now < self.poll_due {
            return;
        }
        self.poll_due = now + self.cfg.retry;
        if !self.cfg.syncs.is_empty() {
            let to = self.cfg.syncs[self.sync_turn % self.cfg.syncs.len()];
            self.sync_turn = self.sync_turn.wrapping_add(1);
            let (from, abandons) = (self.disk.next, self.disk.abandons);
            self.asked_syncs.insert(to);
            self.send(NodeId::Sync(to), Msg::FetchResolved { from, abandons });
        }
        self.asked_bodies = None;
        self.try_apply(now);
    }

    /// Feed one message from `from`; queue the actions it causes.
    pub fn handle_message(&mut self, now: Micros, from: NodeId, msg: Msg) {
        match msg {
            Msg::Begin {
                owner,
                segment,
                count,
                prev,
                direct,
                bodies,
            } => {
                // Report to the leader only if one is known; else answer the entry, as on
                // its retries.
                let report = (direct && count > 0 && self.leader.is_some()).then_some(Elect {
                    owner,
                    segment,
                    count,
                    prev,
                });
                let begin = Some((count, report));
                self.on_keep(now, from, owner, segment, begin, 0, bodies)
            }
            Msg::Keep {
                owner,
                segment,
                offset,
                bodies,
            } => self.on_keep(now, from, owner, segment, None, offset, bodies),
            Msg::Resolved {
                resolutions,
                abandons,
            } => {
                if let NodeId::Sync(sync) = from {
                    if !self.asked_syncs.remove(&sync) {
                        self.leader = Some(sync);
                    }
                }
                self.on_resolved(now, resolutions, abandons)
            }
            Msg::FetchBodies { owner, segment } => {
                if let Some(bodies) = self.disk.segment_bodies(owner, segment) {
                    self.send(
                        from,
                        Msg::Bodies {
                            owner,
                            segment,
                            bodies,
                        },
                    );
                }
            }
            Msg::Bodies {
                owner,
                segment,
                bodies,
            } => {
                let wanted = self
                    .pending
                    .values()
                    .any(|r| r.owner == owner && r.segment == segment);
                if wanted && !bodies.is_empty() {
                    let count = Some(bodies.len() as u32);
                    self.write(NdbWrite::Temp {
                        owner,
                        segment,
                        count,
                        offset: 0,
                        bodies,
                    });
                    self.asked_bodies = None;
                    self.try_apply(now);
                }
            }
            Msg::FetchPermanent { from: first, max } => {
                if first >= self.disk.next {
                    self.parked.insert(from, (first, max));
                } else {
                    self.parked.remove(&from);
                    self.serve_permanent(from, first, max);
                }
            }
            _ => {}
        }
    }

    /// Store a Begin's or Keep's bodies. A Begin brings its `count` and, when direct with a
    /// leader known, the report that replaces its Trim.
    #[allow(clippy::too_many_arguments)]
    fn on_keep(
        &mut self,
        now: Micros,
        from: NodeId,
        owner: u64,
        segment: u64,
        begin: Option<(u32, Option<Elect>)>,
        offset: u32,
        bodies: Vec<Body>,
    ) {
        if let Some(r) = self.disk.applied.get(&(owner, segment)) {
            let count = r.count;
            self.send(
                from,
                Msg::Trim {
                    owner,
                    segment,
                    count,
                },
            );
            return;
        }
        if self.disk.abandoned(owner, segment) {
            // Final in the committed log; a returning entry learns its floor here (§6).
            let below = self.disk.floor_of(owner);
            self.send(
                from,
                Msg::Abandoned {
                    owner,
                    segment,
                    below,
                },
            );
            return;
        }
        let count = begin.map(|(count, _)| count);
        match begin {
            Some((_, Some(report))) => {
                self.reports.insert((owner, segment), report);
            }
            Some((_, None)) => {
                self.reports.remove(&(owner, segment));
            }
            None => {}
        }
        let seg = self.disk.temp.get(&(owner, segment));
        let new_count = count.is_some() && seg.is_none_or(|s| s.count.is_none());
        let new_body = (0..bodies.len() as u32)
            .any(|k| seg.is_none_or(|s| !s.bodies.contains_key(&(offset + k))));
        if new_count || new_body {
            self.write(NdbWrite::Temp {
                owner,
                segment,
                count,
                offset,
                bodies,
            });
        }
        let held = self
            .disk
            .temp
            .get(&(owner, segment))
            .map(TempSegment::held)
            .unwrap_or(0);
        match self.reports.get(&(owner, segment)).copied() {
            // Behind the Temp write, like a Trim: the report counts durable bodies.
            Some(e) if held >= e.count => {
                self.reports.remove(&(owner, segment));
                if let Some(leader) = self.leader {
                    self.send(NodeId::Sync(leader), Msg::Stored(e));
                }
            }
            // A Keep of a direct segment is still to come.
            Some(_) => {}
            None => self.send(
                from,
                Msg::Trim {
                    owner,
                    segment,
                    count: held,
                },
            ),
        }
        self.try_apply(now);
    }

    fn on_resolved(
        &mut self,
        now: Micros,
        resolutions: Vec<Resolution>,
        abandons: Vec<AbandonNotice>,
    ) {
        for r in resolutions {
            if r.base >= self.disk.next && r.count > 0 {
                self.pending.insert(r.base, r);
            }
        }
        for n in abandons {
            if n.seq >= self.disk.abandons {
                self.notices.insert(n.seq, n);
            }
        }
        self.try_apply(now);
        let gap = self
            .pending
            .keys()
            .next()
            .is_some_and(|b| *b > self.disk.next)
            || self
                .notices
                .keys()
                .next()
                .is_some_and(|s| *s > self.disk.abandons);
        if gap && !self.cfg.syncs.is_empty() {
            let to = self.cfg.syncs[self.sync_turn % self.cfg.syncs.len()];
            let (from, abandons) = (self.disk.next, self.disk.abandons);
            self.asked_syncs.insert(to);
            self.send(NodeId::Sync(to), Msg::FetchResolved { from, abandons });
        }
    }

    /// Apply abandon notices in `seq` order, each once this node's next id reached its `at`:
    /// every segment elected before the Abandon is applied here by then, so no body that
    /// the permanent log still needs is dropped.
    fn apply_notices(&mut self) {
        self.notices = self.notices.split_off(&self.disk.abandons);
        while let Some(n) = self.notices.get(&self.disk.abandons).copied() {
            if n.at > self.disk.next && !self.cfg.abandon_early {
                return;
            }
            self.notices.remove(&n.seq);
            self.reports
                .retain(|(o, s), _| *o != n.owner || *s >= n.below);
            self.write(NdbWrite::Abandon(n));
        }
    }

    /// Apply buffered resolutions strictly in id order while their bodies are held.
    fn try_apply(&mut self, now: Micros) {
        self.pending = self.pending.split_off(&self.disk.next);
        loop {
            self.apply_notices();
            let Some(r) = self.pending.get(&self.disk.next).copied() else {
                return;
            };
            let held = self
                .disk
                .temp
                .get(&(r.owner, r.segment))
                .map(TempSegment::held)
                .unwrap_or(0);
            if held < r.count {
                let key = (r.owner, r.segment);
                let asked = self
                    .asked_bodies
                    .is_some_and(|(k, at)| k == key && now < at + self.cfg.retry);
                if !asked {
                    self.asked_bodies = Some((key, now));
                    let me = self.cfg.id;
                    let peers: Vec<u32> = self
                        .cfg
                        .peers
                        .iter()
                        .copied()
                        .filter(|p| *p != me)
                        .collect();
                    for p in peers {
                        self.send(
                            NodeId::Ndb(p),
                            Msg::FetchBodies {
                                owner: r.owner,
                                segment: r.segment,
                            },
                        );
                    }
                }
                return;
            }
            self.pending.remove(&r.base);
            // Reports of this owner's segments up to this one can no longer order anything.
            self.reports
                .retain(|(o, s), _| *o != r.owner || *s > r.segment);
            self.write(NdbWrite::Apply(r));
            self.serve_parked();
        }
    }

    /// Answer the parked asks that the ids applied so far can serve (after the Apply's Persist).
    fn serve_parked(&mut self) {
        let next = self.disk.next;
        let ready: Vec<(NodeId, (PermanentId, u32))> = self
            .parked
            .iter()
            .filter(|(_, (first, _))| *first < next)
            .map(|(n, a)| (*n, *a))
            .collect();
        for (node, (first, max)) in ready {
            self.parked.remove(&node);
            self.serve_permanent(node, first, max);
        }
    }

    fn serve_permanent(&mut self, to: NodeId, first: PermanentId, max: u32) {
        let max = max.min(self.cfg.max_records) as usize;
        let records: Vec<Body> = self
            .disk
            .perm
            .range(first..)
            .take(max)
            .enumerate()
            .take_while(|(i, (id, _))| id.0 == first.0 + *i as u64)
            .map(|(_, (_, b))| b.clone())
            .collect();
        let tip = self.disk.next;
        self.reply_now(
            to,
            Msg::Permanent {
                from: first,
                tip,
                records,
            },
        );
    }

    /// Send `msg` ahead of every write this step queued, instead of behind them.
    ///
    /// Only for answers that carry nothing this node decided: permanent records have ids
    /// committed in the sync log and bodies on `f+1` disks (an `Over` needs `f+1` trims), so a
    /// reader may see them before this node's own `Apply` is durable. If the write is lost,
    /// the node applies the same resolution to the same bodies again (docs/protocol.md §4).
    fn reply_now(&mut self, to: NodeId, msg: Msg) {
        self.replies.push(Action::Send { to, msg });
    }

    /// Queue a write. `Temp` and `Abandon` are persisted before what follows (a `Trim` counts
    /// the bodies, an `Abandoned` answers from the floor). `Apply` is written behind: it only
    /// re-derives what is durable elsewhere (ids committed in the sync log, bodies durable
    /// here as temporary history until the `Apply` is), so nothing waits for its fsync; a
    /// crash that loses it leaves the temporary bodies, and the node applies the same
    /// resolution again (docs/protocol.md §4).
    fn write(&mut self, w: NdbWrite) {
        self.disk.apply(&w);
        if matches!(w, NdbWrite::Apply(_)) {
            self.evict();
            self.out.push_back(Action::WriteBehind(w));
        } else {
            self.out.push_back(Action::Persist(w));
        }
    }

    fn send(&mut self, to: NodeId, msg: Msg) {
        self.out.push_back(Action::Send { to, msg });
    }
}

impl ordo_common::proto::Core for NdbNode {
    type Write = NdbWrite;

    fn handle_message(&mut self, now: Micros, from: NodeId, msg: Msg) {
        NdbNode::handle_message(self, now, from, msg);
    }

    fn handle_tick(&mut self, now: Micros) {
        NdbNode::handle_tick(self, now);
    }

    fn poll_timeout(&self) -> Micros {
        NdbNode::poll_timeout(self)
    }

    fn take_actions(&mut self) -> Vec<Action<NdbWrite>> {
        NdbNode::take_actions(self)
    }
}
