//! Following one ndb's permanent log and delivering it strictly in id order.
//!
//! The entry's own resolved segments are delivered from the bodies it already holds: it fetches
//! only the ranges other entries own, so it never reads its own publishes back from an ndb.

use super::EntryConfig;
use ordo_common::proto::{Body, Micros};
use ordo_common::PermanentId;
use std::collections::BTreeMap;

/// Own resolved segments kept for local delivery; beyond this (a follow path far behind) they
/// are fetched from the ndbs like any other range.
const OWN_KEPT: usize = 64;

/// Where delivery stands and whom it asks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Follow {
    /// The next id to deliver; everything below was delivered, in order.
    pub(super) next: PermanentId,
    /// The highest range end heard of (from Resolved or an ndb's tip).
    tip: PermanentId,
    /// Which ndb (index into the config's list) is followed.
    turn: usize,
    /// The ndb asked and when, while an answer is awaited.
    outstanding: Option<(u32, Micros)>,
    /// Set while the shell's delivery queue is full: ask for nothing more until it drains.
    paused: bool,
    /// This entry's resolved segments not yet delivered, by base id.
    own: BTreeMap<PermanentId, Vec<Body>>,
}

impl Follow {
    pub(super) fn new(from: PermanentId, turn: usize) -> Self {
        Follow {
            next: from,
            tip: from,
            turn,
            outstanding: None,
            paused: false,
            own: BTreeMap::new(),
        }
    }

    /// Keep the bodies of this entry's own segment resolved at `base`, to deliver them locally.
    pub(super) fn keep_own(&mut self, base: PermanentId, bodies: Vec<Body>) {
        if base >= self.next && self.own.len() < OWN_KEPT {
            self.own.insert(base, bodies);
        }
    }

    /// Deliver what the kept own segments hold from `next` on (nothing while paused).
    pub(super) fn take_local(&mut self) -> Vec<(PermanentId, Body)> {
        let mut delivered = Vec::new();
        while !self.paused {
            let Some(entry) = self.own.first_entry() else {
                break;
            };
            let base = *entry.key();
            let end = base.0 + entry.get().len() as u64;
            if end <= self.next.0 {
                // Already delivered from an ndb.
                entry.remove();
                continue;
            }
            if base > self.next {
                break;
            }
            let skip = usize::try_from(self.next.0 - base.0).unwrap_or(usize::MAX);
            for body in entry.remove().into_iter().skip(skip) {
                delivered.push((self.next, body));
                self.next = self.next.next();
            }
        }
        delivered
    }

    fn own_covers_next(&self) -> bool {
        self.own
            .range(..=self.next)
            .next_back()
            .is_some_and(|(base, bodies)| self.next.0 < base.0 + bodies.len() as u64)
    }

    /// Most records worth asking for from `next`: up to the next own segment, held here.
    pub(super) fn fetch_limit(&self, max: u32) -> u32 {
        match self.own.range(self.next..).next() {
            Some((base, _)) => u32::try_from(base.0 - self.next.0).map_or(max, |gap| gap.min(max)),
            None => max,
        }
    }

    /// Stop or resume asking; on resume, ask at once if something is missing.
    pub(super) fn set_paused(
        &mut self,
        now: Micros,
        paused: bool,
        ndbs: &[u32],
    ) -> Option<(u32, PermanentId)> {
        self.paused = paused;
        self.maybe_fetch(now, ndbs)
    }

    pub(super) fn tip(&self) -> PermanentId {
        self.tip
    }

    pub(super) fn learn_tip(&mut self, end: PermanentId) {
        self.tip = self.tip.max(end);
    }

    /// Ask the followed ndb for more when something is known to be missing and no ask is out.
    pub(super) fn maybe_fetch(&mut self, now: Micros, ndbs: &[u32]) -> Option<(u32, PermanentId)> {
        if self.paused || self.outstanding.is_some() || self.tip <= self.next || ndbs.is_empty() {
            return None;
        }
        if self.own_covers_next() {
            // Delivered locally (`take_local`), not fetched.
            return None;
        }
        self.ask(now, ndbs)
    }

    fn ask(&mut self, now: Micros, ndbs: &[u32]) -> Option<(u32, PermanentId)> {
        let ndb = *ndbs.get(self.turn % ndbs.len().max(1))?;
        self.outstanding = Some((ndb, now));
        Some((ndb, self.next))
    }

    /// Give up on a silent ndb (follow the next one) and poll even when idle, to learn the tip.
    pub(super) fn on_tick(
        &mut self,
        now: Micros,
        retry: Micros,
        ndbs: &[u32],
    ) -> Option<(u32, PermanentId)> {
        if let Some((_, at)) = self.outstanding {
            if now < at + retry {
                return None;
            }
            self.turn = self.turn.wrapping_add(1);
            self.outstanding = None;
        }
        if self.paused {
            return None;
        }
        self.ask(now, ndbs)
    }

    /// Take an ndb's records: deliver the ones from `next` on; return them and a follow-up ask.
    #[allow(clippy::type_complexity)]
    pub(super) fn on_permanent(
        &mut self,
        now: Micros,
        ndb: u32,
        from: PermanentId,
        tip: PermanentId,
        records: Vec<Body>,
        cfg: &EntryConfig,
    ) -> (Vec<(PermanentId, Body)>, Option<(u32, PermanentId)>) {
        self.learn_tip(tip);
        if self.outstanding.is_some_and(|(n, _)| n == ndb) {
            self.outstanding = None;
        }
        let mut delivered = Vec::new();
        if from <= self.next {
            let skip = usize::try_from(self.next.0 - from.0).unwrap_or(usize::MAX);
            for body in records.into_iter().skip(skip) {
                delivered.push((self.next, body));
                self.next = self.next.next();
            }
        }
        if delivered.is_empty() {
            if from == self.next && self.tip > self.next {
                // This ndb lags behind what is known to be ordered: try another next time.
                self.turn = self.turn.wrapping_add(1);
            }
            return (delivered, None);
        }
        let fetch = self.maybe_fetch(now, &cfg.ndbs);
        (delivered, fetch)
    }
}
