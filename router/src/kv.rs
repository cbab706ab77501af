//! fox-wamp's key-value semantics on the total order: deep-merged retained
//! values, compare-and-set (`when`), parked publishes (`watch`) and wills.
//!
//! Everything here is decided while the router applies the log in permanent-id
//! order, from the log alone, so every node reaches the same decisions.
//!
//! ```text
//!  message N ─► apply ─┬─ SessionEnd   drop the session's parked publishes        (not delivered)
//!                      ├─ Release{P}   deliver only: P took effect earlier
//!                      ├─ WillOf       write if the session still owns the will, else suppressed
//!                      ├─ when fits    write, deliver, Applied ──────────────────► publisher
//!                      │   watch       park                                        (not delivered)
//!                      │   else        Refused ──────────────────────────────────► publisher
//!                      └─ retain       write (deep merge or replace)
//!  after a write on topic K: release the parked publishes on K, oldest id first, while their
//!  condition fits: each is written at N, and Released goes to its publisher, whose entry logs
//!  a Release record: the event of a released publish is delivered under that record's id.
//! ```
//!
//! Ids that were not delivered where they stand in the log (refused, parked,
//! will records that lost their topic) are remembered, so replay skips them as
//! live delivery did ([`KvState::replayable`]).

use crate::SessionId;
use ordo_common::wamp::value::{from_json, to_json};
use ordo_common::wamp::{Control, FoxOptions, Value, When};
use ordo_common::{Payload, PermanentId, StoredMessage};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A topic: (realm, topic).
pub(crate) type Key = (String, String);
/// The retained value of each topic with the id of its last write.
pub(crate) type Retained = BTreeMap<Key, (PermanentId, Arc<StoredMessage>)>;

/// How many undelivered ids are remembered for replay (the oldest are forgotten).
const SUPPRESSED_LIMIT: usize = 1 << 20;

/// What a conditional publish came to, sent to its publisher's session.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The condition held at `id`: the publish took effect and was delivered there.
    Applied {
        /// The publishing entry.
        origin: u64,
        /// The PUBLISH request to answer, if acknowledged.
        request: Option<u64>,
        /// The publish's permanent id.
        id: PermanentId,
    },
    /// The condition did not hold and the publish did not ask to `watch`: no effect.
    Refused {
        /// The publishing entry.
        origin: u64,
        /// The PUBLISH request to answer, if acknowledged.
        request: Option<u64>,
        /// The publish's permanent id.
        id: PermanentId,
    },
    /// The parked publish `id` took effect at `at`; the publishing entry now
    /// logs a [`Control::Release`] record that carries its event.
    Released {
        /// The publishing entry.
        origin: u64,
        /// The PUBLISH request to answer, if acknowledged.
        request: Option<u64>,
        /// The parked publish's permanent id.
        id: PermanentId,
        /// The id of the message that released it.
        at: PermanentId,
        /// The parked publish.
        message: Arc<StoredMessage>,
    },
}

impl Outcome {
    /// Return the owner id of the entry whose session published the message.
    pub fn origin(&self) -> u64 {
        match self {
            Outcome::Applied { origin, .. }
            | Outcome::Refused { origin, .. }
            | Outcome::Released { origin, .. } => *origin,
        }
    }
}

/// A will registered on a topic by the last session that wrote it with `will`.
#[derive(Clone, Debug, PartialEq)]
struct WillEntry {
    origin: u64,
    session: u64,
    value: Json,
}

struct Parked {
    key: Key,
    message: Arc<StoredMessage>,
}

/// The conditional state: parked publishes, wills, undelivered ids.
#[derive(Default)]
pub(crate) struct KvState {
    /// Parked `watch` publishes, in permanent-id order (the release order).
    parked: BTreeMap<PermanentId, Parked>,
    wills: BTreeMap<Key, WillEntry>,
    suppressed: BTreeSet<PermanentId>,
}

/// What applying one message decided.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Deliver the message to subscribers under its own id.
    pub(crate) deliver: bool,
    /// Outcomes for publishers' sessions, in order.
    pub(crate) outcomes: Vec<(SessionId, Outcome)>,
}

/// The conditional state as plain data, for a router snapshot ([`crate::snapshot`]).
///
/// Keys are not stored: a parked publish's and a retained value's key is its
/// message's (realm, topic), as [`KvState::apply`] builds it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct KvSnapshot {
    parked: Vec<(PermanentId, Arc<StoredMessage>)>,
    wills: Vec<(Key, u64, u64, Json)>,
    suppressed: Vec<PermanentId>,
}

impl KvSnapshot {
    pub(crate) fn parked_count(&self) -> usize {
        self.parked.len()
    }
}

fn fox(message: &StoredMessage) -> Option<&FoxOptions> {
    message.wamp.as_ref().and_then(|o| o.fox.as_ref())
}

fn when_of(message: &StoredMessage) -> Option<&When> {
    fox(message).and_then(|f| f.when.as_ref())
}

impl KvState {
    /// Apply message `id` to the retained values and the conditional state.
    ///
    /// Call for every message, in permanent-id order.
    pub(crate) fn apply(
        &mut self,
        retained: &mut Retained,
        id: PermanentId,
        message: &Arc<StoredMessage>,
    ) -> Applied {
        let fox = fox(message);
        if fox.is_none() && !message.retain {
            // The common case touches no state: no key to build.
            return Applied {
                deliver: true,
                outcomes: Vec::new(),
            };
        }
        let key = (message.realm.clone(), message.topic.clone());
        let mut out = Applied {
            deliver: true,
            outcomes: Vec::new(),
        };
        let origin = fox.map_or(0, |f| f.origin);
        let request = fox.and_then(|f| f.request);
        match fox.and_then(|f| f.control.as_ref()) {
            Some(Control::SessionEnd) => {
                self.parked.retain(|_, p| {
                    !(p.message.publisher == message.publisher
                        && self::fox(&p.message).is_some_and(|f| f.origin == origin))
                });
                out.deliver = false;
                return out;
            }
            Some(Control::Release { .. }) => return out,
            Some(Control::WillOf) => {
                let owns = self
                    .wills
                    .get(&key)
                    .is_some_and(|w| w.origin == origin && w.session == message.publisher);
                if owns {
                    self.write(retained, id, &key, message);
                    self.release(retained, id, &key, &mut out.outcomes);
                } else {
                    self.suppress(id);
                    out.deliver = false;
                }
                return out;
            }
            None => {}
        }
        if let Some(when) = when_of(message) {
            if fits(&when.value, &current(retained, &key)) {
                self.write(retained, id, &key, message);
                out.outcomes.push((
                    message.publisher,
                    Outcome::Applied {
                        origin,
                        request,
                        id,
                    },
                ));
                self.release(retained, id, &key, &mut out.outcomes);
            } else {
                self.suppress(id);
                out.deliver = false;
                if when.watch {
                    self.parked.insert(
                        id,
                        Parked {
                            key,
                            message: message.clone(),
                        },
                    );
                } else {
                    out.outcomes.push((
                        message.publisher,
                        Outcome::Refused {
                            origin,
                            request,
                            id,
                        },
                    ));
                }
            }
            return out;
        }
        if message.retain {
            self.write(retained, id, &key, message);
            self.release(retained, id, &key, &mut out.outcomes);
        }
        out
    }

    /// Tell whether message `id` is delivered where it stands in the log
    /// (replay and history skip it otherwise).
    pub(crate) fn replayable(&self, id: PermanentId, message: &StoredMessage) -> bool {
        !self.suppressed.contains(&id)
            && !matches!(
                fox(message).and_then(|f| f.control.as_ref()),
                Some(Control::SessionEnd)
            )
    }

    /// Return the wills session `session` of entry `origin` owns: (realm, topic, value).
    pub(crate) fn wills_of(&self, origin: u64, session: u64) -> Vec<(String, String, Json)> {
        self.wills
            .iter()
            .filter(|(_, w)| w.origin == origin && w.session == session)
            .map(|((realm, topic), w)| (realm.clone(), topic.clone(), w.value.clone()))
            .collect()
    }

    /// Return the sessions of entry `origin` that own wills or parked
    /// publishes, each with a realm it used.
    pub(crate) fn sessions_of(&self, origin: u64) -> BTreeMap<u64, String> {
        let mut out = BTreeMap::new();
        for ((realm, _), w) in &self.wills {
            if w.origin == origin {
                out.entry(w.session).or_insert_with(|| realm.clone());
            }
        }
        for p in self.parked.values() {
            if fox(&p.message).is_some_and(|f| f.origin == origin) {
                out.entry(p.message.publisher)
                    .or_insert_with(|| p.message.realm.clone());
            }
        }
        out
    }

    /// Return how many publishes are parked.
    pub(crate) fn parked_count(&self) -> usize {
        self.parked.len()
    }

    /// Copy the state out; cheap enough to run under the router's lock
    /// (messages are shared, not cloned).
    pub(crate) fn to_snapshot(&self) -> KvSnapshot {
        KvSnapshot {
            parked: self
                .parked
                .iter()
                .map(|(id, p)| (*id, p.message.clone()))
                .collect(),
            wills: self
                .wills
                .iter()
                .map(|(key, w)| (key.clone(), w.origin, w.session, w.value.clone()))
                .collect(),
            suppressed: self.suppressed.iter().copied().collect(),
        }
    }

    /// Rebuild the state [`KvState::to_snapshot`] copied.
    pub(crate) fn from_snapshot(snapshot: KvSnapshot) -> KvState {
        KvState {
            parked: snapshot
                .parked
                .into_iter()
                .map(|(id, message)| {
                    let key = (message.realm.clone(), message.topic.clone());
                    (id, Parked { key, message })
                })
                .collect(),
            wills: snapshot
                .wills
                .into_iter()
                .map(|(key, origin, session, value)| {
                    (
                        key,
                        WillEntry {
                            origin,
                            session,
                            value,
                        },
                    )
                })
                .collect(),
            suppressed: snapshot.suppressed.into_iter().collect(),
        }
    }

    fn suppress(&mut self, id: PermanentId) {
        self.suppressed.insert(id);
        if self.suppressed.len() > SUPPRESSED_LIMIT {
            self.suppressed.pop_first();
        }
    }

    /// Write `message` into the topic's retained value at `id` and set or clear its will.
    fn write(
        &mut self,
        retained: &mut Retained,
        id: PermanentId,
        key: &Key,
        message: &Arc<StoredMessage>,
    ) {
        if message.payload.is_empty() {
            retained.remove(key);
            self.wills.remove(key);
            return;
        }
        let stored = match (&message.payload, retained.get(key)) {
            // WAMP publishes deep-merge an object into a retained object (fox-wamp);
            // MQTT publishes replace, as MQTT says.
            (Payload::Wamp { kwargs, .. }, Some((_, old))) => {
                let (old, new) = (value_of(&old.payload), value_of(&message.payload));
                if old.is_object() && new.is_object() {
                    Arc::new(StoredMessage {
                        payload: Payload::Wamp {
                            args: vec![from_json(merge(&old, &new))],
                            kwargs: kwargs.clone(),
                        },
                        ..(**message).clone()
                    })
                } else {
                    message.clone()
                }
            }
            _ => message.clone(),
        };
        retained.insert(key.clone(), (id, stored));
        match fox(message).and_then(|f| f.will.as_ref().map(|w| (f.origin, w))) {
            Some((origin, will)) => {
                self.wills.insert(
                    key.clone(),
                    WillEntry {
                        origin,
                        session: message.publisher,
                        value: will.value.clone(),
                    },
                );
            }
            None => {
                self.wills.remove(key);
            }
        }
    }

    /// Release parked publishes on `key` whose condition now fits, oldest first.
    fn release(
        &mut self,
        retained: &mut Retained,
        at: PermanentId,
        key: &Key,
        outcomes: &mut Vec<(SessionId, Outcome)>,
    ) {
        loop {
            let value = current(retained, key);
            let next = self
                .parked
                .iter()
                .find(|(_, p)| {
                    p.key == *key && when_of(&p.message).is_some_and(|w| fits(&w.value, &value))
                })
                .map(|(id, _)| *id);
            let Some(parked) = next.and_then(|id| self.parked.remove(&id).map(|p| (id, p))) else {
                return;
            };
            let (id, p) = parked;
            self.write(retained, at, key, &p.message);
            let f = fox(&p.message);
            outcomes.push((
                p.message.publisher,
                Outcome::Released {
                    origin: f.map_or(0, |f| f.origin),
                    request: f.and_then(|f| f.request),
                    id,
                    at,
                    message: p.message,
                },
            ));
        }
    }
}

fn current(retained: &Retained, key: &Key) -> Json {
    retained
        .get(key)
        .map_or(Json::Null, |(_, m)| value_of(&m.payload))
}

/// Return the value a payload stands for in conditions, merges and filters.
///
/// WAMP: the single positional argument; several arguments as an array;
/// keyword arguments alone as an object; nothing as `null`. MQTT: the JSON the
/// bytes hold, any other bytes as a binary value, empty as `null`.
pub fn value_of(payload: &Payload) -> Json {
    match payload {
        Payload::Wamp { args, kwargs } => match args.as_slice() {
            [] if kwargs.is_empty() => Json::Null,
            [] => Json::Object(
                kwargs
                    .iter()
                    .map(|(k, v)| (k.clone(), to_json(v)))
                    .collect(),
            ),
            [one] => to_json(one),
            many => Json::Array(many.iter().map(to_json).collect()),
        },
        Payload::Raw(bytes) if bytes.is_empty() => Json::Null,
        Payload::Raw(bytes) => serde_json::from_slice(bytes)
            .unwrap_or_else(|_| to_json(&Value::Binary(bytes.to_vec()))),
    }
}

/// Tell whether `value` fits `pattern` (fox-wamp's `when` and `filter`).
///
/// `null` fits only `null` (no retained value); an object fits when every
/// member of the pattern is present in the value and fits recursively (other
/// members are free); numbers compare by value; anything else must be equal.
pub fn fits(pattern: &Json, value: &Json) -> bool {
    match (pattern, value) {
        (Json::Null, v) => v.is_null(),
        (_, Json::Null) => false,
        (Json::Object(p), Json::Object(v)) => p
            .iter()
            .all(|(k, pv)| v.get(k).is_some_and(|vv| fits(pv, vv))),
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        (p, v) => p == v,
    }
}

/// Deep-merge `new` into `old`: objects merge member by member, recursively;
/// any other value replaces.
pub fn merge(old: &Json, new: &Json) -> Json {
    match (old, new) {
        (Json::Object(o), Json::Object(n)) => {
            let mut out = o.clone();
            for (k, nv) in n {
                let merged = match out.get(k) {
                    Some(ov) => merge(ov, nv),
                    None => nv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Json::Object(out)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
#[path = "kv_tests.rs"]
mod tests;
