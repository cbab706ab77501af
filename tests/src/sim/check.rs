//! The invariants, checked on a [`World`]: during the run (durability at every
//! ack and after every crash) and at the end (everything else).

use super::{body, decode, World};
use ordo_common::proto::{Body, LogEntry, NodeId, Resolution};
use ordo_common::PermanentId;
use ordo_ndb::cluster::NdbDisk;
use ordo_sync::log::SyncWrite;
use std::collections::{BTreeMap, BTreeSet};

fn holds(disk: &NdbDisk, id: PermanentId, b: &Body) -> bool {
    disk.permanent(id) == Some(b)
        || disk
            .temp
            .values()
            .any(|seg| seg.bodies.values().any(|x| x == b))
}

fn durable_copies(w: &World, id: PermanentId, b: &Body) -> usize {
    w.ndbs.iter().filter(|n| holds(&n.synced, id, b)).count()
}

/// Invariant 4 at ack time: the acked body is on a quorum of ndb disks (synced).
pub fn durable_at_ack(w: &mut World, publisher: u64, seq: u64, id: PermanentId) {
    let b = body(publisher, seq);
    let copies = durable_copies(w, id, &b);
    if copies < 2 {
        w.fail(format!(
            "durability: {publisher}:{seq} acked as {id} is on {copies} ndb disks"
        ));
    }
}

/// Invariant 4 after a crash: every acked message is still on a quorum of ndb disks.
pub fn durable_after_crash(w: &mut World) {
    let acked: Vec<((u64, u64), PermanentId)> =
        w.history.acked.iter().map(|(k, v)| (*k, *v)).collect();
    for ((p, s), id) in acked {
        let copies = durable_copies(w, id, &body(p, s));
        if copies < 2 {
            w.fail(format!(
                "durability: after a crash {p}:{s} (acked as {id}) is on {copies} ndb disks"
            ));
            return;
        }
    }
}

/// Return the leader's next id (or the highest any sync node applied).
pub fn tip(w: &World) -> PermanentId {
    w.syncs
        .iter()
        .filter_map(|n| n.core.as_ref())
        .map(|c| c.machine().next_id())
        .max()
        .unwrap_or(PermanentId(1))
}

/// Liveness after heal: every node caught up, every current publish acked and delivered.
pub fn settled(w: &World) -> Result<(), String> {
    let leader = w
        .syncs
        .iter()
        .filter_map(|n| n.core.as_ref())
        .find(|c| c.is_leader())
        .ok_or("liveness: no sync leader")?;
    // Until a new leader commits an entry of its term, entries an earlier leader committed
    // (and acked) are in its log but not yet applied: its tip is not the final one.
    if leader.commit_index() != leader.last_index()
        || leader.applied_index() != leader.commit_index()
    {
        return Err(format!(
            "liveness: the leader applied {} and committed {} of {} log entries",
            leader.applied_index(),
            leader.commit_index(),
            leader.last_index()
        ));
    }
    let tip = leader.machine().next_id();
    let notices = leader.machine().notice_count();
    for n in &w.syncs {
        if let Some((from, to)) = n.core.as_ref().and_then(|c| c.archive_gap()) {
            return Err(format!(
                "liveness: {}'s archive misses ids {from}..{to}",
                n.id
            ));
        }
    }
    for (i, n) in w.ndbs.iter().enumerate() {
        let core = n.core.as_ref().ok_or(format!("liveness: ndb{i} down"))?;
        if core.disk().next != tip {
            return Err(format!(
                "liveness: ndb{i} applied up to {} of {tip}",
                core.disk().next
            ));
        }
        if core.disk().abandons != notices {
            return Err(format!(
                "liveness: ndb{i} applied {} of {notices} abandon notices",
                core.disk().abandons
            ));
        }
    }
    for n in &w.entries {
        if matches!(n.id, NodeId::Entry(o) if w.gone.contains(&o)) {
            continue;
        }
        let core = n.core.as_ref().ok_or(format!("liveness: {} down", n.id))?;
        if core.unacked() > 0 {
            return Err(format!(
                "liveness: {} has {} unacked publishes",
                n.id,
                core.unacked()
            ));
        }
        if core.next_delivery() != tip {
            return Err(format!(
                "liveness: {} delivered up to {} of {tip}",
                n.id,
                core.next_delivery()
            ));
        }
        if core.notices_seen() != notices {
            return Err(format!(
                "liveness: {} learnt {} of {notices} abandon notices",
                n.id,
                core.notices_seen()
            ));
        }
    }
    Ok(())
}

/// Check every invariant at the end of a run.
pub fn all(w: &World) -> Result<(), String> {
    // The sync nodes' committed entries (after their snapshots) agree index by index.
    let cores: Vec<_> = w.syncs.iter().filter_map(|n| n.core.as_ref()).collect();
    let mut committed: BTreeMap<u64, &LogEntry> = BTreeMap::new();
    for c in &cores {
        // A log shorter than its commit index lost a committed entry to a truncation.
        if c.last_index() < c.commit_index() {
            return Err("agreement: a committed sync log entry was truncated".into());
        }
        for i in c.snapshot_index() + 1..=c.commit_index() {
            let Some(e) = c.entry(i) else {
                return Err(format!("agreement: sync log misses committed entry {i}"));
            };
            if committed.insert(i, e).is_some_and(|x| x != e) {
                return Err(format!("agreement: committed sync logs diverge at {i}"));
            }
        }
    }
    // Machines that applied the same prefix (from a snapshot or the log) are equal.
    for a in &cores {
        for b in &cores {
            if a.applied_index() == b.applied_index() && a.machine() != b.machine() {
                return Err(format!(
                    "agreement: two sync machines differ at applied index {}",
                    a.applied_index()
                ));
            }
        }
    }
    // 1 and 2: one body per id everywhere; each ndb's log is 1..next without a gap.
    let mut global: BTreeMap<PermanentId, Body> = BTreeMap::new();
    for n in &w.ndbs {
        let disks = [Some(&n.synced), n.core.as_ref().map(|c| c.disk())];
        for disk in disks.into_iter().flatten() {
            let len = disk.perm.len() as u64;
            if disk.next.0 != len + 1 || disk.perm.keys().next_back().is_some_and(|k| k.0 != len) {
                return Err(format!(
                    "order: {}'s permanent log is not 1..{} without gaps",
                    n.id, disk.next
                ));
            }
            for (id, b) in &disk.perm {
                agree(&mut global, *id, b, &n.id.to_string())?;
            }
        }
    }
    for ((owner, inc), list) in &w.history.delivered {
        let mut expect = PermanentId(1);
        for (id, b) in list {
            if *id != expect {
                return Err(format!(
                    "order: entry{owner} incarnation {inc} delivered {id} after {}",
                    expect.0 - 1
                ));
            }
            expect = expect.next();
            agree(&mut global, *id, b, &format!("entry{owner} delivery"))?;
        }
    }
    // 3: integrity: an id names bytes that were published, each message once.
    let mut seen = BTreeSet::new();
    let mut last_seq: BTreeMap<u64, u64> = BTreeMap::new();
    for (id, b) in &global {
        let Some((p, s)) = decode(b).filter(|ps| w.history.published.get(b) == Some(ps)) else {
            return Err(format!("integrity: id {id} holds bytes nobody published"));
        };
        if !seen.insert((p, s)) {
            return Err(format!("integrity: {p}:{s} has two permanent ids"));
        }
        // 5: FIFO per publisher session: its ordered messages are seqs 1, 2, ..., k in id
        // order. A crash loses only a suffix (unordered segments of a dead incarnation), and an
        // abandoned segment's publishes are ordered later in their place, so no gap either.
        let prev = last_seq.insert(p, s).unwrap_or(0);
        if s != prev + 1 {
            return Err(format!("fifo: publisher {p} has {s} ordered after {prev}"));
        }
    }
    // 4: every acked message is at its id.
    for ((p, s), id) in &w.history.acked {
        if global.get(id) != Some(&body(*p, *s)) {
            return Err(format!(
                "durability: {p}:{s} acked as {id} but the log holds {:?}",
                global.get(id).and_then(decode)
            ));
        }
    }
    archives_complete(w)?;
    // 6: liveness after heal.
    settled(w)?;
    no_abandoned_leftovers(w)
}

/// Every running sync node can still answer for every id it applied: its archive (as
/// written, synced or not) and its memory hold the resolutions `1..next` without a gap, the
/// same ones on every node.
fn archives_complete(w: &World) -> Result<(), String> {
    let mut global: BTreeMap<PermanentId, Resolution> = BTreeMap::new();
    for n in &w.syncs {
        let Some(core) = n.core.as_ref() else {
            continue;
        };
        if let Some((from, to)) = core.archive_gap() {
            return Err(format!("archive: {} still misses ids {from}..{to}", n.id));
        }
        let mut all = n.synced.archive.clone();
        for write in n.pending_writes() {
            if let SyncWrite::Archive { resolutions, .. } = write {
                all.extend(resolutions.iter().map(|r| (r.base, *r)));
            }
        }
        let memory = core.memory_resolutions_from(core.memory_floor(), usize::MAX);
        all.extend(memory.iter().map(|r| (r.base, *r)));
        let mut cursor = PermanentId(1);
        for r in all.values().filter(|r| r.base < core.machine().next_id()) {
            if r.base != cursor {
                return Err(format!(
                    "archive: {} holds no resolution at {cursor} (next {} at {})",
                    n.id, r.base, r.owner
                ));
            }
            cursor = r.end();
            if global.insert(r.base, *r).is_some_and(|x| x != *r) {
                return Err(format!(
                    "archive: two resolutions at {} across syncs",
                    r.base
                ));
            }
        }
        if cursor != core.machine().next_id() {
            return Err(format!(
                "archive: {} holds resolutions up to {cursor} of {}",
                n.id,
                core.machine().next_id()
            ));
        }
    }
    Ok(())
}

/// After heal no ndb keeps temporary bodies of a segment an operator abandoned.
fn no_abandoned_leftovers(w: &World) -> Result<(), String> {
    let Some(machine) = w
        .syncs
        .iter()
        .filter_map(|n| n.core.as_ref())
        .find(|c| c.is_leader())
        .map(|c| c.machine())
    else {
        return Ok(());
    };
    for n in &w.ndbs {
        let Some(core) = n.core.as_ref() else {
            continue;
        };
        for &(owner, segment) in core.disk().temp.keys() {
            if segment < machine.operator_floor(owner) && !machine.is_elected(owner, segment) {
                return Err(format!(
                    "abandon: {} still holds temporary bodies of abandoned segment {owner}:{segment}",
                    n.id
                ));
            }
        }
    }
    Ok(())
}

fn agree(
    global: &mut BTreeMap<PermanentId, Body>,
    id: PermanentId,
    b: &Body,
    who: &str,
) -> Result<(), String> {
    match global.get(&id) {
        Some(x) if x != b => Err(format!(
            "agreement: id {id} is {:?} elsewhere but {:?} on {who}",
            decode(x),
            decode(b)
        )),
        Some(_) => Ok(()),
        None => {
            global.insert(id, b.clone());
            Ok(())
        }
    }
}
