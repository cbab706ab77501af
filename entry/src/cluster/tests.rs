//! Unit tests: one input, the exact actions.

use super::*;
use bytes::Bytes;

fn core() -> EntryCore {
    let mut cfg = EntryConfig::new(7, vec![0, 1, 2], vec![0, 1, 2]);
    cfg.window = 2;
    EntryCore::recover(cfg, EntryDisk { next_segment: 5 }, 0)
}

fn b(s: &'static str) -> Body {
    Bytes::from_static(s.as_bytes())
}

fn sends(actions: &[Action<EntryWrite>]) -> Vec<(NodeId, Msg)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

fn trim(segment: u64, count: u32) -> Msg {
    Msg::Trim {
        owner: 7,
        segment,
        count,
    }
}

#[test]
fn high_water_mark_is_persisted_before_the_first_begin() {
    let mut e = core();
    e.handle_publish(0, 1, 1, b("a"));
    let actions = e.take_actions();
    assert_eq!(actions[0], Action::Persist(EntryWrite::Reserve(69)));
    assert_eq!(
        sends(&actions),
        (0..3)
            .map(|n| (
                NodeId::Ndb(n),
                Msg::Begin {
                    owner: 7,
                    segment: 5,
                    count: 1,
                    prev: None,
                    direct: true,
                    bodies: vec![b("a")]
                }
            ))
            .collect::<Vec<_>>()
    );
    // Segment 6 is within the reservation: no second write.
    e.handle_publish(0, 1, 2, b("b"));
    assert!(e
        .take_actions()
        .iter()
        .all(|a| !matches!(a, Action::Persist(_))));
}

#[test]
fn over_waits_for_a_quorum_of_full_trims_and_chains_prev() {
    let mut e = core();
    e.handle_publish(0, 1, 1, b("a"));
    e.handle_publish(0, 1, 2, b("b"));
    e.take_actions();
    e.handle_message(0, NodeId::Ndb(0), trim(6, 1));
    e.handle_message(0, NodeId::Ndb(0), trim(6, 1)); // duplicate: still one ndb
    assert!(e.take_actions().is_empty());
    e.handle_message(0, NodeId::Ndb(1), trim(6, 0)); // not the full count
    assert!(e.take_actions().is_empty());
    e.handle_message(0, NodeId::Ndb(2), trim(6, 1));
    let over = Msg::Over(Elect {
        owner: 7,
        segment: 6,
        count: 1,
        prev: Some(5),
    });
    assert_eq!(
        sends(&e.take_actions()),
        (0..3)
            .map(|s| (NodeId::Sync(s), over.clone()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_first_over_goes_to_the_leader_that_answered_and_a_retry_to_every_sync() {
    let mut e = core();
    let overs_to = |actions: &[Action<EntryWrite>]| -> Vec<NodeId> {
        sends(actions)
            .into_iter()
            .filter(|(_, m)| matches!(m, Msg::Over(_)))
            .map(|(to, _)| to)
            .collect()
    };
    let resolved = |segment, base| Msg::Resolved {
        resolutions: vec![Resolution {
            owner: 7,
            segment,
            count: 1,
            base: PermanentId(base),
        }],
        abandons: vec![],
    };
    let every_sync: Vec<NodeId> = (0..3).map(NodeId::Sync).collect();
    // No leader known yet: every sync node.
    e.handle_publish(0, 1, 1, b("a"));
    e.handle_message(0, NodeId::Ndb(0), trim(5, 1));
    e.handle_message(0, NodeId::Ndb(1), trim(5, 1));
    assert_eq!(overs_to(&e.take_actions()), every_sync);
    // Sync 2 answered an Over sent once: it leads, and the next segment's Over goes to it alone.
    e.handle_message(0, NodeId::Sync(2), resolved(5, 1));
    e.handle_publish(0, 1, 2, b("b"));
    e.handle_message(0, NodeId::Ndb(0), trim(6, 1));
    e.handle_message(0, NodeId::Ndb(2), trim(6, 1));
    assert_eq!(overs_to(&e.take_actions()), vec![NodeId::Sync(2)]);
    // Unanswered for a retry interval: every sync node, and the hint is forgotten.
    e.handle_tick(60_000);
    assert_eq!(overs_to(&e.take_actions()), every_sync);
    // A follower answering the retried Over (it applied the segment) is not taken for the
    // leader: the next segment asks everyone again.
    e.handle_message(60_000, NodeId::Sync(0), resolved(6, 2));
    e.handle_publish(60_000, 1, 3, b("c"));
    e.handle_message(60_000, NodeId::Ndb(0), trim(7, 1));
    e.handle_message(60_000, NodeId::Ndb(1), trim(7, 1));
    assert_eq!(overs_to(&e.take_actions()), every_sync);
}

#[test]
fn acks_on_resolved_and_only_for_its_own_segment() {
    let mut e = core();
    e.handle_publish(0, 1, 1, b("a"));
    e.handle_publish(0, 2, 9, b("b"));
    e.take_actions();
    for n in 0..2 {
        e.handle_message(0, NodeId::Ndb(n), trim(5, 1));
    }
    e.take_actions();
    let res = |owner, segment, base| Resolution {
        owner,
        segment,
        count: 1,
        base: PermanentId(base),
    };
    e.handle_message(
        0,
        NodeId::Sync(1),
        Msg::Resolved {
            resolutions: vec![res(8, 1, 1), res(7, 5, 2), res(7, 6, 3)],
            abandons: vec![],
        },
    );
    let actions = e.take_actions();
    // Segment 6 saw no quorum of Trims, but its ndbs may have reported it straight to the
    // leader (a direct Begin): a Resolved says a quorum holds it, so it is acked too.
    let acks: Vec<&Action<EntryWrite>> = actions
        .iter()
        .filter(|a| matches!(a, Action::Ack { .. }))
        .collect();
    assert_eq!(
        acks,
        vec![
            &Action::Ack {
                publisher: 1,
                seq: 1,
                id: PermanentId(2)
            },
            &Action::Ack {
                publisher: 2,
                seq: 9,
                id: PermanentId(3)
            }
        ]
    );
    assert_eq!(
        sends(&actions),
        vec![(
            NodeId::Ndb(1),
            // Only id 1: ids 2 and 3 are its own segments, delivered from the bodies it holds.
            Msg::FetchPermanent {
                from: PermanentId(1),
                max: 1
            }
        )]
    );
    assert_eq!(e.unacked(), 0);
}

#[test]
fn its_own_segments_are_delivered_from_what_it_holds_and_only_the_rest_is_fetched() {
    let mut e = core();
    e.handle_publish(0, 1, 1, b("a"));
    e.handle_publish(0, 1, 2, b("b"));
    e.take_actions();
    // One segment each (5 and 6): nothing lingers in the test configuration.
    for n in 0..2 {
        e.handle_message(0, NodeId::Ndb(n), trim(5, 1));
        e.handle_message(0, NodeId::Ndb(n), trim(6, 1));
    }
    e.take_actions();
    let delivers = |actions: &[Action<EntryWrite>]| -> Vec<(u64, Body)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Deliver { id, body } => Some((id.0, body.clone())),
                _ => None,
            })
            .collect()
    };
    // Its segments are ids 1 and 2: delivered at once, nothing fetched.
    let own = |segment, base| Resolution {
        owner: 7,
        segment,
        count: 1,
        base: PermanentId(base),
    };
    e.handle_message(
        0,
        NodeId::Sync(1),
        Msg::Resolved {
            resolutions: vec![own(5, 1), own(6, 2)],
            abandons: vec![],
        },
    );
    let actions = e.take_actions();
    assert_eq!(delivers(&actions), vec![(1, b("a")), (2, b("b"))]);
    assert!(sends(&actions).is_empty(), "{:?}", sends(&actions));
    assert_eq!(e.next_delivery(), PermanentId(3));

    // Another owner's segment at 3..5, then its own at 5: fetch 3..5 only, deliver 5 after.
    e.handle_publish(0, 1, 3, b("c"));
    e.take_actions();
    for n in 0..2 {
        e.handle_message(0, NodeId::Ndb(n), trim(7, 1));
    }
    e.take_actions();
    e.handle_message(
        0,
        NodeId::Sync(1),
        Msg::Resolved {
            resolutions: vec![
                Resolution {
                    owner: 8,
                    segment: 1,
                    count: 2,
                    base: PermanentId(3),
                },
                own(7, 5),
            ],
            abandons: vec![],
        },
    );
    let actions = e.take_actions();
    assert!(delivers(&actions).is_empty(), "id 3 comes first");
    let asked = sends(&actions);
    assert!(
        matches!(
            asked.as_slice(),
            [(
                NodeId::Ndb(_),
                Msg::FetchPermanent {
                    from: PermanentId(3),
                    max: 2
                }
            )]
        ),
        "{asked:?}"
    );
    let ndb = asked[0].0;
    e.handle_message(
        0,
        ndb,
        Msg::Permanent {
            from: PermanentId(3),
            tip: PermanentId(6),
            records: vec![b("x"), b("y")],
        },
    );
    let actions = e.take_actions();
    assert_eq!(
        delivers(&actions),
        vec![(3, b("x")), (4, b("y")), (5, b("c"))]
    );
    assert!(sends(&actions).is_empty(), "{:?}", sends(&actions));
    assert_eq!(e.next_delivery(), PermanentId(6));
}

#[test]
fn delivers_in_id_order_without_gaps_and_switches_from_a_lagging_ndb() {
    let mut e = core();
    e.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions: vec![Resolution {
                owner: 8,
                segment: 1,
                count: 3,
                base: PermanentId(1),
            }],
            abandons: vec![],
        },
    );
    e.take_actions();
    // A stale answer that starts above `next` is ignored.
    e.handle_message(
        0,
        NodeId::Ndb(1),
        Msg::Permanent {
            from: PermanentId(2),
            tip: PermanentId(4),
            records: vec![b("y")],
        },
    );
    assert!(e.take_actions().is_empty());
    e.handle_message(
        0,
        NodeId::Ndb(1),
        Msg::Permanent {
            from: PermanentId(1),
            tip: PermanentId(3),
            records: vec![b("x"), b("y")],
        },
    );
    let actions = e.take_actions();
    assert_eq!(
        actions[..2],
        [
            Action::Deliver {
                id: PermanentId(1),
                body: b("x")
            },
            Action::Deliver {
                id: PermanentId(2),
                body: b("y")
            }
        ]
    );
    assert_eq!(
        sends(&actions),
        vec![(
            NodeId::Ndb(1),
            Msg::FetchPermanent {
                from: PermanentId(3),
                max: 256
            }
        )]
    );
    // Ndb 1 has nothing more though id 3 is ordered: the next poll goes to ndb 2.
    e.handle_message(
        0,
        NodeId::Ndb(1),
        Msg::Permanent {
            from: PermanentId(3),
            tip: PermanentId(3),
            records: vec![],
        },
    );
    assert!(e.take_actions().is_empty());
    e.handle_tick(60_000);
    assert_eq!(
        sends(&e.take_actions()),
        vec![(
            NodeId::Ndb(2),
            Msg::FetchPermanent {
                from: PermanentId(3),
                max: 256
            }
        )]
    );
}

#[test]
fn a_restarted_entry_starts_above_its_mark_with_no_prev() {
    let mut disk = EntryDisk::default();
    let mut e = EntryCore::recover(EntryConfig::new(7, vec![0], vec![0]), disk.clone(), 0);
    e.handle_publish(0, 1, 1, b("a"));
    for a in e.take_actions() {
        if let Action::Persist(w) = a {
            disk.apply(&w);
        }
    }
    let mut again = EntryCore::recover(EntryConfig::new(7, vec![0], vec![0]), disk, 0);
    again.handle_publish(0, 1, 1, b("a"));
    again.take_actions();
    again.handle_message(0, NodeId::Ndb(0), trim(65, 1));
    assert_eq!(
        sends(&again.take_actions()),
        vec![(
            NodeId::Sync(0),
            Msg::Over(Elect {
                owner: 7,
                segment: 65,
                count: 1,
                prev: None
            })
        )]
    );
}

fn abandoned(segment: u64, below: u64) -> Msg {
    Msg::Abandoned {
        owner: 7,
        segment,
        below,
    }
}

fn begins(actions: &[Action<EntryWrite>]) -> Vec<(u64, Vec<Body>)> {
    let mut v: Vec<(u64, Vec<Body>)> = sends(actions)
        .into_iter()
        .filter_map(|(to, m)| match (to, m) {
            (
                NodeId::Ndb(0),
                Msg::Begin {
                    segment, bodies, ..
                },
            ) => Some((segment, bodies)),
            _ => None,
        })
        .collect();
    v.dedup();
    v
}

#[test]
fn an_abandoned_chain_is_queued_again_and_renumbered_above_the_floor() {
    let mut e = core();
    e.handle_publish(0, 1, 1, b("a"));
    e.handle_publish(0, 1, 2, b("b"));
    e.handle_publish(0, 1, 3, b("c")); // waits: the window is 2
    e.take_actions();
    for n in 0..2 {
        e.handle_message(0, NodeId::Ndb(n), trim(5, 1));
        e.handle_message(0, NodeId::Ndb(n), trim(6, 1));
    }
    e.take_actions();
    // Segment 6 is abandoned (an ndb or sync says so): 5 may still be ordered, so nothing
    // new opens, and 6's publish goes back ahead of the waiting one.
    e.handle_message(0, NodeId::Sync(2), abandoned(6, 100));
    assert!(e.take_actions().is_empty());
    assert_eq!(e.open_segments_count(), 1);
    // A notice from someone else's entry, or from an entry, is not ours to act on.
    e.handle_message(0, NodeId::Entry(9), abandoned(5, 100));
    assert!(e.take_actions().is_empty());
    // Segment 5 resolves and is acked; then a new chain starts at the floor, after a
    // reservation above it is durable.
    e.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions: vec![Resolution {
                owner: 7,
                segment: 5,
                count: 1,
                base: PermanentId(1),
            }],
            abandons: vec![],
        },
    );
    let actions = e.take_actions();
    assert_eq!(
        actions[0],
        Action::Ack {
            publisher: 1,
            seq: 1,
            id: PermanentId(1)
        }
    );
    assert_eq!(actions[1], Action::Persist(EntryWrite::Reserve(164)));
    // The queued-again publish keeps its place ahead of the newer one, in one segment.
    assert_eq!(begins(&actions), vec![(100, vec![b("b"), b("c")])]);
    for n in 0..2 {
        e.handle_message(0, NodeId::Ndb(n), trim(100, 2));
    }
    assert!(sends(&e.take_actions()).contains(&(
        NodeId::Sync(0),
        Msg::Over(Elect {
            owner: 7,
            segment: 100,
            count: 2,
            prev: None
        })
    )));
    // A late notice for the old segment changes nothing.
    e.handle_message(0, NodeId::Ndb(1), abandoned(6, 100));
    assert!(e.take_actions().is_empty());
}

#[test]
fn a_returning_entry_below_the_floor_never_acks_an_abandoned_segment() {
    let mut e = core();
    e.handle_publish(0, 1, 1, b("a"));
    e.take_actions();
    // An ndb refuses the BEGIN: the whole chain is abandoned, nothing is acked.
    e.handle_message(0, NodeId::Ndb(0), abandoned(5, 40));
    let actions = e.take_actions();
    assert!(actions.iter().all(|a| !matches!(a, Action::Ack { .. })));
    assert_eq!(begins(&actions), vec![(40, vec![b("a")])]);
    // A resolution for the abandoned number (impossible, but late or forged) acks nothing.
    e.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions: vec![Resolution {
                owner: 7,
                segment: 5,
                count: 1,
                base: PermanentId(1),
            }],
            abandons: vec![],
        },
    );
    assert!(e
        .take_actions()
        .iter()
        .all(|a| !matches!(a, Action::Ack { .. })));
    assert_eq!(e.unacked(), 1);
}

#[test]
fn a_paused_follow_path_fetches_nothing_until_resumed() {
    let mut e = core();
    let fetch = |from| {
        vec![(
            NodeId::Ndb(1),
            Msg::FetchPermanent {
                from: PermanentId(from),
                max: 256,
            },
        )]
    };
    e.pause_delivery(0, true);
    assert!(e.take_actions().is_empty());
    // Ids 1..=3 are ordered, but the shell cannot take deliveries: no fetch, not even on a tick.
    e.handle_message(
        0,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions: vec![Resolution {
                owner: 8,
                segment: 1,
                count: 3,
                base: PermanentId(1),
            }],
            abandons: vec![],
        },
    );
    assert!(sends(&e.take_actions()).is_empty());
    e.handle_tick(60_000);
    assert!(sends(&e.take_actions()).is_empty());
    // An answer already on its way is still delivered; it asks for nothing more.
    e.handle_message(
        60_000,
        NodeId::Ndb(1),
        Msg::Permanent {
            from: PermanentId(1),
            tip: PermanentId(4),
            records: vec![b("x")],
        },
    );
    let actions = e.take_actions();
    assert_eq!(
        actions,
        vec![Action::Deliver {
            id: PermanentId(1),
            body: b("x")
        }]
    );
    // Room again: the next fetch goes out at once, from where delivery stands.
    e.pause_delivery(60_000, false);
    assert_eq!(sends(&e.take_actions()), fetch(2));
}

#[test]
fn with_a_linger_a_second_segment_waits_to_fill_unless_nothing_is_in_flight() {
    let mut e = core();
    e.cfg.linger = 2_000;
    e.handle_publish(0, 1, 1, b("a"));
    // Nothing in flight: segment 5 opens at once.
    assert_eq!(e.open_segments_count(), 1);
    e.take_actions();
    e.handle_publish(100, 1, 2, b("b"));
    e.handle_publish(500, 1, 3, b("c"));
    // Segment 5 is in flight: the next one lingers until the oldest waiter is 2 ms old.
    assert_eq!(e.open_segments_count(), 1);
    assert!(sends(&e.take_actions()).is_empty());
    assert_eq!(e.poll_timeout(), 2_100);
    e.handle_tick(2_099);
    assert_eq!(e.open_segments_count(), 1);
    e.handle_tick(2_100);
    assert_eq!(e.open_segments_count(), 2);
    let begins: Vec<_> = sends(&e.take_actions())
        .into_iter()
        .filter_map(|(_, m)| match m {
            Msg::Begin { segment, count, .. } => Some((segment, count)),
            _ => None,
        })
        .collect();
    assert_eq!(begins, vec![(6, 2); 3]);
    // A full batch does not linger.
    e.cfg.window = 3;
    e.cfg.max_segment = 2;
    e.handle_publish(3_000, 1, 4, b("d"));
    assert_eq!(e.open_segments_count(), 2);
    e.handle_publish(3_001, 1, 5, b("e"));
    assert_eq!(e.open_segments_count(), 3);
}

#[test]
fn stage_timings_split_a_segment_into_wait_store_and_order() {
    let mut e = core();
    e.cfg.linger = 2_000;
    e.handle_publish(0, 1, 1, b("a"));
    e.handle_publish(100, 1, 2, b("b"));
    // Segment 6 (publish b) lingers until b is 2 ms old.
    e.handle_tick(2_100);
    assert_eq!(e.open_segments_count(), 2);
    for n in 0..2 {
        e.handle_message(1_000, NodeId::Ndb(n), trim(5, 1));
        e.handle_message(3_000, NodeId::Ndb(n), trim(6, 1));
    }
    let res = |segment, base| Resolution {
        owner: 7,
        segment,
        count: 1,
        base: PermanentId(base),
    };
    e.handle_message(
        4_000,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions: vec![res(5, 1), res(6, 2)],
            abandons: vec![],
        },
    );
    let t: Vec<(Micros, Option<Micros>, Micros)> = e
        .take_stage_timings()
        .iter()
        .map(|t| (t.wait, t.store, t.flight))
        .collect();
    assert_eq!(t, vec![(0, Some(1_000), 4_000), (2_000, Some(900), 1_900)]);
    // A segment the ndbs reported straight to the leader: no store stage, only its flight.
    e.handle_publish(5_000, 1, 3, b("c"));
    e.handle_message(
        7_500,
        NodeId::Sync(0),
        Msg::Resolved {
            resolutions: vec![res(7, 3)],
            abandons: vec![],
        },
    );
    let t: Vec<(Option<Micros>, Micros)> = e
        .take_stage_timings()
        .iter()
        .map(|t| (t.store, t.flight))
        .collect();
    assert_eq!(t, vec![(None, 2_500)]);
}

fn notice(seq: u64, owner: u64) -> AbandonNotice {
    AbandonNotice {
        seq,
        owner,
        below: 100,
        at: PermanentId(10 + seq),
    }
}

fn notices(list: Vec<AbandonNotice>) -> Msg {
    Msg::Resolved {
        resolutions: vec![],
        abandons: list,
    }
}

#[test]
fn abandon_notices_are_polled_from_each_sync_in_turn_and_taken_once_in_order() {
    let mut cfg = EntryConfig::new(7, vec![0, 1, 2], vec![0, 1, 2]);
    cfg.notice_poll = 1_000_000;
    let mut e = EntryCore::recover(cfg, EntryDisk::default(), 0);
    let asked = |e: &mut EntryCore| -> Vec<(NodeId, Msg)> {
        let mut s = sends(&e.take_actions());
        s.retain(|(to, _)| matches!(to, NodeId::Sync(_)));
        s
    };
    let fetch = |abandons| Msg::FetchResolved {
        from: PermanentId(u64::MAX),
        abandons,
    };
    e.handle_tick(0);
    assert_eq!(asked(&mut e), vec![(NodeId::Sync(0), fetch(0))]);
    // Not again before the interval, whatever else ticks.
    e.handle_tick(999_999);
    assert!(asked(&mut e).is_empty());
    assert!(e.poll_timeout() <= 1_000_000);
    // A gap (seq 1 before 0) waits; seq 0 then 1 are taken; a duplicate is not.
    e.handle_message(1, NodeId::Sync(0), notices(vec![notice(1, 3)]));
    assert!(e.take_abandon_notices().is_empty());
    e.handle_message(
        1,
        NodeId::Sync(0),
        notices(vec![notice(1, 3), notice(0, 4)]),
    );
    e.handle_message(1, NodeId::Sync(1), notices(vec![notice(1, 3)]));
    assert_eq!(e.take_abandon_notices(), vec![notice(0, 4), notice(1, 3)]);
    // Its own abandon is skipped (it answers Abandoned for its segments), but counted.
    e.handle_message(1, NodeId::Sync(2), notices(vec![notice(2, 7)]));
    assert!(e.take_abandon_notices().is_empty());
    e.handle_tick(1_000_000);
    assert_eq!(asked(&mut e), vec![(NodeId::Sync(1), fetch(3))]);
}

#[test]
fn without_a_notice_poll_nothing_is_asked() {
    let mut e = core();
    e.handle_tick(10_000_000);
    assert!(sends(&e.take_actions())
        .iter()
        .all(|(to, _)| !matches!(to, NodeId::Sync(_))));
}

#[test]
fn only_the_first_begin_is_direct_and_a_retry_asks_for_trims() {
    let mut e = core();
    e.handle_publish(0, 1, 1, b("a"));
    e.handle_publish(0, 1, 2, b("b"));
    type Sent = (u64, Option<u64>, bool, usize);
    let direct = |actions: &[Action<EntryWrite>]| -> Vec<Sent> {
        let mut v: Vec<Sent> = sends(actions)
            .into_iter()
            .filter_map(|(_, m)| match m {
                Msg::Begin {
                    segment,
                    prev,
                    direct,
                    bodies,
                    ..
                } => Some((segment, prev, direct, bodies.len())),
                _ => None,
            })
            .collect();
        v.dedup();
        v
    };
    // Segments 5 and 6 (chained), each to every ndb, direct.
    assert_eq!(
        direct(&e.take_actions()),
        vec![(5, None, true, 1), (6, Some(5), true, 1)]
    );
    // Unresolved for a retry interval: the resend asks for Trims, without the bodies.
    e.handle_tick(60_000);
    assert_eq!(
        direct(&e.take_actions()),
        vec![(5, None, false, 0), (6, Some(5), false, 0)]
    );
    // Still no quorum of Trims: the bodies again, to the ndbs that have not trimmed.
    for n in 0..3 {
        e.handle_message(60_000, NodeId::Ndb(n), trim(5, 0));
    }
    e.handle_message(60_000, NodeId::Ndb(2), trim(6, 1));
    e.handle_tick(120_000);
    let actions = e.take_actions();
    assert_eq!(
        direct(&actions),
        vec![(5, None, false, 1), (6, Some(5), false, 1)]
    );
    let to_6: Vec<NodeId> = sends(&actions)
        .into_iter()
        .filter(|(_, m)| matches!(m, Msg::Begin { segment: 6, .. }))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(to_6, vec![NodeId::Ndb(0), NodeId::Ndb(1)]);
}
