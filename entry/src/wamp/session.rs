//! One WAMP session: HELLO/WELCOME, then pub/sub through the ordered log and
//! RPC through the dealer, until GOODBYE, ABORT or a closed socket.

use super::dealer::{error, ErrorUri};
use crate::router::{Delivery, SessionId, SubscriptionId, SubscriptionSpec};
use crate::sequencer::PublishError;
use crate::Shared;
use futures_util::stream::{FuturesOrdered, SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use ordo_common::topic::{self, Filter};
use ordo_common::wamp::{self, code, validate_uri, Dict, Message, Serializer, Value};
use ordo_common::{Payload, PermanentId, StoredMessage};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const REPLAY_CHUNK: usize = 512;

type Sink = SplitSink<WebSocketStream<TcpStream>, WsMessage>;
type Stream = SplitStream<WebSocketStream<TcpStream>>;
type AckFuture = Pin<Box<dyn Future<Output = (u64, Result<PermanentId, PublishError>)> + Send>>;

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// The peer broke the WAMP protocol; it was sent ABORT.
    #[error("protocol violation: {0}")]
    Violation(String),
    /// Reading history for a replay failed.
    #[error("replay failed: {0}")]
    Replay(String),
}

/// Serve one WAMP connection.
pub async fn run(
    ws: WebSocketStream<TcpStream>,
    ser: Serializer,
    shared: Shared,
) -> Result<(), SessionError> {
    let (mut sink, mut stream) = ws.split();
    let mut stop = shared.shutdown.clone();
    let hello = tokio::select! {
        h = tokio::time::timeout(HELLO_TIMEOUT, next_message(&mut stream, ser)) => h,
        _ = stop.changed() => return Ok(()),
    };
    let realm = match hello {
        Ok(Ok(Some(Message::Hello { realm, .. }))) if validate_uri(&realm, false) => realm,
        Ok(Ok(Some(Message::Hello { .. }))) => {
            abort(
                &mut sink,
                ser,
                "wamp.error.invalid_uri",
                "realm is not a valid URI",
            )
            .await;
            return Ok(());
        }
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(other))) => {
            let why = format!("expected HELLO, got {}", other.name());
            abort(&mut sink, ser, "wamp.error.protocol_violation", &why).await;
            return Err(SessionError::Violation(why));
        }
        Ok(Err(e)) => {
            abort(
                &mut sink,
                ser,
                "wamp.error.protocol_violation",
                &e.to_string(),
            )
            .await;
            return Err(e);
        }
        Err(_) => return Err(SessionError::Violation("no HELLO in time".into())),
    };
    let (session_id, deliveries) = shared.router.open_session();
    let rpc = shared.dealer.join(session_id);
    let welcome = Message::Welcome {
        session: session_id,
        details: welcome_details(),
    };
    let mut session = Session {
        shared: shared.clone(),
        ser,
        id: session_id,
        realm,
        sink,
        subscriptions: HashMap::new(),
        acks: FuturesOrdered::new(),
    };
    session.feed(&welcome).await?;
    session.sink.flush().await?;
    tracing::debug!(session = session_id, realm = %session.realm, "wamp session joined");
    let result = session
        .serve(&mut stream, deliveries, rpc, shared.shutdown.clone())
        .await;
    shared.router.close_session(session_id);
    shared.dealer.leave(session_id);
    result
}

fn welcome_details() -> Dict {
    let features = |names: &[&str]| {
        wamp::dict_to_value(
            names
                .iter()
                .map(|n| ((*n).to_owned(), Value::Boolean(true)))
                .collect(),
        )
    };
    let role = |names: &[&str]| {
        let mut d = Dict::new();
        d.insert("features".into(), features(names));
        wamp::dict_to_value(d)
    };
    let mut roles = Dict::new();
    roles.insert(
        "broker".into(),
        role(&["publisher_exclusion", "pattern_based_subscription"]),
    );
    roles.insert("dealer".into(), role(&["progressive_call_results"]));
    let mut details = Dict::new();
    details.insert("roles".into(), wamp::dict_to_value(roles));
    details.insert(
        "agent".into(),
        Value::from(concat!("ordo-", env!("CARGO_PKG_VERSION"))),
    );
    details
}

async fn next_message(
    stream: &mut Stream,
    ser: Serializer,
) -> Result<Option<Message>, SessionError> {
    loop {
        let frame = match stream.next().await {
            None => return Ok(None),
            Some(frame) => frame?,
        };
        let bytes = match frame {
            WsMessage::Text(text) => text.as_bytes().to_vec(),
            WsMessage::Binary(bytes) => bytes.to_vec(),
            WsMessage::Close(_) => return Ok(None),
            _ => continue,
        };
        return wamp::decode(ser, &bytes)
            .map(Some)
            .map_err(|e| SessionError::Violation(e.to_string()));
    }
}

async fn abort(sink: &mut Sink, ser: Serializer, reason: &str, message: &str) {
    let mut details = Dict::new();
    details.insert("message".into(), Value::from(message));
    let bytes = wamp::encode(
        ser,
        &Message::Abort {
            details,
            reason: reason.to_owned(),
        },
    );
    let _ = sink.send(frame(ser, bytes)).await;
    let _ = sink.close().await;
}

fn frame(ser: Serializer, bytes: Vec<u8>) -> WsMessage {
    if ser.is_binary() {
        WsMessage::Binary(bytes.into())
    } else {
        match String::from_utf8(bytes) {
            Ok(text) => WsMessage::Text(text.into()),
            Err(e) => WsMessage::Binary(e.into_bytes().into()),
        }
    }
}

struct Session {
    shared: Shared,
    ser: Serializer,
    id: SessionId,
    realm: String,
    sink: Sink,
    /// Subscription id -> whether the subscription is pattern-based (EVENT then names the topic).
    subscriptions: HashMap<SubscriptionId, bool>,
    acks: FuturesOrdered<AckFuture>,
}

impl Session {
    async fn feed(&mut self, message: &Message) -> Result<(), SessionError> {
        let bytes = wamp::encode(self.ser, message);
        self.sink.feed(frame(self.ser, bytes)).await?;
        Ok(())
    }

    async fn serve(
        &mut self,
        stream: &mut Stream,
        mut deliveries: tokio::sync::mpsc::Receiver<Delivery>,
        mut rpc: tokio::sync::mpsc::UnboundedReceiver<Message>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    let bye = Message::Goodbye { details: Dict::new(), reason: "wamp.close.system_shutdown".into() };
                    self.feed(&bye).await?;
                    self.sink.flush().await?;
                    return Ok(());
                }
                frame = stream.next() => {
                    let bytes = match frame {
                        None => return Ok(()),
                        Some(Err(e @ tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                            // An oversized frame: say why before closing.
                            abort(&mut self.sink, self.ser, "wamp.error.protocol_violation", &e.to_string()).await;
                            return Err(e.into());
                        }
                        Some(frame) => match frame? {
                            WsMessage::Text(text) => text.as_bytes().to_vec(),
                            WsMessage::Binary(bytes) => bytes.to_vec(),
                            WsMessage::Close(_) => return Ok(()),
                            _ => continue,
                        },
                    };
                    match wamp::decode(self.ser, &bytes) {
                        Ok(message) => {
                            if !self.handle(message).await? {
                                self.sink.flush().await?;
                                return Ok(());
                            }
                        }
                        Err(e) => match e.request_info() {
                            Some((request_type, request)) => {
                                tracing::info!(session = self.id, error = %e, "invalid WAMP request");
                                let reply = error(request_type, request, "wamp.error.invalid_argument");
                                self.feed(&reply).await?;
                            }
                            None => {
                                abort(&mut self.sink, self.ser, "wamp.error.protocol_violation", &e.to_string()).await;
                                return Err(SessionError::Violation(e.to_string()));
                            }
                        },
                    }
                }
                delivery = deliveries.recv() => match delivery {
                    Some(d) => {
                        self.send_event(&d).await?;
                        while let Ok(d) = deliveries.try_recv() {
                            self.send_event(&d).await?;
                        }
                    }
                    None => {
                        abort(&mut self.sink, self.ser, "wamp.close.system_shutdown", "subscriber too slow: delivery queue overflowed").await;
                        return Err(SessionError::Violation("delivery queue overflowed".into()));
                    }
                },
                Some(message) = rpc.recv() => self.feed(&message).await?,
                Some((request, result)) = futures_util::StreamExt::next(&mut self.acks), if !self.acks.is_empty() => {
                    let reply = match result {
                        Ok(id) => Message::Published { request, publication: id.0 },
                        Err(e) => {
                            tracing::error!(session = self.id, error = %e, "publish not stored");
                            error(code::PUBLISH, request, "wamp.error.storage_failed")
                        }
                    };
                    self.feed(&reply).await?;
                }
            }
            self.sink.flush().await?;
        }
    }

    async fn send_event(&mut self, d: &Delivery) -> Result<(), SessionError> {
        let (args, kwargs) = d.message.payload.to_wamp_args();
        for (sub, _) in &d.matches {
            let mut details = Dict::new();
            if self.subscriptions.get(sub).copied().unwrap_or(false) {
                details.insert(
                    "topic".into(),
                    Value::from(topic::to_wamp_uri(&d.message.topic)),
                );
            }
            let event = Message::Event {
                subscription: *sub,
                publication: d.id.0,
                details,
                args: args.clone(),
                kwargs: kwargs.clone(),
            };
            self.feed(&event).await?;
        }
        Ok(())
    }

    /// Handle one client message; return `false` when the session ends.
    async fn handle(&mut self, message: Message) -> Result<bool, SessionError> {
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
            } => {
                let reply = if self.subscriptions.remove(&subscription).is_some()
                    && self.shared.router.unsubscribe(self.id, subscription)
                {
                    Message::Unsubscribed {
                        request,
                        details: Dict::new(),
                    }
                } else {
                    error(
                        code::UNSUBSCRIBE,
                        request,
                        "wamp.error.no_such_subscription",
                    )
                };
                self.feed(&reply).await?;
            }
            Message::Register {
                request, procedure, ..
            } => {
                let reply = if !validate_uri(&procedure, false) {
                    error(code::REGISTER, request, "wamp.error.invalid_uri")
                } else {
                    match self
                        .shared
                        .dealer
                        .register(self.id, &self.realm, &procedure)
                    {
                        Ok(registration) => Message::Registered {
                            request,
                            registration,
                        },
                        Err(uri) => error(code::REGISTER, request, uri),
                    }
                };
                self.feed(&reply).await?;
            }
            Message::Unregister {
                request,
                registration,
            } => {
                let reply = match self.shared.dealer.unregister(self.id, registration) {
                    Ok(()) => Message::Unregistered {
                        request,
                        details: Dict::new(),
                    },
                    Err(uri) => error(code::UNREGISTER, request, uri),
                };
                self.feed(&reply).await?;
            }
            Message::Call {
                request,
                procedure,
                args,
                kwargs,
                ..
            } => {
                let result: Result<(), ErrorUri> = if validate_uri(&procedure, false) {
                    self.shared
                        .dealer
                        .call(self.id, &self.realm, request, &procedure, args, kwargs)
                } else {
                    Err("wamp.error.invalid_uri")
                };
                if let Err(uri) = result {
                    self.feed(&error(code::CALL, request, uri)).await?;
                }
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
            // Call cancelling arrives with the advanced profile.
            Message::Cancel { .. } => {}
            other => {
                let why = format!("unexpected {} from a client", other.name());
                abort(
                    &mut self.sink,
                    self.ser,
                    "wamp.error.protocol_violation",
                    &why,
                )
                .await;
                return Err(SessionError::Violation(why));
            }
        }
        Ok(true)
    }

    async fn publish(
        &mut self,
        request: u64,
        options: Dict,
        uri: String,
        args: Vec<Value>,
        kwargs: Dict,
    ) -> Result<(), SessionError> {
        let acknowledge = matches!(options.get("acknowledge"), Some(Value::Boolean(true)));
        if !validate_uri(&uri, false) {
            if acknowledge {
                self.feed(&error(code::PUBLISH, request, "wamp.error.invalid_uri"))
                    .await?;
            }
            return Ok(());
        }
        let exclude_me = !matches!(options.get("exclude_me"), Some(Value::Boolean(false)));
        let retain = matches!(options.get("retain"), Some(Value::Boolean(true)));
        let message = StoredMessage {
            realm: self.realm.clone(),
            topic: topic::from_wamp_uri(&uri),
            payload: Payload::Wamp { args, kwargs },
            qos: 1,
            retain,
            publisher: self.id,
            exclude_publisher: exclude_me,
            mqtt: None,
        };
        match self.shared.sequencer.publish(message, acknowledge).await {
            Ok(Some(rx)) => self.acks.push_back(Box::pin(async move {
                (request, rx.await.unwrap_or(Err(PublishError::Stopped)))
            })),
            Ok(None) => {}
            Err(e) => {
                if acknowledge {
                    tracing::error!(error = %e, "publish refused");
                    self.feed(&error(code::PUBLISH, request, "wamp.error.storage_failed"))
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn subscribe(
        &mut self,
        request: u64,
        options: Dict,
        uri: String,
    ) -> Result<(), SessionError> {
        let policy = match options.get("match") {
            None => "exact",
            Some(v) => v.as_str().unwrap_or("?"),
        };
        let filter = match Filter::wamp(&uri, policy) {
            Some(f)
                if validate_uri(&uri, policy == "wildcard")
                    || (policy == "prefix" && !uri.is_empty()) =>
            {
                f
            }
            Some(_) => {
                return self
                    .feed(&error(code::SUBSCRIBE, request, "wamp.error.invalid_uri"))
                    .await
            }
            None => {
                return self
                    .feed(&error(
                        code::SUBSCRIBE,
                        request,
                        "wamp.error.invalid_argument",
                    ))
                    .await
            }
        };
        let after = match options.get("after") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(n) => Some(PermanentId(n)),
                None => {
                    return self
                        .feed(&error(
                            code::SUBSCRIBE,
                            request,
                            "wamp.error.invalid_argument",
                        ))
                        .await
                }
            },
        };
        let spec = SubscriptionSpec {
            realm: self.realm.clone(),
            filter: filter.clone(),
            qos: 0,
            exclude_own: false,
        };
        let subscribed = self.shared.router.subscribe(self.id, vec![spec]);
        let Some(&sub) = subscribed.ids.first() else {
            return Ok(());
        };
        self.subscriptions.insert(sub, policy != "exact");
        self.feed(&Message::Subscribed {
            request,
            subscription: sub,
        })
        .await?;
        if let Some(after) = after {
            self.replay(sub, &filter, after, subscribed.last_dispatched)
                .await?;
        }
        Ok(())
    }

    /// Send stored events in `(after, upto]` matching the filter; live ones follow from the queue.
    async fn replay(
        &mut self,
        sub: SubscriptionId,
        filter: &Filter,
        mut after: PermanentId,
        upto: PermanentId,
    ) -> Result<(), SessionError> {
        while after < upto {
            let store = self.shared.store.clone();
            let chunk =
                tokio::task::spawn_blocking(move || store.read_range(after, upto, REPLAY_CHUNK))
                    .await
                    .map_err(|e| SessionError::Replay(e.to_string()))?
                    .map_err(|e| SessionError::Replay(e.to_string()))?;
            let Some(&(last, _)) = chunk.last() else {
                break;
            };
            for (id, message) in chunk {
                if message.realm != self.realm
                    || !filter.matches(&message.topic)
                    || (message.exclude_publisher && message.publisher == self.id)
                {
                    continue;
                }
                let delivery = Delivery {
                    id,
                    message: std::sync::Arc::new(message),
                    matches: vec![(sub, 0)],
                };
                self.send_event(&delivery).await?;
            }
            self.sink.flush().await?;
            after = last;
        }
        Ok(())
    }
}
