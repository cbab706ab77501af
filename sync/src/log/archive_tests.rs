//! Unit tests of the resolution window and its archive: eviction, answers from the archive,
//! restarts, and the gap an InstallSnapshot leaves.

use super::*;

fn windowed(id: u32, window: usize, threshold: u64) -> SyncConfig {
    let mut c = small_snapshots(id, threshold);
    c.resolution_window = window;
    c
}

fn windowed_cluster(window: usize, threshold: u64) -> Cluster {
    let mut c = Cluster::new();
    for i in 0..3 {
        c.nodes[i] = SyncNode::recover(
            windowed(i as u32, window, threshold),
            SyncDisk::default(),
            0,
        );
    }
    c
}

/// Feed `msg` to node `i` as its shell does (archive first) and return what it sent to `from`.
fn ask(c: &mut Cluster, i: u32, from: NodeId, msg: Msg) -> Vec<Msg> {
    let (node, disk) = (&c.nodes[i as usize], &c.disks[i as usize]);
    if let Some(reply) = answer_from_archive(node, &msg, || disk.clone()) {
        return vec![reply];
    }
    c.deliver(i, from, msg);
    let mut replies = Vec::new();
    for a in c.nodes[i as usize].take_actions() {
        match a {
            Action::Persist(w) => c.disks[i as usize].apply(&w),
            Action::Send { to, msg } if to == from => replies.push(msg),
            _ => {}
        }
    }
    replies
}

fn resolved(resolutions: Vec<Resolution>) -> Msg {
    Msg::Resolved {
        resolutions,
        abandons: Vec::new(),
    }
}

/// Every resolution of segments 1..=n of owner 7, from a cluster that keeps them all.
fn every_resolution(n: u64) -> Vec<Resolution> {
    let mut c = Cluster::new();
    let l = c.tick_until_leader();
    order_segments(&mut c, l, 1, n);
    c.nodes[l as usize]
        .machine()
        .resolutions_from(PermanentId(1), usize::MAX)
}

#[test]
fn the_window_bounds_memory_and_snapshots_and_old_answers_come_from_the_archive() {
    let all = every_resolution(12);
    let mut c = windowed_cluster(3, 4);
    let l = c.tick_until_leader();
    order_segments(&mut c, l, 1, 12);
    for i in 0..3u32 {
        let n = &c.nodes[i as usize];
        assert_eq!(n.machine().window_len(), 3, "node {i}");
        // Memory: the window plus what left it since the last snapshot (fewer than 4 entries).
        assert!(n.resolutions_in_memory() < 3 + 4, "node {i}");
        let disk = &c.disks[i as usize];
        let snapshot = disk.snapshot.as_deref().expect("a snapshot");
        assert_eq!(
            snapshot.resolutions.len(),
            3,
            "the snapshot holds the window only"
        );
        // Archive, memory and the durable snapshot's window together hold every resolution.
        let archived: Vec<Resolution> = disk.archive.values().copied().collect();
        assert_eq!(archived, all[..archived.len()], "node {i}");
        assert!(
            archived.len() >= 12 - 3 - 4,
            "node {i} archived {}",
            archived.len()
        );
        assert_eq!(n.memory_floor(), all[archived.len()].base, "node {i}");
    }
    for (i, r) in all.iter().enumerate() {
        // A duplicate Over of every segment gets its resolution: window, unarchived or archive.
        let got = ask(&mut c, l, NodeId::Entry(7), over(7, r.segment, 2, None));
        assert_eq!(got, vec![resolved(vec![*r])], "segment {}", r.segment);
        // FetchResolved from inside every range gets the contiguous rest.
        let from = PermanentId(r.base.0 + 1);
        let got = ask(
            &mut c,
            l,
            NodeId::Ndb(0),
            Msg::FetchResolved { from, abandons: 0 },
        );
        let Some(Msg::Resolved { resolutions, .. }) = got.first() else {
            panic!("no answer from {from}: {got:?}");
        };
        assert_eq!(
            resolutions[..],
            all[i..i + resolutions.len()],
            "from {from}"
        );
        assert!(!resolutions.is_empty());
    }
    // Never elected: still abandoned, the archive notwithstanding.
    let got = ask(&mut c, l, NodeId::Entry(7), over(7, 20, 2, Some(19)));
    assert!(got.is_empty(), "not ready, nothing to say: {got:?}");
    let got = ask(&mut c, l, NodeId::Entry(7), over(7, 5, 0, None));
    assert!(
        matches!(got[..], [Msg::Abandoned { segment: 5, .. }]),
        "{got:?}"
    );
}

#[test]
fn a_restarted_node_answers_the_same_from_its_store() {
    let all = every_resolution(10);
    let mut c = windowed_cluster(2, 3);
    let l = c.tick_until_leader();
    order_segments(&mut c, l, 1, 10);
    let f = (l + 1) % 3;
    let queries: Vec<(NodeId, Msg)> = all
        .iter()
        .flat_map(|r| {
            [
                (NodeId::Entry(7), over(7, r.segment, 2, None)),
                (
                    NodeId::Ndb(0),
                    Msg::FetchResolved {
                        from: r.base,
                        abandons: 0,
                    },
                ),
            ]
        })
        .collect();
    let before: Vec<Vec<Msg>> = queries
        .iter()
        .map(|(from, q)| ask(&mut c, f, *from, q.clone()))
        .collect();
    assert!(before.iter().all(|a| !a.is_empty()), "{before:?}");
    // Restart from the disk alone: the snapshot's window, no memory of what was evicted.
    c.nodes[f as usize] = SyncNode::recover(windowed(f, 2, 3), c.disks[f as usize].clone(), c.now);
    assert!(c.nodes[f as usize].resolutions_in_memory() <= 2);
    // Before a leader tells it the commit index it answers up to its snapshot, nothing wrong.
    let early: Vec<Vec<Msg>> = queries
        .iter()
        .map(|(from, q)| ask(&mut c, f, *from, q.clone()))
        .collect();
    for (k, (e, b)) in early.iter().zip(&before).enumerate() {
        let prefix = match (e.first(), b.first()) {
            (None, _) => true,
            (
                Some(Msg::Resolved { resolutions: x, .. }),
                Some(Msg::Resolved { resolutions: y, .. }),
            ) => y.starts_with(x),
            _ => false,
        };
        assert!(
            prefix,
            "query {k}: {e:?} before replay, {b:?} before restart"
        );
    }
    assert!(
        early.iter().filter(|a| !a.is_empty()).count() >= 12,
        "{early:?}"
    );
    c.now += 60_000;
    c.nodes[l as usize].handle_tick(c.now);
    c.run();
    let after: Vec<Vec<Msg>> = queries
        .iter()
        .map(|(from, q)| ask(&mut c, f, *from, q.clone()))
        .collect();
    assert_eq!(after, before);
}

#[test]
fn evicting_without_archiving_loses_old_answers() {
    // The hand-planted bug: the window drops resolutions and nothing archives them.
    let mut c = Cluster::new();
    for i in 0..3 {
        let mut cfg = windowed(i as u32, 2, 3);
        cfg.skip_archive = true;
        c.nodes[i] = SyncNode::recover(cfg, SyncDisk::default(), 0);
    }
    let l = c.tick_until_leader();
    order_segments(&mut c, l, 1, 8);
    let got = ask(&mut c, l, NodeId::Entry(7), over(7, 1, 2, None));
    assert!(
        matches!(got[..], [Msg::Abandoned { segment: 1, .. }]),
        "an elected segment is answered Abandoned: {got:?}"
    );
    let from = PermanentId(1);
    let got = ask(
        &mut c,
        l,
        NodeId::Ndb(0),
        Msg::FetchResolved { from, abandons: 0 },
    );
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn an_install_past_its_next_leaves_a_gap_that_peers_fill() {
    let all = every_resolution(16);
    let mut c = windowed_cluster(2, 4);
    let l = c.tick_until_leader();
    let lagging = (l + 1) % 3;
    order_segments(&mut c, l, 1, 2);
    c.down.insert(lagging);
    order_segments(&mut c, l, 3, 14);
    let own_next = c.nodes[lagging as usize].machine().next_id();
    c.down.clear();
    c.now += 300_000;
    c.nodes[l as usize].handle_tick(c.now);
    c.run();
    let f = &c.nodes[lagging as usize];
    let start = f.machine().window_start();
    assert_eq!(f.archive_gap(), Some((own_next, start)));
    assert_eq!(
        c.disks[lagging as usize].archive_gap,
        Some((own_next, start)),
        "durable"
    );
    // Inside the gap it neither knows the resolution nor may call the segment abandoned.
    let in_gap = all
        .iter()
        .find(|r| r.base == own_next)
        .copied()
        .expect("in gap");
    let got = ask(
        &mut c,
        lagging,
        NodeId::Entry(7),
        over(7, in_gap.segment, 2, None),
    );
    assert!(got.is_empty(), "silent inside the gap: {got:?}");
    // Its next tick asks the peers, whose shells answer from their archives.
    c.now += 10_000;
    c.nodes[lagging as usize].handle_tick(c.now);
    c.run();
    for _ in 0..4 {
        c.now += 200_000;
        c.nodes[lagging as usize].handle_tick(c.now);
        c.run();
    }
    assert_eq!(c.nodes[lagging as usize].archive_gap(), None);
    assert_eq!(c.disks[lagging as usize].archive_gap, None);
    for r in &all {
        let got = ask(
            &mut c,
            lagging,
            NodeId::Entry(7),
            over(7, r.segment, 2, None),
        );
        assert_eq!(got, vec![resolved(vec![*r])], "segment {}", r.segment);
    }
}
