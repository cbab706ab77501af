//! The invariants, read from durable disks (what survives a crash) and from the
//! ghost state of the entries (what publishers and subscribers were told).

use crate::actor::{owner_of, Core, EntryState, Node};
use ordo_common::proto::{Body, Msg};
use ordo_common::PermanentId;
use ordo_ndb::cluster::NdbDisk;
use ordo_sync::log::machine::{Machine, Outcome};
use ordo_sync::log::SyncDisk;
use stateright::actor::ActorModelState;
use std::collections::{BTreeMap, BTreeSet};

pub type S = ActorModelState<Node>;

/// Each ndb's durable disk: what a power cut leaves.
pub fn ndb_disks(s: &S) -> Vec<&NdbDisk> {
    s.actor_states
        .iter()
        .filter_map(|a| match &a.core {
            Core::Ndb { disk, .. } => Some(&**disk),
            _ => None,
        })
        .collect()
}

/// Each ndb's written view: its durable disk and the writes behind it (an `Apply` not yet
/// covered by a `Persist`), which is what it serves. Every durable disk was once a written
/// view, so the order invariants are checked on these.
pub fn ndb_views(s: &S) -> Vec<&NdbDisk> {
    s.actor_states
        .iter()
        .filter_map(|a| match &a.core {
            Core::Ndb { node, .. } => Some(node.disk()),
            _ => None,
        })
        .collect()
}

/// Each sync node's durable disk.
fn sync_disks(s: &S) -> Vec<&SyncDisk> {
    s.actor_states
        .iter()
        .filter_map(|a| match &a.core {
            Core::Sync { disk, .. } => Some(disk),
            _ => None,
        })
        .collect()
}

pub fn entries(s: &S) -> Vec<&EntryState> {
    s.actor_states
        .iter()
        .filter_map(|a| match &a.core {
            Core::Entry(e) => Some(&**e),
            _ => None,
        })
        .collect()
}

/// Crashes so far, all actors together.
pub fn crashes(s: &S) -> u8 {
    s.actor_states.iter().map(|a| a.crashes).sum()
}

/// Invariants 1-3: one body per id across ndbs and deliveries, prefixes without gaps,
/// only published bodies, each once.
pub fn agreement_order_integrity(s: &S) -> bool {
    let mut global: BTreeMap<PermanentId, &Body> = BTreeMap::new();
    let mut ok = true;
    for d in ndb_views(s) {
        ok &= d.next.0 == d.perm.len() as u64 + 1
            && d.perm.keys().enumerate().all(|(i, k)| k.0 == i as u64 + 1);
        for (id, b) in &d.perm {
            ok &= *global.entry(*id).or_insert(b) == b;
        }
    }
    let es = entries(s);
    for e in &es {
        for incarnation in &e.delivered {
            for (i, (id, b)) in incarnation.iter().enumerate() {
                ok &= id.0 == i as u64 + 1;
                ok &= *global.entry(*id).or_insert(b) == b;
            }
        }
    }
    let published: BTreeSet<&Body> = es.iter().flat_map(|e| &e.published).collect();
    let bodies: Vec<&Body> = global.values().copied().collect();
    let distinct: BTreeSet<&Body> = bodies.iter().copied().collect();
    ok && distinct.len() == bodies.len() && bodies.iter().all(|b| published.contains(*b))
}

/// An acked id names the acked body wherever it appears (ndb disks, deliveries), and
/// the body appears under no other id.
pub fn acked_ids_final(s: &S) -> bool {
    let disks = ndb_views(s);
    let es = entries(s);
    es.iter().all(|e| {
        e.acked.iter().all(|(b, id)| {
            disks
                .iter()
                .all(|d| d.perm.iter().all(|(pid, pb)| (pid == id) == (pb == b)))
                && es.iter().all(|f| {
                    f.delivered
                        .iter()
                        .flatten()
                        .all(|(pid, pb)| (pid == id) == (pb == b))
                })
        })
    })
}

/// Invariant 4: every acked body is on the durable disks of a quorum of ndbs.
pub fn acked_durable_on_ndb_quorum(s: &S) -> bool {
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
}

/// Acked means final: the segment's election is in the durable logs of a quorum of
/// sync nodes, taking a range that holds the acked id.
pub fn acked_elected_on_sync_quorum(s: &S) -> bool {
    let ranges: Vec<Vec<(u64, PermanentId, PermanentId)>> = sync_disks(s)
        .iter()
        .map(|d| {
            let mut m = Machine::default();
            let mut ranges = Vec::new();
            for entry in &d.log {
                for e in &entry.elects {
                    if let Outcome::Elected(r) = m.apply(e) {
                        ranges.push((r.owner, r.base, r.end()));
                    }
                }
                for a in &entry.abandons {
                    m.abandon(a);
                }
            }
            ranges
        })
        .collect();
    entries(s).iter().all(|e| {
        e.acked.iter().all(|(b, id)| {
            let owner = owner_of(u64::from(b[0]));
            ranges
                .iter()
                .filter(|rs| {
                    rs.iter()
                        .any(|(o, base, end)| *o == owner && base <= id && id < end)
                })
                .count()
                >= 2
        })
    })
}

/// Invariant 5: a publisher's messages keep their order on every ndb and in its acks.
///
/// On an ndb, a publisher's messages in id order are its sequence numbers 1, 2, ..., k:
/// none is out of order, and none is ordered while an earlier one is dropped.
pub fn fifo(s: &S) -> bool {
    let on_disks = ndb_views(s).iter().all(|d| {
        let mut last: BTreeMap<u8, u8> = BTreeMap::new();
        d.perm.values().all(|b| {
            let prev = last.insert(b[0], b[1]).unwrap_or(0);
            b[1] == prev + 1
        })
    });
    let in_acks = entries(s).iter().all(|e| {
        let mut by_pub: BTreeMap<u8, Vec<(u8, PermanentId)>> = BTreeMap::new();
        for (b, id) in &e.acked {
            by_pub.entry(b[0]).or_default().push((b[1], *id));
        }
        by_pub
            .values()
            .all(|v| v.windows(2).all(|w| w[0].1 < w[1].1))
    });
    on_disks && in_acks
}

/// Raft's state machine safety: the committed prefixes of all sync logs agree.
pub fn committed_logs_agree(s: &S) -> bool {
    let mut logs = Vec::new();
    for a in s.actor_states.iter() {
        if let Core::Sync { node, .. } = &a.core {
            // A log shorter than its commit index lost a committed entry to a truncation.
            match usize::try_from(node.commit_index())
                .ok()
                .and_then(|k| node.log().get(..k))
            {
                Some(log) => logs.push(log),
                None => return false,
            }
        }
    }
    logs.iter().all(|a| {
        logs.iter().all(|b| {
            let k = a.len().min(b.len());
            a[..k] == b[..k]
        })
    })
}

pub fn some_segment_resolved(s: &S) -> bool {
    ndb_views(s).iter().any(|d| !d.perm.is_empty())
}

/// Entry 2 (abandoned below segment 2 at the start) had a publish acked: under a segment
/// at or above the floor, since the properties check that acks are elected.
pub fn acked_above_the_floor(s: &S) -> bool {
    entries(s)
        .iter()
        .any(|e| e.acked.keys().any(|b| owner_of(u64::from(b[0])) == 2))
}

pub fn some_publish_acked(s: &S) -> bool {
    entries(s).iter().any(|e| !e.acked.is_empty())
}

/// A segment is resolved on an ndb after some node crashed and restarted.
pub fn resolved_after_a_crash(s: &S) -> bool {
    crashes(s) > 0 && some_segment_resolved(s)
}

/// Some ndb or sync node has crashed and its disk holds protocol state beyond the initial
/// one (written before or after the restart).
pub fn restarted_node_holds_state(s: &S) -> bool {
    s.actor_states.iter().any(|a| {
        a.crashes > 0
            && match &a.core {
                Core::Sync { disk, .. } => disk.log.len() > 1 || disk.term > 1,
                Core::Ndb { disk, .. } => !disk.temp.is_empty() || !disk.perm.is_empty(),
                Core::Entry(_) => false,
            }
    })
}

/// Some sync node leads its term.
pub fn some_leader(s: &S) -> bool {
    s.actor_states
        .iter()
        .any(|a| matches!(&a.core, Core::Sync { node, .. } if node.is_leader()))
}

/// The terms of the entries that some sync node knows are committed.
pub fn committed_terms(s: &S) -> BTreeSet<u64> {
    let mut terms = BTreeSet::new();
    for a in &s.actor_states {
        if let Core::Sync { node, .. } = &a.core {
            let k = usize::try_from(node.commit_index()).unwrap_or(usize::MAX);
            terms.extend(node.log().iter().take(k).map(|e| e.term));
        }
    }
    terms
}

/// Actor `i` is a sync node that a tick would make stand in a term above `max`.
pub fn would_stand_beyond(s: &S, i: usize, max: u64) -> bool {
    matches!(&s.actor_states[i].core, Core::Sync { node, .. } if !node.is_leader() && node.term() >= max)
}

/// Retry timers fired so far, all actors together.
pub fn retries(s: &S) -> u8 {
    s.actor_states.iter().map(|a| a.retries).sum()
}

/// Messages the network lost so far.
pub fn losses(s: &S) -> usize {
    s.actor_states.iter().map(|a| a.lost.len()).sum()
}

/// Actor `i` has work its retry timer would do: an entry with unacked publishes or
/// deliveries it knows are missing; an ndb holding bodies not yet applied or resolutions
/// it cannot apply yet; a leading sync node with uncommitted entries or a peer that has
/// not heard its commit index. An idle core's tick only polls, which the model skips.
pub fn wants_retry(s: &S, i: usize) -> bool {
    match &s.actor_states[i].core {
        Core::Entry(e) => e.core.unacked() > 0 || e.core.known_tip() > e.core.next_delivery(),
        Core::Ndb { node, .. } => {
            !node.disk().temp.is_empty() || node.known_end() > node.disk().next
        }
        Core::Sync { node, .. } => {
            node.is_leader()
                && (node.commit_index() < node.last_index()
                    || s.actor_states.iter().any(|a| {
                        matches!(&a.core, Core::Sync { node: p, .. } if p.commit_index() < node.commit_index())
                    }))
        }
    }
}

/// Sync node `i` lost a message of the kind `kind` picks.
fn lost_to(s: &S, i: usize, kind: impl Fn(&Msg) -> bool) -> bool {
    s.actor_states[i].lost.iter().any(kind)
}

/// A publish is acked although the first OVER to sync 0, the only leader, was lost: only
/// the entry's retry can have brought it there.
pub fn acked_after_a_lost_over(s: &S) -> bool {
    lost_to(s, 0, |m| matches!(m, Msg::Over(_))) && some_publish_acked(s)
}

/// An ndb applied a segment although the leader's RESOLVED to it was lost: its poll
/// (`FetchResolved`, sent on its retry timer) brought the resolution.
pub fn applied_after_a_lost_resolved(s: &S) -> bool {
    s.actor_states
        .iter()
        .enumerate()
        .any(|(i, a)| match &a.core {
            Core::Ndb { node, .. } => {
                !node.disk().perm.is_empty() && lost_to(s, i, |m| matches!(m, Msg::Resolved { .. }))
            }
            _ => false,
        })
}

/// A sync node crashed while it led its term.
pub fn leader_crashed(s: &S) -> bool {
    s.actor_states.iter().any(|a| a.crashed_leading)
}
