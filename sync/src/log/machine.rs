//! The segment machine: a deterministic function from the committed log to
//! permanent-id ranges. Every sync node that applied the same prefix holds the
//! same state, so every resolution it reports is the same everywhere.
//!
//! It keeps only the newest `window` resolutions: applying an election past that evicts the
//! oldest into a spill its node drains at once (and archives, see `archive.rs`). The window is
//! a count of resolutions, so eviction is itself a function of the applied log: two machines
//! with the same window that applied the same prefix hold the same resolutions.

use ordo_common::proto::{Abandon, AbandonNotice, Elect, Resolution, SyncSnapshot};
use ordo_common::PermanentId;
use std::collections::{BTreeMap, BTreeSet};

/// What applying one [`Elect`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The segment took the next range.
    Elected(Resolution),
    /// The segment was elected earlier; nothing changed.
    Duplicate,
    /// A later segment of the owner is ordered; this one never will be.
    Abandoned,
    /// Its predecessor is not ordered yet; nothing changed (the entry retries).
    NotReady,
}

/// Decide what the rule does with `e`, given the owner's last elected segment and
/// the floor an operator's [`Abandon`] set (0 if none).
///
/// The rule (docs/protocol.md §3, §6): a duplicate changes nothing; a segment at or
/// below the owner's last, or below its floor, is abandoned; a segment whose `prev`
/// is the owner's last (or `None`, the first of an incarnation) is elected;
/// otherwise it waits. The floor does not move `last`: a segment chained to an
/// abandoned one must never be elected (its publisher would see a gap).
pub fn rule(last: Option<u64>, floor: u64, already: bool, e: &Elect) -> Outcome {
    if already {
        return Outcome::Duplicate;
    }
    if e.count == 0 {
        return Outcome::Abandoned;
    }
    if last.is_some_and(|l| e.segment <= l) || e.segment < floor {
        return Outcome::Abandoned;
    }
    if e.prev.is_none() || e.prev == last {
        // The resolution is filled in by the caller, who knows `next`.
        Outcome::Elected(Resolution {
            owner: e.owner,
            segment: e.segment,
            count: e.count,
            base: PermanentId::ZERO,
        })
    } else {
        Outcome::NotReady
    }
}

/// The applied state of the segment machine.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Machine {
    next: PermanentId,
    last: BTreeMap<u64, u64>,
    /// The newest `window` resolutions, by `(owner, segment)` and by `base`.
    elected: BTreeMap<(u64, u64), Resolution>,
    by_base: BTreeMap<PermanentId, Resolution>,
    /// Most resolutions kept (at least 1).
    window: usize,
    /// Resolutions evicted from the window and not yet taken by [`Machine::take_spilled`].
    spilled: Vec<Resolution>,
    /// Operator floors per owner.
    floor: BTreeMap<u64, u64>,
    /// Every abandon that raised a floor, in log order (`seq` is the index).
    notices: Vec<AbandonNotice>,
    /// Testing only: see [`Machine::with_abandon_moving_last`].
    abandon_moves_last: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            next: PermanentId(1),
            last: BTreeMap::new(),
            elected: BTreeMap::new(),
            by_base: BTreeMap::new(),
            window: usize::MAX,
            spilled: Vec::new(),
            floor: BTreeMap::new(),
            notices: Vec::new(),
            abandon_moves_last: false,
        }
    }
}

impl Machine {
    /// Apply one committed election; call in log order only.
    pub fn apply(&mut self, e: &Elect) -> Outcome {
        let already = self.elected.contains_key(&(e.owner, e.segment));
        let floor = self.floor.get(&e.owner).copied().unwrap_or(0);
        match rule(self.last.get(&e.owner).copied(), floor, already, e) {
            Outcome::Elected(mut r) => {
                r.base = self.next;
                self.next = r.end();
                self.last.insert(e.owner, e.segment);
                self.elected.insert((e.owner, e.segment), r);
                self.by_base.insert(r.base, r);
                self.evict_past_window();
                Outcome::Elected(r)
            }
            other => other,
        }
    }

    /// Keep at most `window` resolutions in memory (the machine's default keeps all).
    ///
    /// Call before applying anything; a smaller window evicts at once into the spill.
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self.evict_past_window();
        self
    }

    fn evict_past_window(&mut self) {
        while self.by_base.len() > self.window {
            let Some((_, r)) = self.by_base.pop_first() else {
                break;
            };
            self.elected.remove(&(r.owner, r.segment));
            self.spilled.push(r);
        }
    }

    /// Take the resolutions evicted since the last call, ascending `base`.
    ///
    /// Its node calls this after every apply, so the spill is empty between inputs.
    pub fn take_spilled(&mut self) -> Vec<Resolution> {
        std::mem::take(&mut self.spilled)
    }

    /// Return the base of the oldest resolution in memory (`next` if none is).
    pub fn window_start(&self) -> PermanentId {
        self.by_base.keys().next().copied().unwrap_or(self.next)
    }

    /// Return how many resolutions the window holds.
    pub fn window_len(&self) -> usize {
        self.by_base.len()
    }

    /// Return the window's resolutions with `base` below `below`, ascending.
    pub fn window_below(&self, below: PermanentId) -> Vec<Resolution> {
        self.by_base.range(..below).map(|(_, r)| *r).collect()
    }

    /// Testing only: make an abandon also set `last[owner] = below - 1`, the one-line plan
    /// that lets a segment chained to an abandoned one be elected (a gap in its publisher's
    /// sequence). The model checks that its FIFO property catches this.
    pub fn with_abandon_moving_last(mut self, on: bool) -> Self {
        self.abandon_moves_last = on;
        self
    }

    /// Apply one committed operator abandon; call in log order only.
    ///
    /// Returns the notice for ndbs if it raised the owner's floor; a duplicate or a
    /// lower floor changes nothing. Segments already elected keep their ranges.
    pub fn abandon(&mut self, a: &Abandon) -> Option<AbandonNotice> {
        let floor = self.floor.entry(a.owner).or_insert(0);
        if a.below <= *floor {
            return None;
        }
        *floor = a.below;
        if self.abandon_moves_last && a.below > 0 {
            let last = self.last.entry(a.owner).or_insert(0);
            *last = (*last).max(a.below - 1);
        }
        let notice = AbandonNotice {
            seq: self.notices.len() as u64,
            owner: a.owner,
            below: a.below,
            at: self.next,
        };
        self.notices.push(notice);
        Some(notice)
    }

    /// Return the lowest segment number `owner` may still get elected with.
    ///
    /// Above its last elected segment and at or above its operator floor.
    pub fn floor_of(&self, owner: u64) -> u64 {
        let floor = self.floor.get(&owner).copied().unwrap_or(0);
        let last = self.last.get(&owner).map_or(0, |l| l.saturating_add(1));
        floor.max(last)
    }

    /// Return the floor operator abandons set for `owner` (0 if none).
    pub fn operator_floor(&self, owner: u64) -> u64 {
        self.floor.get(&owner).copied().unwrap_or(0)
    }

    /// Tell whether `e` can never be elected (it is not, and the rule abandons it).
    pub fn is_abandoned(&self, e: &Elect) -> bool {
        let already = self.elected.contains_key(&(e.owner, e.segment));
        let floor = self.floor.get(&e.owner).copied().unwrap_or(0);
        rule(self.last.get(&e.owner).copied(), floor, already, e) == Outcome::Abandoned
    }

    /// Return up to `max` abandon notices from `seq` on, ascending.
    pub fn notices_from(&self, seq: u64, max: usize) -> Vec<AbandonNotice> {
        let start = usize::try_from(seq).unwrap_or(usize::MAX);
        self.notices.iter().skip(start).take(max).copied().collect()
    }

    /// Return how many abandon notices were applied.
    pub fn notice_count(&self) -> u64 {
        self.notices.len() as u64
    }

    /// Return the id the next elected segment starts at.
    pub fn next_id(&self) -> PermanentId {
        self.next
    }

    /// Return the resolution of a segment, if it was elected and is still in the window.
    pub fn resolution(&self, owner: u64, segment: u64) -> Option<Resolution> {
        self.elected.get(&(owner, segment)).copied()
    }

    /// Return up to `max` resolutions of the window whose ranges end after `from`, ascending.
    pub fn resolutions_from(&self, from: PermanentId, max: usize) -> Vec<Resolution> {
        let start = self
            .by_base
            .range(..=from)
            .next_back()
            .filter(|(_, r)| r.end() > from)
            .map(|(b, _)| *b)
            .unwrap_or(from);
        self.by_base
            .range(start..)
            .take(max)
            .map(|(_, r)| *r)
            .collect()
    }

    /// Return this state as a snapshot covering the log up to `last_index` (of `last_term`).
    ///
    /// Call only with the index this machine has applied, which must be committed.
    pub fn snapshot(&self, last_index: u64, last_term: u64) -> SyncSnapshot {
        SyncSnapshot {
            last_index,
            last_term,
            next: self.next,
            last: self.last.clone(),
            floor: self.floor.clone(),
            resolutions: self.by_base.values().copied().collect(),
            notices: self.notices.clone(),
        }
    }

    /// Rebuild the state a snapshot holds; the testing flag and the window are not part of it
    /// (chain [`Machine::with_window`]).
    pub fn from_snapshot(s: &SyncSnapshot, abandon_moves_last: bool) -> Machine {
        Machine {
            next: s.next,
            last: s.last.clone(),
            elected: s
                .resolutions
                .iter()
                .map(|r| ((r.owner, r.segment), *r))
                .collect(),
            by_base: s.resolutions.iter().map(|r| (r.base, *r)).collect(),
            window: usize::MAX,
            spilled: Vec::new(),
            floor: s.floor.clone(),
            notices: s.notices.clone(),
            abandon_moves_last,
        }
    }

    /// Start a projection of this state for a leader choosing what to propose.
    pub fn projection(&self) -> Projection {
        Projection {
            last: self.last.clone(),
            floor: self.floor.clone(),
            taken: BTreeSet::new(),
        }
    }

    /// Return the owner's last elected segment, if any.
    pub fn last_of(&self, owner: u64) -> Option<u64> {
        self.last.get(&owner).copied()
    }

    /// Tell whether `(owner, segment)` is elected and still in the window.
    pub fn is_elected(&self, owner: u64, segment: u64) -> bool {
        self.elected.contains_key(&(owner, segment))
    }
}

/// The machine's `last` map advanced over uncommitted entries, for readiness checks.
#[derive(Clone, Debug, Default)]
pub struct Projection {
    last: BTreeMap<u64, u64>,
    floor: BTreeMap<u64, u64>,
    taken: BTreeSet<(u64, u64)>,
}

impl Projection {
    /// Run the rule on `e` as if it were appended now; update the projection if elected.
    pub fn offer(&mut self, machine: &Machine, e: &Elect) -> Outcome {
        let already =
            machine.is_elected(e.owner, e.segment) || self.taken.contains(&(e.owner, e.segment));
        let floor = self.floor.get(&e.owner).copied().unwrap_or(0);
        let out = rule(self.last.get(&e.owner).copied(), floor, already, e);
        if let Outcome::Elected(_) = out {
            self.last.insert(e.owner, e.segment);
            self.taken.insert((e.owner, e.segment));
        }
        out
    }

    /// Raise the projected floor as an uncommitted abandon will.
    pub fn abandon(&mut self, a: &Abandon) {
        let floor = self.floor.entry(a.owner).or_insert(0);
        *floor = (*floor).max(a.below);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(owner: u64, segment: u64, count: u32, prev: Option<u64>) -> Elect {
        Elect {
            owner,
            segment,
            count,
            prev,
        }
    }

    #[test]
    fn elected_segments_take_contiguous_ranges_once() {
        let mut m = Machine::default();
        let a = m.apply(&el(1, 5, 3, None));
        let b = m.apply(&el(2, 9, 2, None));
        assert_eq!(m.apply(&el(1, 5, 3, None)), Outcome::Duplicate);
        let (Outcome::Elected(a), Outcome::Elected(b)) = (a, b) else {
            panic!("both elected: {a:?} {b:?}");
        };
        assert_eq!((a.base, b.base), (PermanentId(1), PermanentId(4)));
        assert_eq!(m.next_id(), PermanentId(6));
        assert_eq!(m.resolutions_from(PermanentId(2), 10), vec![a, b]);
        assert_eq!(m.resolutions_from(PermanentId(4), 10), vec![b]);
        assert!(m.resolutions_from(PermanentId(6), 10).is_empty());
    }

    #[test]
    fn chain_waits_for_its_predecessor_and_later_incarnation_abandons() {
        let mut m = Machine::default();
        assert!(matches!(m.apply(&el(1, 1, 1, None)), Outcome::Elected(_)));
        assert_eq!(m.apply(&el(1, 3, 1, Some(2))), Outcome::NotReady);
        assert!(matches!(
            m.apply(&el(1, 2, 1, Some(1))),
            Outcome::Elected(_)
        ));
        // A restarted incarnation starts above its high-water mark with prev None.
        assert!(matches!(m.apply(&el(1, 10, 1, None)), Outcome::Elected(_)));
        assert_eq!(m.apply(&el(1, 3, 1, Some(2))), Outcome::Abandoned);
        assert_eq!(m.apply(&el(1, 4, 1, None)), Outcome::Abandoned);
    }

    #[test]
    fn abandon_raises_the_floor_once_and_keeps_elected_ranges() {
        let mut m = Machine::default();
        let Outcome::Elected(r5) = m.apply(&el(1, 5, 2, None)) else {
            panic!("elected");
        };
        let n = m.abandon(&Abandon { owner: 1, below: 8 });
        assert_eq!(
            n,
            Some(AbandonNotice {
                seq: 0,
                owner: 1,
                below: 8,
                at: PermanentId(3)
            })
        );
        // Duplicates and lower floors change nothing.
        assert_eq!(m.abandon(&Abandon { owner: 1, below: 8 }), None);
        assert_eq!(m.abandon(&Abandon { owner: 1, below: 3 }), None);
        assert_eq!(
            m.resolution(1, 5),
            Some(r5),
            "an elected segment keeps its range"
        );
        assert_eq!(m.apply(&el(1, 5, 2, None)), Outcome::Duplicate);
        // Below the floor: abandoned, even chained to the last elected segment.
        assert_eq!(m.apply(&el(1, 6, 1, Some(5))), Outcome::Abandoned);
        assert_eq!(m.apply(&el(1, 7, 1, None)), Outcome::Abandoned);
        // Chained to an abandoned segment: never elected (no gap for its publishers).
        assert_eq!(m.apply(&el(1, 8, 1, Some(7))), Outcome::NotReady);
        assert_eq!(m.floor_of(1), 8);
        assert_eq!(m.floor_of(2), 0);
        // A new incarnation at the floor is elected; other owners are untouched.
        assert!(matches!(m.apply(&el(1, 9, 1, None)), Outcome::Elected(_)));
        assert!(matches!(m.apply(&el(2, 1, 1, None)), Outcome::Elected(_)));
        assert_eq!(m.notices_from(0, 10).len(), 1);
        assert!(m.notices_from(1, 10).is_empty());
    }

    #[test]
    fn a_snapshot_rebuilds_the_same_machine() {
        let mut m = Machine::default();
        m.apply(&el(1, 5, 2, None));
        m.apply(&el(2, 1, 3, None));
        m.abandon(&Abandon { owner: 1, below: 9 });
        m.apply(&el(1, 9, 1, None));
        let s = m.snapshot(7, 2);
        assert_eq!((s.last_index, s.last_term, s.resolutions.len()), (7, 2, 3));
        let back = Machine::from_snapshot(&s, false);
        assert_eq!(back, m);
        assert_eq!(back.snapshot(7, 2), s);
    }

    #[test]
    fn the_window_evicts_the_oldest_resolutions_in_order() {
        let mut m = Machine::default().with_window(2);
        let rs: Vec<Resolution> = (1..=4)
            .map(|s| match m.apply(&el(1, s, 2, (s > 1).then(|| s - 1))) {
                Outcome::Elected(r) => r,
                other => panic!("elected: {other:?}"),
            })
            .collect();
        assert_eq!(m.take_spilled(), rs[..2].to_vec());
        assert!(m.take_spilled().is_empty(), "taken once");
        assert_eq!((m.window_len(), m.window_start()), (2, rs[2].base));
        assert_eq!(m.resolution(1, 1), None, "evicted");
        assert_eq!(m.resolution(1, 3), Some(rs[2]));
        // An evicted segment is at or below `last`: the rule alone calls it abandoned, which
        // is why its node must look in the archive first (archive.rs).
        assert!(m.is_abandoned(&el(1, 1, 2, None)));
        // The snapshot holds the window only, and a smaller window evicts at once.
        let s = m.snapshot(9, 1);
        assert_eq!(s.resolutions, rs[2..].to_vec());
        let mut back = Machine::from_snapshot(&s, false).with_window(1);
        assert_eq!(back.take_spilled(), vec![rs[2]]);
        assert_eq!(back.window_start(), rs[3].base);
        assert_eq!(back.next_id(), m.next_id());
    }

    #[test]
    fn projection_sees_uncommitted_choices() {
        let m = Machine::default();
        let mut p = m.projection();
        assert!(matches!(
            p.offer(&m, &el(1, 1, 1, None)),
            Outcome::Elected(_)
        ));
        assert_eq!(p.offer(&m, &el(1, 1, 1, None)), Outcome::Duplicate);
        assert!(matches!(
            p.offer(&m, &el(1, 2, 1, Some(1))),
            Outcome::Elected(_)
        ));
    }
}
