//! Election, replication, commit and apply for [`SyncNode`].

use super::machine::Outcome;
use super::{Leading, Role, SyncNode, SyncWrite};
use ordo_common::proto::{
    Abandon, AbandonNotice, Action, Elect, LogEntry, Micros, Msg, NodeId, Resolution,
};
use std::collections::BTreeSet;

impl SyncNode {
    /// Feed one message from `from`; queue the actions it causes.
    pub fn handle_message(&mut self, now: Micros, from: NodeId, msg: Msg) {
        self.now = self.now.max(now);
        match (from, msg) {
            (_, Msg::Over(e)) => self.on_over(now, from, e),
            (NodeId::Ndb(ndb), Msg::Stored(e)) => self.on_stored(ndb, e),
            (_, Msg::FetchResolved { from: id, abandons }) => {
                let max = self.cfg.max_resolutions;
                let resolutions = self.memory_resolutions_from(id, max);
                let abandons = self.machine.notices_from(abandons, max);
                if !resolutions.is_empty() || !abandons.is_empty() {
                    self.send(
                        from,
                        Msg::Resolved {
                            resolutions,
                            abandons,
                        },
                    );
                }
            }
            // Only the operator's certificate may ask (the mesh checks who speaks).
            (NodeId::Operator, Msg::Abandon(a)) => self.on_abandon(a),
            // A peer's answer to this node's FetchResolved for its archive gap.
            (NodeId::Sync(_), Msg::Resolved { resolutions, .. }) => {
                self.on_gap_resolutions(resolutions)
            }
            (NodeId::Sync(peer), msg) => self.on_peer(now, peer, msg),
            _ => {}
        }
    }

    /// End a step: the leader proposes what the step's messages brought (OVERs, quorums of
    /// `Stored`, operator abandons, pipeline room freed by a commit) as one entry, and sends
    /// heartbeats when due; anyone else starts an election once its timer runs out.
    ///
    /// The shell calls this after every drain of its inbox, so one busy step costs one log
    /// entry, one round of `Draft`s and one commit, not one per message that made an OVER.
    pub fn handle_tick(&mut self, now: Micros) {
        self.now = self.now.max(now);
        self.fetch_gap(now);
        if self.is_leader() {
            let last = self.last_index();
            self.propose();
            if now >= self.heartbeat_due {
                self.heartbeat_due = now + self.cfg.heartbeat;
                // An entry just appended went to every peer already.
                if self.last_index() == last {
                    self.broadcast_drafts();
                }
            }
        } else if now >= self.election_deadline {
            self.start_election(now);
        }
    }

    fn on_over(&mut self, now: Micros, from: NodeId, e: Elect) {
        let _ = now;
        if let Some(r) = self.memory_resolution(e.owner, e.segment) {
            self.send(
                from,
                Msg::Resolved {
                    resolutions: vec![r],
                    abandons: Vec::new(),
                },
            );
            return;
        }
        if self.archive_gap.is_some() && self.archive_may_hold(&e) {
            // It may be elected in ids this node never applied: stay silent rather than
            // answer Abandoned for an ordered segment; the entry asks every sync node.
            return;
        }
        if self.machine.is_abandoned(&e) {
            // Its shell looked in the archive first (answer_from_archive). Final in the committed log: the entry renumbers above the floor (§6).
            let below = self.machine.floor_of(e.owner);
            let (owner, segment) = (e.owner, e.segment);
            self.send(
                from,
                Msg::Abandoned {
                    owner,
                    segment,
                    below,
                },
            );
            return;
        }
        if let Role::Leader(l) = &mut self.role {
            if e.count > 0 {
                l.pending.insert((e.owner, e.segment), e);
            }
        }
    }

    /// Count an ndb's `Stored`: once a quorum of ndbs holds the segment, it is an OVER the
    /// ndbs sent on the entry's behalf (the entry never sees their `Trim`s). Only a leader
    /// counts; anything else is left to the entry's retry, which goes the `Over` way.
    fn on_stored(&mut self, ndb: u32, e: Elect) {
        let quorum = self.cfg.stored_quorum();
        let settled = |n: &SyncNode, e: &Elect| {
            n.machine.is_abandoned(e) || n.memory_resolution(e.owner, e.segment).is_some()
        };
        if e.count == 0 || settled(self, &e) {
            return;
        }
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let holders = l.stored.entry(e).or_default();
        holders.insert(ndb);
        if holders.len() < quorum {
            return;
        }
        l.stored.remove(&e);
        l.pending.insert((e.owner, e.segment), e);
        // Reports that can no longer make an OVER (their segment was ordered, or a later
        // one of its owner was) go; what is left is at most the segments in flight.
        let mut stored = std::mem::take(&mut l.stored);
        stored.retain(|e, _| !settled(self, e));
        if let Role::Leader(l) = &mut self.role {
            l.stored = stored;
        }
    }

    /// Queue an operator abandon for the next entry; a floor already in place changes nothing.
    fn on_abandon(&mut self, a: Abandon) {
        // Applied, or appended and not yet applied: a retry of the command adds nothing.
        let appended = (self.applied + 1..=self.last_index())
            .filter_map(|i| self.entry(i))
            .flat_map(|e| e.abandons.iter())
            .filter(|x| x.owner == a.owner)
            .map(|x| x.below)
            .max()
            .unwrap_or(0);
        if a.below <= self.machine.operator_floor(a.owner).max(appended) {
            return;
        }
        if let Role::Leader(l) = &mut self.role {
            let below = l.abandons.entry(a.owner).or_insert(0);
            *below = (*below).max(a.below);
        }
    }

    fn on_peer(&mut self, now: Micros, peer: u32, msg: Msg) {
        let term = match &msg {
            Msg::Draft { term, .. }
            | Msg::DraftAck { term, .. }
            | Msg::PickChallenger { term, .. }
            | Msg::Vote { term, .. }
            | Msg::InstallSnapshot { term, .. }
            | Msg::SnapshotAck { term, .. } => *term,
            _ => return,
        };
        if term > self.disk.term {
            self.step_down(now, term, None);
        }
        match msg {
            Msg::PickChallenger {
                term,
                last_index,
                last_term,
            } => self.on_pick_challenger(now, peer, term, last_index, last_term),
            Msg::Vote { term, granted } => self.on_vote(now, peer, term, granted),
            Msg::Draft {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
            } => self.on_draft(now, peer, term, prev_index, prev_term, entries, commit),
            Msg::DraftAck {
                term,
                ok,
                match_index,
            } => self.on_draft_ack(peer, term, ok, match_index),
            Msg::InstallSnapshot { term, snapshot } => {
                self.on_install_snapshot(now, peer, term, snapshot)
            }
            Msg::SnapshotAck { term, last_index } => self.on_snapshot_ack(peer, term, last_index),
            _ => {}
        }
    }

    /// Become a follower of `term` (persisting the new term), forgetting any vote.
    pub(super) fn step_down(&mut self, now: Micros, term: u64, leader: Option<u32>) {
        let was_leader = self.is_leader();
        if term != self.disk.term {
            self.disk.term = term;
            self.disk.voted_for = None;
            self.persist(SyncWrite::Hard {
                term,
                voted_for: None,
            });
        }
        self.role = Role::Follower { leader };
        if was_leader {
            self.reset_election(now);
        }
    }

    fn start_election(&mut self, now: Micros) {
        let term = self.disk.term + 1;
        let me = self.cfg.id;
        self.disk.term = term;
        self.disk.voted_for = Some(me);
        self.persist(SyncWrite::Hard {
            term,
            voted_for: Some(me),
        });
        self.role = Role::Candidate {
            votes: BTreeSet::from([me]),
        };
        self.reset_election(now);
        let (last_index, last_term) = (self.last_index(), self.term_at(self.last_index()));
        for p in self.others() {
            self.send(
                NodeId::Sync(p),
                Msg::PickChallenger {
                    term,
                    last_index,
                    last_term: last_term.unwrap_or(0),
                },
            );
        }
        self.check_votes(now);
    }

    fn on_pick_challenger(
        &mut self,
        now: Micros,
        peer: u32,
        term: u64,
        last_index: u64,
        last_term: u64,
    ) {
        let my_last_term = self.term_at(self.last_index()).unwrap_or(0);
        let up_to_date = last_term > my_last_term
            || (last_term == my_last_term && last_index >= self.last_index());
        let free = self.disk.voted_for.is_none() || self.disk.voted_for == Some(peer);
        let granted = term == self.disk.term && free && up_to_date;
        if granted {
            if self.disk.voted_for != Some(peer) {
                self.disk.voted_for = Some(peer);
                self.persist(SyncWrite::Hard {
                    term,
                    voted_for: Some(peer),
                });
            }
            self.reset_election(now);
        }
        let term = self.disk.term;
        self.send(NodeId::Sync(peer), Msg::Vote { term, granted });
    }

    fn on_vote(&mut self, now: Micros, peer: u32, term: u64, granted: bool) {
        if term != self.disk.term || !granted {
            return;
        }
        if let Role::Candidate { votes } = &mut self.role {
            votes.insert(peer);
            self.check_votes(now);
        }
    }

    fn check_votes(&mut self, now: Micros) {
        let won =
            matches!(&self.role, Role::Candidate { votes } if votes.len() >= self.cfg.quorum());
        if !won {
            return;
        }
        let next = self.last_index() + 1;
        let mut l = Leading::default();
        for p in self.others() {
            l.next.insert(p, next);
            l.matched.insert(p, 0);
        }
        self.role = Role::Leader(Box::new(l));
        self.heartbeat_due = now + self.cfg.heartbeat;
        // A no-op of the new term lets earlier terms' entries commit (Raft §5.4.2).
        self.append(Vec::new(), Vec::new());
    }

    /// Append one entry of the current term, send it to every peer, and persist it.
    ///
    /// The Drafts go out before the leader's own write (Raft allows the leader to write its log
    /// in parallel with replicating it), so its fsync overlaps the followers' instead of
    /// preceding it. Safe because the leader's copy is counted towards a commit only by
    /// `advance_commit`, and whatever a commit lets out (Resolved, a Draft's `commit`) is queued
    /// behind this Persist and leaves only once it is durable; a crash before that loses an
    /// entry that no one was told is committed.
    fn append(&mut self, elects: Vec<Elect>, abandons: Vec<Abandon>) {
        let from = self.last_index() + 1;
        let entry = LogEntry {
            term: self.disk.term,
            elects,
            abandons,
        };
        self.disk.log.push(entry.clone());
        self.broadcast_drafts();
        self.persist(SyncWrite::Log {
            from,
            entries: vec![entry],
        });
        self.advance_commit();
    }

    /// Batch every ready pending OVER into one entry, if the pipeline has room.
    fn propose(&mut self) {
        let uncommitted = self.last_index() - self.commit;
        let Role::Leader(l) = &self.role else {
            return;
        };
        if (l.pending.is_empty() && l.abandons.is_empty()) || uncommitted >= self.cfg.max_inflight {
            return;
        }
        let abandons: Vec<Abandon> = l
            .abandons
            .iter()
            .map(|(owner, below)| Abandon {
                owner: *owner,
                below: *below,
            })
            .collect();
        let mut proj = self.machine.projection();
        for i in self.applied + 1..=self.last_index() {
            if let Some(entry) = self.entry(i) {
                for e in &entry.elects {
                    proj.offer(&self.machine, e);
                }
                for a in &entry.abandons {
                    proj.abandon(a);
                }
            }
        }
        let mut pending = l.pending.clone();
        let mut batch = Vec::new();
        loop {
            let mut progress = false;
            let keys: Vec<(u64, u64)> = pending.keys().copied().collect();
            for k in keys {
                let Some(e) = pending.get(&k).copied() else {
                    continue;
                };
                match proj.offer(&self.machine, &e) {
                    Outcome::Elected(_) => {
                        batch.push(e);
                        pending.remove(&k);
                        progress = true;
                    }
                    Outcome::Duplicate | Outcome::Abandoned => {
                        pending.remove(&k);
                    }
                    Outcome::NotReady => {}
                }
            }
            if !progress {
                break;
            }
        }
        if let Role::Leader(l) = &mut self.role {
            l.pending = pending;
            l.abandons.clear();
        }
        // The entry's abandons apply after its elects, as the projection assumed.
        if !batch.is_empty() || !abandons.is_empty() {
            self.append(batch, abandons);
        }
    }

    fn broadcast_drafts(&mut self) {
        for p in self.others() {
            self.send_draft(p);
        }
    }

    pub(super) fn send_draft(&mut self, peer: u32) {
        let Role::Leader(l) = &self.role else {
            return;
        };
        let next = l.next.get(&peer).copied().unwrap_or(1).max(1);
        if next <= self.snap_index {
            // The entries it needs are compacted away: it gets the machine instead.
            self.send_snapshot(peer);
            return;
        }
        let prev_index = next - 1;
        let Some(prev_term) = self.term_at(prev_index) else {
            return;
        };
        let start = self.position(next);
        let entries: Vec<LogEntry> = self
            .disk
            .log
            .iter()
            .skip(start)
            .take(self.cfg.max_draft)
            .cloned()
            .collect();
        let sent_to = prev_index + entries.len() as u64;
        let msg = Msg::Draft {
            term: self.disk.term,
            prev_index,
            prev_term,
            entries,
            commit: self.commit,
        };
        if let Role::Leader(l) = &mut self.role {
            l.sent.insert(peer, sent_to);
        }
        self.send(NodeId::Sync(peer), msg);
    }

    /// A message from `peer` as leader of `term`: refuse it (false) if the term is stale,
    /// else follow `peer` and restart the election timer.
    pub(super) fn heed_leader(&mut self, now: Micros, peer: u32, term: u64) -> bool {
        if term < self.disk.term {
            return false;
        }
        if !matches!(self.role, Role::Follower { leader: Some(l) } if l == peer) {
            self.step_down(now, term, Some(peer));
        }
        self.reset_election(now);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn on_draft(
        &mut self,
        now: Micros,
        peer: u32,
        term: u64,
        mut prev_index: u64,
        mut prev_term: u64,
        mut entries: Vec<LogEntry>,
        commit: u64,
    ) {
        if !self.heed_leader(now, peer, term) {
            let ack = Msg::DraftAck {
                term: self.disk.term,
                ok: false,
                match_index: 0,
            };
            self.send(NodeId::Sync(peer), ack);
            return;
        }
        if prev_index < self.snap_index {
            // Entries up to the snapshot are committed, so they match the leader's: skip them.
            let covered = usize::try_from(self.snap_index - prev_index).unwrap_or(usize::MAX);
            entries.drain(..covered.min(entries.len()));
            (prev_index, prev_term) = (self.snap_index, self.snap_term);
        }
        if self.term_at(prev_index) != Some(prev_term) {
            // Retry from our last entry if we are short, else one before the mismatch.
            let hint = if prev_index > self.last_index() {
                self.last_index()
            } else {
                prev_index.saturating_sub(1)
            };
            let ack = Msg::DraftAck {
                term,
                ok: false,
                match_index: hint,
            };
            self.send(NodeId::Sync(peer), ack);
            return;
        }
        let mut first_changed = None;
        for (k, e) in entries.iter().enumerate() {
            let index = prev_index + 1 + k as u64;
            match self.term_at(index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    // Conflict: a committed entry never conflicts (leader completeness).
                    let keep = self.position(index);
                    self.disk.log.truncate(keep);
                }
                None => {}
            }
            first_changed.get_or_insert(index);
            self.disk.log.push(e.clone());
        }
        if let Some(from) = first_changed {
            let start = self.position(from);
            let written = self.disk.log[start..].to_vec();
            self.persist(SyncWrite::Log {
                from,
                entries: written,
            });
        }
        let matched = prev_index + entries.len() as u64;
        let new_commit = commit.min(matched);
        if new_commit > self.commit {
            self.commit = new_commit;
            self.apply_committed();
        }
        let ack = Msg::DraftAck {
            term,
            ok: true,
            match_index: matched,
        };
        self.send(NodeId::Sync(peer), ack);
    }

    fn on_draft_ack(&mut self, peer: u32, term: u64, ok: bool, match_index: u64) {
        if term != self.disk.term {
            return;
        }
        let last = self.last_index();
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let resend;
        if ok {
            let m = l.matched.entry(peer).or_insert(0);
            *m = (*m).max(match_index.min(last));
            let m = *m;
            let n = l.next.entry(peer).or_insert(1);
            *n = (*n).max(m + 1);
            // Entries up to `sent` are already on their way (every append broadcasts, and a
            // heartbeat resends from `next`, which covers a lost Draft): resending them on every
            // ack multiplied Drafts and acks by the number in flight.
            let sent = l.sent.get(&peer).copied().unwrap_or(0);
            resend = *n <= last && sent < last;
        } else {
            let n = l.next.entry(peer).or_insert(1);
            *n = (match_index + 1).min(*n).max(1);
            resend = true;
        }
        if ok {
            self.advance_commit();
        }
        if resend {
            self.send_draft(peer);
        }
    }

    /// Commit the highest index of this term held by a quorum (the leader counts itself).
    pub(super) fn advance_commit(&mut self) {
        let Role::Leader(l) = &self.role else {
            return;
        };
        let last = self.last_index();
        let mut new_commit = self.commit;
        for n in (self.commit + 1..=last).rev() {
            if self.term_at(n) != Some(self.disk.term) {
                break;
            }
            let holders = 1 + l.matched.values().filter(|&&m| m >= n).count();
            if holders >= self.cfg.quorum() {
                new_commit = n;
                break;
            }
        }
        if new_commit > self.commit {
            self.commit = new_commit;
            self.apply_committed();
        }
    }

    /// Apply committed entries in order; the leader announces what they elected.
    fn apply_committed(&mut self) {
        let mut resolved: Vec<Resolution> = Vec::new();
        let mut notices: Vec<AbandonNotice> = Vec::new();
        while self.applied < self.commit {
            let index = self.applied + 1;
            let Some(entry) = self.entry(index).cloned() else {
                break;
            };
            for e in &entry.elects {
                if let Outcome::Elected(r) = self.machine.apply(e) {
                    resolved.push(r);
                }
                self.collect_spilled();
            }
            for a in &entry.abandons {
                notices.extend(self.machine.abandon(a));
            }
            self.applied = index;
        }
        if !resolved.is_empty() || !notices.is_empty() {
            self.announce(resolved, notices);
        }
        self.maybe_take_snapshot();
    }

    /// The leader tells every ndb and entry what the applied entries decided.
    ///
    /// What it announces is committed, so it waits only for the leader's own copy of the
    /// entries (counted towards the commit). If every one of them was written in an earlier
    /// step, the announcement goes ahead of this step's writes: an entry appended in the
    /// same step (an `Over` handled before the `DraftAck` that commits) would otherwise hold
    /// it back for one more fsync. Ahead of this step's writes is still behind every earlier
    /// step's, in the shell as in the simulator.
    fn announce(&mut self, resolved: Vec<Resolution>, notices: Vec<AbandonNotice>) {
        if !self.is_leader() {
            return;
        }
        let sends: Vec<Action<SyncWrite>> = self
            .cfg
            .ndbs
            .iter()
            .map(|n| NodeId::Ndb(*n))
            .chain(self.cfg.entries.iter().map(|e| NodeId::Entry(*e)))
            .map(|to| Action::Send {
                to,
                msg: Msg::Resolved {
                    resolutions: resolved.clone(),
                    abandons: notices.clone(),
                },
            })
            .collect();
        let applied = self.applied;
        let holds_announced = self
            .out
            .iter()
            .any(|a| matches!(a, Action::Persist(SyncWrite::Log { from, .. }) if *from <= applied));
        let at = if holds_announced {
            self.out.len()
        } else {
            self.out
                .iter()
                .position(|a| matches!(a, Action::Persist(_) | Action::WriteBehind(_)))
                .unwrap_or(self.out.len())
        };
        for (k, send) in sends.into_iter().enumerate() {
            self.out.insert(at + k, send);
        }
    }

    pub(super) fn others(&self) -> Vec<u32> {
        let me = self.cfg.id;
        self.cfg
            .peers
            .iter()
            .copied()
            .filter(|p| *p != me)
            .collect()
    }
}
