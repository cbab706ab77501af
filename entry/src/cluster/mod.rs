//! The entry's cluster core, sans-IO: owns advance segments, acks on RESOLVED, and
//! delivers the permanent log in id order. Its first Begin is direct (the ndbs report
//! the stored segment to the sync leader); on a retry it collects TRIMs and sends OVER.
//!
//! ```text
//!  handle_publish ──► waiting ──(window has room)──► segment s: Persist(Reserve) if s >= mark
//!                                                     Begin{direct}/Keep ──► every ndb
//!  no Resolved within retry ──► Begin{not direct} (first retry without bodies) ──► Trims
//!  Trim (count == segment count) from f+1 ndbs ──► Over {owner, s, count, prev} ──► every sync
//!  Resolved (own segment) ──► Ack each publish (id = base + offset)
//!  Abandoned {s, below} (sync or ndb) ──► segments >= s back to waiting, in order; once the
//!                        rest settle, a new chain (prev None) from max(mark, below)
//!  follow: FetchPermanent{next} ──► one ndb ──► Permanent ──► Deliver in id order, no gap
//!  notices: FetchResolved{abandons: next} ──► one sync ──► Resolved{abandons} ──► another
//!           owner's abandon, in notice order, for the shell (it adopts that owner's wills)
//! ```
//!
//! See `docs/protocol.md`. No tokio, no clock, no I/O: the shell feeds time in
//! and runs the actions under the Persist rule of [`Action`].

mod follow;
#[cfg(test)]
mod tests;

use ordo_common::proto::{
    majority, AbandonNotice, Action, Body, Elect, Micros, Msg, NodeId, Resolution,
};
use ordo_common::PermanentId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Static configuration of one entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntryConfig {
    /// This entry's owner id (unique in the cluster).
    pub owner: u64,
    /// Every ndb id.
    pub ndbs: Vec<u32>,
    /// Every sync id.
    pub syncs: Vec<u32>,
    /// Most messages in one segment.
    pub max_segment: usize,
    /// Most bodies in one Begin or Keep frame.
    pub max_frame: usize,
    /// Most segments in flight at once.
    pub window: usize,
    /// While a segment is in flight, a new one opens only once `max_segment` publishes wait or
    /// the oldest has waited this long (0: at once). Each segment costs the cluster the same
    /// messages and fsyncs whatever its size; without a linger, a lightly loaded entry opens a
    /// segment per slot freed and keeps every node's CPU busy (docs/performance.md).
    pub linger: Micros,
    /// Resend interval for Begin, Over and FetchPermanent.
    pub retry: Micros,
    /// Segments reserved by one high-water-mark write.
    pub reserve: u64,
    /// Most records asked for in one FetchPermanent.
    pub fetch_max: u32,
    /// First permanent id to deliver.
    pub deliver_from: PermanentId,
    /// Testing only: send OVER after this many TRIMs instead of a majority (breaks durability).
    pub trim_quorum_override: Option<usize>,
    /// How often to ask a sync node for operator abandon notices (0: never; they are then
    /// learnt only from RESOLVEDs that carry them).
    pub notice_poll: Micros,
}

impl EntryConfig {
    /// Return a configuration with default limits and timings.
    pub fn new(owner: u64, ndbs: Vec<u32>, syncs: Vec<u32>) -> Self {
        EntryConfig {
            owner,
            ndbs,
            syncs,
            max_segment: 1024,
            max_frame: 256,
            window: 4,
            linger: 0,
            retry: 50_000,
            reserve: 64,
            fetch_max: 256,
            deliver_from: PermanentId(1),
            trim_quorum_override: None,
            notice_poll: 0,
        }
    }

    fn trim_quorum(&self) -> usize {
        self.trim_quorum_override
            .unwrap_or_else(|| majority(self.ndbs.len()))
    }
}

/// What an entry keeps on disk: the segment high-water mark.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntryDisk {
    /// Every segment this owner ever began is below this.
    pub next_segment: u64,
}

impl Default for EntryDisk {
    fn default() -> Self {
        EntryDisk { next_segment: 1 }
    }
}

/// One durable write of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryWrite {
    /// Reserve segments below this mark.
    Reserve(u64),
}

impl EntryDisk {
    /// Apply a write, as the shell does when it makes it durable.
    pub fn apply(&mut self, w: &EntryWrite) {
        match w {
            EntryWrite::Reserve(mark) => self.next_segment = self.next_segment.max(*mark),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Publish {
    publisher: u64,
    seq: u64,
    body: Body,
    /// When it was taken in (for the linger).
    at: Micros,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Segment {
    prev: Option<u64>,
    publishes: Vec<(u64, u64)>,
    /// Kept until resolved: resent until a quorum trimmed, and queued again if abandoned.
    bodies: Vec<Body>,
    trimmed: BTreeSet<u32>,
    over: bool,
    /// How many times its Over was sent: the first goes to the leader alone when one is known.
    overs_sent: u32,
    /// How many times its Begin was sent: the first is `direct` (the ndbs report to the sync
    /// leader), retries ask for `Trim`s and so take the `Over` way.
    begins_sent: u32,
    /// When it was begun, and when its Over was first sent (for [`StageTiming`]).
    begun_at: Micros,
    over_at: Micros,
    /// How long its oldest publish waited for it to open (for [`StageTiming`]).
    waited: Micros,
    /// Last time its Begin/Keep or Over was sent: a tick resends only what waited `retry`.
    sent_at: Micros,
}

impl Segment {
    fn count(&self) -> u32 {
        self.publishes.len() as u32
    }
}

/// How long one resolved segment spent in each stage, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StageTiming {
    /// Messages in the segment.
    pub count: u32,
    /// Its oldest publish taken in to the segment begun: the linger, or a full window.
    pub wait: Micros,
    /// Its first Begin sent to Resolved received: stored on `f+1` ndbs and ordered.
    pub flight: Micros,
    /// For a segment that took the entry's way (its Over sent after a quorum of Trims): its
    /// first Begin sent to that quorum. The rest of the flight is its order stage. `None` when
    /// the ndbs reported it straight to the sync leader: the entry never saw it stored.
    pub store: Option<Micros>,
}

/// One entry's view of the cluster protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntryCore {
    cfg: EntryConfig,
    reserved: u64,
    next_segment: u64,
    last_begun: Option<u64>,
    /// An abandon's floor: open nothing until every segment in flight settled, then start a
    /// new chain at or above it.
    renumber: Option<u64>,
    waiting: VecDeque<Publish>,
    inflight: BTreeMap<u64, Segment>,
    /// The sync node whose Resolved answered an Over sent once: a new segment's first Over
    /// goes to it alone (the followers would only drop it). Forgotten on any retry.
    leader: Option<u32>,
    retry_due: Micros,
    follow: follow::Follow,
    out: VecDeque<Action<EntryWrite>>,
    /// Stage timings of resolved segments, until the shell takes them (at most `TIMINGS_KEPT`).
    timings: Vec<StageTiming>,
    /// The `seq` of the next abandon notice wanted; notices are taken in order only.
    notices_next: u64,
    /// When to ask a sync node for notices again, and how many times it was asked.
    notice_poll_due: Micros,
    notice_polls: usize,
    /// Abandons of other owners, until the shell takes them (at most `NOTICES_KEPT`).
    notices: Vec<AbandonNotice>,
}

/// Most stage timings kept when nobody takes them (the simulator and the model never do).
const TIMINGS_KEPT: usize = 1024;
/// Most abandon notices kept when nobody takes them (the shell takes them after every input).
const NOTICES_KEPT: usize = 1024;

impl EntryCore {
    /// Start (or restart) from what the disk holds: segments start at its mark, `prev` is `None`.
    pub fn recover(cfg: EntryConfig, disk: EntryDisk, now: Micros) -> Self {
        let follow = follow::Follow::new(cfg.deliver_from, cfg.owner as usize);
        EntryCore {
            reserved: disk.next_segment,
            next_segment: disk.next_segment,
            last_begun: None,
            renumber: None,
            waiting: VecDeque::new(),
            inflight: BTreeMap::new(),
            leader: None,
            retry_due: now + cfg.retry,
            follow,
            cfg,
            out: VecDeque::new(),
            timings: Vec::new(),
            notices_next: 0,
            notice_poll_due: now,
            notice_polls: 0,
            notices: Vec::new(),
        }
    }

    /// Return the next action to run, obeying the Persist rule of [`Action`].
    pub fn poll_action(&mut self) -> Option<Action<EntryWrite>> {
        self.out.pop_front()
    }

    /// Return every queued action, in order.
    pub fn take_actions(&mut self) -> Vec<Action<EntryWrite>> {
        self.out.drain(..).collect()
    }

    /// Return when [`EntryCore::handle_tick`] should next be called.
    pub fn poll_timeout(&self) -> Micros {
        let mut at = self.retry_due;
        if let Some(linger) = self.linger_until() {
            at = at.min(linger);
        }
        if self.cfg.notice_poll > 0 {
            at = at.min(self.notice_poll_due);
        }
        at
    }

    /// When the waiting publishes may open a segment, if the linger holds them now.
    fn linger_until(&self) -> Option<Micros> {
        let oldest = self.waiting.front()?;
        let lingers = self.cfg.linger > 0
            && !self.inflight.is_empty()
            && self.inflight.len() < self.cfg.window
            && self.waiting.len() < self.cfg.max_segment.max(1)
            && self.renumber.is_none();
        lingers.then_some(oldest.at.saturating_add(self.cfg.linger))
    }

    /// Return the stage timings of segments resolved since the last call.
    pub fn take_stage_timings(&mut self) -> Vec<StageTiming> {
        std::mem::take(&mut self.timings)
    }

    /// Return how many abandon notices this run has learnt (all owners', its own included).
    pub fn notices_seen(&self) -> u64 {
        self.notices_next
    }

    /// Return the abandon notices of other owners learnt since the last call, in notice order.
    pub fn take_abandon_notices(&mut self) -> Vec<AbandonNotice> {
        std::mem::take(&mut self.notices)
    }

    /// Return how many publishes wait for an ack (queued or in a segment).
    pub fn unacked(&self) -> usize {
        self.waiting.len()
            + self
                .inflight
                .values()
                .map(|s| s.publishes.len())
                .sum::<usize>()
    }

    /// Return how many segments are in flight (begun, not yet resolved).
    pub fn open_segments_count(&self) -> usize {
        self.inflight.len()
    }

    /// Return the highest id known to be ordered (deliveries lag it by `known_tip - next`).
    pub fn known_tip(&self) -> PermanentId {
        self.follow.tip().max(self.follow.next)
    }

    /// Return the next permanent id this entry will deliver.
    pub fn next_delivery(&self) -> PermanentId {
        self.follow.next
    }

    /// Stop asking ndbs for permanent records while the shell cannot take more deliveries
    /// (`paused`), or resume. Acks never wait on delivery: a slow consumer of
    /// [`Action::Deliver`] pauses the follow path instead of the core.
    pub fn pause_delivery(&mut self, now: Micros, paused: bool) {
        let fetch = self.follow.set_paused(now, paused, &self.cfg.ndbs);
        self.advance_follow(now, fetch);
    }

    /// Accept one publish; it is acked by an [`Action::Ack`] once durable and ordered.
    pub fn handle_publish(&mut self, now: Micros, publisher: u64, seq: u64, body: Body) {
        self.waiting.push_back(Publish {
            publisher,
            seq,
            body,
            at: now,
        });
        self.open_segments(now);
    }

    /// Resend what is unanswered and poll the followed ndb.
    pub fn handle_tick(&mut self, now: Micros) {
        self.open_segments(now);
        self.poll_notices(now);
        if now < self.retry_due {
            return;
        }
        self.retry_due = now + self.cfg.retry;
        let retry = self.cfg.retry;
        let due: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, seg)| now >= seg.sent_at.saturating_add(retry))
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            self.resend(now, s);
        }
        self.open_segments(now);
        self.advance_follow(now, None);
        let fetch = self.follow.on_tick(now, self.cfg.retry, &self.cfg.ndbs);
        self.emit_fetch(fetch);
    }

    /// Feed one message from `from`; queue the actions it causes.
    pub fn handle_message(&mut self, now: Micros, from: NodeId, msg: Msg) {
        match (from, msg) {
            (
                NodeId::Ndb(n),
                Msg::Trim {
                    owner,
                    segment,
                    count,
                },
            ) if owner == self.cfg.owner => self.on_trim(now, n, segment, count),
            (
                _,
                Msg::Resolved {
                    resolutions,
                    abandons,
                },
            ) => {
                self.on_notices(abandons);
                self.on_resolved(now, from, resolutions);
            }
            (
                NodeId::Sync(_) | NodeId::Ndb(_),
                Msg::Abandoned {
                    owner,
                    segment,
                    below,
                },
            ) if owner == self.cfg.owner => self.on_abandoned(now, segment, below),
            (NodeId::Ndb(n), Msg::Permanent { from, tip, records }) => {
                let (delivered, fetch) = self
                    .follow
                    .on_permanent(now, n, from, tip, records, &self.cfg);
                for (id, body) in delivered {
                    self.out.push_back(Action::Deliver { id, body });
                }
                self.advance_follow(now, fetch);
            }
            _ => {}
        }
    }

    fn open_segments(&mut self, now: Micros) {
        if let Some(below) = self.renumber {
            // A segment still in flight may yet be ordered; a new chain (prev None) would
            // abandon it, and its publishers would see a gap.
            if !self.inflight.is_empty() {
                return;
            }
            self.renumber = None;
            self.next_segment = self.next_segment.max(below);
            self.last_begun = None;
        }
        while self.inflight.len() < self.cfg.window && !self.waiting.is_empty() {
            if self.linger_until().is_some_and(|at| now < at) {
                break;
            }
            let take = self.waiting.len().min(self.cfg.max_segment.max(1));
            let batch: Vec<Publish> = self.waiting.drain(..take).collect();
            let waited = batch.first().map_or(0, |p| now.saturating_sub(p.at));
            let s = self.next_segment;
            if s >= self.reserved {
                self.reserved = s + self.cfg.reserve.max(1);
                self.out
                    .push_back(Action::Persist(EntryWrite::Reserve(self.reserved)));
            }
            self.next_segment = s + 1;
            let seg = Segment {
                prev: self.last_begun.replace(s),
                publishes: batch.iter().map(|p| (p.publisher, p.seq)).collect(),
                bodies: batch.into_iter().map(|p| p.body).collect(),
                trimmed: BTreeSet::new(),
                over: false,
                overs_sent: 0,
                begins_sent: 0,
                begun_at: now,
                over_at: now,
                waited,
                sent_at: now,
            };
            self.inflight.insert(s, seg);
            self.resend(now, s);
        }
    }

    /// Send Begin/Keep to ndbs that have not trimmed, or Over: the first to the leader if one
    /// is known, else and on every retry to every sync node.
    fn resend(&mut self, now: Micros, s: u64) {
        let Some(seg) = self.inflight.get_mut(&s) else {
            return;
        };
        seg.sent_at = now;
        let direct = !seg.over && seg.begins_sent == 0;
        // The first retry of a direct Begin carries no bodies: the ndbs most likely hold them
        // (a slow flight, a report to a deposed leader) and answer with Trims all the same.
        // Re-sending every body to every ndb whenever an overloaded cluster takes longer than
        // `retry` would only load it further. Later retries carry them.
        let probe = !seg.over && seg.begins_sent == 1;
        if !seg.over {
            seg.begins_sent += 1;
        }
        if seg.over {
            seg.overs_sent += 1;
            if seg.overs_sent > 1 {
                // Unanswered: the leader may have changed; ask everyone until one answers.
                self.leader = None;
            }
        }
        let seg = &*seg;
        let owner = self.cfg.owner;
        let mut sends = Vec::new();
        if seg.over {
            let e = Elect {
                owner,
                segment: s,
                count: seg.count(),
                prev: seg.prev,
            };
            let to = match &self.leader {
                Some(leader) if seg.overs_sent == 1 => std::slice::from_ref(leader),
                _ => &self.cfg.syncs[..],
            };
            for sync in to {
                sends.push((NodeId::Sync(*sync), Msg::Over(e)));
            }
        } else {
            let frame = self.cfg.max_frame.max(1);
            for n in self.cfg.ndbs.iter().filter(|n| !seg.trimmed.contains(n)) {
                let chunks = seg.bodies.chunks(frame).enumerate();
                let chunks = chunks.take(if probe { 1 } else { usize::MAX });
                for (k, chunk) in chunks {
                    let chunk = if probe { &chunk[..0] } else { chunk };
                    let msg = if k == 0 {
                        Msg::Begin {
                            owner,
                            segment: s,
                            count: seg.count(),
                            prev: seg.prev,
                            direct,
                            bodies: chunk.to_vec(),
                        }
                    } else {
                        Msg::Keep {
                            owner,
                            segment: s,
                            offset: (k * frame) as u32,
                            bodies: chunk.to_vec(),
                        }
                    };
                    sends.push((NodeId::Ndb(*n), msg));
                }
            }
        }
        for (to, msg) in sends {
            self.out.push_back(Action::Send { to, msg });
        }
    }

    fn on_trim(&mut self, now: Micros, ndb: u32, segment: u64, count: u32) {
        let quorum = self.cfg.trim_quorum();
        let Some(seg) = self.inflight.get_mut(&segment) else {
            return;
        };
        if seg.over || count < seg.count() {
            return;
        }
        seg.trimmed.insert(ndb);
        if seg.trimmed.len() >= quorum {
            seg.over = true;
            seg.over_at = now;
            self.resend(now, segment);
        }
    }

    /// `segment` will never be ordered, so neither will the later ones chained to it: queue
    /// their publishes again, in order, ahead of newer ones; never ack them under these
    /// segments. New segments wait for the rest to settle and start at or above `below`.
    fn on_abandoned(&mut self, now: Micros, segment: u64, below: u64) {
        if segment >= below || !self.inflight.contains_key(&segment) {
            return;
        }
        let dead = self.inflight.split_off(&segment);
        let again: Vec<Publish> = dead
            .into_values()
            .flat_map(|seg| {
                seg.publishes
                    .into_iter()
                    .zip(seg.bodies)
                    .map(|((publisher, seq), body)| Publish {
                        publisher,
                        seq,
                        body,
                        at: now,
                    })
            })
            .collect();
        for p in again.into_iter().rev() {
            self.waiting.push_front(p);
        }
        self.renumber = Some(self.renumber.unwrap_or(0).max(below));
        self.open_segments(now);
    }

    /// Ask one sync node (in turn) for the notices from `notices_next` on, and no resolutions.
    fn poll_notices(&mut self, now: Micros) {
        if self.cfg.notice_poll == 0 || now < self.notice_poll_due || self.cfg.syncs.is_empty() {
            return;
        }
        self.notice_poll_due = now + self.cfg.notice_poll;
        let to = self.cfg.syncs[self.notice_polls % self.cfg.syncs.len()];
        self.notice_polls = self.notice_polls.wrapping_add(1);
        self.out.push_back(Action::Send {
            to: NodeId::Sync(to),
            msg: Msg::FetchResolved {
                // Past every range: no resolution is sent back, only notices.
                from: PermanentId(u64::MAX),
                abandons: self.notices_next,
            },
        });
    }

    /// Take notices in `seq` order, skipping any seen; a gap waits for the next poll.
    fn on_notices(&mut self, mut notices: Vec<AbandonNotice>) {
        notices.sort_by_key(|n| n.seq);
        for n in notices {
            if n.seq != self.notices_next {
                continue;
            }
            self.notices_next += 1;
            // Its own abandon reaches this entry as Abandoned for the segments it holds.
            if n.owner != self.cfg.owner && self.notices.len() < NOTICES_KEPT {
                self.notices.push(n);
            }
        }
    }

    fn on_resolved(&mut self, now: Micros, from: NodeId, resolutions: Vec<Resolution>) {
        for r in resolutions {
            self.follow.learn_tip(r.end());
            if r.owner != self.cfg.owner {
                continue;
            }
            // Not only after its Over: a quorum of ndbs may have reported it straight to
            // the leader (a direct Begin), which says as much as a quorum of Trims.
            let matches = self
                .inflight
                .get(&r.segment)
                .is_some_and(|s| s.count() == r.count);
            if !matches {
                continue;
            }
            if let Some(seg) = self.inflight.remove(&r.segment) {
                // An answer to an Over sent once is the leader's announcement, unless that
                // was lost and a follower got its copy only after applying the segment; a
                // wrong guess costs one retry interval, after which everyone is asked.
                if let (NodeId::Sync(sync), 1) = (from, seg.overs_sent) {
                    self.leader = Some(sync);
                }
                if self.timings.len() < TIMINGS_KEPT {
                    self.timings.push(StageTiming {
                        count: seg.count(),
                        wait: seg.waited,
                        flight: now.saturating_sub(seg.begun_at),
                        store: seg.over.then(|| seg.over_at.saturating_sub(seg.begun_at)),
                    });
                }
                for (i, (publisher, seq)) in seg.publishes.into_iter().enumerate() {
                    let id = PermanentId(r.base.0 + i as u64);
                    self.out.push_back(Action::Ack { publisher, seq, id });
                }
                self.follow.keep_own(r.base, seg.bodies);
            }
        }
        self.open_segments(now);
        let fetch = self.follow.maybe_fetch(now, &self.cfg.ndbs);
        self.advance_follow(now, fetch);
    }

    /// Deliver what this entry holds itself from the next id on, then ask an ndb for the rest
    /// (`fetch`, or a new ask if local delivery moved past where an ask was held back).
    fn advance_follow(&mut self, now: Micros, fetch: Option<(u32, PermanentId)>) {
        let local = self.follow.take_local();
        let progressed = !local.is_empty();
        for (id, body) in local {
            self.out.push_back(Action::Deliver { id, body });
        }
        let fetch = match fetch {
            None if progressed => self.follow.maybe_fetch(now, &self.cfg.ndbs),
            fetch => fetch,
        };
        self.emit_fetch(fetch);
    }

    fn emit_fetch(&mut self, fetch: Option<(u32, PermanentId)>) {
        if let Some((ndb, from)) = fetch {
            let max = self.follow.fetch_limit(self.cfg.fetch_max);
            self.out.push_back(Action::Send {
                to: NodeId::Ndb(ndb),
                msg: Msg::FetchPermanent { from, max },
            });
        }
    }
}
