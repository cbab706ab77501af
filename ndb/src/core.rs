//! The sans-IO storage-node core: temporary advance history and its move to the
//! permanent log once a segment's base id is resolved.

use ordo_common::{AdvanceId, PermanentId, StoredMessage};
use std::collections::BTreeMap;

/// Why a resolution could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// The segment is not (or not fully) held here.
    #[error("segment {owner}:{segment} holds {held} of {count} messages")]
    Incomplete {
        /// Entry that owns the segment.
        owner: u64,
        /// Segment number.
        segment: u64,
        /// Messages held here.
        held: u32,
        /// Messages the resolution names.
        count: u32,
    },
}

/// Temporary history of open and closed advance segments, per `(owner, segment)`.
///
/// Correctness: a resolution maps offset `o` of a segment to `base + o`; the core
/// only releases a segment when it holds every offset below `count`, so a
/// permanent id is never written for a message this node does not have.
#[derive(Debug, Default)]
pub struct NdbCore {
    segments: BTreeMap<(u64, u64), BTreeMap<u32, StoredMessage>>,
}

impl NdbCore {
    /// Create an empty core.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep one message of an advance segment (KEEP_ADVANCE_HISTORY); a duplicate is ignored.
    pub fn handle_keep(&mut self, id: AdvanceId, message: StoredMessage) {
        self.segments
            .entry((id.owner, id.segment))
            .or_default()
            .entry(id.offset)
            .or_insert(message);
    }

    /// Return how many consecutive offsets from 0 are held for a segment (the TRIM count).
    pub fn held(&self, owner: u64, segment: u64) -> u32 {
        self.segments
            .get(&(owner, segment))
            .map(|m| {
                m.keys()
                    .enumerate()
                    .take_while(|(i, o)| *i as u32 == **o)
                    .count() as u32
            })
            .unwrap_or(0)
    }

    /// Apply ADVANCE_SEGMENT_RESOLVED: drain the segment's first `count` messages
    /// and return them under their permanent ids `base, base+1, ...`.
    pub fn handle_resolved(
        &mut self,
        owner: u64,
        segment: u64,
        count: u32,
        base: PermanentId,
    ) -> Result<Vec<(PermanentId, StoredMessage)>, ResolveError> {
        let held = self.held(owner, segment);
        if held < count {
            return Err(ResolveError::Incomplete {
                owner,
                segment,
                held,
                count,
            });
        }
        let messages = self.segments.remove(&(owner, segment)).unwrap_or_default();
        Ok(messages
            .into_iter()
            .take(count as usize)
            .map(|(offset, m)| (PermanentId(base.0 + u64::from(offset)), m))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_common::Payload;

    fn msg(n: u8) -> StoredMessage {
        StoredMessage {
            realm: "r".into(),
            topic: "t".into(),
            payload: Payload::Raw(vec![n].into()),
            qos: 1,
            retain: false,
            publisher: 1,
            exclude_publisher: false,
            mqtt: None,
            wamp: None,
        }
    }

    #[test]
    fn resolves_offsets_onto_contiguous_ids() {
        let mut core = NdbCore::new();
        for o in [1u32, 0, 2, 1] {
            core.handle_keep(
                AdvanceId {
                    owner: 9,
                    segment: 4,
                    offset: o,
                },
                msg(o as u8),
            );
        }
        assert_eq!(core.held(9, 4), 3);
        let out = core
            .handle_resolved(9, 4, 3, PermanentId(100))
            .expect("complete");
        let ids: Vec<u64> = out.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, vec![100, 101, 102]);
        assert_eq!(out[2].1, msg(2));
        assert_eq!(core.held(9, 4), 0);
    }

    #[test]
    fn refuses_a_segment_with_a_gap() {
        let mut core = NdbCore::new();
        core.handle_keep(
            AdvanceId {
                owner: 1,
                segment: 1,
                offset: 0,
            },
            msg(0),
        );
        core.handle_keep(
            AdvanceId {
                owner: 1,
                segment: 1,
                offset: 2,
            },
            msg(2),
        );
        assert_eq!(
            core.handle_resolved(1, 1, 3, PermanentId(1)),
            Err(ResolveError::Incomplete {
                owner: 1,
                segment: 1,
                held: 1,
                count: 3
            })
        );
    }
}
