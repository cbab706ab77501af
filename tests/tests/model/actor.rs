//! The real cores as stateright actors, each with the durable state its
//! `Persist` actions built and a crash-restart timer.
//!
//! A step (one delivery or timeout) runs the core's actions in order, as a shell
//! obeying the Persist rule does: a write is durable before any action behind it
//! runs. A crash is one step too: the core and everything else in memory are
//! thrown away and the core is rebuilt by its `recover` constructor from the
//! durable disk alone. A crash may also cut a step short just before one of its
//! writes (`State::cut`): the actions before the write ran, the write and
//! everything behind it (queued behind its fsync) are lost.

use bytes::Bytes;
use ordo_common::proto::{Abandon, Action, Body, Micros, Msg, NodeId};
use ordo_common::PermanentId;
use ordo_entry::cluster::{EntryConfig, EntryCore, EntryDisk, EntryWrite};
use ordo_ndb::cluster::{NdbConfig, NdbDisk, NdbNode, NdbWrite};
use ordo_sync::log::{SyncConfig, SyncDisk, SyncNode, SyncWrite};
use stateright::actor::{model_timeout, Actor, Id, Out};
use std::borrow::Cow;
use std::collections::BTreeMap;

pub const SYNCS: usize = 3;
pub const NDBS: usize = 3;
pub const OWNERS: [u64; 2] = [1, 2];

pub fn to_id(n: NodeId) -> Id {
    match n {
        NodeId::Sync(i) => Id::from(i as usize),
        NodeId::Ndb(i) => Id::from(SYNCS + i as usize),
        NodeId::Entry(o) => Id::from(SYNCS + NDBS + (o as usize - 1)),
        // Only sends (its command is already in the initial sync log): never addressed.
        NodeId::Operator => Id::from(SYNCS + NDBS + OWNERS.len()),
    }
}

pub fn to_node(id: Id) -> NodeId {
    let i = usize::from(id);
    if i < SYNCS {
        NodeId::Sync(i as u32)
    } else if i < SYNCS + NDBS {
        NodeId::Ndb((i - SYNCS) as u32)
    } else {
        NodeId::Entry((i - SYNCS - NDBS + 1) as u64)
    }
}

/// The publisher session of `owner`'s entry in its `incarnation` (0 = first start).
pub fn publisher(owner: u64, incarnation: u8) -> u64 {
    owner + 10 * u64::from(incarnation)
}

/// The entry owning a publisher session.
pub fn owner_of(publisher: u64) -> u64 {
    publisher % 10
}

/// Message `k` of `publisher`: two bytes, publisher and sequence number.
pub fn body(publisher: u64, k: u64) -> Body {
    Bytes::from(vec![publisher as u8, k as u8])
}

/// A durable write the model's shell silently skips: the core goes on as if it
/// were durable, a crash loses it (a core that forgot a `Persist`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Nothing skipped: the protocol as designed.
    Nothing,
    /// Ndb: the temporary bodies that a `Trim` counts.
    NdbTemp,
    /// Sync: log entries (`DraftAck ok` goes out without them on disk).
    SyncLog,
    /// Sync: term and vote.
    SyncHard,
    /// Entry: the segment high-water mark.
    EntryReserve,
}

/// What every actor shares: the crash switch and the skipped write.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    /// Whether actors get a crash timer.
    pub crash: bool,
    /// The write the shell drops.
    pub skip: Skip,
    /// Entries' OVERs go out with `prev: None` (the shell un-chains them).
    pub unchain: bool,
    /// The shell runs a step's sends, acks and deliveries before its writes (it
    /// breaks the Persist rule; only a crash inside the step can tell).
    pub sends_first: bool,
    /// Entries and ndbs get a retry timer (and a sync node without an election timer a
    /// heartbeat timer while it leads); the model fires it only when it has work.
    pub retries: bool,
    /// An entry's retried OVERs go out with `prev: None` (a resend path that rebuilds the
    /// OVER without its chain); first sends are untouched.
    pub retry_unchain: bool,
    /// Record whether a sync node crashed while leading (ghost state that splits states,
    /// so only where a property reads it).
    pub note_leader_crash: bool,
}

#[derive(Clone)]
pub enum Role {
    /// A sync node; `true` if it has an election timer (a challenger).
    Sync(SyncConfig, bool, Box<SyncNode>),
    Ndb(NdbConfig),
    /// An entry and how many messages its first publisher session sends.
    Entry(EntryConfig, u64),
}

#[derive(Clone)]
pub struct Node {
    pub role: Role,
    pub opts: Opts,
}

/// An entry's core plus what its publishers and subscribers saw (ghost state).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntryState {
    pub core: EntryCore,
    pub disk: EntryDisk,
    /// Every body its publisher sessions published.
    pub published: Vec<Body>,
    /// The entry's clock: it moves only when a retry timer fires.
    pub now: Micros,
    /// Acks given to publishers, across incarnations.
    pub acked: BTreeMap<Body, PermanentId>,
    /// Deliveries to its subscribers, one list per incarnation.
    pub delivered: Vec<Vec<(PermanentId, Body)>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Core {
    Sync {
        node: SyncNode,
        now: Micros,
        disk: SyncDisk,
    },
    Ndb {
        node: NdbNode,
        /// The ndb's clock: it moves only when a retry timer fires.
        now: Micros,
        disk: Box<NdbDisk>,
        /// Writes behind (`Apply`) not yet covered by a later `Persist`: a crash loses them.
        behind: Vec<NdbWrite>,
    },
    Entry(Box<EntryState>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// Crashes of this actor so far.
    pub crashes: u8,
    pub core: Core,
    /// Set by the model just before a step that a crash cuts short before the
    /// step's write number `cut` (from 0); the step takes it. Left set when the
    /// step has fewer writes: the model then drops the step. Always `None` in a
    /// stored state.
    pub cut: Option<u8>,
    /// A sync node that crashed while it led its term (ghost state).
    pub crashed_leading: bool,
    /// Crashed after some segment was resolved (ghost state, set by the model).
    pub crashed_after_resolution: bool,
    /// Retry timers this actor fired so far.
    pub retries: u8,
    /// Messages to this actor that the network lost when they were first sent.
    pub lost: Vec<Msg>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// A sync node's election (or heartbeat) deadline; time jumps to it.
    Tick,
    /// Lose power and restart from the durable disk.
    Crash,
    /// An entry's or ndb's retry deadline (resend what is unanswered, poll), or a
    /// leading sync node's heartbeat; time jumps to it.
    Retry,
}

fn route<W>(
    actions: Vec<Action<W>>,
    o: &mut Out<Node>,
    mut ghost: Option<&mut EntryState>,
    unchain: bool,
) {
    for a in actions {
        match a {
            Action::Send {
                to,
                msg: Msg::Over(mut e),
            } if unchain => {
                e.prev = None;
                o.send(to_id(to), Msg::Over(e));
            }
            Action::Send { to, msg } => o.send(to_id(to), msg),
            Action::Persist(_) | Action::WriteBehind(_) => {}
            Action::Ack { publisher, seq, id } => {
                if let Some(g) = ghost.as_deref_mut() {
                    g.acked.insert(body(publisher, seq), id);
                }
            }
            Action::Deliver { id, body } => {
                if let Some(g) = ghost.as_deref_mut() {
                    if let Some(cur) = g.delivered.last_mut() {
                        cur.push((id, body));
                    }
                }
            }
        }
    }
}

fn sync_writes(disk: &mut SyncDisk, actions: &[Action<SyncWrite>], skip: Skip) {
    for a in actions {
        match a {
            Action::Persist(w @ SyncWrite::Log { .. }) if skip != Skip::SyncLog => disk.apply(w),
            Action::Persist(w @ SyncWrite::Hard { .. }) if skip != Skip::SyncHard => disk.apply(w),
            _ => {}
        }
    }
}

/// A `Persist` makes the writes behind it durable too (the store keeps its writes in order).
fn ndb_writes(
    disk: &mut NdbDisk,
    behind: &mut Vec<NdbWrite>,
    actions: &[Action<NdbWrite>],
    skip: Skip,
) {
    for a in actions {
        match a {
            Action::WriteBehind(w) => behind.push(w.clone()),
            Action::Persist(w) => {
                for b in behind.drain(..) {
                    disk.apply(&b);
                }
                if !(skip == Skip::NdbTemp && matches!(w, NdbWrite::Temp { .. })) {
                    disk.apply(w);
                }
            }
            _ => {}
        }
    }
}

fn entry_writes(disk: &mut EntryDisk, actions: &[Action<EntryWrite>], skip: Skip) {
    for a in actions {
        if let Action::Persist(w) = a {
            if skip != Skip::EntryReserve {
                disk.apply(w);
            }
        }
    }
}

impl Node {
    /// Start an entry core from `disk`; its publisher session of `incarnation` publishes `msgs`.
    fn start_entry(
        &self,
        cfg: &EntryConfig,
        disk: EntryDisk,
        incarnation: u8,
        msgs: u64,
        ghost: Option<EntryState>,
        o: &mut Out<Node>,
    ) -> EntryState {
        let mut st = ghost.unwrap_or(EntryState {
            core: EntryCore::recover(cfg.clone(), disk.clone(), 0),
            disk: disk.clone(),
            published: Vec::new(),
            now: 0,
            acked: BTreeMap::new(),
            delivered: Vec::new(),
        });
        let now = st.now;
        st.core = EntryCore::recover(cfg.clone(), disk.clone(), now);
        st.disk = disk;
        st.delivered.push(Vec::new());
        let p = publisher(cfg.owner, incarnation);
        for k in 1..=msgs {
            st.published.push(body(p, k));
            st.core.handle_publish(now, p, k, body(p, k));
        }
        let mut actions = st.core.take_actions();
        schedule(&mut actions, self.opts.sends_first, None);
        entry_writes(&mut st.disk, &actions, self.opts.skip);
        route(actions, o, Some(&mut st), self.opts.unchain);
        st
    }
}

impl Actor for Node {
    type Msg = Msg;
    type State = State;
    type Timer = Timer;
    type Random = ();
    type Storage = ();

    fn on_start(&self, _id: Id, _storage: &Option<()>, o: &mut Out<Self>) -> State {
        if self.opts.crash {
            o.set_timer(Timer::Crash, model_timeout());
        }
        let challenger = matches!(self.role, Role::Sync(_, true, _));
        if self.opts.retries && !challenger {
            o.set_timer(Timer::Retry, model_timeout());
        }
        let core = match &self.role {
            Role::Sync(_, timer, initial) => {
                if *timer {
                    o.set_timer(Timer::Tick, model_timeout());
                }
                Core::Sync {
                    node: (**initial).clone(),
                    now: 0,
                    disk: initial.disk().clone(),
                }
            }
            Role::Ndb(cfg) => Core::Ndb {
                node: NdbNode::recover(cfg.clone(), NdbDisk::default(), 0),
                now: 0,
                disk: Box::default(),
                behind: Vec::new(),
            },
            Role::Entry(cfg, msgs) => {
                let st = self.start_entry(cfg, EntryDisk::default(), 0, *msgs, None, o);
                Core::Entry(Box::new(st))
            }
        };
        State {
            crashes: 0,
            core,
            cut: None,
            crashed_leading: false,
            crashed_after_resolution: false,
            retries: 0,
            lost: Vec::new(),
        }
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<State>, src: Id, msg: Msg, o: &mut Out<Self>) {
        let from = to_node(src);
        self.step(state.to_mut(), o, false, |core| match core {
            Core::Sync { node, now, .. } => {
                node.handle_message(*now, from, msg);
                // The shell ends every step with a tick, where a leader proposes. A follower's
                // tick at the same instant does nothing, and some never stand (see Retry).
                if node.is_leader() {
                    node.handle_tick(*now);
                }
            }
            Core::Ndb { node, now, .. } => node.handle_message(*now, from, msg),
            Core::Entry(st) => st.core.handle_message(st.now, from, msg),
        });
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<State>, t: &Timer, o: &mut Out<Self>) {
        match t {
            Timer::Tick => {
                if matches!(state.core, Core::Sync { .. }) {
                    self.step(state.to_mut(), o, false, |core| {
                        if let Core::Sync { node, now, .. } = core {
                            // Time jumps to the node's next deadline.
                            *now = node.poll_timeout();
                            node.handle_tick(*now);
                        }
                    });
                }
                o.set_timer(Timer::Tick, model_timeout());
            }
            Timer::Crash => {
                self.restart(state.to_mut(), o);
                o.set_timer(Timer::Crash, model_timeout());
            }
            Timer::Retry => {
                let st = state.to_mut();
                st.retries += 1;
                // As the shells do: sleep until the core's deadline, then tick.
                self.step(st, o, true, |core| match core {
                    // A sync node without an election timer must never stand: it ticks
                    // only while it leads (heartbeats, Draft resends).
                    Core::Sync { node, now, .. } if node.is_leader() => {
                        *now = (*now).max(node.poll_timeout());
                        node.handle_tick(*now);
                    }
                    Core::Sync { .. } => {}
                    Core::Ndb { node, now, .. } => {
                        *now = (*now).max(node.poll_timeout());
                        node.handle_tick(*now);
                    }
                    Core::Entry(g) => {
                        g.now = g.now.max(g.core.poll_timeout());
                        g.core.handle_tick(g.now);
                    }
                });
                o.set_timer(Timer::Retry, model_timeout());
            }
        }
    }
}

/// Put a step's actions in the order the shell runs them and, if the step is to crash
/// before its write number `cut`, keep only the actions before that write. Returns
/// whether the step crashes (false if it has no such write).
fn schedule<W>(actions: &mut Vec<Action<W>>, sends_first: bool, cut: Option<u8>) -> bool {
    if sends_first {
        let (writes, others): (Vec<_>, Vec<_>) = actions.drain(..).partition(is_write);
        actions.extend(others);
        actions.extend(writes);
    } else {
        // A write behind holds nothing back: what follows it, up to the next Persist, may
        // run before it reaches the disk, and a crash may then lose it.
        let mut ordered = Vec::with_capacity(actions.len());
        let mut behind = Vec::new();
        for a in actions.drain(..) {
            match a {
                Action::WriteBehind(_) => behind.push(a),
                Action::Persist(_) => {
                    ordered.append(&mut behind);
                    ordered.push(a);
                }
                other => ordered.push(other),
            }
        }
        ordered.append(&mut behind);
        *actions = ordered;
    }
    let Some(k) = cut else { return false };
    let at = actions
        .iter()
        .enumerate()
        .filter(|(_, a)| is_write(a))
        .nth(usize::from(k))
        .map(|(i, _)| i);
    match at {
        Some(i) => {
            actions.truncate(i);
            true
        }
        None => false,
    }
}

fn is_write<W>(a: &Action<W>) -> bool {
    matches!(a, Action::Persist(_) | Action::WriteBehind(_))
}

impl Node {
    /// Feed the core one input and run its actions: writes to the disk, sends to the
    /// network, acks and deliveries to the ghost state; or, with `st.cut`, only those
    /// before the cut write, then crash.
    /// A `retry` step is a retry timer's tick (the retry mutation applies to its sends).
    fn step(&self, st: &mut State, o: &mut Out<Node>, retry: bool, input: impl FnOnce(&mut Core)) {
        let cut = st.cut.take();
        input(&mut st.core);
        let (skip, first) = (self.opts.skip, self.opts.sends_first);
        let unchain = self.opts.unchain || (retry && self.opts.retry_unchain);
        let crash = match &mut st.core {
            Core::Sync { node, disk, .. } => {
                let mut actions = node.take_actions();
                let crash = schedule(&mut actions, first, cut);
                sync_writes(disk, &actions, skip);
                route(actions, o, None, unchain);
                crash
            }
            Core::Ndb {
                node, disk, behind, ..
            } => {
                let mut actions = node.take_actions();
                let crash = schedule(&mut actions, first, cut);
                ndb_writes(disk, behind, &actions, skip);
                route(actions, o, None, unchain);
                crash
            }
            Core::Entry(g) => {
                let mut actions = g.core.take_actions();
                let crash = schedule(&mut actions, first, cut);
                entry_writes(&mut g.disk, &actions, skip);
                route(actions, o, Some(g), unchain);
                crash
            }
        };
        if crash {
            self.restart(st, o);
        } else {
            // No write to cut before: tell the model (it drops the step).
            st.cut = cut;
        }
    }

    /// Lose power and restart: rebuild the core from its durable disk alone.
    fn restart(&self, st: &mut State, o: &mut Out<Node>) {
        st.crashes += 1;
        if self.opts.note_leader_crash {
            st.crashed_leading |= matches!(&st.core, Core::Sync { node, .. } if node.is_leader());
        }
        let incarnation = st.crashes;
        let core = match (&st.core, &self.role) {
            (Core::Sync { now, disk, .. }, Role::Sync(cfg, ..)) => Core::Sync {
                node: SyncNode::recover(cfg.clone(), disk.clone(), *now),
                now: *now,
                disk: disk.clone(),
            },
            (Core::Ndb { disk, now, .. }, Role::Ndb(cfg)) => Core::Ndb {
                node: NdbNode::recover(cfg.clone(), (**disk).clone(), *now),
                now: *now,
                disk: disk.clone(),
                behind: Vec::new(),
            },
            (Core::Entry(g), Role::Entry(cfg, _)) => {
                // A new publisher session publishes one message on the restarted entry.
                let ghost = Some((**g).clone());
                let st = self.start_entry(cfg, g.disk.clone(), incarnation, 1, ghost, o);
                Core::Entry(Box::new(st))
            }
            (c, _) => c.clone(),
        };
        st.core = core;
    }
}

/// The initial sync cluster: sync 0 elected in term 1 over a lossless network and
/// its no-op committed everywhere (a reachable state; it saves the model the
/// steps of a first election, which the simulator and unit tests cover).
///
/// With `abandon`, the operator's `Abandon` is then committed and applied on every sync
/// node too; the leader's notices to the ndbs are returned, not delivered.
pub fn elected_cluster(
    cfgs: &[SyncConfig],
    abandon: Option<Abandon>,
) -> (Vec<SyncNode>, Vec<(NodeId, Msg)>) {
    let mut nodes: Vec<SyncNode> = cfgs
        .iter()
        .map(|c| SyncNode::recover(c.clone(), SyncDisk::default(), 0))
        .collect();
    let now = nodes[0].poll_timeout();
    nodes[0].handle_tick(now);
    let mut queue: Vec<(u32, u32, Msg)> = Vec::new();
    let mut outside = Vec::new();
    for round in 0..40 {
        for (i, n) in nodes.iter_mut().enumerate() {
            for a in n.take_actions() {
                match a {
                    Action::Send {
                        to: NodeId::Sync(p),
                        msg,
                    } => queue.push((i as u32, p, msg)),
                    Action::Send { to, msg } if i == 0 => outside.push((to, msg)),
                    _ => {}
                }
            }
        }
        if round == 6 {
            if let Some(a) = abandon {
                nodes[0].handle_message(now, NodeId::Operator, Msg::Abandon(a));
                // The step's end, where the leader proposes it.
                nodes[0].handle_tick(now);
                continue;
            }
        }
        if queue.is_empty() {
            let behind = nodes
                .iter()
                .any(|n| n.commit_index() < nodes[0].commit_index());
            if round > 6 && behind {
                // One more heartbeat carries the abandon's commit to the followers.
                let t = nodes[0].poll_timeout();
                nodes[0].handle_tick(t);
                continue;
            }
            if round > 6 || abandon.is_none() {
                break;
            }
        }
        for (from, to, msg) in std::mem::take(&mut queue) {
            nodes[to as usize].handle_message(now, NodeId::Sync(from), msg);
        }
        if round == 2 {
            // One heartbeat carries the commit index to the followers.
            let t = nodes[0].poll_timeout();
            nodes[0].handle_tick(t);
        }
    }
    for n in &mut nodes {
        n.take_actions();
    }
    let notices = outside
        .into_iter()
        .filter(|(to, m)| {
            matches!(to, NodeId::Ndb(_))
                && matches!(m, Msg::Resolved { abandons, .. } if !abandons.is_empty())
        })
        .collect();
    (nodes, notices)
}

/// The actors: 3 sync (sync 1 a challenger, and sync 2 too if `challengers` > 1),
/// 3 ndb, 2 entries; entry `o` publishes `msgs[o - 1]` messages. The sync cluster
/// starts elected (`elected_cluster`) or, `leaderless`, fresh: every node a follower
/// at term 0 with an empty log. Also returns the messages in flight at the start
/// (the leader's abandon notices, with `abandon`).
pub fn actors(
    opts: Opts,
    msgs: [u64; 2],
    challengers: usize,
    abandon: Option<Abandon>,
    leaderless: bool,
    mutate: &dyn Fn(&mut Role),
) -> (Vec<Node>, Vec<(NodeId, NodeId, Msg)>) {
    let syncs: Vec<u32> = (0..SYNCS as u32).collect();
    let ndbs: Vec<u32> = (0..NDBS as u32).collect();
    let mut cfgs: Vec<SyncConfig> = syncs
        .iter()
        .map(|i| SyncConfig::new(*i, syncs.clone(), ndbs.clone(), OWNERS.to_vec(), 1))
        .collect();
    let mut roles: Vec<Role> = Vec::new();
    for c in &cfgs {
        roles.push(Role::Sync(
            c.clone(),
            false,
            Box::new(SyncNode::recover(c.clone(), SyncDisk::default(), 0)),
        ));
    }
    // Mutations of the sync config apply before the initial election.
    for r in &mut roles {
        mutate(r);
    }
    for (c, r) in cfgs.iter_mut().zip(&roles) {
        if let Role::Sync(m, ..) = r {
            *c = m.clone();
        }
    }
    let (elected, notices) = if leaderless {
        let fresh = cfgs
            .iter()
            .map(|c| SyncNode::recover(c.clone(), SyncDisk::default(), 0));
        (fresh.collect(), Vec::new())
    } else {
        elected_cluster(&cfgs, abandon)
    };
    for (i, r) in roles.iter_mut().enumerate() {
        if let Role::Sync(_, timer, initial) = r {
            *timer = (1..=challengers).contains(&i);
            **initial = elected[i].clone();
        }
    }
    for i in &ndbs {
        roles.push(Role::Ndb(NdbConfig::new(*i, ndbs.clone(), syncs.clone())));
    }
    for o in OWNERS {
        let mut cfg = EntryConfig::new(o, ndbs.clone(), syncs.clone());
        cfg.max_segment = 1;
        let n = msgs[o as usize - 1];
        let mut r = Role::Entry(cfg, n);
        mutate(&mut r);
        roles.push(r);
    }
    let nodes = roles.into_iter().map(|role| Node { role, opts }).collect();
    let in_flight = notices
        .into_iter()
        .map(|(to, msg)| (NodeId::Sync(0), to, msg))
        .collect();
    (nodes, in_flight)
}
