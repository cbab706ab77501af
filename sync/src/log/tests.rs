//! Unit tests: single inputs with exact actions, and a tiny lossless in-order cluster.

use super::*;
use ordo_common::proto::{Msg, Resolution};
use ordo_common::PermanentId;

fn cfg(id: u32) -> SyncConfig {
    SyncConfig::new(id, vec![0, 1, 2], vec![0], vec![7], 42)
}

fn over(owner: u64, segment: u64, count: u32, prev: Option<u64>) -> Msg {
    Msg::Over(Elect {
        owner,
        segment,
        count,
        prev,
    })
}

/// One shell step of one message. A leader's step ends with its tick, where it proposes;
/// the tests tick followers themselves (a tick may start an election or fetch a gap).
pub(super) fn step(n: &mut SyncNode, now: Micros, from: NodeId, msg: Msg) {
    n.handle_message(now, from, msg);
    if n.is_leader() {
        n.handle_tick(now);
    }
}

/// Three nodes, every write durable at once, messages delivered in order.
struct Cluster {
    nodes: Vec<SyncNode>,
    disks: Vec<SyncDisk>,
    now: Micros,
    outside: Vec<(u32, NodeId, Msg)>,
    down: BTreeSet<u32>,
    /// InstallSnapshot messages delivered.
    installs: usize,
}

impl Cluster {
    fn new() -> Self {
        Cluster {
            nodes: (0..3)
                .map(|i| SyncNode::recover(cfg(i), SyncDisk::default(), 0))
                .collect(),
            disks: vec![SyncDisk::default(); 3],
            now: 0,
            outside: Vec::new(),
            down: BTreeSet::new(),
            installs: 0,
        }
    }

    fn run(&mut self) {
        let mut queue: VecDeque<(u32, u32, Msg)> = VecDeque::new();
        loop {
            for i in 0..3u32 {
                let actions = self.nodes[i as usize].take_actions();
                for a in actions {
                    match a {
                        Action::Persist(w) => self.disks[i as usize].apply(&w),
                        Action::Send {
                            to: NodeId::Sync(p),
                            msg,
                        } => queue.push_back((i, p, msg)),
                        Action::Send { to, msg } => self.outside.push((i, to, msg)),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            let Some((from, to, msg)) = queue.pop_front() else {
                break;
            };
            if self.down.contains(&to) || self.down.contains(&from) {
                continue;
            }
            self.installs += usize::from(matches!(msg, Msg::InstallSnapshot { .. }));
            // As the shell does: the archive first (peers filling an archive gap ask here).
            let (node, disk) = (&self.nodes[to as usize], &self.disks[to as usize]);
            if let Some(reply) = answer_from_archive(node, &msg, || disk.clone()) {
                queue.push_back((to, from, reply));
                continue;
            }
            self.deliver(to, NodeId::Sync(from), msg);
        }
    }

    /// One step of node `i` on `msg` from `from`, at the cluster's time.
    fn deliver(&mut self, i: u32, from: NodeId, msg: Msg) {
        step(&mut self.nodes[i as usize], self.now, from, msg);
    }

    fn tick_until_leader(&mut self) -> u32 {
        for _ in 0..200 {
            self.now += 10_000;
            for i in 0..3u32 {
                if !self.down.contains(&i) {
                    self.nodes[i as usize].handle_tick(self.now);
                }
            }
            self.run();
            if let Some(l) =
                (0..3u32).find(|i| !self.down.contains(i) && self.nodes[*i as usize].is_leader())
            {
                return l;
            }
        }
        panic!("no leader");
    }
}

#[test]
fn vote_is_persisted_before_it_is_sent() {
    let mut n = SyncNode::recover(cfg(1), SyncDisk::default(), 0);
    n.handle_message(
        0,
        NodeId::Sync(0),
        Msg::PickChallenger {
            term: 1,
            last_index: 0,
            last_term: 0,
        },
    );
    assert_eq!(
        n.take_actions(),
        vec![
            Action::Persist(SyncWrite::Hard {
                term: 1,
                voted_for: None
            }),
            Action::Persist(SyncWrite::Hard {
                term: 1,
                voted_for: Some(0)
            }),
            Action::Send {
                to: NodeId::Sync(0),
                msg: Msg::Vote {
                    term: 1,
                    granted: true
                }
            },
        ]
    );
    // One vote per term: a second challenger is refused.
    n.handle_message(
        0,
        NodeId::Sync(2),
        Msg::PickChallenger {
            term: 1,
            last_index: 5,
            last_term: 1,
        },
    );
    assert_eq!(
        n.take_actions(),
        vec![Action::Send {
            to: NodeId::Sync(2),
            msg: Msg::Vote {
                term: 1,
                granted: false
            }
        }]
    );
}

#[test]
fn a_stale_term_draft_is_refused() {
    let mut n = SyncNode::recover(cfg(1), SyncDisk::default(), 0);
    n.handle_message(
        0,
        NodeId::Sync(2),
        Msg::PickChallenger {
            term: 3,
            last_index: 0,
            last_term: 0,
        },
    );
    n.take_actions();
    n.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Draft {
            term: 2,
            prev_index: 0,
            prev_term: 0,
            entries: vec![LogEntry::elects(2, vec![])],
            commit: 1,
        },
    );
    assert_eq!(
        n.take_actions(),
        vec![Action::Send {
            to: NodeId::Sync(0),
            msg: Msg::DraftAck {
                term: 3,
                ok: false,
                match_index: 0
            }
        }]
    );
    assert!(n.log().is_empty());
}

#[test]
fn follower_truncates_a_conflicting_suffix_and_persists_before_acking() {
    let mut n = SyncNode::recover(cfg(1), SyncDisk::default(), 0);
    let e = |term| LogEntry::elects(term, vec![]);
    n.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Draft {
            term: 1,
            prev_index: 0,
            prev_term: 0,
            entries: vec![e(1), e(1)],
            commit: 0,
        },
    );
    n.take_actions();
    n.handle_message(
        0,
        NodeId::Sync(2),
        Msg::Draft {
            term: 2,
            prev_index: 1,
            prev_term: 1,
            entries: vec![e(2)],
            commit: 0,
        },
    );
    let actions = n.take_actions();
    assert_eq!(
        actions[1..],
        [
            Action::Persist(SyncWrite::Log {
                from: 2,
                entries: vec![e(2)]
            }),
            Action::Send {
                to: NodeId::Sync(2),
                msg: Msg::DraftAck {
                    term: 2,
                    ok: true,
                    match_index: 2
                }
            }
        ]
    );
    assert_eq!(n.log(), &[e(1), e(2)]);
}

#[test]
fn cluster_orders_overs_in_chain_order_and_answers_duplicates() {
    let mut c = Cluster::new();
    let l = c.tick_until_leader();
    // The successor arrives first; it waits for its predecessor.
    c.deliver(l, NodeId::Entry(7), over(7, 2, 3, Some(1)));
    c.deliver(l, NodeId::Entry(7), over(7, 1, 2, None));
    c.run();
    let resolved: Vec<Resolution> = c
        .outside
        .iter()
        .filter(|(_, to, _)| *to == NodeId::Ndb(0))
        .flat_map(|(_, _, m)| match m {
            Msg::Resolved { resolutions, .. } => resolutions.clone(),
            _ => vec![],
        })
        .collect();
    assert_eq!(
        resolved,
        vec![
            Resolution {
                owner: 7,
                segment: 1,
                count: 2,
                base: PermanentId(1)
            },
            Resolution {
                owner: 7,
                segment: 2,
                count: 3,
                base: PermanentId(3)
            }
        ]
    );
    // A duplicate OVER to a follower that applied it gets the same answer.
    c.now += 60_000;
    c.nodes[l as usize].handle_tick(c.now);
    c.run();
    let f = (l + 1) % 3;
    c.outside.clear();
    c.deliver(f, NodeId::Entry(7), over(7, 2, 3, Some(1)));
    c.run();
    assert_eq!(
        c.outside,
        vec![(
            f,
            NodeId::Entry(7),
            Msg::Resolved {
                resolutions: vec![resolved[1]],
                abandons: vec![]
            }
        )]
    );
}

#[test]
fn restarted_cluster_recomputes_the_same_ids_from_disk() {
    let mut c = Cluster::new();
    let l = c.tick_until_leader();
    c.deliver(l, NodeId::Entry(7), over(7, 1, 4, None));
    c.deliver(l, NodeId::Entry(8), over(8, 1, 1, None));
    c.run();
    let before = c.nodes[l as usize]
        .machine()
        .resolutions_from(PermanentId(1), 10);
    assert_eq!(before.len(), 2);
    // Power cut: every node restarts from its disk alone.
    c.nodes = (0..3)
        .map(|i| SyncNode::recover(cfg(i), c.disks[i as usize].clone(), c.now))
        .collect();
    let l2 = c.tick_until_leader();
    c.run();
    c.deliver(l2, NodeId::Entry(8), over(8, 2, 1, Some(1)));
    c.run();
    let after = c.nodes[l2 as usize]
        .machine()
        .resolutions_from(PermanentId(1), 10);
    assert_eq!(after[..2], before[..]);
    assert_eq!(after[2].base, PermanentId(6));
}

#[test]
fn a_minority_leader_cannot_commit() {
    let mut c = Cluster::new();
    let l = c.tick_until_leader();
    let others: Vec<u32> = (0..3).filter(|i| *i != l).collect();
    c.down.extend(others.iter().copied());
    c.deliver(l, NodeId::Entry(7), over(7, 1, 1, None));
    c.run();
    assert!(c.nodes[l as usize].machine().resolution(7, 1).is_none());
    // The majority side elects its own leader and orders a different segment first.
    c.down.clear();
    c.down.insert(l);
    let l2 = c.tick_until_leader();
    assert_ne!(l2, l);
    c.deliver(l2, NodeId::Entry(8), over(8, 1, 1, None));
    c.run();
    let r = c.nodes[l2 as usize].machine().resolution(8, 1);
    assert_eq!(r.map(|r| r.base), Some(PermanentId(1)));
    // Healed: the old leader is fenced and adopts the majority's log.
    c.down.clear();
    c.now += 400_000;
    c.nodes[l2 as usize].handle_tick(c.now);
    c.run();
    assert!(!c.nodes[l as usize].is_leader());
    assert_eq!(c.nodes[l as usize].log(), c.nodes[l2 as usize].log());
}

fn abandon(owner: u64, below: u64) -> Msg {
    Msg::Abandon(ordo_common::proto::Abandon { owner, below })
}

#[test]
fn an_operator_abandon_is_committed_once_and_told_to_ndbs_in_id_order() {
    let mut c = Cluster::new();
    let l = c.tick_until_leader();
    c.deliver(l, NodeId::Entry(7), over(7, 1, 2, None));
    c.run();
    // Only the operator may ask; an entry's (or anyone else's) Abandon is ignored.
    c.deliver(l, NodeId::Entry(8), abandon(7, 10));
    c.run();
    assert_eq!(c.nodes[l as usize].machine().operator_floor(7), 0);
    c.outside.clear();
    c.deliver(l, NodeId::Operator, abandon(7, 10));
    c.deliver(l, NodeId::Operator, abandon(7, 10));
    c.run();
    let log = c.nodes[l as usize].log().to_vec();
    let entries_with_abandons = log.iter().filter(|e| !e.abandons.is_empty()).count();
    assert_eq!(
        entries_with_abandons, 1,
        "a duplicate while pending is merged"
    );
    let notice = ordo_common::proto::AbandonNotice {
        seq: 0,
        owner: 7,
        below: 10,
        at: PermanentId(3),
    };
    let told: Vec<_> = c
        .outside
        .iter()
        .filter(|(_, to, _)| *to == NodeId::Ndb(0))
        .flat_map(|(_, _, m)| match m {
            Msg::Resolved { abandons, .. } => abandons.clone(),
            _ => vec![],
        })
        .collect();
    assert_eq!(told, vec![notice]);
    // A committed floor: a later duplicate appends nothing.
    let len = c.nodes[l as usize].log().len();
    c.deliver(l, NodeId::Operator, abandon(7, 10));
    c.deliver(l, NodeId::Operator, abandon(7, 4));
    c.run();
    assert_eq!(c.nodes[l as usize].log().len(), len);
    // Every node applied it; a follower answers the catch-up poll with it.
    let f = (l + 1) % 3;
    c.now += 60_000;
    c.nodes[l as usize].handle_tick(c.now);
    c.run();
    c.outside.clear();
    c.deliver(
        f,
        NodeId::Ndb(1),
        Msg::FetchResolved {
            from: PermanentId(3),
            abandons: 0,
        },
    );
    c.run();
    assert_eq!(
        c.outside,
        vec![(
            f,
            NodeId::Ndb(1),
            Msg::Resolved {
                resolutions: vec![],
                abandons: vec![notice]
            }
        )]
    );
    // An OVER below the floor is answered with the floor; the elected one keeps its range.
    c.outside.clear();
    c.deliver(f, NodeId::Entry(7), over(7, 4, 1, None));
    c.deliver(f, NodeId::Entry(7), over(7, 1, 2, None));
    c.run();
    assert_eq!(
        c.outside,
        vec![
            (
                f,
                NodeId::Entry(7),
                Msg::Abandoned {
                    owner: 7,
                    segment: 4,
                    below: 10
                }
            ),
            (
                f,
                NodeId::Entry(7),
                Msg::Resolved {
                    resolutions: vec![Resolution {
                        owner: 7,
                        segment: 1,
                        count: 2,
                        base: PermanentId(1)
                    }],
                    abandons: vec![]
                }
            )
        ]
    );
    // The returning entry's first segment at the floor is elected.
    c.deliver(l, NodeId::Entry(7), over(7, 10, 1, None));
    c.run();
    let r = c.nodes[l as usize].machine().resolution(7, 10);
    assert_eq!(r.map(|r| r.base), Some(PermanentId(3)));
}

fn small_snapshots(id: u32, threshold: u64) -> SyncConfig {
    let mut c = cfg(id);
    c.snapshot_threshold = threshold;
    c
}

/// Order `n` segments of owner 7, one log entry each.
fn order_segments(c: &mut Cluster, leader: u32, from: u64, n: u64) {
    for s in from..from + n {
        let prev = s.checked_sub(1).filter(|p| *p > 0);
        c.deliver(leader, NodeId::Entry(7), over(7, s, 2, prev));
        c.run();
    }
    // A heartbeat carries the final commit index to the followers.
    c.now += 60_000;
    c.nodes[leader as usize].handle_tick(c.now);
    c.run();
}

#[path = "snapshot_tests.rs"]
mod snapshot;

#[path = "archive_tests.rs"]
mod archive;

/// Position of the first `Resolved` to the entry and of the first `Persist` in `actions`.
fn resolved_and_persist(actions: &[Action<SyncWrite>]) -> (Option<usize>, Option<usize>) {
    let resolved = actions.iter().position(|a| {
        matches!(a, Action::Send { to: NodeId::Entry(7), msg: Msg::Resolved { resolutions, .. } }
            if !resolutions.is_empty())
    });
    let persist = actions.iter().position(|a| matches!(a, Action::Persist(_)));
    (resolved, persist)
}

#[test]
fn a_resolution_written_in_an_earlier_step_goes_ahead_of_this_steps_append() {
    let mut c = Cluster::new();
    let l = c.tick_until_leader();
    let f = (0..3).find(|i| *i != l).unwrap_or(0);
    // Step 1: the leader appends segment 1 and drafts it; its write completes.
    c.deliver(l, NodeId::Entry(7), over(7, 1, 1, None));
    let mut drafts = Vec::new();
    for a in c.nodes[l as usize].take_actions() {
        match a {
            Action::Persist(w) => c.disks[l as usize].apply(&w),
            Action::Send {
                to: NodeId::Sync(p),
                msg,
            } if p == f => drafts.push(msg),
            _ => {}
        }
    }
    // The follower stores it and acks.
    for d in drafts {
        c.deliver(f, NodeId::Sync(l), d);
    }
    let acks: Vec<Msg> = c.nodes[f as usize]
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Send { msg, .. } => Some(msg),
            _ => None,
        })
        .collect();
    // Step 2: a new Over (appended, not yet written) is handled before the ack that commits
    // segment 1. The Resolved of segment 1 needs no write of this step.
    let leader = &mut c.nodes[l as usize];
    leader.handle_message(c.now, NodeId::Entry(7), over(7, 2, 1, Some(1)));
    for ack in acks {
        leader.handle_message(c.now, NodeId::Sync(f), ack);
    }
    leader.handle_tick(c.now);
    let actions = c.nodes[l as usize].take_actions();
    let (resolved, persist) = resolved_and_persist(&actions);
    assert!(persist.is_some(), "segment 2 is appended: {actions:?}");
    assert!(resolved.is_some(), "segment 1 is resolved: {actions:?}");
    assert!(
        resolved < persist,
        "Resolved waits for nothing of this step: {actions:?}"
    );
}

#[test]
fn a_resolution_of_an_entry_written_in_the_same_step_waits_for_that_write() {
    // One sync node: its own copy is the quorum, so an Over commits in the step that
    // appends it, and the Resolved must stay behind that write.
    let mut n = SyncNode::recover(
        SyncConfig::new(0, vec![0], vec![0], vec![7], 42),
        SyncDisk::default(),
        0,
    );
    let mut now = 0;
    while !n.is_leader() {
        now += 10_000;
        n.handle_tick(now);
        let _ = n.take_actions();
    }
    step(&mut n, now, NodeId::Entry(7), over(7, 1, 1, None));
    let actions = n.take_actions();
    let (resolved, persist) = resolved_and_persist(&actions);
    assert!(resolved.is_some() && persist.is_some(), "{actions:?}");
    assert!(
        persist < resolved,
        "Resolved behind its own entry's write: {actions:?}"
    );
}

#[test]
fn a_quorum_of_distinct_ndbs_stored_reports_stands_for_the_entrys_over() {
    let mut c = Cluster::new();
    c.nodes = (0..3)
        .map(|i| {
            let mut k = cfg(i);
            k.ndbs = vec![0, 1, 2];
            SyncNode::recover(k, SyncDisk::default(), 0)
        })
        .collect();
    let l = c.tick_until_leader();
    c.outside.clear();
    let e = Elect {
        owner: 7,
        segment: 1,
        count: 2,
        prev: None,
    };
    let resolved = |c: &Cluster| -> Vec<Resolution> {
        c.outside
            .iter()
            .filter(|(_, to, _)| *to == NodeId::Entry(7))
            .flat_map(|(_, _, m)| match m {
                Msg::Resolved { resolutions, .. } => resolutions.clone(),
                _ => vec![],
            })
            .collect()
    };
    // A follower ignores reports; at the leader, one ndb twice is still one.
    let f = (l + 1) % 3;
    for ndb in 0..3 {
        c.deliver(f, NodeId::Ndb(ndb), Msg::Stored(e));
    }
    c.deliver(l, NodeId::Ndb(0), Msg::Stored(e));
    c.deliver(l, NodeId::Ndb(0), Msg::Stored(e));
    c.run();
    assert!(resolved(&c).is_empty());
    // A second ndb reporting another count does not add up with the first.
    let other = Elect { count: 3, ..e };
    c.deliver(l, NodeId::Ndb(1), Msg::Stored(other));
    c.run();
    assert!(resolved(&c).is_empty());
    c.deliver(l, NodeId::Ndb(2), Msg::Stored(e));
    c.run();
    assert_eq!(
        resolved(&c),
        vec![Resolution {
            owner: 7,
            segment: 1,
            count: 2,
            base: PermanentId(1)
        }]
    );
    // A late report (and the entry's own Over) of an ordered segment orders nothing again.
    c.outside.clear();
    c.deliver(l, NodeId::Ndb(1), Msg::Stored(e));
    c.run();
    assert!(resolved(&c).is_empty());
}
