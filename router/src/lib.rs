//! The router: subscriptions, retained messages and fan-out in permanent-id order.
//!
//! ```text
//!  sequencer ──(committed batch, ids ascending)──► Router::dispatch
//!                                                    │  one Delivery per (message, session)
//!                                                    ▼
//!                                  session queue (bounded) ──► front-door connection task
//! ```
//!
//! `dispatch` is called by one task, batch after batch, so every session queue
//! receives messages in id order. `last_dispatched` is read under the same lock
//! as a new subscription is added, which gives replay its seam: ids up to it are
//! on disk, ids above it arrive live.
//!
//! Each message is first applied to the retained values and fox-wamp's
//! conditional state ([`kv`]): a refused or parked conditional publish is not
//! delivered, and its publisher's session learns the outcome.
//!
//! Everything the log decides can be copied out as a [`RouterSnapshot`] and
//! restored, so a restart dispatches only the log after it ([`snapshot`]).
//!
//! It is its own crate so that a loom test (`tests/loom.rs`, built with
//! `RUSTFLAGS="--cfg ordo_loom"`) can explore that seam without building the
//! rest of the entry (RocksDB).
#![warn(missing_docs)]

pub mod kv;
pub mod snapshot;

#[cfg(ordo_loom)]
use loom::sync::{Mutex, MutexGuard};
use ordo_common::topic::Filter;
use ordo_common::{PermanentId, StoredMessage};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
#[cfg(not(ordo_loom))]
use std::sync::{Mutex, MutexGuard};
use tokio::sync::mpsc;

pub use kv::Outcome;
pub use snapshot::{RouterSnapshot, SnapshotDecodeError};

/// Identifies a client session on this entry (also its WAMP session id).
pub type SessionId = u64;
/// Identifies one subscription.
pub type SubscriptionId = u64;

/// One message for one session, with every subscription of that session it matched.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The message's permanent id.
    pub id: PermanentId,
    /// The message.
    pub message: Arc<StoredMessage>,
    /// Matching subscriptions with their granted QoS.
    pub matches: Vec<(SubscriptionId, u8)>,
}

/// What a subscriber asked for.
#[derive(Clone, Debug)]
pub struct SubscriptionSpec {
    /// Realm the subscription lives in.
    pub realm: String,
    /// Which topics it matches.
    pub filter: Filter,
    /// Granted QoS (MQTT); 0 for WAMP.
    pub qos: u8,
    /// Skip messages published by the subscribing session (WAMP publisher exclusion).
    pub exclude_own: bool,
}

/// The result of adding subscriptions.
#[derive(Debug)]
pub struct Subscribed {
    /// One id per requested subscription, in request order.
    pub ids: Vec<SubscriptionId>,
    /// Every message up to this id was dispatched before the subscriptions existed.
    pub last_dispatched: PermanentId,
    /// Retained messages matching any of the new subscriptions, in id order.
    pub retained: Vec<(PermanentId, Arc<StoredMessage>)>,
}

struct Session {
    tx: Option<mpsc::Sender<Delivery>>,
}

struct Subscription {
    session: SessionId,
    spec: SubscriptionSpec,
    /// MQTT 5 shared subscription: the group key (`$share/{name}/{filter}`).
    share: Option<String>,
}

#[derive(Default)]
struct State {
    next_session: SessionId,
    next_subscription: SubscriptionId,
    last_dispatched: PermanentId,
    sessions: HashMap<SessionId, Session>,
    subscriptions: BTreeMap<SubscriptionId, Subscription>,
    /// Exact-topic subscriptions by realm, then topic: the common case, looked up directly.
    exact: HashMap<String, HashMap<String, Vec<SubscriptionId>>>,
    /// Subscriptions with wildcards or prefixes, matched one by one.
    patterns: Vec<SubscriptionId>,
    retained: BTreeMap<(String, String), (PermanentId, Arc<StoredMessage>)>,
    /// Shared subscription groups (realm, key) -> messages handed out so far (round robin).
    share_cursor: HashMap<(String, String), usize>,
    /// fox-wamp conditional state: parked publishes, wills (see [`kv`]).
    kv: kv::KvState,
    /// Sessions that take the outcomes of their conditional publishes.
    outcomes: BTreeMap<SessionId, mpsc::UnboundedSender<Outcome>>,
}

/// Shared routing table of one entry.
pub struct Router {
    state: Mutex<State>,
    queue_capacity: usize,
}

impl Router {
    /// Create a router that continues after `last` with the given retained messages.
    ///
    /// Session ids start at `first_session`; callers pick a base no earlier
    /// process used, so a stored publisher id never names a live session.
    pub fn new(
        last: PermanentId,
        retained: Vec<(PermanentId, StoredMessage)>,
        queue_capacity: usize,
        first_session: SessionId,
    ) -> Arc<Router> {
        let mut state = State {
            next_session: first_session.max(1),
            next_subscription: 1,
            last_dispatched: last,
            ..Default::default()
        };
        for (id, message) in retained {
            state.retained.insert(
                (message.realm.clone(), message.topic.clone()),
                (id, Arc::new(message)),
            );
        }
        Router::with_state(state, queue_capacity)
    }

    fn with_state(state: State, queue_capacity: usize) -> Arc<Router> {
        Arc::new(Router {
            state: Mutex::new(state),
            queue_capacity,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; keep routing rather than cascade it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Open a session and return its id and its delivery queue.
    ///
    /// The queue closes when the session falls `queue_capacity` deliveries behind;
    /// the connection should then close (a persistent session resumes from disk).
    pub fn open_session(&self) -> (SessionId, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let mut state = self.lock();
        let id = state.next_session;
        state.next_session += 1;
        state.sessions.insert(id, Session { tx: Some(tx) });
        (id, rx)
    }

    /// Close a session and drop its subscriptions; return the last id dispatched before.
    pub fn close_session(&self, session: SessionId) -> PermanentId {
        let mut state = self.lock();
        state.sessions.remove(&session);
        state.outcomes.remove(&session);
        let ids: Vec<SubscriptionId> = state
            .subscriptions
            .iter()
            .filter(|(_, s)| s.session == session)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            remove_subscription(&mut state, id);
        }
        state.last_dispatched
    }

    /// Add subscriptions for a session atomically with respect to dispatch.
    pub fn subscribe(&self, session: SessionId, specs: Vec<SubscriptionSpec>) -> Subscribed {
        self.subscribe_shared(session, specs.into_iter().map(|s| (s, None)).collect())
    }

    /// Add subscriptions like [`Router::subscribe`]; a spec with a share key
    /// joins that shared group (MQTT 5 `$share/{name}/{filter}`, the key being
    /// the whole filter text): each message matching the group goes to one
    /// member, round robin in subscription id order.
    pub fn subscribe_shared(
        &self,
        session: SessionId,
        specs: Vec<(SubscriptionSpec, Option<String>)>,
    ) -> Subscribed {
        let mut state = self.lock();
        let mut ids = Vec::with_capacity(specs.len());
        let mut retained = Vec::new();
        for (spec, share) in specs {
            let id = state.next_subscription;
            state.next_subscription += 1;
            for ((realm, topic), (rid, message)) in &state.retained {
                if *realm == spec.realm && spec.filter.matches(topic) {
                    retained.push((*rid, message.clone()));
                }
            }
            match exact_topic(&spec.filter) {
                Some(topic) => state
                    .exact
                    .entry(spec.realm.clone())
                    .or_default()
                    .entry(topic)
                    .or_default()
                    .push(id),
                None => state.patterns.push(id),
            }
            state.subscriptions.insert(
                id,
                Subscription {
                    session,
                    spec,
                    share,
                },
            );
            ids.push(id);
        }
        retained.sort_by_key(|(id, _)| *id);
        retained.dedup_by_key(|(id, _)| *id);
        Subscribed {
            ids,
            last_dispatched: state.last_dispatched,
            retained,
        }
    }

    /// Remove one subscription of a session; return whether it existed.
    pub fn unsubscribe(&self, session: SessionId, id: SubscriptionId) -> bool {
        let mut state = self.lock();
        match state.subscriptions.get(&id) {
            Some(s) if s.session == session => {
                remove_subscription(&mut state, id);
                true
            }
            _ => false,
        }
    }

    /// Return the receiver of `session`'s conditional-publish outcomes.
    ///
    /// Call once per session that publishes with fox-wamp options; outcomes of
    /// messages whose publisher is `session` go there (the receiver checks
    /// [`Outcome::origin`]: session ids are per entry). Closing the session drops it.
    pub fn outcomes(&self, session: SessionId) -> mpsc::UnboundedReceiver<Outcome> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().outcomes.insert(session, tx);
        rx
    }

    /// Return the wills session `session` of entry `origin` owns, as of the
    /// last dispatched id: (realm, topic, value).
    pub fn wills_of(
        &self,
        origin: u64,
        session: SessionId,
    ) -> Vec<(String, String, serde_json::Value)> {
        self.lock().kv.wills_of(origin, session)
    }

    /// Tell whether a dispatched message was delivered under its own id, so a
    /// replay or history read should show it (refused, parked and control
    /// records are not).
    pub fn replayable(&self, id: PermanentId, message: &StoredMessage) -> bool {
        // Only messages with fox-wamp options are ever held back.
        if message.wamp.as_ref().is_none_or(|o| o.fox.is_none()) {
            return true;
        }
        self.lock().kv.replayable(id, message)
    }

    /// Return the sessions of entry `origin` that own wills or parked
    /// publishes, with a realm each; after a restart these are the sessions
    /// the node lost without ending them.
    pub fn fox_sessions_of(&self, origin: u64) -> Vec<(SessionId, String)> {
        self.lock().kv.sessions_of(origin).into_iter().collect()
    }

    /// Return how many `watch` publishes are parked.
    pub fn parked_count(&self) -> usize {
        self.lock().kv.parked_count()
    }

    /// Return the highest id dispatched so far.
    pub fn last_dispatched(&self) -> PermanentId {
        self.lock().last_dispatched
    }

    /// Return the retained message of one topic, with its id.
    pub fn retained_of(
        &self,
        realm: &str,
        topic: &str,
    ) -> Option<(PermanentId, Arc<StoredMessage>)> {
        self.lock()
            .retained
            .get(&(realm.to_owned(), topic.to_owned()))
            .cloned()
    }

    /// Return how many topics hold a retained message.
    pub fn retained_count(&self) -> usize {
        self.lock().retained.len()
    }

    /// Return every retained message of a realm whose topic starts with `prefix`, by topic.
    pub fn retained_under(
        &self,
        realm: &str,
        prefix: &str,
    ) -> Vec<(String, PermanentId, Arc<StoredMessage>)> {
        let state = self.lock();
        state
            .retained
            .range((realm.to_owned(), prefix.to_owned())..)
            .take_while(|((r, t), _)| r == realm && t.starts_with(prefix))
            .map(|((_, t), (id, m))| (t.clone(), *id, m.clone()))
            .collect()
    }

    /// Fan out a committed batch, in id order, to every matching session queue.
    ///
    /// Call from one task only, with batches in id order.
    pub fn dispatch(&self, batch: &[(PermanentId, Arc<StoredMessage>)]) {
        let mut state = self.lock();
        let mut per_session: BTreeMap<SessionId, Vec<(SubscriptionId, u8)>> = BTreeMap::new();
        for (id, message) in batch {
            let st = &mut *state;
            let applied = st.kv.apply(&mut st.retained, *id, message);
            if !applied.deliver {
                send_outcomes(&state, applied.outcomes);
                state.last_dispatched = *id;
                continue;
            }
            per_session.clear();
            let mut groups: BTreeMap<String, Vec<(SubscriptionId, SessionId, u8)>> =
                BTreeMap::new();
            let exact = state
                .exact
                .get(message.realm.as_str())
                .and_then(|topics| topics.get(message.topic.as_str()));
            let candidates = exact.into_iter().flatten().chain(state.patterns.iter());
            for sub_id in candidates {
                let Some(sub) = state.subscriptions.get(sub_id) else {
                    continue;
                };
                if sub.spec.realm != message.realm
                    || ((sub.spec.exclude_own || message.exclude_publisher)
                        && sub.session == message.publisher)
                    || !sub.spec.filter.matches(&message.topic)
                {
                    continue;
                }
                match &sub.share {
                    Some(key) => groups.entry(key.clone()).or_default().push((
                        *sub_id,
                        sub.session,
                        sub.spec.qos,
                    )),
                    None => per_session
                        .entry(sub.session)
                        .or_default()
                        .push((*sub_id, sub.spec.qos)),
                }
            }
            for (key, mut members) in groups {
                members.sort_unstable();
                let cursor = state
                    .share_cursor
                    .entry((message.realm.clone(), key))
                    .or_insert(0);
                let (sub_id, session, qos) = members[*cursor % members.len()];
                *cursor = cursor.wrapping_add(1);
                per_session.entry(session).or_default().push((sub_id, qos));
            }
            for (session, matches) in std::mem::take(&mut per_session) {
                let Some(entry) = state.sessions.get_mut(&session) else {
                    continue;
                };
                let Some(tx) = &entry.tx else { continue };
                let delivery = Delivery {
                    id: *id,
                    message: message.clone(),
                    matches,
                };
                if tx.try_send(delivery).is_err() {
                    // Full or gone: drop the sender so the session sees its queue close.
                    tracing::warn!(session, "session queue overflowed; closing it");
                    entry.tx = None;
                }
            }
            send_outcomes(&state, applied.outcomes);
            state.last_dispatched = *id;
        }
    }
}

fn send_outcomes(state: &State, outcomes: Vec<(SessionId, Outcome)>) {
    for (session, outcome) in outcomes {
        if let Some(tx) = state.outcomes.get(&session) {
            let _ = tx.send(outcome);
        }
    }
}

fn exact_topic(filter: &Filter) -> Option<String> {
    match filter {
        Filter::Prefix(_) => None,
        Filter::Levels(levels) => {
            let mut parts = Vec::with_capacity(levels.len());
            for level in levels {
                match level {
                    ordo_common::topic::Level::Exact(text) => parts.push(text.as_str()),
                    _ => return None,
                }
            }
            Some(parts.join("/"))
        }
    }
}

fn remove_subscription(state: &mut State, id: SubscriptionId) {
    let Some(sub) = state.subscriptions.remove(&id) else {
        return;
    };
    match exact_topic(&sub.spec.filter) {
        Some(topic) => {
            if let Some(topics) = state.exact.get_mut(&sub.spec.realm) {
                if let Some(list) = topics.get_mut(&topic) {
                    list.retain(|s| *s != id);
                    if list.is_empty() {
                        topics.remove(&topic);
                    }
                }
            }
        }
        None => state.patterns.retain(|s| *s != id),
    }
}
