//! fox-wamp's publish options (`when`, `watch`, `will`, `trace`) and
//! subscribe options (`filter`, `snapshot` / `retainedState`, `retained`) at
//! the WAMP front door.
//!
//! ```text
//!  PUBLISH {when, watch, will} ─► FoxOptions in the stored message ─► sequencer ─► log
//!  router applies it in id order (ordo_router::kv) ─► Outcome ─► this session:
//!      Applied  ─► PUBLISHED {its id}
//!      Refused  ─► ERROR wamp.error.condition_failed
//!      Released ─► log a Release record ─► PUBLISHED {the record's id}
//!  session ends ─► log SessionEnd; once applied here, log one WillOf per will it owns
//! ```
//!
//! The decisions are the router's, made from the log alone, so every entry of
//! a cluster makes the same ones; this module only turns options into stored
//! fields and outcomes into replies.

use super::dealer::error;
use super::session::{Session, SessionError};
use crate::router::{Outcome, SessionId};
use crate::sequencer::PublishError;
use crate::Shared;
use ordo_common::wamp::value::{from_json, to_json};
use ordo_common::wamp::{
    code, Control, Dict, FoxOptions, Message, PublishOptions, Value, When, Will,
};
use ordo_common::{Payload, PermanentId, StoredMessage};
use std::time::Duration;

/// The ERROR a PUBLISH gets when its `when` does not hold (and it did not `watch`).
pub const CONDITION_FAILED: &str = "wamp.error.condition_failed";
/// The topic of the (never delivered) record that ends a session's parked publishes.
const SESSION_END_TOPIC: &str = "$ordo/session_end";
/// How long a closing session waits for its end record to be ordered and applied.
const END_TIMEOUT: Duration = Duration::from_secs(5);

/// Read `when`, `watch` and `will` from PUBLISH options; `None` if neither
/// `when` nor `will` is given (`watch` alone means nothing, `trace` is always on).
pub(super) fn publish_options(
    options: &Dict,
    origin: u64,
    request: Option<u64>,
) -> Option<FoxOptions> {
    let when = options.get("when").map(|v| When {
        value: to_json(v),
        watch: matches!(options.get("watch"), Some(Value::Boolean(true))),
    });
    let will = options.get("will").map(|v| Will { value: to_json(v) });
    if when.is_none() && will.is_none() {
        return None;
    }
    Some(FoxOptions {
        origin,
        request,
        when,
        will,
        control: None,
    })
}

/// Attach fox options to a message's WAMP options.
pub(super) fn attach(wamp: Option<PublishOptions>, fox: FoxOptions) -> Option<PublishOptions> {
    let mut wamp = wamp.unwrap_or_default();
    wamp.fox = Some(fox);
    Some(wamp)
}

/// Return the `filter` of a SUBSCRIBE as a JSON pattern.
pub(super) fn subscribe_filter(options: &Dict) -> Option<serde_json::Value> {
    options.get("filter").map(to_json)
}

fn payload_of(value: serde_json::Value) -> Payload {
    let args = if value.is_null() {
        Vec::new()
    } else {
        vec![from_json(value)]
    };
    Payload::Wamp {
        args,
        kwargs: Dict::new(),
    }
}

/// Build a router-made record of session `session` of entry `origin`.
fn control_record(
    realm: &str,
    topic: &str,
    session: SessionId,
    origin: u64,
    control: Control,
    payload: Payload,
) -> StoredMessage {
    StoredMessage {
        realm: realm.to_owned(),
        topic: topic.to_owned(),
        payload,
        qos: 1,
        retain: !matches!(control, Control::SessionEnd),
        publisher: session,
        exclude_publisher: false,
        mqtt: None,
        wamp: attach(
            None,
            FoxOptions {
                origin,
                request: None,
                when: None,
                will: None,
                control: Some(control),
            },
        ),
    }
}

/// Build the record that delivers parked publish `id`, released earlier.
fn release_record(parked: &StoredMessage, id: PermanentId) -> StoredMessage {
    let mut record = parked.clone();
    if let Some(fox) = record.wamp.as_mut().and_then(|o| o.fox.as_mut()) {
        fox.request = None;
        fox.when = None;
        fox.will = None;
        fox.control = Some(Control::Release { of: id.0 });
    }
    record
}

/// Publish a closing session's end record, wait until this node applied it,
/// then publish its wills (fox-wamp: on every session end, clean or not).
pub(crate) async fn end_session(shared: &Shared, session: SessionId, realm: &str) {
    end_session_of(shared, shared.config.owner, session, realm).await
}

/// [`end_session`] for a session of entry `origin`: this one, or an abandoned entry whose
/// sessions this one adopted ([`crate::adopt`]).
pub(crate) async fn end_session_of(shared: &Shared, origin: u64, session: SessionId, realm: &str) {
    if *shared.shutdown.borrow() {
        return;
    }
    let end = control_record(
        realm,
        SESSION_END_TOPIC,
        session,
        origin,
        Control::SessionEnd,
        payload_of(serde_json::Value::Null),
    );
    let id = match shared.sequencer.publish(end, true).await {
        Ok(Some(rx)) => match tokio::time::timeout(END_TIMEOUT, rx).await {
            Ok(Ok(Ok(id))) => id,
            _ => {
                tracing::warn!(
                    session,
                    "session end not ordered; its wills are not published"
                );
                return;
            }
        },
        _ => return,
    };
    // Every publish of this session is ordered before `id` (per-publisher
    // order), so once it is applied here the wills found are final.
    let deadline = tokio::time::Instant::now() + END_TIMEOUT;
    while shared.router.last_dispatched() < id {
        if tokio::time::Instant::now() > deadline {
            tracing::warn!(
                session,
                "session end not delivered in time; its wills are not published"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for (realm, topic, value) in shared.router.wills_of(origin, session) {
        let will = control_record(
            &realm,
            &topic,
            session,
            origin,
            Control::WillOf,
            payload_of(value),
        );
        if shared.sequencer.publish(will, false).await.is_err() {
            return;
        }
    }
}

impl Session {
    /// Answer the outcome of one of this session's conditional publishes.
    pub(super) async fn on_outcome(&mut self, outcome: Outcome) -> Result<(), SessionError> {
        if outcome.origin() != self.shared.config.owner {
            // The same session id on another entry.
            return Ok(());
        }
        match outcome {
            Outcome::Applied {
                request: Some(request),
                id,
                ..
            } => {
                self.feed(&Message::Published {
                    request,
                    publication: id.0,
                })
                .await
            }
            Outcome::Refused {
                request: Some(request),
                ..
            } => {
                self.feed(&error(code::PUBLISH, request, CONDITION_FAILED))
                    .await
            }
            Outcome::Released {
                request,
                id,
                message,
                ..
            } => {
                let record = release_record(&message, id);
                match self
                    .shared
                    .sequencer
                    .publish(record, request.is_some())
                    .await
                {
                    Ok(Some(rx)) => {
                        let request = request.unwrap_or_default();
                        self.acks.push_back(Box::pin(async move {
                            (
                                request,
                                rx.await.unwrap_or(Err(PublishError::Stopped)),
                                true,
                            )
                        }));
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => {
                        tracing::error!(session = self.id, error = %e, "release not logged");
                        match request {
                            Some(request) => {
                                self.feed(&error(
                                    code::PUBLISH,
                                    request,
                                    "wamp.error.storage_failed",
                                ))
                                .await
                            }
                            None => Ok(()),
                        }
                    }
                }
            }
            _ => Ok(()),
        }
    }
}
