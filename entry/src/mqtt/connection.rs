//! One MQTT connection: CONNECT, then a loop over socket reads, deliveries,
//! durable-publish completions, keepalive and takeover.

use super::PersistedSession;
use crate::router::{Delivery, SessionId, SubscriptionId, SubscriptionSpec};
use crate::sequencer::PublishError;
use crate::Shared;
use bytes::BytesMut;
use futures_util::stream::{FuturesOrdered, StreamExt};
use ordo_common::mqtt::{
    self, ConnAck, Connect, ConnectReturnCode, DecodeError, Packet, Publish, QoS, SubAck,
    SubAckCode,
};
use ordo_common::topic::Filter;
use ordo_common::{Payload, PermanentId, StoredMessage};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const REPLAY_CHUNK: usize = 512;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent bytes that are not valid MQTT.
    #[error("protocol error: {0}")]
    Protocol(#[from] DecodeError),
    /// The client broke a rule the codec cannot see.
    #[error("protocol violation: {0}")]
    Violation(&'static str),
    /// No CONNECT in time, or keepalive expired.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A publish could not be stored; it was not acknowledged.
    #[error("publish failed: {0}")]
    Publish(#[from] PublishError),
    /// Reading history for replay failed.
    #[error("replay failed: {0}")]
    Replay(String),
    /// A new connection with the same client id took the session over.
    #[error("session taken over by a new connection")]
    TakenOver,
    /// The node is stopping.
    #[error("node stopping")]
    Stopping,
}

type AckFuture = Pin<Box<dyn Future<Output = (Packet, Result<PermanentId, PublishError>)> + Send>>;

/// Serve one connection until it closes.
pub async fn run(stream: TcpStream, shared: Shared) -> Result<(), ConnectionError> {
    let (mut reader, mut writer) = stream.into_split();
    let mut inbuf = BytesMut::with_capacity(8 * 1024);
    let max = shared.config.max_packet_size;
    let mut stop = shared.shutdown.clone();
    let connect = tokio::select! {
        c = tokio::time::timeout(CONNECT_TIMEOUT, read_connect(&mut reader, &mut inbuf, max)) => {
            c.map_err(|_| ConnectionError::Timeout("no CONNECT"))?
        }
        _ = stop.changed() => return Err(ConnectionError::Stopping),
    };
    let connect = match connect {
        Ok(c) => c,
        Err(ConnectionError::Protocol(DecodeError::UnsupportedProtocolLevel(level))) => {
            tracing::info!(level, "refusing unsupported MQTT protocol level");
            let _ = send_connack(
                &mut writer,
                false,
                ConnectReturnCode::UnacceptableProtocolVersion,
            )
            .await;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if connect.client_id.is_empty() && !connect.clean_session {
        // [MQTT-3.1.3-8] a zero-byte client id needs clean session.
        send_connack(&mut writer, false, ConnectReturnCode::IdentifierRejected).await?;
        return Ok(());
    }
    let client_id = if connect.client_id.is_empty() {
        format!("ordo-{:016x}", rand_id())
    } else {
        connect.client_id.clone()
    };
    let (claim, kick) = shared.mqtt_sessions.claim(&client_id).await;
    let persisted = if connect.clean_session {
        shared.mqtt_sessions.take_persisted(&client_id);
        None
    } else {
        shared.mqtt_sessions.take_persisted(&client_id)
    };
    send_connack(
        &mut writer,
        persisted.is_some(),
        ConnectReturnCode::Accepted,
    )
    .await?;
    tracing::debug!(
        client_id,
        clean = connect.clean_session,
        "mqtt client connected"
    );

    let (session_id, deliveries) = shared.router.open_session();
    let mut conn = Connection {
        shared: shared.clone(),
        session_id,
        realm: shared.config.mqtt_realm.clone(),
        writer,
        out: BytesMut::with_capacity(8 * 1024),
        subscriptions: HashMap::new(),
        pending: VecDeque::new(),
        inflight: BTreeMap::new(),
        resend: BTreeMap::new(),
        next_pkid: 1,
        last_taken: shared.router.last_dispatched(),
        replay: None,
        qos2_received: HashSet::new(),
        acks: FuturesOrdered::new(),
        graceful: false,
        kick,
        shutdown: shared.shutdown.clone(),
    };
    if let Some(p) = &persisted {
        conn.restore(p);
    }
    let result = conn
        .serve(&mut reader, &mut inbuf, deliveries, connect.keep_alive)
        .await;
    if *conn.shutdown.borrow() {
        // The node is stopping: the will is for a client's failure, not ours.
        conn.graceful = true;
    }
    // Tear down: stop deliveries, save a persistent session, publish the will.
    shared.router.close_session(session_id);
    if !connect.clean_session {
        shared
            .mqtt_sessions
            .save_persisted(&client_id, conn.persisted());
    }
    if !conn.graceful {
        if let Some(will) = &connect.will {
            let message = StoredMessage {
                realm: conn.realm.clone(),
                topic: will.topic.clone(),
                payload: Payload::Raw(will.payload.clone()),
                qos: will.qos as u8,
                retain: will.retain,
                publisher: session_id,
                exclude_publisher: false,
                wamp: None,
            };
            let _ = shared.sequencer.publish(message, false).await;
        }
    }
    shared.mqtt_sessions.release(claim);
    result
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

async fn read_connect(
    reader: &mut OwnedReadHalf,
    inbuf: &mut BytesMut,
    max: usize,
) -> Result<Connect, ConnectionError> {
    loop {
        if let Some(packet) = mqtt::decode(inbuf, max)? {
            return match packet {
                Packet::Connect(c) => Ok(c),
                // [MQTT-3.1.0-1] the first packet must be CONNECT.
                _ => Err(ConnectionError::Violation("first packet is not CONNECT")),
            };
        }
        if reader.read_buf(inbuf).await? == 0 {
            return Err(ConnectionError::Violation("closed before CONNECT"));
        }
    }
}

async fn send_connack(
    writer: &mut OwnedWriteHalf,
    session_present: bool,
    code: ConnectReturnCode,
) -> Result<(), ConnectionError> {
    let mut buf = BytesMut::new();
    let _ = mqtt::encode(
        &Packet::ConnAck(ConnAck {
            session_present,
            code,
        }),
        &mut buf,
    );
    writer.write_all(&buf).await?;
    Ok(())
}

/// One subscription of this connection, with its filter parsed once.
struct Granted {
    id: SubscriptionId,
    qos: u8,
    filter: Filter,
}

impl Granted {
    fn new(id: SubscriptionId, qos: u8, filter: &str) -> Self {
        Granted {
            id,
            qos,
            filter: Filter::mqtt(filter),
        }
    }
}

struct Connection {
    shared: Shared,
    session_id: SessionId,
    realm: String,
    writer: OwnedWriteHalf,
    out: BytesMut,
    /// Filter text -> (subscription id, granted QoS).
    subscriptions: HashMap<String, Granted>,
    /// Deliveries taken from the queue (or replay) but not yet sent.
    pending: VecDeque<(Delivery, bool)>,
    /// Sent QoS 1 deliveries awaiting PUBACK, by packet id (`None` for retained copies).
    inflight: BTreeMap<u16, Option<PermanentId>>,
    /// Deliveries unacknowledged by the previous connection, to resend with these packet ids.
    resend: BTreeMap<PermanentId, u16>,
    next_pkid: u16,
    /// Highest id taken into `pending`.
    last_taken: PermanentId,
    /// Replay still to read from the store: `(after, upto]`.
    replay: Option<(PermanentId, PermanentId)>,
    qos2_received: HashSet<u16>,
    acks: FuturesOrdered<AckFuture>,
    graceful: bool,
    /// Fires when a new connection takes this client id over.
    kick: tokio::sync::oneshot::Receiver<()>,
    /// Turns `true` when the node stops.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Connection {
    fn restore(&mut self, persisted: &PersistedSession) {
        let specs: Vec<(String, u8)> = persisted.subscriptions.clone();
        let subscribed = self.shared.router.subscribe(
            self.session_id,
            specs.iter().map(|(f, q)| self.spec(f, *q)).collect(),
        );
        for ((filter, qos), id) in specs.into_iter().zip(subscribed.ids) {
            self.subscriptions
                .insert(filter.clone(), Granted::new(id, qos, &filter));
        }
        if subscribed.last_dispatched > persisted.resume_after {
            self.replay = Some((persisted.resume_after, subscribed.last_dispatched));
        }
        self.last_taken = persisted.resume_after;
        self.resend = persisted
            .unacked
            .iter()
            .map(|(pkid, id)| (*id, *pkid))
            .collect();
    }

    fn persisted(&self) -> PersistedSession {
        let first_open = self
            .inflight
            .values()
            .flatten()
            .copied()
            .chain(self.resend.keys().copied())
            .chain(
                self.pending
                    .iter()
                    .filter(|(_, retained)| !retained)
                    .map(|(d, _)| d.id),
            )
            .min();
        let resume_after = match (first_open, self.replay) {
            (Some(id), _) => PermanentId(id.0.saturating_sub(1)),
            (None, Some((after, _))) => after,
            (None, None) => self.last_taken,
        };
        let unacked = self
            .inflight
            .iter()
            .filter_map(|(pkid, id)| id.map(|id| (*pkid, id)))
            .chain(self.resend.iter().map(|(id, pkid)| (*pkid, *id)))
            .collect();
        PersistedSession {
            unacked,
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(f, sub)| (f.clone(), sub.qos))
                .collect(),
            resume_after,
        }
    }

    fn spec(&self, filter: &str, qos: u8) -> SubscriptionSpec {
        SubscriptionSpec {
            realm: self.realm.clone(),
            filter: Filter::mqtt(filter),
            qos,
            exclude_own: false,
        }
    }

    async fn serve(
        &mut self,
        reader: &mut OwnedReadHalf,
        inbuf: &mut BytesMut,
        mut deliveries: tokio::sync::mpsc::Receiver<Delivery>,
        keep_alive: u16,
    ) -> Result<(), ConnectionError> {
        let max = self.shared.config.max_packet_size;
        let max_inflight = self.shared.config.mqtt_inflight.clamp(1, 65_000);
        // [MQTT-3.1.2-24] allow one and a half keepalive periods.
        let idle_limit =
            (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let mut deadline = idle_limit.map(|d| Instant::now() + d);
        loop {
            // Packets already buffered are handled before waiting again.
            while let Some(packet) = mqtt::decode(inbuf, max)? {
                if let Some(limit) = idle_limit {
                    deadline = Some(Instant::now() + limit);
                }
                if !self.handle_packet(packet).await? {
                    self.graceful = true;
                    self.flush().await?;
                    return Ok(());
                }
            }
            if self.pending.is_empty() {
                self.load_replay().await?;
            }
            self.send_pending(max_inflight);
            self.flush().await?;
            let can_take = self.pending.is_empty()
                && self.replay.is_none()
                && self.inflight.len() < max_inflight;
            tokio::select! {
                read = reader.read_buf(inbuf) => {
                    if read? == 0 {
                        return Ok(());
                    }
                }
                delivery = deliveries.recv(), if can_take => match delivery {
                    Some(d) => {
                        self.take(d);
                        while self.pending.len() < max_inflight {
                            match deliveries.try_recv() {
                                Ok(d) => self.take(d),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return Err(ConnectionError::Violation("subscriber too slow: delivery queue overflowed")),
                },
                Some((ack, result)) = self.acks.next(), if !self.acks.is_empty() => {
                    result?;
                    let _ = mqtt::encode(&ack, &mut self.out);
                    while let Some(Some((ack, result))) = futures_util::FutureExt::now_or_never(self.acks.next()) {
                        result?;
                        let _ = mqtt::encode(&ack, &mut self.out);
                    }
                }
                _ = sleep_until(deadline) => return Err(ConnectionError::Timeout("keepalive expired")),
                _ = self.shutdown.changed() => return Err(ConnectionError::Stopping),
                _ = &mut self.kick => return Err(ConnectionError::TakenOver),
            }
        }
    }

    fn take(&mut self, delivery: Delivery) {
        self.last_taken = self.last_taken.max(delivery.id);
        self.pending.push_back((delivery, false));
    }

    /// Return `false` after DISCONNECT.
    async fn handle_packet(&mut self, packet: Packet) -> Result<bool, ConnectionError> {
        match packet {
            Packet::Publish(p) => self.handle_publish(p).await?,
            Packet::PubAck(pkid) => {
                if self.inflight.remove(&pkid).is_none() {
                    // An ack for a delivery of the previous connection not yet resent.
                    self.resend.retain(|_, p| *p != pkid);
                }
            }
            Packet::PubRel(pkid) => {
                self.qos2_received.remove(&pkid);
                let _ = mqtt::encode(&Packet::PubComp(pkid), &mut self.out);
            }
            // Outbound QoS is capped at 1, so PUBREC/PUBCOMP only come from confused clients.
            Packet::PubRec(_) | Packet::PubComp(_) => {}
            Packet::Subscribe(s) => self.handle_subscribe(s),
            Packet::Unsubscribe(u) => {
                for filter in &u.filters {
                    if let Some(sub) = self.subscriptions.remove(filter) {
                        self.shared.router.unsubscribe(self.session_id, sub.id);
                    }
                }
                let _ = mqtt::encode(&Packet::UnsubAck(u.pkid), &mut self.out);
            }
            Packet::PingReq => {
                let _ = mqtt::encode(&Packet::PingResp, &mut self.out);
            }
            Packet::Disconnect => return Ok(false),
            // [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
            Packet::Connect(_) => return Err(ConnectionError::Violation("second CONNECT")),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(ConnectionError::Violation(
                    "server-to-client packet sent by client",
                ))
            }
        }
        Ok(true)
    }

    async fn handle_publish(&mut self, p: Publish) -> Result<(), ConnectionError> {
        if p.qos == QoS::ExactlyOnce && self.qos2_received.contains(&p.pkid) {
            // A resent QoS 2 publish we already stored: acknowledge again, store nothing.
            let _ = mqtt::encode(&Packet::PubRec(p.pkid), &mut self.out);
            return Ok(());
        }
        let message = StoredMessage {
            realm: self.realm.clone(),
            topic: p.topic,
            payload: Payload::Raw(p.payload),
            qos: p.qos as u8,
            retain: p.retain,
            publisher: self.session_id,
            exclude_publisher: false,
            wamp: None,
        };
        let reply = self
            .shared
            .sequencer
            .publish(message, p.qos != QoS::AtMostOnce)
            .await?;
        if let Some(rx) = reply {
            let ack = match p.qos {
                QoS::ExactlyOnce => {
                    self.qos2_received.insert(p.pkid);
                    Packet::PubRec(p.pkid)
                }
                _ => Packet::PubAck(p.pkid),
            };
            self.acks.push_back(Box::pin(async move {
                let result = rx.await.unwrap_or(Err(PublishError::Stopped));
                (ack, result)
            }));
        }
        Ok(())
    }

    fn handle_subscribe(&mut self, s: mqtt::Subscribe) {
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut specs = Vec::new();
        let mut names = Vec::new();
        // The codec has already refused invalid topic filters (mqtt::decode):
        // such a SUBSCRIBE closes the connection before it gets here.
        for (filter, qos) in &s.filters {
            // Deliveries go out at QoS 0 or 1; QoS 2 requests are granted 1.
            let granted = (*qos as u8).min(1);
            codes.push(SubAckCode::Granted(if granted == 1 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            }));
            // [MQTT-3.8.4-3] a subscription to an existing filter replaces it.
            if let Some(old) = self.subscriptions.remove(filter) {
                self.shared.router.unsubscribe(self.session_id, old.id);
            }
            specs.push(self.spec(filter, granted));
            names.push((filter.clone(), granted));
        }
        let subscribed = self.shared.router.subscribe(self.session_id, specs);
        for ((filter, qos), id) in names.into_iter().zip(subscribed.ids) {
            self.subscriptions
                .insert(filter.clone(), Granted::new(id, qos, &filter));
        }
        let _ = mqtt::encode(
            &Packet::SubAck(SubAck {
                pkid: s.pkid,
                codes,
            }),
            &mut self.out,
        );
        // [MQTT-3.3.1-6] retained messages go to the new subscriber with RETAIN set.
        for (id, message) in subscribed.retained {
            let qos = self.granted_for(&message.topic).min(message.qos);
            let delivery = Delivery {
                id,
                message,
                matches: vec![(0, qos)],
            };
            self.pending.push_back((delivery, true));
        }
    }

    /// Return the highest QoS granted by a subscription matching `topic` (0 if none matches).
    fn granted_for(&self, topic: &str) -> u8 {
        self.subscriptions
            .values()
            .filter(|sub| sub.filter.matches(topic))
            .map(|sub| sub.qos)
            .max()
            .unwrap_or(0)
    }

    async fn load_replay(&mut self) -> Result<(), ConnectionError> {
        let Some((after, upto)) = self.replay else {
            return Ok(());
        };
        let store = self.shared.store.clone();
        let chunk =
            tokio::task::spawn_blocking(move || store.read_range(after, upto, REPLAY_CHUNK))
                .await
                .map_err(|e| ConnectionError::Replay(e.to_string()))?
                .map_err(|e| ConnectionError::Replay(e.to_string()))?;
        let last = chunk.last().map(|(id, _)| *id);
        for (id, message) in chunk {
            if message.realm != self.realm {
                continue;
            }
            // Zero when no subscription matches; missed QoS 0 messages are
            // not queued for an absent client either.
            let qos = self.granted_for(&message.topic).min(message.qos);
            if qos > 0 {
                self.take(Delivery {
                    id,
                    message: Arc::new(message),
                    matches: vec![(0, qos)],
                });
            }
        }
        self.replay = match last {
            Some(last) if last < upto => Some((last, upto)),
            _ => None,
        };
        Ok(())
    }

    fn send_pending(&mut self, max_inflight: usize) {
        while self.inflight.len() < max_inflight {
            let Some((delivery, retain)) = self.pending.pop_front() else {
                break;
            };
            let granted = delivery.matches.iter().map(|(_, q)| *q).max().unwrap_or(0);
            let qos = granted.min(delivery.message.qos);
            // A message the last connection sent but never saw acknowledged goes
            // out again with its packet id and DUP set ([MQTT-4.4.0-1], [MQTT-3.3.1-1]).
            let resent = match retain {
                false => self
                    .resend
                    .remove(&delivery.id)
                    .filter(|p| !self.inflight.contains_key(p)),
                true => None,
            };
            let pkid = match (qos, resent) {
                (0, _) => 0,
                (_, Some(pkid)) => pkid,
                (_, None) => self.allocate_pkid(),
            };
            if qos > 0 {
                self.inflight.insert(pkid, (!retain).then_some(delivery.id));
            }
            let publish = Publish {
                dup: resent.is_some() && qos > 0,
                qos: if qos > 0 {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                },
                retain,
                topic: delivery.message.topic.clone(),
                pkid,
                payload: delivery.message.payload.to_mqtt_bytes(),
            };
            if let Err(e) = mqtt::encode(&Packet::Publish(publish), &mut self.out) {
                tracing::warn!(error = %e, id = delivery.id.0, "message cannot be encoded for MQTT; skipped");
                self.inflight.remove(&pkid);
            }
        }
    }

    /// Return the next free packet id, wrapping from 65,535 to 1 and skipping ids in flight.
    fn allocate_pkid(&mut self) -> u16 {
        loop {
            let id = self.next_pkid;
            self.next_pkid = if id == u16::MAX { 1 } else { id + 1 };
            if !self.inflight.contains_key(&id) && !self.resend.values().any(|p| *p == id) {
                return id;
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ConnectionError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = self.out.split();
        // A client that stops reading must not delay a takeover or a shutdown.
        tokio::select! {
            written = tokio::time::timeout(WRITE_TIMEOUT, self.writer.write_all(&out)) => {
                written.map_err(|_| ConnectionError::Timeout("client not reading"))??;
                Ok(())
            }
            _ = &mut self.kick => Err(ConnectionError::TakenOver),
            _ = self.shutdown.changed() => Err(ConnectionError::Stopping),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
