//! The segment machine: a deterministic function from the committed log to
//! permanent-id ranges. Every sync node that applied the same prefix holds the
//! same state, so every resolution it reports is the same everywhere.

use ordo_common::proto::{Elect, Resolution};
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

/// Decide what the rule does with `e`, given the owner's last elected segment.
///
/// The rule (docs/protocol.md §3): a duplicate changes nothing; a segment at or
/// below the owner's last is abandoned; a segment whose `prev` is the owner's
/// last (or `None`, the first of an incarnation) is elected; otherwise it waits.
pub fn rule(last: Option<u64>, already: bool, e: &Elect) -> Outcome {
    if already {
        return Outcome::Duplicate;
    }
    if e.count == 0 {
        return Outcome::Abandoned;
    }
    if last.is_some_and(|l| e.segment <= l) {
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
    elected: BTreeMap<(u64, u64), Resolution>,
    by_base: BTreeMap<PermanentId, Resolution>,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            next: PermanentId(1),
            last: BTreeMap::new(),
            elected: BTreeMap::new(),
            by_base: BTreeMap::new(),
        }
    }
}

impl Machine {
    /// Apply one committed election; call in log order only.
    pub fn apply(&mut self, e: &Elect) -> Outcome {
        let already = self.elected.contains_key(&(e.owner, e.segment));
        match rule(self.last.get(&e.owner).copied(), already, e) {
            Outcome::Elected(mut r) => {
                r.base = self.next;
                self.next = r.end();
                self.last.insert(e.owner, e.segment);
                self.elected.insert((e.owner, e.segment), r);
                self.by_base.insert(r.base, r);
                Outcome::Elected(r)
            }
            other => other,
        }
    }

    /// Return the id the next elected segment starts at.
    pub fn next_id(&self) -> PermanentId {
        self.next
    }

    /// Return the resolution of a segment, if it was elected.
    pub fn resolution(&self, owner: u64, segment: u64) -> Option<Resolution> {
        self.elected.get(&(owner, segment)).copied()
    }

    /// Return up to `max` resolutions whose ranges end after `from`, ascending.
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

    /// Start a projection of this state for a leader choosing what to propose.
    pub fn projection(&self) -> Projection {
        Projection {
            last: self.last.clone(),
            taken: BTreeSet::new(),
        }
    }

    /// Tell whether `(owner, segment)` is elected.
    pub fn is_elected(&self, owner: u64, segment: u64) -> bool {
        self.elected.contains_key(&(owner, segment))
    }
}

/// The machine's `last` map advanced over uncommitted entries, for readiness checks.
#[derive(Clone, Debug, Default)]
pub struct Projection {
    last: BTreeMap<u64, u64>,
    taken: BTreeSet<(u64, u64)>,
}

impl Projection {
    /// Run the rule on `e` as if it were appended now; update the projection if elected.
    pub fn offer(&mut self, machine: &Machine, e: &Elect) -> Outcome {
        let already =
            machine.is_elected(e.owner, e.segment) || self.taken.contains(&(e.owner, e.segment));
        let out = rule(self.last.get(&e.owner).copied(), already, e);
        if let Outcome::Elected(_) = out {
            self.last.insert(e.owner, e.segment);
            self.taken.insert((e.owner, e.segment));
        }
        out
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
