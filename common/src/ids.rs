//! Identifiers: the advance id an entry hands out at once, and the permanent id
//! that names a message in the one total order.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Position of a message in the one global order; the same on every node.
///
/// Ids start at 1; `PermanentId(0)` means "before everything" (as in `after: 0`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct PermanentId(pub u64);

impl PermanentId {
    /// The id before every message, used as a replay start.
    pub const ZERO: PermanentId = PermanentId(0);

    /// Return the id that follows this one.
    pub fn next(self) -> PermanentId {
        PermanentId(self.0 + 1)
    }
}

impl fmt::Display for PermanentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Provisional name of a message, known as soon as an entry accepts it.
///
/// It orders nothing globally: `segment` is only unique per `owner` (the entry),
/// and `offset` counts messages inside that segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AdvanceId {
    /// The entry that opened the segment.
    pub owner: u64,
    /// Segment number, strictly increasing per owner across restarts.
    pub segment: u64,
    /// Index of the message inside its segment.
    pub offset: u32,
}

impl fmt::Display for AdvanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.owner, self.segment, self.offset)
    }
}
