//! Unit tests: one input, the exact actions.

use super::*;
use bytes::Bytes;

fn node() -> NdbNode {
    NdbNode::recover(
        NdbConfig::new(0, vec![0, 1, 2], vec![0]),
        NdbDisk::default(),
        0,
    )
}

fn b(s: &'static str) -> Body {
    Bytes::from_static(s.as_bytes())
}

fn res(owner: u64, segment: u64, count: u32, base: u64) -> Resolution {
    Resolution {
        owner,
        segment,
        count,
        base: PermanentId(base),
    }
}

#[test]
fn trim_follows_the_write_it_counts() {
    let mut n = node();
    let begin = Msg::Begin {
        owner: 7,
        segment: 1,
        count: 2,
        prev: None,
        direct: false,
        bodies: vec![b("a"), b("b")],
    };
    n.handle_message(0, NodeId::Entry(7), begin.clone());
    let actions = n.take_actions();
    assert!(matches!(actions[0], Action::Persist(NdbWrite::Temp { .. })));
    assert_eq!(
        actions[1],
        Action::Send {
            to: NodeId::Entry(7),
            msg: Msg::Trim {
                owner: 7,
                segment: 1,
                count: 2
            }
        }
    );
    // A duplicate writes nothing and repeats the answer.
    n.handle_message(0, NodeId::Entry(7), begin);
    assert_eq!(n.take_actions(), actions[1..]);
}

#[test]
fn resolutions_apply_in_id_order_only() {
    let mut n = node();
    for (seg, body) in [(1, "a"), (2, "b")] {
        n.handle_message(
            0,
            NodeId::Entry(7),
            Msg::Begin {
                owner: 7,
                segment: seg,
                count: 1,
                prev: None,
                direct: false,
                bodies: vec![b(body)],
            },
        );
    }
    n.take_actions();
    // The second range arrives first: held back, and the gap is fetched.
    n.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions: vec![res(7, 2, 1, 2)],
            abandons: vec![],
        },
    );
    assert_eq!(
        n.take_actions(),
        vec![Action::Send {
            to: NodeId::Sync(0),
            msg: Msg::FetchResolved {
                from: PermanentId(1),
                abandons: 0
            }
        }]
    );
    assert!(n.disk().perm.is_empty());
    n.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions: vec![res(7, 1, 1, 1)],
            abandons: vec![],
        },
    );
    assert_eq!(
        n.take_actions(),
        vec![
            Action::WriteBehind(NdbWrite::Apply(res(7, 1, 1, 1))),
            Action::WriteBehind(NdbWrite::Apply(res(7, 2, 1, 2)))
        ]
    );
    assert_eq!(n.disk().permanent(PermanentId(2)), Some(&b("b")));
    assert_eq!(n.disk().next, PermanentId(3));
}

#[test]
fn missing_bodies_come_from_a_peer() {
    let mut n = node();
    n.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions: vec![res(7, 1, 2, 1)],
            abandons: vec![],
        },
    );
    let asks: Vec<_> = n.take_actions();
    assert_eq!(asks.len(), 2, "asks both peers: {asks:?}");
    let mut peer = NdbNode::recover(
        NdbConfig::new(1, vec![0, 1, 2], vec![0]),
        NdbDisk::default(),
        0,
    );
    peer.handle_message(
        0,
        NodeId::Entry(7),
        Msg::Begin {
            owner: 7,
            segment: 1,
            count: 2,
            prev: None,
            direct: false,
            bodies: vec![b("x"), b("y")],
        },
    );
    peer.take_actions();
    peer.handle_message(
        0,
        NodeId::Ndb(0),
        Msg::FetchBodies {
            owner: 7,
            segment: 1,
        },
    );
    let Some(Action::Send { msg, .. }) = peer.poll_action() else {
        panic!("no answer");
    };
    n.handle_message(0, NodeId::Ndb(1), msg);
    n.take_actions();
    assert_eq!(n.disk().permanent(PermanentId(1)), Some(&b("x")));
    assert_eq!(n.disk().permanent(PermanentId(2)), Some(&b("y")));
}

#[test]
fn applying_a_segment_drops_abandoned_lower_ones_and_refuses_late_keeps() {
    let mut n = node();
    for seg in [3u64, 10] {
        n.handle_message(
            0,
            NodeId::Entry(7),
            Msg::Begin {
                owner: 7,
                segment: seg,
                count: 1,
                prev: None,
                direct: false,
                bodies: vec![b("z")],
            },
        );
    }
    n.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions: vec![res(7, 10, 1, 1)],
            abandons: vec![],
        },
    );
    n.take_actions();
    assert!(n.disk().temp.is_empty());
    n.handle_message(
        0,
        NodeId::Entry(7),
        Msg::Keep {
            owner: 7,
            segment: 3,
            offset: 0,
            bodies: vec![b("z")],
        },
    );
    // Nothing written; the sender learns the floor (above the owner's last segment).
    assert_eq!(
        n.take_actions(),
        vec![Action::Send {
            to: NodeId::Entry(7),
            msg: Msg::Abandoned {
                owner: 7,
                segment: 3,
                below: 11
            }
        }]
    );
}

#[test]
fn recovery_rebuilds_from_the_durable_disk() {
    let mut n = node();
    let mut disk = NdbDisk::default();
    n.handle_message(
        0,
        NodeId::Entry(7),
        Msg::Begin {
            owner: 7,
            segment: 1,
            count: 1,
            prev: None,
            direct: false,
            bodies: vec![b("q")],
        },
    );
    n.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions: vec![res(7, 1, 1, 1)],
            abandons: vec![],
        },
    );
    for a in n.take_actions() {
        if let Action::Persist(w) | Action::WriteBehind(w) = a {
            disk.apply(&w);
        }
    }
    assert_eq!(&disk, n.disk());
    let mut r = NdbNode::recover(NdbConfig::new(0, vec![0, 1, 2], vec![0]), disk, 0);
    r.handle_message(
        0,
        NodeId::Entry(8),
        Msg::FetchPermanent {
            from: PermanentId(1),
            max: 10,
        },
    );
    assert_eq!(
        r.take_actions(),
        vec![Action::Send {
            to: NodeId::Entry(8),
            msg: Msg::Permanent {
                from: PermanentId(1),
                tip: PermanentId(2),
                records: vec![b("q")]
            }
        }]
    );
}

#[test]
fn a_fetch_with_nothing_new_is_answered_right_after_the_apply() {
    let mut n = node();
    let entry = NodeId::Entry(7);
    n.handle_message(
        0,
        entry,
        Msg::FetchPermanent {
            from: PermanentId(1),
            max: 10,
        },
    );
    assert!(n.take_actions().is_empty(), "nothing to serve yet: parked");
    n.handle_message(
        0,
        entry,
        Msg::Begin {
            owner: 7,
            segment: 1,
            count: 2,
            prev: None,
            direct: false,
            bodies: vec![b("a"), b("b")],
        },
    );
    n.take_actions();
    n.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions: vec![res(7, 1, 2, 1)],
            abandons: vec![],
        },
    );
    let actions = n.take_actions();
    let apply = actions
        .iter()
        .position(|a| matches!(a, Action::WriteBehind(NdbWrite::Apply(_))))
        .expect("apply written");
    let answer = actions
        .iter()
        .position(|a| {
            matches!(a, Action::Send { to, msg: Msg::Permanent { from, records, .. } }
                if *to == entry && *from == PermanentId(1) && records.len() == 2)
        })
        .expect("parked fetch answered");
    // The ids are committed and the bodies on f+1 disks: the answer does not wait for this
    // node's own write (docs/protocol.md §4, the one exception).
    assert!(
        answer < apply,
        "the answer leaves ahead of the apply's write"
    );
}

#[test]
fn only_the_newest_records_stay_in_memory() {
    let mut cfg = NdbConfig::new(0, vec![0, 1, 2], vec![0]);
    cfg.cache_records = 2;
    let mut n = NdbNode::recover(cfg, NdbDisk::default(), 0);
    let entry = NodeId::Entry(7);
    n.handle_message(
        0,
        entry,
        Msg::Begin {
            owner: 7,
            segment: 1,
            count: 5,
            prev: None,
            direct: false,
            bodies: vec![b("a"), b("b"), b("c"), b("d"), b("e")],
        },
    );
    n.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions: vec![res(7, 1, 5, 1)],
            abandons: vec![],
        },
    );
    let writes: Vec<NdbWrite> = n
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Persist(w) | Action::WriteBehind(w) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(n.disk().next, PermanentId(6));
    assert_eq!(n.first_cached(), PermanentId(4), "ids 1..=3 left memory");
    // The durable disk still has all five: the writes are not trimmed.
    let mut disk = NdbDisk::default();
    for w in &writes {
        disk.apply(w);
    }
    assert_eq!(disk.perm.len(), 5);
}

fn begin(n: &mut NdbNode, owner: u64, segment: u64) {
    n.handle_message(
        0,
        NodeId::Entry(owner),
        Msg::Begin {
            owner,
            segment,
            count: 1,
            prev: None,
            direct: false,
            bodies: vec![b("z")],
        },
    );
}

fn notice(seq: u64, owner: u64, below: u64, at: u64) -> AbandonNotice {
    AbandonNotice {
        seq,
        owner,
        below,
        at: PermanentId(at),
    }
}

fn told(n: &mut NdbNode, resolutions: Vec<Resolution>, abandons: Vec<AbandonNotice>) {
    n.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions,
            abandons,
        },
    );
}

#[test]
fn an_abandon_waits_for_every_segment_elected_before_it() {
    let mut n = node();
    for seg in [3u64, 4, 5] {
        begin(&mut n, 7, seg);
    }
    begin(&mut n, 8, 1);
    n.take_actions();
    // Segment 3 was elected before the Abandon (which sits at id 2); its resolution is late.
    told(&mut n, vec![], vec![notice(0, 7, 5, 2)]);
    let actions = n.take_actions();
    assert!(
        actions.iter().all(|a| !matches!(a, Action::Persist(_))),
        "nothing dropped before id 2 is applied: {actions:?}"
    );
    assert!(n.disk().temp.contains_key(&(7, 3)));
    told(&mut n, vec![res(7, 3, 1, 1)], vec![]);
    assert_eq!(
        n.take_actions(),
        vec![
            Action::WriteBehind(NdbWrite::Apply(res(7, 3, 1, 1))),
            Action::Persist(NdbWrite::Abandon(notice(0, 7, 5, 2)))
        ]
    );
    assert_eq!(n.disk().permanent(PermanentId(1)), Some(&b("z")));
    // 4 is gone, 5 (at the floor) and the other owner's segment stay.
    let left: Vec<_> = n.disk().temp.keys().copied().collect();
    assert_eq!(left, vec![(7, 5), (8, 1)]);
    assert_eq!(n.disk().abandons, 1);
    // A late BEGIN below the floor is refused with the floor, and nothing is written.
    begin(&mut n, 7, 4);
    assert_eq!(
        n.take_actions(),
        vec![Action::Send {
            to: NodeId::Entry(7),
            msg: Msg::Abandoned {
                owner: 7,
                segment: 4,
                below: 5
            }
        }]
    );
    // A duplicate notice changes nothing.
    told(&mut n, vec![], vec![notice(0, 7, 5, 2)]);
    assert!(n.take_actions().is_empty());
}

#[test]
fn a_missing_notice_is_fetched_and_notices_apply_in_seq_order() {
    let mut n = node();
    begin(&mut n, 7, 1);
    begin(&mut n, 9, 1);
    n.take_actions();
    told(&mut n, vec![], vec![notice(1, 9, 2, 1)]);
    assert_eq!(
        n.take_actions(),
        vec![Action::Send {
            to: NodeId::Sync(0),
            msg: Msg::FetchResolved {
                from: PermanentId(1),
                abandons: 0
            }
        }]
    );
    told(&mut n, vec![], vec![notice(0, 7, 2, 1)]);
    assert_eq!(
        n.take_actions(),
        vec![
            Action::Persist(NdbWrite::Abandon(notice(0, 7, 2, 1))),
            Action::Persist(NdbWrite::Abandon(notice(1, 9, 2, 1)))
        ]
    );
    assert!(n.disk().temp.is_empty());
    // The poll asks for notices after the last applied one.
    n.handle_tick(1_000_000);
    assert_eq!(
        n.take_actions(),
        vec![Action::Send {
            to: NodeId::Sync(0),
            msg: Msg::FetchResolved {
                from: PermanentId(1),
                abandons: 2
            }
        }]
    );
}

#[test]
fn the_early_abandon_mutation_drops_bodies_the_log_still_needs() {
    let mut cfg = NdbConfig::new(0, vec![0, 1, 2], vec![0]);
    cfg.abandon_early = true;
    let mut n = NdbNode::recover(cfg, NdbDisk::default(), 0);
    begin(&mut n, 7, 3);
    n.take_actions();
    told(&mut n, vec![], vec![notice(0, 7, 5, 2)]);
    n.take_actions();
    assert!(!n.disk().temp.contains_key(&(7, 3)), "dropped too early");
}

fn direct_begin(segment: u64, count: u32, direct: bool, bodies: Vec<Body>) -> Msg {
    Msg::Begin {
        owner: 7,
        segment,
        count,
        prev: segment.checked_sub(1),
        direct,
        bodies,
    }
}

fn sends_of(actions: &[Action<NdbWrite>]) -> Vec<(NodeId, Msg)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_direct_begin_is_reported_to_the_leader_after_its_write_instead_of_trimmed() {
    let mut n = NdbNode::recover(
        NdbConfig::new(0, vec![0, 1, 2], vec![0, 1]),
        NdbDisk::default(),
        0,
    );
    // No leader known: a direct Begin is trimmed as any other.
    n.handle_message(0, NodeId::Entry(7), direct_begin(1, 1, true, vec![b("z")]));
    let actions = n.take_actions();
    assert_eq!(
        sends_of(&actions),
        vec![(
            NodeId::Entry(7),
            Msg::Trim {
                owner: 7,
                segment: 1,
                count: 1
            }
        )]
    );
    // The poll asks sync 0; its answer does not make it the leader, sync 1's announcement does.
    n.handle_tick(1_000_000);
    assert!(matches!(
        sends_of(&n.take_actions())[..],
        [(NodeId::Sync(0), Msg::FetchResolved { .. })]
    ));
    let nothing_new = Msg::Resolved {
        resolutions: vec![],
        abandons: vec![],
    };
    n.handle_message(1_000_000, NodeId::Sync(0), nothing_new.clone());
    n.handle_message(
        1_000_000,
        NodeId::Entry(7),
        direct_begin(2, 1, true, vec![b("y")]),
    );
    assert!(matches!(
        sends_of(&n.take_actions())[..],
        [(NodeId::Entry(7), Msg::Trim { segment: 2, .. })]
    ));
    n.handle_message(1_000_000, NodeId::Sync(1), nothing_new);
    // A two-frame direct segment: nothing leaves before the last body is written.
    n.handle_message(
        1_000_000,
        NodeId::Entry(7),
        direct_begin(3, 2, true, vec![b("a")]),
    );
    let actions = n.take_actions();
    assert!(matches!(
        actions[..],
        [Action::Persist(NdbWrite::Temp { .. })]
    ));
    n.handle_message(
        1_000_000,
        NodeId::Entry(7),
        Msg::Keep {
            owner: 7,
            segment: 3,
            offset: 1,
            bodies: vec![b("b")],
        },
    );
    let actions = n.take_actions();
    assert!(matches!(actions[0], Action::Persist(NdbWrite::Temp { .. })));
    assert_eq!(
        actions[1..],
        [Action::Send {
            to: NodeId::Sync(1),
            msg: Msg::Stored(Elect {
                owner: 7,
                segment: 3,
                count: 2,
                prev: Some(2)
            })
        }]
    );
    // The entry's retry is not direct: it gets its Trim, and nothing is written again.
    n.handle_message(
        1_000_000,
        NodeId::Entry(7),
        direct_begin(3, 2, false, vec![b("a")]),
    );
    assert_eq!(
        n.take_actions(),
        vec![Action::Send {
            to: NodeId::Entry(7),
            msg: Msg::Trim {
                owner: 7,
                segment: 3,
                count: 2
            }
        }]
    );
}
