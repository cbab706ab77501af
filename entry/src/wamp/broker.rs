//! WAMP broker bookkeeping beside the router: who is joined, and the
//! subscriptions as WAMP sees them, for the session and subscription meta API.
//!
//! ```text
//!  SUBSCRIBE(realm, uri, match) ─► Broker::subscribe ─► subscription id (shared by
//!                                                        every session on the same
//!                                                        realm, uri and match policy)
//!  the WAMP session maps it to its own router subscription; EVENTs name it.
//! ```
//!
//! The router still decides delivery and order; this table only names
//! subscriptions and answers meta queries. It is plain data under a mutex, and
//! iterates `BTreeMap`s so listings come out in id order.

use crate::router::SessionId;
use ordo_common::topic::{self, Filter};
use ordo_common::wamp::{dict_to_value, Dict, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

/// What the meta API tells about a joined session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionInfo {
    /// The realm it joined.
    pub realm: String,
    /// Authentication id.
    pub authid: String,
    /// Authentication role.
    pub authrole: String,
    /// How it authenticated (`anonymous`, `ticket`, `wampcra`).
    pub authmethod: String,
    /// `websocket` or `rawsocket`.
    pub transport: &'static str,
    /// The serializer's subprotocol name.
    pub serializer: &'static str,
}

impl SessionInfo {
    /// Render as the dict `wamp.session.get` and `on_join` carry.
    pub fn to_dict(&self, session: SessionId) -> Dict {
        let mut transport = Dict::new();
        transport.insert("type".into(), Value::from(self.transport));
        transport.insert("serializer".into(), Value::from(self.serializer));
        let mut d = Dict::new();
        d.insert("session".into(), Value::from(session));
        d.insert("realm".into(), Value::from(self.realm.as_str()));
        d.insert("authid".into(), Value::from(self.authid.as_str()));
        d.insert("authrole".into(), Value::from(self.authrole.as_str()));
        d.insert("authmethod".into(), Value::from(self.authmethod.as_str()));
        d.insert("authprovider".into(), Value::from("static"));
        d.insert("transport".into(), dict_to_value(transport));
        d
    }
}

/// One WAMP subscription: a realm, a URI and a match policy, with its subscribers.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// Realm.
    pub realm: String,
    /// Topic URI or pattern.
    pub uri: String,
    /// `exact`, `prefix` or `wildcard`.
    pub policy: String,
    /// When it was created (ISO 8601, as the caller gave it).
    pub created: String,
    /// Sessions subscribed.
    pub subscribers: BTreeSet<SessionId>,
}

impl Group {
    /// Render as the dict `wamp.subscription.get` returns.
    pub fn to_dict(&self, id: u64) -> Dict {
        let mut d = Dict::new();
        d.insert("id".into(), Value::from(id));
        d.insert("created".into(), Value::from(self.created.as_str()));
        d.insert("uri".into(), Value::from(self.uri.as_str()));
        d.insert("match".into(), Value::from(self.policy.as_str()));
        d
    }

    /// Return the router filter of this subscription.
    pub fn filter(&self) -> Option<Filter> {
        Filter::wamp(&self.uri, &self.policy)
    }
}

/// How a SUBSCRIBE changed the table; the session publishes the meta events it implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscribed {
    /// The subscription id.
    pub id: u64,
    /// The subscription did not exist before (`on_create`).
    pub created: bool,
    /// The session was not subscribed before (`on_subscribe`).
    pub added: bool,
}

/// One subscription a session was removed from (`on_unsubscribe`, and `on_delete` if `deleted`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The subscription id.
    pub id: u64,
    /// Its URI or pattern.
    pub uri: String,
    /// The session was its last subscriber, so it is gone.
    pub deleted: bool,
}

#[derive(Default)]
struct State {
    next_id: u64,
    sessions: BTreeMap<SessionId, SessionInfo>,
    groups: BTreeMap<u64, Group>,
    by_key: BTreeMap<(String, String, String), u64>,
}

/// The WAMP broker's session and subscription table, shared by all WAMP sessions.
#[derive(Default)]
pub struct Broker {
    state: Mutex<State>,
}

impl Broker {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a joined session.
    pub fn join(&self, session: SessionId, info: SessionInfo) {
        self.lock().sessions.insert(session, info);
    }

    /// Forget a session and its subscriptions; return what it was, if joined,
    /// and the subscriptions it was removed from, in id order.
    pub fn leave(&self, session: SessionId) -> (Option<SessionInfo>, Vec<Removed>) {
        let mut state = self.lock();
        let ids: Vec<u64> = state
            .groups
            .iter()
            .filter(|(_, g)| g.subscribers.contains(&session))
            .map(|(id, _)| *id)
            .collect();
        let removed = ids
            .into_iter()
            .filter_map(|id| remove_subscriber(&mut state, id, session))
            .collect();
        (state.sessions.remove(&session), removed)
    }

    /// Add a session to the subscription for (realm, uri, policy), creating it
    /// (stamped `created`) if it is new.
    pub fn subscribe(
        &self,
        session: SessionId,
        realm: &str,
        uri: &str,
        policy: &str,
        created: &str,
    ) -> Subscribed {
        let mut state = self.lock();
        let key = (realm.to_owned(), uri.to_owned(), policy.to_owned());
        let (id, new) = match state.by_key.get(&key) {
            Some(id) => (*id, false),
            None => {
                state.next_id += 1;
                let id = state.next_id;
                state.by_key.insert(key, id);
                state.groups.insert(
                    id,
                    Group {
                        realm: realm.to_owned(),
                        uri: uri.to_owned(),
                        policy: policy.to_owned(),
                        created: created.to_owned(),
                        subscribers: BTreeSet::new(),
                    },
                );
                (id, true)
            }
        };
        let added = state
            .groups
            .get_mut(&id)
            .is_some_and(|g| g.subscribers.insert(session));
        Subscribed {
            id,
            created: new,
            added,
        }
    }

    /// Remove a session from a subscription; `None` if it was not subscribed.
    pub fn unsubscribe(&self, session: SessionId, id: u64) -> Option<Removed> {
        remove_subscriber(&mut self.lock(), id, session)
    }

    /// Return one subscription.
    pub fn group(&self, id: u64) -> Option<Group> {
        self.lock().groups.get(&id).cloned()
    }

    /// Return a session's info.
    pub fn session(&self, session: SessionId) -> Option<SessionInfo> {
        self.lock().sessions.get(&session).cloned()
    }

    /// Return the sessions joined to `realm`, optionally only those with one of `authroles`.
    pub fn sessions(&self, realm: &str, authroles: Option<&[String]>) -> Vec<SessionId> {
        self.lock()
            .sessions
            .iter()
            .filter(|(_, s)| s.realm == realm)
            .filter(|(_, s)| authroles.is_none_or(|roles| roles.contains(&s.authrole)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Return the subscription ids of `realm` by match policy.
    pub fn list(&self, realm: &str) -> BTreeMap<String, Vec<u64>> {
        let mut out: BTreeMap<String, Vec<u64>> = ["exact", "prefix", "wildcard"]
            .into_iter()
            .map(|p| (p.to_owned(), Vec::new()))
            .collect();
        for (id, g) in self.lock().groups.iter().filter(|(_, g)| g.realm == realm) {
            out.entry(g.policy.clone()).or_default().push(*id);
        }
        out
    }

    /// Return the subscription for exactly this URI and policy.
    pub fn lookup(&self, realm: &str, uri: &str, policy: &str) -> Option<u64> {
        let key = (realm.to_owned(), uri.to_owned(), policy.to_owned());
        self.lock().by_key.get(&key).copied()
    }

    /// Return the subscriptions that would receive an event on `uri`.
    pub fn matching(&self, realm: &str, uri: &str) -> Vec<u64> {
        let internal = topic::from_wamp_uri(uri);
        self.lock()
            .groups
            .iter()
            .filter(|(_, g)| g.realm == realm)
            .filter(|(_, g)| g.filter().is_some_and(|f| f.matches(&internal)))
            .map(|(id, _)| *id)
            .collect()
    }
}

fn remove_subscriber(state: &mut State, id: u64, session: SessionId) -> Option<Removed> {
    let group = state.groups.get_mut(&id)?;
    if !group.subscribers.remove(&session) {
        return None;
    }
    let uri = group.uri.clone();
    let deleted = group.subscribers.is_empty();
    if deleted {
        if let Some(g) = state.groups.remove(&id) {
            state.by_key.remove(&(g.realm, g.uri, g.policy));
        }
    }
    Some(Removed { id, uri, deleted })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(realm: &str) -> SessionInfo {
        SessionInfo {
            realm: realm.into(),
            authid: "a".into(),
            authrole: "anonymous".into(),
            authmethod: "anonymous".into(),
            transport: "websocket",
            serializer: "wamp.2.json",
        }
    }

    #[test]
    fn subscriptions_are_shared_and_die_with_their_last_subscriber() {
        let b = Broker::default();
        b.join(1, info("r"));
        b.join(2, info("r"));
        let t = "2024-01-01T00:00:00.000Z";
        let first = b.subscribe(1, "r", "a.b", "exact", t);
        assert!(first.created && first.added);
        let s1 = first.id;
        let second = b.subscribe(2, "r", "a.b", "exact", t);
        assert_eq!((second.id, second.created, second.added), (s1, false, true));
        let again = b.subscribe(2, "r", "a.b", "exact", t);
        assert_eq!((again.created, again.added), (false, false));
        let p = b.subscribe(2, "r", "a", "prefix", t).id;
        assert_ne!(s1, p);
        assert_eq!(b.matching("r", "a.b"), vec![s1, p]);
        assert_eq!(b.lookup("r", "a", "prefix"), Some(p));
        assert_eq!(b.unsubscribe(1, s1).map(|r| r.deleted), Some(false));
        assert!(b.unsubscribe(1, s1).is_none());
        assert!(b.group(s1).is_some());
        let (info, removed) = b.leave(2);
        assert!(info.is_some());
        let gone: Vec<(u64, bool)> = removed.iter().map(|r| (r.id, r.deleted)).collect();
        assert_eq!(gone, vec![(s1, true), (p, true)]);
        assert!(b.group(s1).is_none() && b.group(p).is_none());
        assert_eq!(b.sessions("r", None), vec![1]);
        assert_eq!(b.list("r").get("exact"), Some(&vec![]));
    }
}
