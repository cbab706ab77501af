//! Ordo sync role: turns closed advance segments into ranges of permanent ids.
//!
//! ```text
//!   ADVANCE_SEGMENT_OVER {owner, segment, count}
//!          │
//!          ▼
//!      Elector ──► ELECT_SEGMENT {owner, segment, base}  (base..base+count)
//! ```
//!
//! The elector is sans-IO. Order is the order in which segments are elected,
//! and each elected segment gets the next contiguous range, so every node that
//! applies the same elections computes the same ids. In the embedded mode one
//! elector runs in the entry process and its state is the permanent log's last
//! id, recovered from disk at start.
#![warn(missing_docs)]

pub mod log;
pub mod node;
pub mod operator;
pub mod store;

pub use crate::store::{SyncStore, SyncStoreError};

use ordo_common::PermanentId;
use std::collections::BTreeMap;

/// A segment the entry has closed and asks to order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentOver {
    /// Entry that owns the segment.
    pub owner: u64,
    /// Segment number.
    pub segment: u64,
    /// Messages in the segment.
    pub count: u32,
}

/// The decision for one segment: its messages take `base, base+1, ..., base+count-1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elected {
    /// Entry that owns the segment.
    pub owner: u64,
    /// Segment number.
    pub segment: u64,
    /// Messages in the segment.
    pub count: u32,
    /// First permanent id of the segment.
    pub base: PermanentId,
}

/// Assigns contiguous permanent-id ranges to segments, once each.
///
/// Correctness: `next` only grows, and a segment already elected gets its earlier
/// decision back, so a duplicate ADVANCE_SEGMENT_OVER never takes a second range.
#[derive(Debug)]
pub struct Elector {
    next: PermanentId,
    decided: BTreeMap<(u64, u64), Elected>,
}

impl Elector {
    /// Start after `last`, the highest id already in the permanent log.
    pub fn new(last: PermanentId) -> Self {
        Elector {
            next: last.next(),
            decided: BTreeMap::new(),
        }
    }

    /// Elect a segment into the order, or return its earlier election.
    pub fn handle_segment_over(&mut self, over: SegmentOver) -> Elected {
        if let Some(done) = self.decided.get(&(over.owner, over.segment)) {
            return *done;
        }
        let elected = Elected {
            owner: over.owner,
            segment: over.segment,
            count: over.count,
            base: self.next,
        };
        self.next = PermanentId(self.next.0 + u64::from(over.count));
        self.decided.insert((over.owner, over.segment), elected);
        elected
    }

    /// Forget decisions for segments the caller has applied durably; keeps memory bounded.
    pub fn handle_applied(&mut self, owner: u64, segment: u64) {
        self.decided.remove(&(owner, segment));
    }

    /// Return the id the next elected segment will start at.
    pub fn next_id(&self) -> PermanentId {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_get_contiguous_ranges_in_election_order() {
        let mut e = Elector::new(PermanentId(10));
        let a = e.handle_segment_over(SegmentOver {
            owner: 1,
            segment: 5,
            count: 3,
        });
        let b = e.handle_segment_over(SegmentOver {
            owner: 2,
            segment: 1,
            count: 2,
        });
        assert_eq!(a.base, PermanentId(11));
        assert_eq!(b.base, PermanentId(14));
        assert_eq!(e.next_id(), PermanentId(16));
    }

    #[test]
    fn duplicate_over_keeps_the_first_decision() {
        let mut e = Elector::new(PermanentId::ZERO);
        let a = e.handle_segment_over(SegmentOver {
            owner: 1,
            segment: 1,
            count: 4,
        });
        let again = e.handle_segment_over(SegmentOver {
            owner: 1,
            segment: 1,
            count: 4,
        });
        assert_eq!(a, again);
        assert_eq!(e.next_id(), PermanentId(5));
    }
}
