//! Node-to-node messages of the cluster protocol (`docs/protocol.md`) and the
//! actions every sans-IO core returns.
//!
//! Message bodies are opaque bytes here (the shell encodes a
//! [`crate::StoredMessage`]): the ordering protocol never looks inside them.

use crate::PermanentId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Time as the caller's clock reads it, in microseconds; cores never read a clock.
pub type Micros = u64;

/// An opaque message body, exactly the bytes the publisher's entry accepted.
pub type Body = Bytes;

/// The address of a node of any role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeId {
    /// An entry, named by its owner id.
    Entry(u64),
    /// A storage node.
    Ndb(u32),
    /// A sync (consensus) node.
    Sync(u32),
    /// An operator's command-line tool (certificate name `operator`); it only sends.
    Operator,
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeId::Entry(n) => write!(f, "entry{n}"),
            NodeId::Ndb(n) => write!(f, "ndb{n}"),
            NodeId::Sync(n) => write!(f, "sync{n}"),
            NodeId::Operator => write!(f, "operator"),
        }
    }
}

/// ELECT_SEGMENT: one closed, quorum-stored segment asking for a range of ids.
///
/// It is a log entry's item in the sync log, and the payload of ADVANCE_SEGMENT_OVER.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Elect {
    /// Entry that owns the segment.
    pub owner: u64,
    /// Segment number, unique per owner forever.
    pub segment: u64,
    /// Messages in the segment (at least 1).
    pub count: u32,
    /// The segment the owner began just before this one in the same incarnation.
    pub prev: Option<u64>,
}

/// ADVANCE_SEGMENT_RESOLVED's payload: offset `o < count` is permanent id `base + o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Resolution {
    /// Entry that owns the segment.
    pub owner: u64,
    /// Segment number.
    pub segment: u64,
    /// Messages in the segment.
    pub count: u32,
    /// First permanent id of the range.
    pub base: PermanentId,
}

impl Resolution {
    /// Return the id just past this range.
    pub fn end(&self) -> PermanentId {
        PermanentId(self.base.0 + u64::from(self.count))
    }
}

/// The operator's decision for an owner that never comes back: no segment of `owner`
/// below `below` that is not elected yet will ever be (`docs/protocol.md` §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Abandon {
    /// The entry whose leftovers are abandoned.
    pub owner: u64,
    /// Segments below this number that are not elected are abandoned for good.
    pub below: u64,
}

/// Where an applied [`Abandon`] sits in the id order, for ndbs.
///
/// Every segment elected before it has a range ending at or below `at`; an ndb may drop
/// `owner`'s unapplied temporary segments below `below` only once its own next id reached `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AbandonNotice {
    /// Position among the applied notices, from 0 (ndbs apply them in this order).
    pub seq: u64,
    /// The owner.
    pub owner: u64,
    /// Its new floor.
    pub below: u64,
    /// The segment machine's next id when the Abandon was applied.
    pub at: PermanentId,
}

/// One replicated log entry of the sync cluster: a batch of elections proposed in `term`.
///
/// An empty batch is the no-op a new leader appends to commit earlier terms.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogEntry {
    /// Term of the leader that appended it.
    pub term: u64,
    /// The segments it orders, in order.
    pub elects: Vec<Elect>,
    /// Operator abandons, applied after `elects` (absent in logs written before they existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abandons: Vec<Abandon>,
}

impl LogEntry {
    /// Return an entry of `term` that orders `elects` and abandons nothing.
    pub fn elects(term: u64, elects: Vec<Elect>) -> Self {
        LogEntry {
            term,
            elects,
            abandons: Vec::new(),
        }
    }
}

/// The sync segment machine's whole state after applying the committed log up to
/// `last_index`: what a sync node persists instead of that log prefix, and what a leader
/// sends a follower that lags behind the log the leader still holds.
///
/// Its size grows with the segments ever elected (one [`Resolution`] each, about 35 bytes
/// in msgpack) and the abandon notices; everything else is one small record per owner.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SyncSnapshot {
    /// Index of the last log entry it covers (committed and applied).
    pub last_index: u64,
    /// Term of that entry.
    pub last_term: u64,
    /// The id the next elected segment starts at.
    pub next: PermanentId,
    /// Each owner's last elected segment.
    pub last: BTreeMap<u64, u64>,
    /// Each owner's operator floor.
    pub floor: BTreeMap<u64, u64>,
    /// Every resolution, ascending `base`.
    pub resolutions: Vec<Resolution>,
    /// Every abandon notice, ascending `seq` (from 0).
    pub notices: Vec<AbandonNotice>,
}

/// A node-to-node message. See `docs/protocol.md` §2 for who sends what.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Msg {
    /// BEGIN_ADVANCE_SEGMENT, entry → ndb: a closed segment of `count` messages; `bodies`
    /// holds offsets `0..bodies.len()`.
    Begin {
        /// Owner entry.
        owner: u64,
        /// Segment number.
        segment: u64,
        /// Messages in the segment.
        count: u32,
        /// The segment the owner began just before this one (for the ndbs' `Stored`).
        prev: Option<u64>,
        /// The entry's first send: an ndb that knows the sync leader reports the stored
        /// segment to it (`Stored`) instead of answering `Trim`. Retries say `false`.
        direct: bool,
        /// Bodies from offset 0.
        bodies: Vec<Body>,
    },
    /// KEEP_ADVANCE_HISTORY, entry → ndb: bodies of offsets `offset..offset+bodies.len()`.
    Keep {
        /// Owner entry.
        owner: u64,
        /// Segment number.
        segment: u64,
        /// Offset of the first body.
        offset: u32,
        /// Bodies.
        bodies: Vec<Body>,
    },
    /// TRIM_ADVANCE_SEGMENT, ndb → entry: offsets `0..count` are durable here.
    Trim {
        /// Owner entry.
        owner: u64,
        /// Segment number.
        segment: u64,
        /// Contiguous durable offsets from 0.
        count: u32,
    },
    /// ADVANCE_SEGMENT_OVER, entry → sync: order this segment.
    Over(Elect),
    /// ndb → the sync leader it knows, for a `direct` Begin: offsets `0..count` of this
    /// segment are durable here. A quorum of these stands for the entry's `Over`.
    Stored(Elect),
    /// GENERATE_DRAFT, sync leader → follower: append `entries` after `prev_index`.
    Draft {
        /// Leader's term.
        term: u64,
        /// Index just before `entries` (0 = start of the log).
        prev_index: u64,
        /// Term of the entry at `prev_index` (0 for index 0).
        prev_term: u64,
        /// Entries to append.
        entries: Vec<LogEntry>,
        /// Leader's commit index.
        commit: u64,
    },
    /// Answer to [`Msg::Draft`].
    DraftAck {
        /// Responder's term.
        term: u64,
        /// Whether the entries were appended (and are durable).
        ok: bool,
        /// On success the last index known to match the leader; on failure a hint to retry from.
        match_index: u64,
    },
    /// PICK_CHALLENGER, candidate → sync peers: vote for me in `term`.
    PickChallenger {
        /// Candidate's term.
        term: u64,
        /// Index of the candidate's last log entry.
        last_index: u64,
        /// Term of the candidate's last log entry.
        last_term: u64,
    },
    /// VOTE, sync → candidate.
    Vote {
        /// Voter's term.
        term: u64,
        /// Whether the vote is granted (and persisted).
        granted: bool,
    },
    /// ADVANCE_SEGMENT_RESOLVED, sync → ndb and entry: committed decisions, ascending `base`.
    Resolved {
        /// The resolutions.
        resolutions: Vec<Resolution>,
        /// Applied abandon notices, ascending `seq` (ndbs apply them; entries ignore them).
        #[serde(default)]
        abandons: Vec<AbandonNotice>,
    },
    /// ndb → sync: send me the resolutions from id `from` on, and the notices from `abandons` on.
    FetchResolved {
        /// The first id the asker lacks.
        from: PermanentId,
        /// The first abandon notice (`seq`) the asker lacks.
        #[serde(default)]
        abandons: u64,
    },
    /// ndb → ndb: send me a segment's bodies.
    FetchBodies {
        /// Owner entry.
        owner: u64,
        /// Segment number.
        segment: u64,
    },
    /// ndb → ndb: a whole segment's bodies, offsets `0..bodies.len()`.
    Bodies {
        /// Owner entry.
        owner: u64,
        /// Segment number.
        segment: u64,
        /// All bodies of the segment.
        bodies: Vec<Body>,
    },
    /// entry → ndb: send me permanent records from `from` on, at most `max`.
    FetchPermanent {
        /// First id wanted.
        from: PermanentId,
        /// Most records wanted.
        max: u32,
    },
    /// ndb → entry: records `from, from+1, ...`; `tip` is the ndb's next id to apply.
    Permanent {
        /// Id of the first record.
        from: PermanentId,
        /// The ndb's next unapplied id.
        tip: PermanentId,
        /// Bodies in id order.
        records: Vec<Body>,
    },
    // New variants go last, so the older ones keep their encoding.
    /// Operator → sync: commit this [`Abandon`] to the log (idempotent; the leader acts).
    Abandon(Abandon),
    /// sync or ndb → entry: `segment` will never be ordered; renumber at or above `below`.
    Abandoned {
        /// Owner entry.
        owner: u64,
        /// The segment that is abandoned.
        segment: u64,
        /// The owner's floor: every new segment must be at least this.
        below: u64,
    },
    /// INSTALL_SNAPSHOT, sync leader → follower whose next entry the leader no longer holds:
    /// replace the log up to `snapshot.last_index` with this state.
    InstallSnapshot {
        /// Leader's term.
        term: u64,
        /// The leader's machine at a committed, applied index.
        snapshot: SyncSnapshot,
    },
    /// SNAPSHOT_ACK, follower → leader: answer to [`Msg::InstallSnapshot`].
    SnapshotAck {
        /// Responder's term.
        term: u64,
        /// The follower's log matches the leader's up to here, durably (0 if refused).
        last_index: u64,
    },
}

/// What a core asks its shell to do.
///
/// Correctness (the Persist rule): an action may run only after every
/// [`Action::Persist`] the same core emitted before it, in this call or an
/// earlier one, is durable. A shell keeps one FIFO per node and releases the
/// actions behind a write once an fsync covers it. An [`Action::WriteBehind`]
/// holds nothing back, but keeps its place in the order of writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action<W> {
    /// Send a message.
    Send {
        /// Destination.
        to: NodeId,
        /// The message.
        msg: Msg,
    },
    /// Make this write durable before anything emitted after it runs.
    Persist(W),
    /// Write this in order with the other writes, without waiting for it to be durable:
    /// nothing emitted after it depends on it being on disk. The next `Persist`'s fsync
    /// covers it too (the store keeps its writes in order); a crash before then may lose
    /// it, with every write after it, and the core must recover from that.
    WriteBehind(W),
    /// Acknowledge one publish: it is durable on a quorum of ndbs and its id is final.
    Ack {
        /// Publisher session.
        publisher: u64,
        /// The publisher's sequence number for the message.
        seq: u64,
        /// Its permanent id.
        id: PermanentId,
    },
    /// Deliver a message to local subscribers; ids arrive strictly ascending with no gap.
    Deliver {
        /// Permanent id.
        id: PermanentId,
        /// The body.
        body: Body,
    },
}

/// A sans-IO protocol core as a node shell drives it (the ndb and sync roles).
///
/// The shell feeds messages and ticks in, then drains [`Core::take_actions`]
/// and runs them under the Persist rule of [`Action`].
pub trait Core {
    /// The durable writes this core asks for.
    type Write;
    /// Feed one message from a peer.
    fn handle_message(&mut self, now: Micros, from: NodeId, msg: Msg);
    /// Let timers fire; cheap when nothing is due. A shell calls it after every batch of
    /// messages as well as at [`Core::poll_timeout`]: it ends a step, and a core may leave
    /// work for it that a whole batch should share (the sync leader's proposal).
    fn handle_tick(&mut self, now: Micros);
    /// Return when [`Core::handle_tick`] should next be called.
    fn poll_timeout(&self) -> Micros;
    /// Return every queued action, in order.
    fn take_actions(&mut self) -> Vec<Action<Self::Write>>;
}

/// Return the quorum (majority) size of a group of `n` nodes.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_msgpack() {
        let msgs = vec![
            Msg::Begin {
                owner: 1,
                segment: 2,
                count: 1,
                prev: Some(1),
                direct: true,
                bodies: vec![Bytes::from_static(b"x")],
            },
            Msg::Stored(Elect {
                owner: 1,
                segment: 2,
                count: 1,
                prev: Some(1),
            }),
            Msg::Over(Elect {
                owner: 1,
                segment: 2,
                count: 1,
                prev: None,
            }),
            Msg::Draft {
                term: 3,
                prev_index: 1,
                prev_term: 1,
                entries: vec![LogEntry::elects(3, vec![])],
                commit: 1,
            },
            Msg::Resolved {
                resolutions: vec![],
                abandons: vec![AbandonNotice {
                    seq: 0,
                    owner: 1,
                    below: 9,
                    at: PermanentId(4),
                }],
            },
            Msg::Abandon(Abandon { owner: 1, below: 9 }),
            Msg::InstallSnapshot {
                term: 4,
                snapshot: SyncSnapshot {
                    last_index: 9,
                    last_term: 3,
                    next: PermanentId(6),
                    last: BTreeMap::from([(1, 2)]),
                    floor: BTreeMap::from([(2, 5)]),
                    resolutions: vec![Resolution {
                        owner: 1,
                        segment: 2,
                        count: 5,
                        base: PermanentId(1),
                    }],
                    notices: vec![AbandonNotice {
                        seq: 0,
                        owner: 2,
                        below: 5,
                        at: PermanentId(6),
                    }],
                },
            },
            Msg::SnapshotAck {
                term: 4,
                last_index: 9,
            },
        ];
        for m in msgs {
            let bytes = rmp_serde::to_vec(&m).expect("encode");
            assert_eq!(rmp_serde::from_slice::<Msg>(&bytes).expect("decode"), m);
        }
    }

    #[test]
    fn log_entries_written_before_abandon_still_decode() {
        #[derive(Serialize)]
        struct OldEntry {
            term: u64,
            elects: Vec<Elect>,
        }
        let old = OldEntry {
            term: 4,
            elects: vec![],
        };
        let bytes = crate::record::encode(&old);
        let entry: LogEntry = crate::record::decode(&bytes).expect("decode");
        assert_eq!(entry, LogEntry::elects(4, vec![]));
        // And an entry without abandons is written as before.
        assert_eq!(crate::record::encode(&entry), bytes);
    }

    #[test]
    fn majority_of_three_is_two() {
        assert_eq!(majority(3), 2);
        assert_eq!(majority(5), 3);
        assert_eq!(majority(1), 1);
    }
}
