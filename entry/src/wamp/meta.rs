//! The WAMP meta API: router procedures under `wamp.session.*`,
//! `wamp.subscription.*` and `wamp.registration.*`, answered by the router
//! itself, and the meta events `wamp.session.on_join` / `on_leave`.
//!
//! Meta events are publications like any other: they go through the
//! sequencer, so they take their place in the one total order.

use super::broker::SessionInfo;
use super::dealer::error;
use super::pubsub::HISTORY_LIMIT;
use super::session::{meta_message, Session, SessionError};
use crate::router::SessionId;
use crate::Shared;
use ordo_common::wamp::{code, dict_to_value, Dict, Message, Value};

/// What a meta procedure answers.
type Reply = Result<Vec<Value>, &'static str>;

const INVALID: &str = "wamp.error.invalid_argument";

/// Publish a router-made event into the ordered log (no acknowledgement).
pub(super) async fn publish_meta(shared: &Shared, realm: &str, uri: &str, args: Vec<Value>) {
    let message = meta_message(realm, uri, args);
    if let Err(e) = shared.sequencer.publish(message, false).await {
        tracing::warn!(error = %e, uri, "meta event not published");
    }
}

/// Publish `wamp.session.on_leave` for a session that has left.
pub(super) async fn announce_leave(shared: &Shared, session: SessionId, info: &SessionInfo) {
    let args = vec![
        Value::from(session),
        Value::from(info.authid.as_str()),
        Value::from(info.authrole.as_str()),
    ];
    publish_meta(shared, &info.realm, "wamp.session.on_leave", args).await;
}

fn id_arg(args: &[Value], i: usize) -> Result<u64, &'static str> {
    args.get(i).and_then(Value::as_u64).ok_or(INVALID)
}

fn str_arg(args: &[Value], i: usize) -> Result<&str, &'static str> {
    args.get(i).and_then(Value::as_str).ok_or(INVALID)
}

/// The optional authroles filter of `wamp.session.count` / `list`.
fn authroles(args: &[Value]) -> Result<Option<Vec<String>>, &'static str> {
    match args.first() {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(INVALID))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(INVALID),
    }
}

/// The match policy in an options dict argument, `exact` by default.
fn match_policy(args: &[Value], i: usize) -> Result<String, &'static str> {
    let Some(options) = args.get(i) else {
        return Ok("exact".into());
    };
    let Some(entries) = options.as_map() else {
        return Err(INVALID);
    };
    match entries.iter().find(|(k, _)| k.as_str() == Some("match")) {
        None => Ok("exact".into()),
        Some((_, v)) => match v.as_str() {
            Some(p @ ("exact" | "prefix" | "wildcard")) => Ok(p.to_owned()),
            _ => Err(INVALID),
        },
    }
}

fn ids(list: Vec<u64>) -> Value {
    Value::Array(list.into_iter().map(Value::from).collect())
}

fn or_null(id: Option<u64>) -> Value {
    id.map(Value::from).unwrap_or(Value::Nil)
}

impl Session {
    /// Answer a CALL to a meta procedure; return `false` if `procedure` is not one.
    pub(super) async fn meta_call(
        &mut self,
        request: u64,
        procedure: &str,
        args: &[Value],
        _kwargs: &Dict,
    ) -> Result<bool, SessionError> {
        let reply = if procedure == "wamp.subscription.get_events" {
            let limit = match args.get(1) {
                None | Some(Value::Nil) => Ok(HISTORY_LIMIT),
                Some(v) => v
                    .as_u64()
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX).min(HISTORY_LIMIT))
                    .ok_or(INVALID),
            };
            match (id_arg(args, 0), limit) {
                (Ok(group), Ok(limit)) => match self.history(group, limit).await? {
                    Some(events) => Ok(vec![Value::Array(events)]),
                    None => Err("wamp.error.no_such_subscription"),
                },
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        } else {
            match self.meta_reply(procedure, args) {
                Some(reply) => reply,
                None => return Ok(false),
            }
        };
        let message = match reply {
            Ok(args) => Message::Result {
                request,
                details: Dict::new(),
                args,
                kwargs: Dict::new(),
            },
            Err(uri) => error(code::CALL, request, uri),
        };
        self.feed(&message).await?;
        Ok(true)
    }

    /// Answer the meta procedures that need no I/O; `None` if not one.
    fn meta_reply(&self, procedure: &str, args: &[Value]) -> Option<Reply> {
        let realm = self.info.realm.as_str();
        let broker = &self.shared.broker;
        let dealer = &self.shared.dealer;
        Some(match procedure {
            "wamp.session.count" => authroles(args).map(|roles| {
                let n = broker.sessions(realm, roles.as_deref()).len();
                vec![Value::from(n as u64)]
            }),
            "wamp.session.list" => {
                authroles(args).map(|roles| vec![ids(broker.sessions(realm, roles.as_deref()))])
            }
            "wamp.session.get" => id_arg(args, 0).and_then(|id| {
                match broker.session(id).filter(|s| s.realm == realm) {
                    Some(info) => Ok(vec![dict_to_value(info.to_dict(id))]),
                    None => Err("wamp.error.no_such_session"),
                }
            }),
            "wamp.subscription.list" => {
                let by_policy: Dict = broker
                    .list(realm)
                    .into_iter()
                    .map(|(policy, list)| (policy, ids(list)))
                    .collect();
                Ok(vec![dict_to_value(by_policy)])
            }
            "wamp.subscription.lookup" => str_arg(args, 0).and_then(|uri| {
                let policy = match_policy(args, 1)?;
                Ok(vec![or_null(broker.lookup(realm, uri, &policy))])
            }),
            "wamp.subscription.match" => str_arg(args, 0).map(|uri| {
                let found = broker.matching(realm, uri);
                vec![if found.is_empty() {
                    Value::Nil
                } else {
                    ids(found)
                }]
            }),
            "wamp.subscription.get"
            | "wamp.subscription.list_subscribers"
            | "wamp.subscription.count_subscribers" => id_arg(args, 0).and_then(|id| {
                let group = broker
                    .group(id)
                    .filter(|g| g.realm == realm)
                    .ok_or("wamp.error.no_such_subscription")?;
                Ok(vec![match procedure {
                    "wamp.subscription.get" => dict_to_value(group.to_dict(id)),
                    "wamp.subscription.list_subscribers" => {
                        ids(group.subscribers.into_iter().collect())
                    }
                    _ => Value::from(group.subscribers.len() as u64),
                }])
            }),
            "wamp.registration.list" => {
                let by_policy: Dict = dealer
                    .list(realm)
                    .into_iter()
                    .map(|(policy, list)| (policy, ids(list)))
                    .collect();
                Ok(vec![dict_to_value(by_policy)])
            }
            "wamp.registration.lookup" => str_arg(args, 0).and_then(|uri| {
                let policy = match_policy(args, 1)?;
                Ok(vec![or_null(dealer.lookup(realm, uri, &policy))])
            }),
            "wamp.registration.match" => {
                str_arg(args, 0).map(|uri| vec![or_null(dealer.best_match(realm, uri))])
            }
            "wamp.registration.get"
            | "wamp.registration.list_callees"
            | "wamp.registration.count_callees" => id_arg(args, 0).and_then(|id| {
                let reg = dealer
                    .registration(id)
                    .filter(|r| r.realm == realm)
                    .ok_or("wamp.error.no_such_registration")?;
                Ok(vec![match procedure {
                    "wamp.registration.get" => dict_to_value(reg.to_dict(id)),
                    "wamp.registration.list_callees" => ids(reg.callees.clone()),
                    _ => Value::from(reg.callees.len() as u64),
                }])
            }),
            _ => return None,
        })
    }
}
