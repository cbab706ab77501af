//! Stateright model of the voting protocol: the real cores as actors.
//!
//! 3 sync, 3 ndb and 2 entries, each entry publishing one message (two
//! segments in all). The network is unordered and duplicating: a message, once
//! sent, may be delivered any number of times, in any order, or never, which
//! also covers retransmissions. For the `always` properties this subsumes loss
//! (a lossy run is a run in which the message is never delivered), so the
//! explicit Drop action is off by default (`ORDO_MODEL_LOSSY=1` turns it on, at
//! a much higher state count). The sync cluster starts from a reachable state
//! in which sync 0 won term 1 and committed its no-op (`elected_cluster`); sync
//! 1 keeps an election timer, so a challenger can depose the leader at any
//! point. Every step is atomic, so a Persist is durable within its step (the
//! simulator covers the unsynced window).
//!
//! Bound: BFS to `ORDO_MODEL_DEPTH` (default 10, i.e. every schedule of up to 8
//! deliveries or timeouts: enough to resolve a segment; about 520k unique states,
//! ~10 s in --release on 2 cores).

use bytes::Bytes;
use ordo_common::proto::{Action, Body, Micros, Msg, NodeId};
use ordo_common::PermanentId;
use ordo_entry::cluster::{EntryConfig, EntryCore, EntryDisk};
use ordo_ndb::cluster::{NdbConfig, NdbDisk, NdbNode};
use ordo_sync::log::{SyncConfig, SyncDisk, SyncNode};
use stateright::actor::{model_timeout, Actor, ActorModel, Id, LossyNetwork, Network, Out};
use stateright::{Checker, Expectation, Model};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

const SYNCS: usize = 3;
const NDBS: usize = 3;
const OWNERS: [u64; 2] = [1, 2];
/// Messages entry 1 publishes (one segment each, chained); entry 2 publishes one.
const ENTRY1_MSGS: u64 = 1;

fn to_id(n: NodeId) -> Id {
    match n {
        NodeId::Sync(i) => Id::from(i as usize),
        NodeId::Ndb(i) => Id::from(SYNCS + i as usize),
        NodeId::Entry(o) => Id::from(SYNCS + NDBS + (o as usize - 1)),
    }
}

fn to_node(id: Id) -> NodeId {
    let i = usize::from(id);
    if i < SYNCS {
        NodeId::Sync(i as u32)
    } else if i < SYNCS + NDBS {
        NodeId::Ndb((i - SYNCS) as u32)
    } else {
        NodeId::Entry((i - SYNCS - NDBS + 1) as u64)
    }
}

fn body(owner: u64, k: u64) -> Body {
    Bytes::from(vec![owner as u8, k as u8])
}

#[derive(Clone)]
enum Node {
    Sync(SyncConfig, bool),
    Ndb(NdbConfig),
    Entry(EntryConfig, u64),
}

/// An entry's core plus what its publishers and subscribers saw (ghost state).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct EntryState {
    core: EntryCore,
    acked: BTreeMap<Body, PermanentId>,
    delivered: Vec<(PermanentId, Body)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum State {
    Sync(SyncNode, Micros),
    Ndb(NdbNode),
    Entry(Box<EntryState>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Storage {
    Sync(SyncDisk),
    Ndb(Box<NdbDisk>),
    Entry(EntryDisk),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Tick;

fn route<W>(actions: Vec<Action<W>>, o: &mut Out<Node>, ghost: Option<&mut EntryState>) {
    let mut ghost = ghost;
    for a in actions {
        match a {
            Action::Send { to, msg } => o.send(to_id(to), msg),
            Action::Persist(_) => {}
            Action::Ack { publisher, seq, id } => {
                if let Some(g) = ghost.as_deref_mut() {
                    g.acked.insert(body(publisher, seq), id);
                }
            }
            Action::Deliver { id, body } => {
                if let Some(g) = ghost.as_deref_mut() {
                    g.delivered.push((id, body));
                }
            }
        }
    }
}

impl Actor for Node {
    type Msg = Msg;
    type State = State;
    type Timer = Tick;
    type Random = ();
    type Storage = Storage;

    fn on_start(&self, _id: Id, storage: &Option<Storage>, o: &mut Out<Self>) -> State {
        match self {
            Node::Sync(cfg, timer) => {
                if *timer {
                    o.set_timer(Tick, model_timeout());
                }
                match storage {
                    Some(Storage::Sync(d)) => {
                        State::Sync(SyncNode::recover(cfg.clone(), d.clone(), 0), 0)
                    }
                    _ => {
                        let (nodes, now) = elected_cluster();
                        State::Sync(nodes[cfg.id as usize].clone(), now)
                    }
                }
            }
            Node::Ndb(cfg) => {
                let disk = match storage {
                    Some(Storage::Ndb(d)) => (**d).clone(),
                    _ => NdbDisk::default(),
                };
                State::Ndb(NdbNode::recover(cfg.clone(), disk, 0))
            }
            Node::Entry(cfg, msgs) => {
                let restarted = storage.is_some();
                let disk = match storage {
                    Some(Storage::Entry(d)) => d.clone(),
                    _ => EntryDisk::default(),
                };
                let mut core = EntryCore::recover(cfg.clone(), disk.clone(), 0);
                if !restarted {
                    // Publisher `owner` publishes its messages in order, seq 1..=msgs.
                    for k in 1..=*msgs {
                        core.handle_publish(0, cfg.owner, k, body(cfg.owner, k));
                    }
                }
                let mut st = EntryState {
                    core,
                    acked: BTreeMap::new(),
                    delivered: Vec::new(),
                };
                let actions = st.core.take_actions();
                save_entry(&disk, &actions, o);
                route(actions, o, Some(&mut st));
                State::Entry(Box::new(st))
            }
        }
    }

    fn on_msg(&self, id: Id, state: &mut Cow<State>, src: Id, msg: Msg, o: &mut Out<Self>) {
        let from = to_node(src);
        let _ = id;
        match state.to_mut() {
            State::Sync(n, now) => {
                n.handle_message(*now, from, msg);
                let actions = n.take_actions();
                save_sync(n, &actions, o);
                route(actions, o, None);
            }
            State::Ndb(n) => {
                n.handle_message(0, from, msg);
                let actions = n.take_actions();
                if actions.iter().any(|a| matches!(a, Action::Persist(_))) {
                    o.save(Storage::Ndb(Box::new(n.disk().clone())));
                }
                route(actions, o, None);
            }
            State::Entry(st) => {
                st.core.handle_message(0, from, msg);
                let actions = st.core.take_actions();
                route(actions, o, Some(st));
            }
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<State>, _t: &Tick, o: &mut Out<Self>) {
        if let State::Sync(n, now) = state.to_mut() {
            // Time jumps to the node's next deadline.
            *now = n.poll_timeout();
            n.handle_tick(*now);
            let actions = n.take_actions();
            save_sync(n, &actions, o);
            route(actions, o, None);
        }
        o.set_timer(Tick, model_timeout());
    }
}

/// The initial sync cluster: sync 0 elected in term 1 over a lossless network and
/// its no-op committed everywhere (a reachable state; it saves the model the
/// steps of a first election, which the simulator and unit tests cover).
fn elected_cluster() -> (Vec<SyncNode>, Micros) {
    let syncs: Vec<u32> = (0..SYNCS as u32).collect();
    let mut nodes: Vec<SyncNode> = syncs
        .iter()
        .map(|i| {
            let cfg = SyncConfig::new(
                *i,
                syncs.clone(),
                (0..NDBS as u32).collect(),
                OWNERS.to_vec(),
                1,
            );
            SyncNode::recover(cfg, SyncDisk::default(), 0)
        })
        .collect();
    let now = nodes[0].poll_timeout();
    nodes[0].handle_tick(now);
    let mut queue: Vec<(u32, u32, Msg)> = Vec::new();
    for round in 0..20 {
        for (i, n) in nodes.iter_mut().enumerate() {
            for a in n.take_actions() {
                if let Action::Send {
                    to: NodeId::Sync(p),
                    msg,
                } = a
                {
                    queue.push((i as u32, p, msg));
                }
            }
        }
        if queue.is_empty() {
            break;
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
    (nodes, now)
}

fn save_sync(n: &SyncNode, actions: &[Action<ordo_sync::log::SyncWrite>], o: &mut Out<Node>) {
    if actions.iter().any(|a| matches!(a, Action::Persist(_))) {
        o.save(Storage::Sync(n.disk().clone()));
    }
}

fn save_entry(
    disk: &EntryDisk,
    actions: &[Action<ordo_entry::cluster::EntryWrite>],
    o: &mut Out<Node>,
) {
    let mut d = disk.clone();
    let mut any = false;
    for a in actions {
        if let Action::Persist(w) = a {
            d.apply(w);
            any = true;
        }
    }
    if any {
        o.save(Storage::Entry(d));
    }
}

fn ndb_disks(s: &stateright::actor::ActorModelState<Node>) -> Vec<&NdbDisk> {
    s.actor_states
        .iter()
        .filter_map(|a| match &**a {
            State::Ndb(n) => Some(n.disk()),
            _ => None,
        })
        .collect()
}

fn entries(s: &stateright::actor::ActorModelState<Node>) -> Vec<&EntryState> {
    s.actor_states
        .iter()
        .filter_map(|a| match &**a {
            State::Entry(e) => Some(&**e),
            _ => None,
        })
        .collect()
}

/// Invariants 1-3: one body per id across ndbs and deliveries, prefixes without gaps,
/// only published bodies, each once.
fn agreement_order_integrity(s: &stateright::actor::ActorModelState<Node>) -> bool {
    let mut global: BTreeMap<PermanentId, &Body> = BTreeMap::new();
    let mut ok = true;
    for d in ndb_disks(s) {
        ok &= d.next.0 == d.perm.len() as u64 + 1
            && d.perm.keys().enumerate().all(|(i, k)| k.0 == i as u64 + 1);
        for (id, b) in &d.perm {
            ok &= *global.entry(*id).or_insert(b) == b;
        }
    }
    for e in entries(s) {
        for (i, (id, b)) in e.delivered.iter().enumerate() {
            ok &= id.0 == i as u64 + 1;
            ok &= *global.entry(*id).or_insert(b) == b;
        }
    }
    let published: BTreeSet<Body> = OWNERS
        .iter()
        .flat_map(|o| (1..=msgs(*o)).map(move |k| body(*o, k)))
        .collect();
    let bodies: Vec<&Body> = global.values().copied().collect();
    let distinct: BTreeSet<&Body> = bodies.iter().copied().collect();
    ok && distinct.len() == bodies.len() && bodies.iter().all(|b| published.contains(*b))
}

fn msgs(owner: u64) -> u64 {
    if owner == 1 {
        ENTRY1_MSGS
    } else {
        1
    }
}

fn model(crashes: usize) -> ActorModel<Node, (), ()> {
    let syncs: Vec<u32> = (0..SYNCS as u32).collect();
    let ndbs: Vec<u32> = (0..NDBS as u32).collect();
    let mut m = ActorModel::new((), ());
    for i in &syncs {
        let cfg = SyncConfig::new(*i, syncs.clone(), ndbs.clone(), OWNERS.to_vec(), 1);
        m = m.actor(Node::Sync(cfg, *i == 1));
    }
    for i in &ndbs {
        m = m.actor(Node::Ndb(NdbConfig::new(*i, ndbs.clone(), syncs.clone())));
    }
    for o in OWNERS {
        let mut cfg = EntryConfig::new(o, ndbs.clone(), syncs.clone());
        cfg.max_segment = 1;
        m = m.actor(Node::Entry(cfg, msgs(o)));
    }
    m.init_network(Network::new_unordered_duplicating([]))
        .lossy_network(if lossy() {
            LossyNetwork::Yes
        } else {
            LossyNetwork::No
        })
        .max_crashes(crashes)
        .property(
            Expectation::Always,
            "agreement, order, integrity",
            |_, s| agreement_order_integrity(s),
        )
        .property(
            Expectation::Always,
            "acked only when durable on a quorum",
            |_, s| {
                let disks = ndb_disks(s);
                entries(s).iter().all(|e| {
                    e.acked.iter().all(|(b, id)| {
                        disks
                            .iter()
                            .filter(|d| {
                                d.permanent(*id) == Some(b)
                                    || d.temp.values().any(|t| t.bodies.values().any(|x| x == b))
                            })
                            .count()
                            >= 2
                    })
                })
            },
        )
        .property(Expectation::Always, "fifo per publisher", |_, s| {
            ndb_disks(s).iter().all(|d| {
                let mut last: BTreeMap<u8, u8> = BTreeMap::new();
                d.perm.values().all(|b| match last.insert(b[0], b[1]) {
                    Some(prev) => prev < b[1],
                    None => true,
                })
            })
        })
        .property(Expectation::Always, "committed sync logs agree", |_, s| {
            let logs: Vec<_> = s
                .actor_states
                .iter()
                .filter_map(|a| match &**a {
                    State::Sync(n, _) => Some(&n.log()[..n.commit_index() as usize]),
                    _ => None,
                })
                .collect();
            logs.iter().all(|a| {
                logs.iter().all(|b| {
                    let k = a.len().min(b.len());
                    a[..k] == b[..k]
                })
            })
        })
        .property(
            Expectation::Sometimes,
            "some segment is resolved",
            |_, s| ndb_disks(s).iter().any(|d| !d.perm.is_empty()),
        )
        .property(Expectation::Sometimes, "some publish is acked", |_, s| {
            entries(s).iter().any(|e| !e.acked.is_empty())
        })
}

fn lossy() -> bool {
    std::env::var("ORDO_MODEL_LOSSY").is_ok_and(|v| v == "1")
}

fn depth() -> usize {
    std::env::var("ORDO_MODEL_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(10)
}

#[test]
fn model_holds_on_a_lossy_duplicating_network() {
    let checker = model(0)
        .checker()
        .target_max_depth(depth())
        .spawn_bfs()
        .join();
    eprintln!(
        "no crashes: {} states ({} unique), depth {}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth()
    );
    checker.assert_properties();
}

#[test]
fn initial_sync_cluster_has_a_leader_with_a_committed_noop() {
    let (nodes, _) = elected_cluster();
    assert!(nodes[0].is_leader());
    assert_eq!(nodes[0].commit_index(), 1, "{:?}", nodes[0]);
}
