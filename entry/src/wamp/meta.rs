//! The WAMP meta API: router procedures under `wamp.session.*`,
//! `wamp.subscription.*` and `wamp.registration.*`, answered by the router
//! itself, and the meta events: `wamp.session.on_join` / `on_leave`,
//! `wamp.subscription.on_create` / `on_subscribe` / `on_unsubscribe` /
//! `on_delete` and the same four under `wamp.registration.*`.
//!
//! Meta events are publications like any other: they go through the
//! sequencer, so they take their place in the one total order. Subscriptions
//! to the `wamp.` namespace itself announce nothing (as in Crossbar), so a
//! watcher does not see its own watching.

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

/// Which meta API a lifecycle event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `wamp.subscription.*`.
    Subscription,
    /// `wamp.registration.*`.
    Registration,
}

/// Publish the lifecycle events of one subscription or registration change by
/// `session`: `on_create(session, details)` when `created` is given, then
/// `added` (`on_subscribe` / `on_register`) or the removal (`on_unsubscribe` /
/// `on_unregister`, then `on_delete` if `deleted`), each with (session, id).
pub(super) async fn announce_change(
    shared: &Shared,
    realm: &str,
    kind: Kind,
    session: SessionId,
    id: u64,
    change: Change,
) {
    let (create, add, remove, delete) = match kind {
        Kind::Subscription => (
            "wamp.subscription.on_create",
            "wamp.subscription.on_subscribe",
            "wamp.subscription.on_unsubscribe",
            "wamp.subscription.on_delete",
        ),
        Kind::Registration => (
            "wamp.registration.on_create",
            "wamp.registration.on_register",
            "wamp.registration.on_unregister",
            "wamp.registration.on_delete",
        ),
    };
    let pair = || vec![Value::from(session), Value::from(id)];
    match change {
        Change::Added { created } => {
            if let Some(details) = created {
                let args = vec![Value::from(session), dict_to_value(details)];
                publish_meta(shared, realm, create, args).await;
            }
            publish_meta(shared, realm, add, pair()).await;
        }
        Change::Removed { deleted } => {
            publish_meta(shared, realm, remove, pair()).await;
            if deleted {
                publish_meta(shared, realm, delete, pair()).await;
            }
        }
    }
}

/// What happened to a session's membership of a subscription or registration.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Change {
    /// It joined; `created` carries the details dict when it was the first.
    Added {
        /// The new subscription's or registration's details (`on_create`).
        created: Option<Dict>,
    },
    /// It left; `deleted` when it was the last.
    Removed {
        /// The subscription or registration is gone (`on_delete`).
        deleted: bool,
    },
}

/// Tell whether changes to a subscription on `uri` are announced: not for the
/// meta API's own topics.
pub(super) fn announced(uri: &str) -> bool {
    !uri.starts_with("wamp.")
}

/// Return the current time as ISO 8601 UTC with milliseconds, for `created`.
pub(super) fn now_iso8601() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    iso8601(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Format milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn iso8601(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (Howard Hinnant's algorithm), for dates after 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_ms % 1000
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_formats_utc_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso8601(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }
}
