//! The operator's `Abandon` in the simulator: on some seeds an entry crashes for
//! good, the operator abandons its leftovers, and on some of those the entry comes
//! back afterwards (below the floor, so it must renumber).
//!
//! ```text
//!  CrashForGood(owner) ──► Operator {owner, below} every 100 ms until a sync applied it
//!                                    └──► (some seeds) Return(owner): restart from its disk
//! ```
//!
//! Checked here: an ndb never drops the temporary bodies of an elected segment it has
//! not applied (what the `AbandonEarly` mutation does); in `check.rs`: no ndb keeps
//! temporary bodies of abandoned segments after heal, and a returning entry's
//! publishes are all acked.

use super::rng::Rng;
use super::{Ev, World, OWNERS};
use ordo_common::proto::{Abandon, Micros, Msg, NodeId};
use std::collections::BTreeSet;

/// What one seed does with the operator command.
#[derive(Clone, Debug)]
pub struct AbandonPlan {
    /// The entry that dies.
    pub owner: u64,
    /// When it crashes for good.
    pub crash_at: Micros,
    /// How long after the crash the operator issues the command.
    pub delay: Micros,
    /// How far above the dead entry's high-water mark `below` is (negative: below it).
    pub offset: i64,
    /// When (after the command) the entry comes back, if it does.
    pub back_after: Option<Micros>,
}

impl AbandonPlan {
    /// Draw a plan for `seed` from its own stream, so other seeds keep their schedules.
    pub fn for_seed(seed: u64, fault_phase: Micros) -> Option<AbandonPlan> {
        let mut rng = Rng::new(seed ^ 0xAB4D_0000_0000_0001);
        if !rng.chance(0.35) {
            return None;
        }
        let owner = OWNERS[rng.range(0, OWNERS.len() as u64) as usize];
        let crash_at = rng.range(fault_phase / 20, fault_phase / 2);
        // Often at once: ndbs may still be applying the dead entry's last segments.
        let delay = if rng.chance(0.5) {
            rng.range(0, 5_000)
        } else {
            rng.range(5_000, 300_000)
        };
        let offset = rng.range(0, 12) as i64 - 2;
        let back_after = rng.chance(0.5).then(|| rng.range(0, 600_000));
        Some(AbandonPlan {
            owner,
            crash_at,
            delay,
            offset,
            back_after,
        })
    }
}

impl World {
    pub(super) fn schedule_abandon(&mut self) {
        if let Some(p) = self.abandon.clone() {
            self.at(p.crash_at, Ev::CrashForGood(p.owner));
        }
    }

    pub(super) fn crash_for_good(&mut self, owner: u64) {
        let Some(p) = self.abandon.clone() else {
            return;
        };
        self.gone.insert(owner);
        self.crash(NodeId::Entry(owner));
        super::check::durable_after_crash(self);
        // The operator reads the dead entry's mark from its disk and picks `below` near it.
        let mark = self
            .entry(owner)
            .map_or(1, |e| e.synced.next_segment)
            .max(1);
        let below = mark.saturating_add_signed(p.offset).max(1);
        self.stats.abandoned = true;
        self.abandon_floor = Some((mark, below));
        self.at(self.now + p.delay, Ev::Operator { owner, below });
        if let Some(after) = p.back_after {
            self.at(self.now + p.delay + after, Ev::Return(owner));
        }
    }

    /// Send the command to every sync until one applied it (duplicates are harmless).
    pub(super) fn operator(&mut self, owner: u64, below: u64) {
        let applied = self
            .syncs
            .iter()
            .filter_map(|n| n.core.as_ref())
            .any(|c| c.machine().operator_floor(owner) >= below);
        if applied {
            return;
        }
        for i in 0..super::SYNCS {
            let msg = Msg::Abandon(Abandon { owner, below });
            self.send(NodeId::Operator, NodeId::Sync(i), msg);
        }
        self.at(self.now + 100_000, Ev::Operator { owner, below });
    }

    pub(super) fn come_back(&mut self, owner: u64) {
        if self.gone.remove(&owner) {
            self.stats.returned = true;
            self.returned_publishers = self
                .publishers
                .get(&owner)
                .map(|v| v.iter().map(|(p, _)| *p).collect())
                .unwrap_or_default();
            self.restart(NodeId::Entry(owner));
        }
    }

    /// Tell whether the returned entry started below the floor and got a segment at or above
    /// it elected (it learned the floor and renumbered).
    pub(super) fn renumbered(&self) -> bool {
        let (Some(p), Some((mark, below))) = (&self.abandon, self.abandon_floor) else {
            return false;
        };
        let Some(machine) = self
            .syncs
            .iter()
            .filter_map(|n| n.core.as_ref())
            .map(|c| c.machine())
            .max_by_key(|m| m.next_id())
        else {
            return false;
        };
        self.stats.returned
            && mark < below
            && machine
                .resolutions_from(ordo_common::PermanentId(1), usize::MAX)
                .iter()
                .any(|r| r.owner == p.owner && r.segment >= below)
    }

    /// Fail if an ndb's fsync dropped temporary bodies of a segment that is elected but not
    /// applied there: the permanent log may still need them (and they may count for an ack).
    pub(super) fn check_ndb_drops(&mut self, i: usize, before: BTreeSet<(u64, u64)>) {
        let synced = &self.ndbs[i].synced;
        let dropped: Vec<(u64, u64)> = before
            .into_iter()
            .filter(|k| !synced.temp.contains_key(k) && !synced.applied.contains_key(k))
            .collect();
        for (owner, segment) in dropped {
            let elected = self
                .syncs
                .iter()
                .filter_map(|n| n.core.as_ref())
                .any(|c| c.machine().is_elected(owner, segment));
            if elected {
                self.fail(format!(
                    "durability: ndb{i} dropped the bodies of elected segment {owner}:{segment} \
                     before applying it"
                ));
            }
        }
    }
}
