//! One WAMP session, whatever its transport: HELLO/WELCOME, then pub/sub
//! through the ordered log ([`super::pubsub`]), RPC through the dealer and the
//! meta API ([`super::meta`]), until GOODBYE, ABORT or a closed connection.

use super::auth::{self, Action, Grant, HelloDecision};
use super::broker::SessionInfo;
use super::dealer::{error, CallRequest, ErrorUri};
use super::meta::{self, Change, Kind};
use super::transport::{Incoming, Rx, TransportError, Tx};
use crate::router::{Delivery, SessionId, SubscriptionId};
use crate::sequencer::PublishError;
use crate::Shared;
use futures_util::stream::FuturesOrdered;
use ordo_common::topic;
use ordo_common::wamp::{self, code, validate_uri, Dict, Message, Serializer, Value};
use ordo_common::{Payload, PermanentId, StoredMessage};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A pending publish ack: the request, the sequencer's answer, and whether an
/// `Ok` is answered with PUBLISHED (a conditional publish is answered by its
/// outcome instead, see [`super::fox`]).
type AckFuture =
    Pin<Box<dyn Future<Output = (u64, Result<PermanentId, PublishError>, bool)> + Send>>;

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The peer broke the WAMP protocol; it was sent ABORT.
    #[error("protocol violation: {0}")]
    Violation(String),
    /// Reading history for a replay failed.
    #[error("replay failed: {0}")]
    Replay(String),
}

/// Serve one WAMP connection over `tx`/`rx` with serializer `ser`.
pub async fn run(
    mut tx: Tx,
    mut rx: Rx,
    ser: Serializer,
    shared: Shared,
) -> Result<(), SessionError> {
    let mut stop = shared.shutdown.clone();
    let hello = tokio::select! {
        h = tokio::time::timeout(HELLO_TIMEOUT, next_message(&mut rx, &mut tx, ser)) => h,
        _ = stop.changed() => return Ok(()),
    };
    let (realm, hello_details) = match hello {
        Ok(Ok(Some(Message::Hello { realm, details })))
            if validate_uri(&realm, false) && !realm.starts_with('$') =>
        {
            (realm, details)
        }
        Ok(Ok(Some(Message::Hello { .. }))) => {
            let why = "realm is not a valid URI";
            abort(&mut tx, ser, "wamp.error.invalid_uri", why).await;
            return Ok(());
        }
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(other))) => {
            let why = format!("expected HELLO, got {}", other.name());
            abort(&mut tx, ser, "wamp.error.protocol_violation", &why).await;
            return Err(SessionError::Violation(why));
        }
        Ok(Err(e)) => {
            abort(
                &mut tx,
                ser,
                "wamp.error.protocol_violation",
                &e.to_string(),
            )
            .await;
            return Err(e);
        }
        Err(_) => return Err(SessionError::Violation("no HELLO in time".into())),
    };
    let Some(grant) = authenticate(&mut tx, &mut rx, ser, &shared, &realm, &hello_details).await?
    else {
        return Ok(());
    };
    let (session_id, deliveries) = shared.router.open_session();
    let outcomes = shared.router.outcomes(session_id);
    // An anonymous session's authid is the one the client announces (not
    // verified), else the session id.
    let authid = grant
        .authid
        .clone()
        .unwrap_or_else(|| session_id.to_string());
    let info = SessionInfo {
        realm: realm.clone(),
        authid,
        authrole: grant.authrole.clone(),
        authmethod: grant.authmethod.into(),
        transport: match tx {
            Tx::Ws(..) => "websocket",
            Tx::Raw(..) => "rawsocket",
        },
        serializer: ser.subprotocol(),
    };
    let rpc = shared
        .dealer
        .join(session_id, &info, callee_cancels(&hello_details));
    shared.broker.join(session_id, info.clone());
    let welcome = Message::Welcome {
        session: session_id,
        details: welcome_details(&info),
    };
    let mut session = Session {
        shared: shared.clone(),
        ser,
        id: session_id,
        info,
        grant,
        tx,
        subscriptions: HashMap::new(),
        groups: HashMap::new(),
        filters: HashMap::new(),
        retained_only: HashSet::new(),
        fox_used: false,
        acks: FuturesOrdered::new(),
    };
    session.feed(&welcome).await?;
    session.tx.flush().await?;
    tracing::debug!(session = session_id, realm = %session.info.realm, "wamp session joined");
    session.announce_join().await;
    let result = session
        .serve(&mut rx, deliveries, outcomes, rpc, shared.shutdown.clone())
        .await;
    shared.router.close_session(session_id);
    let left = shared.dealer.leave(session_id);
    if session.fox_used {
        super::fox::end_session(&shared, session_id, &session.info.realm).await;
    }
    // A session that ends without unsubscribing or unregistering is removed
    // from each subscription and registration, announced as Crossbar does.
    let (info, removed) = shared.broker.leave(session_id);
    let realm = &session.info.realm;
    for r in removed.iter().filter(|r| meta::announced(&r.uri)) {
        let change = Change::Removed { deleted: r.deleted };
        meta::announce_change(&shared, realm, Kind::Subscription, session_id, r.id, change).await;
    }
    for r in left {
        let change = Change::Removed { deleted: r.deleted };
        meta::announce_change(&shared, realm, Kind::Registration, session_id, r.id, change).await;
    }
    if let Some(info) = info {
        meta::announce_leave(&shared, session_id, &info).await;
    }
    result
}

/// Run authentication after HELLO: anonymous, or CHALLENGE / AUTHENTICATE.
///
/// Returns `None` when the session was refused (ABORT already sent).
async fn authenticate(
    tx: &mut Tx,
    rx: &mut Rx,
    ser: Serializer,
    shared: &Shared,
    realm: &str,
    details: &Dict,
) -> Result<Option<Grant>, SessionError> {
    let mut nonce = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).is_err() {
        abort(
            tx,
            ser,
            "wamp.error.system_shutdown",
            "no randomness for a challenge",
        )
        .await;
        return Ok(None);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string();
    let config = &shared.config;
    let nonce = wamp::value::base64_encode(&nonce);
    let decision = auth::on_hello(
        &config.users,
        config.allow_anonymous,
        realm,
        details,
        &nonce,
        &now,
    );
    let (method, extra, pending) = match decision {
        HelloDecision::Welcome(grant) => return Ok(Some(grant)),
        HelloDecision::Abort(uri) => {
            abort(tx, ser, uri, "authentication refused").await;
            return Ok(None);
        }
        HelloDecision::Challenge {
            method,
            extra,
            pending,
        } => (method, extra, pending),
    };
    let challenge = Message::Challenge {
        authmethod: method.into(),
        extra,
    };
    tx.feed(wamp::encode(ser, &challenge)).await?;
    tx.flush().await?;
    let answer = tokio::time::timeout(HELLO_TIMEOUT, next_message(rx, tx, ser)).await;
    match answer {
        Ok(Ok(Some(Message::Authenticate { signature, .. }))) => {
            // A salted WAMP-CRA key costs `iterations` HMACs: not on the executor.
            let check =
                tokio::task::spawn_blocking(move || auth::on_authenticate(&pending, &signature));
            match check.await.ok().flatten() {
                Some(grant) => Ok(Some(grant)),
                None => {
                    let uri = "wamp.error.authentication_failed";
                    abort(tx, ser, uri, "wrong ticket or signature").await;
                    Ok(None)
                }
            }
        }
        Ok(Ok(None)) => Ok(None),
        Ok(Ok(Some(other))) => {
            let why = format!("expected AUTHENTICATE, got {}", other.name());
            abort(tx, ser, "wamp.error.protocol_violation", &why).await;
            Err(SessionError::Violation(why))
        }
        Ok(Err(e)) => {
            abort(tx, ser, "wamp.error.protocol_violation", &e.to_string()).await;
            Err(e)
        }
        Err(_) => Err(SessionError::Violation("no AUTHENTICATE in time".into())),
    }
}

/// Tell whether the HELLO announces `callee.features.call_canceling`.
fn callee_cancels(details: &Dict) -> bool {
    let get = |v: Option<&Value>, key: &str| -> Option<Value> {
        v.and_then(Value::as_map)?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v.clone())
    };
    let callee = get(details.get("roles"), "callee");
    let features = get(callee.as_ref(), "features");
    matches!(
        get(features.as_ref(), "call_canceling"),
        Some(Value::Boolean(true))
    )
}

const BROKER_FEATURES: &[&str] = &[
    "publisher_exclusion",
    "publisher_identification",
    "subscriber_blackwhite_listing",
    "pattern_based_subscription",
    "event_retention",
    "event_history",
    "session_meta_api",
    "subscription_meta_api",
];

const DEALER_FEATURES: &[&str] = &[
    "progressive_call_results",
    "call_canceling",
    "call_timeout",
    "caller_identification",
    "shared_registration",
    "pattern_based_registration",
    "session_meta_api",
    "registration_meta_api",
];

fn welcome_details(info: &SessionInfo) -> Dict {
    let role = |names: &[&str]| {
        let features: Dict = names
            .iter()
            .map(|n| ((*n).to_owned(), Value::Boolean(true)))
            .collect();
        let mut d = Dict::new();
        d.insert("features".into(), wamp::dict_to_value(features));
        wamp::dict_to_value(d)
    };
    let mut roles = Dict::new();
    roles.insert("broker".into(), role(BROKER_FEATURES));
    roles.insert("dealer".into(), role(DEALER_FEATURES));
    let mut details = Dict::new();
    details.insert("roles".into(), wamp::dict_to_value(roles));
    details.insert("realm".into(), Value::from(info.realm.as_str()));
    details.insert("authid".into(), Value::from(info.authid.as_str()));
    details.insert("authrole".into(), Value::from(info.authrole.as_str()));
    details.insert("authmethod".into(), Value::from(info.authmethod.as_str()));
    details.insert("authprovider".into(), Value::from("static"));
    details.insert(
        "agent".into(),
        Value::from(concat!("ordo-", env!("CARGO_PKG_VERSION"))),
    );
    details
}

/// Read the next WAMP message, answering pings on the way.
async fn next_message(
    rx: &mut Rx,
    tx: &mut Tx,
    ser: Serializer,
) -> Result<Option<Message>, SessionError> {
    loop {
        match rx.next().await? {
            None => return Ok(None),
            Some(Incoming::Ping(payload)) => tx.pong(&payload).await?,
            Some(Incoming::Message(bytes)) => {
                return wamp::decode(ser, &bytes)
                    .map(Some)
                    .map_err(|e| SessionError::Violation(e.to_string()))
            }
        }
    }
}

/// Send ABORT and close the connection, ignoring errors.
async fn abort(tx: &mut Tx, ser: Serializer, reason: &str, message: &str) {
    let mut details = Dict::new();
    details.insert("message".into(), Value::from(message));
    let bytes = wamp::encode(
        ser,
        &Message::Abort {
            details,
            reason: reason.to_owned(),
        },
    );
    let _ = tx.feed(bytes).await;
    tx.close().await;
}

/// A joined session's state; the pub/sub and meta handlers live in sibling modules.
pub(super) struct Session {
    pub(super) shared: Shared,
    pub(super) ser: Serializer,
    pub(super) id: SessionId,
    pub(super) info: SessionInfo,
    pub(super) grant: Grant,
    pub(super) tx: Tx,
    /// Router subscription -> (WAMP subscription id, whether pattern-based).
    pub(super) subscriptions: HashMap<SubscriptionId, (u64, bool)>,
    /// WAMP subscription id -> this session's router subscription.
    pub(super) groups: HashMap<u64, SubscriptionId>,
    /// Router subscription -> its fox-wamp `filter` pattern.
    pub(super) filters: HashMap<SubscriptionId, serde_json::Value>,
    /// Router subscriptions with fox-wamp's `retained`: only retained writes are delivered.
    pub(super) retained_only: HashSet<SubscriptionId>,
    /// Set once the session publishes with `when` or `will`: its end is then logged.
    pub(super) fox_used: bool,
    pub(super) acks: FuturesOrdered<AckFuture>,
}

impl Session {
    pub(super) async fn feed(&mut self, message: &Message) -> Result<(), SessionError> {
        let bytes = wamp::encode(self.ser, message);
        self.tx.feed(bytes).await?;
        Ok(())
    }

    pub(super) async fn abort(&mut self, reason: &str, why: &str) {
        abort(&mut self.tx, self.ser, reason, why).await;
    }

    async fn serve(
        &mut self,
        rx: &mut Rx,
        mut deliveries: tokio::sync::mpsc::Receiver<Delivery>,
        mut outcomes: tokio::sync::mpsc::UnboundedReceiver<crate::router::Outcome>,
        mut rpc: tokio::sync::mpsc::UnboundedReceiver<Message>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    let bye = Message::Goodbye { details: Dict::new(), reason: "wamp.close.system_shutdown".into() };
                    self.feed(&bye).await?;
                    self.tx.flush().await?;
                    return Ok(());
                }
                incoming = rx.next() => {
                    let bytes = match incoming {
                        Ok(None) => return Ok(()),
                        Ok(Some(Incoming::Ping(payload))) => {
                            self.tx.pong(&payload).await?;
                            continue;
                        }
                        Ok(Some(Incoming::Message(bytes))) => bytes,
                        Err(e @ (TransportError::TooLarge(_) | TransportError::Framing(_))) => {
                            // Say why before closing.
                            self.abort("wamp.error.protocol_violation", &e.to_string()).await;
                            return Err(e.into());
                        }
                        Err(e) => return Err(e.into()),
                    };
                    match wamp::decode(self.ser, &bytes) {
                        Ok(message) => {
                            if !self.handle(message).await? {
                                self.tx.flush().await?;
                                return Ok(());
                            }
                        }
                        Err(e) => match e.request_info() {
                            Some((request_type, request)) => {
                                tracing::info!(session = self.id, error = %e, "invalid WAMP request");
                                let uri = match e {
                                    wamp::DecodeError::InvalidUri { .. } => "wamp.error.invalid_uri",
                                    _ => "wamp.error.invalid_argument",
                                };
                                // Its options could not be read, so even a PUBLISH
                                // without `acknowledge` is answered.
                                self.feed(&error(request_type, request, uri)).await?;
                            }
                            None => {
                                self.abort("wamp.error.protocol_violation", &e.to_string()).await;
                                return Err(SessionError::Violation(e.to_string()));
                            }
                        },
                    }
                }
                delivery = deliveries.recv() => match delivery {
                    Some(d) => {
                        self.send_event(&d, false).await?;
                        while let Ok(d) = deliveries.try_recv() {
                            self.send_event(&d, false).await?;
                        }
                    }
                    None => {
                        self.abort("wamp.close.system_shutdown", "subscriber too slow: delivery queue overflowed").await;
                        return Err(SessionError::Violation("delivery queue overflowed".into()));
                    }
                },
                Some(message) = rpc.recv() => self.feed(&message).await?,
                Some(outcome) = outcomes.recv() => self.on_outcome(outcome).await?,
                Some((request, result, answer)) = futures_util::StreamExt::next(&mut self.acks), if !self.acks.is_empty() => {
                    let reply = match result {
                        Ok(_) if !answer => continue,
                        Ok(id) => Message::Published { request, publication: id.0 },
                        Err(e) => {
                            tracing::error!(session = self.id, error = %e, "publish not stored");
                            error(code::PUBLISH, request, "wamp.error.storage_failed")
                        }
                    };
                    self.feed(&reply).await?;
                }
            }
            self.tx.flush().await?;
        }
    }

    /// Tell whether the session may do `action` on `uri`; answer
    /// `wamp.error.not_authorized` if not (a PUBLISH only when acknowledged).
    async fn permitted(
        &mut self,
        action: Action,
        request_type: u64,
        request: u64,
        uri: &str,
        answer: bool,
    ) -> Result<bool, SessionError> {
        if self.grant.allows(&self.info.realm, uri, action) {
            return Ok(true);
        }
        if answer {
            let reply = error(request_type, request, "wamp.error.not_authorized");
            self.feed(&reply).await?;
        }
        Ok(false)
    }

    /// Check the permission a request needs; `false` if refused (and answered).
    async fn authorize(&mut self, message: &Message) -> Result<bool, SessionError> {
        let (action, request_type, request, uri, answer) = match message {
            Message::Publish {
                request,
                options,
                topic,
                ..
            } => {
                let ack = matches!(options.get("acknowledge"), Some(Value::Boolean(true)));
                (Action::Publish, code::PUBLISH, *request, topic, ack)
            }
            Message::Subscribe { request, topic, .. } => {
                (Action::Subscribe, code::SUBSCRIBE, *request, topic, true)
            }
            Message::Call {
                request, procedure, ..
            } => (Action::Call, code::CALL, *request, procedure, true),
            Message::Register {
                request, procedure, ..
            } => (Action::Register, code::REGISTER, *request, procedure, true),
            _ => return Ok(true),
        };
        let uri = uri.clone();
        self.permitted(action, request_type, request, &uri, answer)
            .await
    }

    /// Handle one client message; return `false` when the session ends.
    async fn handle(&mut self, message: Message) -> Result<bool, SessionError> {
        if !self.authorize(&message).await? {
            return Ok(true);
        }
        match message {
            Message::Publish {
                request,
                options,
                topic,
                args,
                kwargs,
            } => self.publish(request, options, topic, args, kwargs).await?,
            Message::Subscribe {
                request,
                options,
                topic,
            } => self.subscribe(request, options, topic).await?,
            Message::Unsubscribe {
                request,
                subscription,
            } => self.unsubscribe(request, subscription).await?,
            Message::Register {
                request,
                options,
                procedure,
            } => self.register(request, options, procedure).await?,
            Message::Unregister {
                request,
                registration,
            } => self.unregister(request, registration).await?,
            Message::Call {
                request,
                options,
                procedure,
                args,
                kwargs,
            } => {
                if self.meta_call(request, &procedure, &args, &kwargs).await? {
                    return Ok(true);
                }
                let call = CallRequest {
                    caller: self.id,
                    realm: &self.info.realm,
                    request,
                    procedure: &procedure,
                    options: &options,
                    args,
                    kwargs,
                };
                let result: Result<Option<(u64, u64)>, ErrorUri> =
                    if validate_uri(&procedure, false) {
                        self.shared.dealer.call(call)
                    } else {
                        Err("wamp.error.invalid_uri")
                    };
                match result {
                    Err(uri) => self.feed(&error(code::CALL, request, uri)).await?,
                    Ok(Some((invocation, timeout_ms))) => {
                        let dealer = self.shared.dealer.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
                            dealer.timeout(invocation);
                        });
                    }
                    Ok(None) => {}
                }
            }
            Message::Cancel { request, options } => {
                self.shared.dealer.cancel(self.id, request, &options)
            }
            Message::Yield {
                request,
                options,
                args,
                kwargs,
            } => self
                .shared
                .dealer
                .yield_result(self.id, request, &options, args, kwargs),
            Message::Error {
                request_type: code::INVOCATION,
                request,
                error: uri,
                args,
                kwargs,
                ..
            } => self
                .shared
                .dealer
                .invocation_error(self.id, request, uri, args, kwargs),
            Message::Goodbye { .. } => {
                let bye = Message::Goodbye {
                    details: Dict::new(),
                    reason: "wamp.close.goodbye_and_out".into(),
                };
                self.feed(&bye).await?;
                return Ok(false);
            }
            other => {
                let why = format!("unexpected {} from a client", other.name());
                self.abort("wamp.error.protocol_violation", &why).await;
                return Err(SessionError::Violation(why));
            }
        }
        Ok(true)
    }

    async fn register(
        &mut self,
        request: u64,
        options: Dict,
        procedure: String,
    ) -> Result<(), SessionError> {
        let created = meta::now_iso8601();
        let registered = match self.shared.dealer.register(
            self.id,
            &self.info.realm,
            &procedure,
            &options,
            &created,
        ) {
            Ok(r) => r,
            Err(uri) => return self.feed(&error(code::REGISTER, request, uri)).await,
        };
        let id = registered.id;
        self.feed(&Message::Registered {
            request,
            registration: id,
        })
        .await?;
        let created = registered
            .created
            .then(|| self.shared.dealer.registration(id))
            .flatten()
            .map(|r| r.to_dict(id));
        let change = Change::Added { created };
        let realm = &self.info.realm;
        meta::announce_change(&self.shared, realm, Kind::Registration, self.id, id, change).await;
        Ok(())
    }

    async fn unregister(&mut self, request: u64, registration: u64) -> Result<(), SessionError> {
        let removed = match self.shared.dealer.unregister(self.id, registration) {
            Ok(r) => r,
            Err(uri) => return self.feed(&error(code::UNREGISTER, request, uri)).await,
        };
        self.feed(&Message::Unregistered {
            request,
            details: Dict::new(),
        })
        .await?;
        let change = Change::Removed {
            deleted: removed.deleted,
        };
        let realm = &self.info.realm;
        meta::announce_change(
            &self.shared,
            realm,
            Kind::Registration,
            self.id,
            registration,
            change,
        )
        .await;
        Ok(())
    }

    /// Publish a router-made event (meta events) into the ordered log, unacknowledged.
    pub(super) async fn announce_join(&mut self) {
        let args = vec![wamp::dict_to_value(self.info.to_dict(self.id))];
        super::meta::publish_meta(&self.shared, &self.info.realm, "wamp.session.on_join", args)
            .await;
    }
}

/// Build the stored message of a router-made WAMP event.
pub(super) fn meta_message(realm: &str, uri: &str, args: Vec<Value>) -> StoredMessage {
    StoredMessage {
        realm: realm.to_owned(),
        topic: topic::from_wamp_uri(uri),
        payload: Payload::Wamp {
            args,
            kwargs: Dict::new(),
        },
        qos: 0,
        retain: false,
        publisher: 0,
        exclude_publisher: false,
        mqtt: None,
        wamp: None,
    }
}
