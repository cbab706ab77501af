//! Unit tests of snapshots: taken at the threshold, restarts from a snapshot plus the log
//! after it, and InstallSnapshot to a lagging or conflicting follower.

use super::*;

fn elects(term: u64, owner: u64, segment: u64) -> LogEntry {
    LogEntry::elects(
        term,
        vec![Elect {
            owner,
            segment,
            count: 2,
            prev: segment.checked_sub(1).filter(|p| *p > 0),
        }],
    )
}

/// The machine after applying `entries` from scratch.
fn replayed(entries: &[LogEntry]) -> machine::Machine {
    let mut m = machine::Machine::default();
    for e in entries {
        for x in &e.elects {
            m.apply(x);
        }
        for a in &e.abandons {
            m.abandon(a);
        }
    }
    m
}

#[test]
fn a_snapshot_is_taken_at_the_threshold_and_never_past_the_commit_index() {
    let log: Vec<LogEntry> = (1..=5).map(|s| elects(1, 7, s)).collect();
    let draft = |commit| Msg::Draft {
        term: 1,
        prev_index: 0,
        prev_term: 0,
        entries: log.clone(),
        commit,
    };
    // Threshold 3, commit 2: applied stays below the threshold, so no snapshot.
    let mut n = SyncNode::recover(small_snapshots(1, 3), SyncDisk::default(), 0);
    n.handle_message(0, NodeId::Sync(0), draft(2));
    let actions = n.take_actions();
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Persist(SyncWrite::Snapshot(_)))),
        "{actions:?}"
    );
    // Threshold 2, commit 3 of 5: the snapshot covers index 3 (applied), not the log's end.
    let mut n = SyncNode::recover(small_snapshots(1, 2), SyncDisk::default(), 0);
    n.handle_message(0, NodeId::Sync(0), draft(3));
    let snapshot = replayed(&log[..3]).snapshot(3, 1);
    assert_eq!(
        n.take_actions(),
        vec![
            Action::Persist(SyncWrite::Hard {
                term: 1,
                voted_for: None
            }),
            Action::Persist(SyncWrite::Log {
                from: 1,
                entries: log.clone()
            }),
            Action::Persist(SyncWrite::Snapshot(snapshot)),
            Action::Send {
                to: NodeId::Sync(0),
                msg: Msg::DraftAck {
                    term: 1,
                    ok: true,
                    match_index: 5
                }
            },
        ]
    );
    assert_eq!((n.snapshot_index(), n.applied_index()), (3, 3));
    assert_eq!(n.log(), &log[3..], "the covered prefix left memory");
    // The disk the writes build holds the snapshot and only the suffix.
    let mut disk = SyncDisk::default();
    for w in [
        SyncWrite::Log {
            from: 1,
            entries: log.clone(),
        },
        SyncWrite::Snapshot(replayed(&log[..3]).snapshot(3, 1)),
    ] {
        disk.apply(&w);
    }
    assert_eq!((disk.snapshot_index(), disk.last_index()), (3, 5));
    assert_eq!(disk.log, log[3..]);
}

#[test]
fn a_restart_from_snapshot_and_suffix_gives_the_same_machine() {
    let mut with = Cluster::new();
    let mut without = Cluster::new();
    for i in 0..3 {
        with.nodes[i] = SyncNode::recover(small_snapshots(i as u32, 4), SyncDisk::default(), 0);
    }
    let l = with.tick_until_leader();
    assert_eq!(without.tick_until_leader(), l, "same seeds, same leader");
    order_segments(&mut with, l, 1, 11);
    order_segments(&mut without, l, 1, 11);
    let full = without.nodes[l as usize].machine().clone();
    assert_eq!(full.next_id(), PermanentId(23));
    for i in 0..3 {
        let disk = with.disks[i].clone();
        let at = disk.snapshot_index();
        assert!(at >= 4, "node {i} took no snapshot");
        assert_eq!(disk.last_index(), without.disks[i].log.len() as u64);
        assert!(
            disk.log.len() < 4 + 3,
            "node {i} kept {} entries",
            disk.log.len()
        );
        assert_eq!(disk.log[..], without.disks[i].log[at as usize..]);
        // Restarted, it holds the snapshot's machine; the suffix is applied once a leader
        // tells the commit index.
        let n = SyncNode::recover(small_snapshots(i as u32, 4), disk, with.now);
        assert_eq!(n.applied_index(), at);
        with.nodes[i] = n;
    }
    let l2 = with.tick_until_leader();
    with.now += 60_000;
    with.nodes[l2 as usize].handle_tick(with.now);
    with.run();
    for n in &with.nodes {
        assert_eq!(n.machine(), &full);
    }
}

#[test]
fn a_lagging_follower_gets_install_snapshot_and_catches_up() {
    let mut c = Cluster::new();
    for i in 0..3 {
        c.nodes[i] = SyncNode::recover(small_snapshots(i as u32, 4), SyncDisk::default(), 0);
    }
    let l = c.tick_until_leader();
    let lagging = (l + 1) % 3;
    order_segments(&mut c, l, 1, 2);
    c.down.insert(lagging);
    order_segments(&mut c, l, 3, 12);
    assert!(c.nodes[l as usize].snapshot_index() > c.nodes[lagging as usize].last_index());
    assert_eq!(c.nodes[lagging as usize].snapshot_index(), 0);
    // Back: the leader no longer holds its next entry, so it sends the machine instead (once
    // the resend interval after the lost ones passed: a snapshot can be large).
    c.down.clear();
    c.now += 300_000;
    c.nodes[l as usize].handle_tick(c.now);
    let installs_before = c.installs;
    c.run();
    assert_eq!(c.installs - installs_before, 1, "one InstallSnapshot");
    let leader = &c.nodes[l as usize];
    let follower = &c.nodes[lagging as usize];
    // The snapshot is the leader's machine at its applied index, past its own snapshot.
    assert!(leader.snapshot_index() < leader.applied_index());
    assert_eq!(follower.snapshot_index(), leader.applied_index());
    assert_eq!(follower.machine(), leader.machine());
    assert_eq!(follower.last_index(), leader.last_index());
    // It persisted the snapshot (before its ack); a restart starts from there.
    let disk = c.disks[lagging as usize].clone();
    assert_eq!(disk.snapshot_index(), follower.snapshot_index());
    assert_eq!(disk.last_index(), leader.last_index());
    let restarted = SyncNode::recover(small_snapshots(lagging, 4), disk, c.now);
    assert_eq!(restarted.machine(), leader.machine());
    // It goes on replicating new entries normally.
    order_segments(&mut c, l, 15, 1);
    assert_eq!(
        c.nodes[lagging as usize].machine().resolution(7, 15),
        c.nodes[l as usize].machine().resolution(7, 15)
    );
    assert!(c.nodes[lagging as usize]
        .machine()
        .resolution(7, 15)
        .is_some());
}

#[test]
fn an_installed_snapshot_drops_a_conflicting_suffix_and_is_persisted_before_the_ack() {
    // The follower holds entries 1..=3 of term 1, uncommitted.
    let mut disk = SyncDisk {
        term: 1,
        ..SyncDisk::default()
    };
    disk.log = (1..=3).map(|s| elects(1, 7, s)).collect();
    let mut n = SyncNode::recover(small_snapshots(1, 100), disk, 0);
    // The committed log of term 2 differs from index 2 on.
    let committed = vec![elects(1, 7, 1), elects(2, 8, 1), elects(2, 8, 2)];
    let snapshot = replayed(&committed).snapshot(3, 2);
    n.handle_message(
        0,
        NodeId::Sync(2),
        Msg::InstallSnapshot {
            term: 2,
            snapshot: snapshot.clone(),
        },
    );
    assert_eq!(
        n.take_actions(),
        vec![
            Action::Persist(SyncWrite::Hard {
                term: 2,
                voted_for: None
            }),
            Action::Persist(SyncWrite::Snapshot(snapshot.clone())),
            Action::Send {
                to: NodeId::Sync(2),
                msg: Msg::SnapshotAck {
                    term: 2,
                    last_index: 3
                }
            },
        ]
    );
    assert!(n.log().is_empty());
    assert_eq!(
        n.machine().resolution(8, 2).map(|r| r.base),
        Some(PermanentId(5))
    );
    // With a longer conflicting log, the entries after the snapshot go first.
    let mut disk = SyncDisk {
        term: 1,
        ..SyncDisk::default()
    };
    disk.log = (1..=5).map(|s| elects(1, 7, s)).collect();
    let mut n = SyncNode::recover(small_snapshots(1, 100), disk, 0);
    n.handle_message(
        0,
        NodeId::Sync(2),
        Msg::InstallSnapshot {
            term: 2,
            snapshot: snapshot.clone(),
        },
    );
    let actions = n.take_actions();
    assert_eq!(
        actions[1..3],
        [
            Action::Persist(SyncWrite::Log {
                from: 4,
                entries: vec![]
            }),
            Action::Persist(SyncWrite::Snapshot(snapshot.clone())),
        ]
    );
    assert_eq!(n.last_index(), 3);
    // A stale leader's snapshot is refused with the current term, and changes nothing.
    n.handle_message(
        0,
        NodeId::Sync(0),
        Msg::InstallSnapshot {
            term: 1,
            snapshot: replayed(&[]).snapshot(9, 1),
        },
    );
    assert_eq!(
        n.take_actions(),
        vec![Action::Send {
            to: NodeId::Sync(0),
            msg: Msg::SnapshotAck {
                term: 2,
                last_index: 0
            }
        }]
    );
    assert_eq!(n.snapshot_index(), 3);
}
