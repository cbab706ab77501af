//! Resolutions older than the machine's window, for [`SyncNode`]: what the node still holds
//! in memory, what goes to the archive (with the next snapshot), and what its shell answers
//! from the archive before the core sees a message.
//!
//! ```text
//!  apply ──► window (newest resolution_window) ──evict──► unarchived ──Archive──► store
//!  Over / FetchResolved ──► shell: answer_from_archive ──hit──► Resolved
//!                                  └─miss─► core: memory (unarchived ∪ window), else
//!                                           Abandoned only if the archive has no gap
//!  InstallSnapshot past own next ──► gap [own next, leader's window) ──FetchResolved──► peers
//! ```
//!
//! Durability: an evicted resolution stays in `unarchived` until the write archiving it is
//! emitted, and that write goes before the `Snapshot` that drops the log entries deriving it
//! (the store recovers a prefix of writes). So at every point the durable archive, the durable
//! snapshot's window and the durable log after it hold every resolution of the applied log,
//! except a gap an install left, which the node knows of and fills from peers.

use super::{SyncDisk, SyncNode, SyncWrite};
use ordo_common::proto::{Elect, Msg, NodeId, Resolution};
use ordo_common::PermanentId;
use std::collections::BTreeMap;

/// Reads of the archived resolutions, for a shell answering from its store.
pub trait ArchiveRead {
    /// Why a read failed.
    type Error: std::fmt::Display;
    /// Return the archived resolution of `(owner, segment)`, if there is one.
    fn archived(&self, owner: u64, segment: u64) -> Result<Option<Resolution>, Self::Error>;
    /// Return up to `max` archived resolutions from the one holding id `from` on, ascending
    /// and contiguous (none if the archive lacks the one holding `from`).
    fn archived_from(&self, from: PermanentId, max: usize) -> Result<Vec<Resolution>, Self::Error>;
}

/// Answer `msg` from the archive when the core would not know the answer (an `Over` of a
/// segment that left its memory, a `FetchResolved` below its memory); `None` lets the core
/// handle it.
///
/// Call before feeding `msg` to the core, after every write the core emitted before is
/// readable from `archive` (the shell runs a step's writes before its next input).
pub fn answer_from_archive<A: ArchiveRead>(
    node: &SyncNode,
    msg: &Msg,
    archive: impl FnOnce() -> A,
) -> Option<Msg> {
    let read = match msg {
        Msg::Over(e) if node.archive_may_hold(e) => archive()
            .archived(e.owner, e.segment)
            .map(|r| r.into_iter().collect::<Vec<_>>()),
        Msg::FetchResolved { from, .. } if node.below_memory(*from) => {
            archive().archived_from(*from, node.cfg.max_resolutions.max(1))
        }
        _ => return None,
    };
    let resolutions = match read {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "reading the resolution archive failed");
            return None;
        }
    };
    let abandons = match msg {
        Msg::FetchResolved { abandons, .. } => node
            .machine
            .notices_from(*abandons, node.cfg.max_resolutions),
        _ => Vec::new(),
    };
    Some(Msg::Resolved {
        resolutions,
        abandons,
    })
}

impl ArchiveRead for SyncDisk {
    type Error = std::convert::Infallible;

    fn archived(&self, owner: u64, segment: u64) -> Result<Option<Resolution>, Self::Error> {
        Ok(self
            .archive
            .values()
            .find(|r| (r.owner, r.segment) == (owner, segment))
            .copied())
    }

    fn archived_from(&self, from: PermanentId, max: usize) -> Result<Vec<Resolution>, Self::Error> {
        Ok(contiguous_from(&self.archive, from, max))
    }
}

/// Return up to `max` resolutions of `map` from the one holding `from` on, stopping at a gap.
pub(crate) fn contiguous_from(
    map: &BTreeMap<PermanentId, Resolution>,
    from: PermanentId,
    max: usize,
) -> Vec<Resolution> {
    let Some(first) = map
        .range(..=from)
        .next_back()
        .map(|(_, r)| *r)
        .filter(|r| r.end() > from)
    else {
        return Vec::new();
    };
    let mut out = vec![first];
    for r in map.range(first.end()..).map(|(_, r)| *r) {
        if out.len() >= max || out.last().is_some_and(|l| l.end() != r.base) {
            break;
        }
        out.push(r);
    }
    out
}

impl SyncNode {
    /// Return the lowest id whose resolution this node holds in memory (`next` if none).
    ///
    /// Every resolution below it is in the archive, or in the archive's gap.
    pub fn memory_floor(&self) -> PermanentId {
        self.unarchived
            .keys()
            .next()
            .copied()
            .unwrap_or_else(|| self.machine.window_start())
    }

    /// Return how many resolutions this node holds in memory (window and unarchived).
    pub fn resolutions_in_memory(&self) -> usize {
        self.machine.window_len() + self.unarchived.len()
    }

    /// Return the ids `[from, to)` whose resolutions the archive may lack, if any.
    pub fn archive_gap(&self) -> Option<(PermanentId, PermanentId)> {
        self.archive_gap
    }

    fn below_memory(&self, from: PermanentId) -> bool {
        from.max(PermanentId(1)) < self.memory_floor()
    }

    /// Tell whether `e` may be an elected segment that left memory (the rule alone would
    /// call it abandoned): then only the archive can tell.
    pub(super) fn archive_may_hold(&self, e: &Elect) -> bool {
        e.count > 0
            && self.memory_floor() > PermanentId(1)
            && self.machine.is_abandoned(e)
            && self.memory_resolution(e.owner, e.segment).is_none()
    }

    /// Return the resolution of a segment if memory holds it (window or unarchived).
    pub(super) fn memory_resolution(&self, owner: u64, segment: u64) -> Option<Resolution> {
        self.machine.resolution(owner, segment).or_else(|| {
            // Only a segment at or below the owner's last can be elected: a new OVER (the
            // common case) skips the scan of everything evicted since the last snapshot.
            if self
                .machine
                .last_of(owner)
                .is_none_or(|last| segment > last)
            {
                return None;
            }
            self.unarchived
                .values()
                .find(|r| (r.owner, r.segment) == (owner, segment))
                .copied()
        })
    }

    /// Return up to `max` resolutions held in memory from the one holding `from` on.
    ///
    /// Empty if `from` is below memory: the shell answers that from the archive.
    pub fn memory_resolutions_from(&self, from: PermanentId, max: usize) -> Vec<Resolution> {
        if self.below_memory(from) {
            return Vec::new();
        }
        let mut out = contiguous_from(&self.unarchived, from, max);
        let rest = out.last().map_or(from, |r| r.end());
        let room = max.saturating_sub(out.len());
        out.extend(self.machine.resolutions_from(rest, room));
        out
    }

    /// Move what the last apply evicted from the machine into `unarchived`.
    pub(super) fn collect_spilled(&mut self) {
        for r in self.machine.take_spilled() {
            if !self.cfg.skip_archive {
                self.unarchived.insert(r.base, r);
            }
        }
    }

    /// Archive what left the window, ahead of the snapshot write that drops its log entries.
    pub(super) fn archive_unarchived(&mut self) {
        if self.unarchived.is_empty() {
            return;
        }
        let resolutions = std::mem::take(&mut self.unarchived).into_values().collect();
        let gap = self.archive_gap;
        self.persist(SyncWrite::Archive { resolutions, gap });
    }

    /// Before installing a snapshot whose window starts at `start` and whose `next` is
    /// `next`: archive what memory holds below `start`, and record as a gap the ids between
    /// this node's own `next` and `start`, which it never applied.
    pub(super) fn archive_before_install(&mut self, start: PermanentId) {
        let mut resolutions: Vec<Resolution> =
            std::mem::take(&mut self.unarchived).into_values().collect();
        if !self.cfg.skip_archive {
            resolutions.extend(self.machine.window_below(start));
        }
        let own_next = self.machine.next_id();
        let gap = if own_next < start {
            // One gap at most: a second install widens it (refetching is harmless).
            let from = self.archive_gap.map_or(own_next, |(f, _)| f.min(own_next));
            Some((from, start))
        } else {
            self.archive_gap
        };
        if !resolutions.is_empty() || gap != self.archive_gap {
            self.archive_gap = gap;
            self.persist(SyncWrite::Archive { resolutions, gap });
        }
    }

    /// While the archive has a gap, ask every peer for it once per election timeout.
    pub(super) fn fetch_gap(&mut self, now: u64) {
        let Some((from, _)) = self.archive_gap else {
            return;
        };
        if now < self.gap_fetch_due {
            return;
        }
        self.gap_fetch_due = now + self.cfg.election_timeout.0;
        for p in self.others() {
            // `abandons: u64::MAX`: no notices wanted, this node has them in its machine.
            let msg = Msg::FetchResolved {
                from,
                abandons: u64::MAX,
            };
            self.send(NodeId::Sync(p), msg);
        }
    }

    /// Archive the part of a peer's answer that continues the gap from its start.
    pub(super) fn on_gap_resolutions(&mut self, mut resolutions: Vec<Resolution>) {
        let Some((from, to)) = self.archive_gap else {
            return;
        };
        resolutions.sort_unstable_by_key(|r| r.base);
        let mut cursor = from;
        let mut fill = Vec::new();
        for r in resolutions {
            if cursor >= to {
                break;
            }
            if r.base == cursor {
                cursor = r.end();
                fill.push(r);
            }
        }
        if fill.is_empty() {
            return;
        }
        let gap = (cursor < to).then_some((cursor, to));
        self.archive_gap = gap;
        self.gap_fetch_due = self.now;
        self.persist(SyncWrite::Archive {
            resolutions: fill,
            gap,
        });
    }
}
