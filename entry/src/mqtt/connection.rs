//! One MQTT connection, 3.1.1 or 5: CONNECT, then a loop over socket reads,
//! deliveries, durable-publish completions, keepalive and takeover.
//!
//! The protocol level of CONNECT fixes the codec for the connection; past the
//! codec, everything is MQTT 5 packets (`v5::compat` converts 3.1.1 ones).

use super::session_store::{self, PendingWill};
use super::PersistedSession;
use crate::router::{Delivery, SessionId, SubscriptionId, SubscriptionSpec};
use crate::sequencer::PublishError;
use crate::Shared;
use bytes::BytesMut;
use futures_util::stream::{FuturesOrdered, StreamExt};
use ordo_common::mqtt::v5::{self, compat, ConnAck, Connect, Disconnect, Packet, Properties};
use ordo_common::mqtt::{self, DecodeError, ReasonCode};
use ordo_common::topic::Filter;
use ordo_common::{MqttProperties, PermanentId, StoredMessage};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Highest inbound topic alias an MQTT 5 client may use (CONNACK Topic Alias Maximum).
pub(super) const TOPIC_ALIAS_MAX: u16 = 64;
/// Session Expiry Interval meaning "never" (section 3.1.2.11.2).
const NEVER_EXPIRES: u32 = u32::MAX;

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
    /// The client broke an MQTT 5 rule with its own reason code.
    #[error("{why} (reason {reason})")]
    Refused {
        /// Reason code of the DISCONNECT.
        reason: ReasonCode,
        /// What happened.
        why: &'static str,
    },
    /// No CONNECT in time, or keepalive expired.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The client stopped reading.
    #[error("client not reading")]
    NotReading,
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

impl ConnectionError {
    /// Return the reason code an MQTT 5 client gets in the closing DISCONNECT.
    fn reason_code(&self) -> Option<ReasonCode> {
        Some(match self {
            ConnectionError::Io(_) | ConnectionError::NotReading => return None,
            ConnectionError::Protocol(e) => e.reason_code(),
            ConnectionError::Violation(_) => ReasonCode::PROTOCOL_ERROR,
            ConnectionError::Refused { reason, .. } => *reason,
            ConnectionError::Timeout(_) => ReasonCode::KEEP_ALIVE_TIMEOUT,
            ConnectionError::Publish(_) | ConnectionError::Replay(_) => {
                ReasonCode::UNSPECIFIED_ERROR
            }
            ConnectionError::TakenOver => ReasonCode::SESSION_TAKEN_OVER,
            ConnectionError::Stopping => ReasonCode::SERVER_SHUTTING_DOWN,
        })
    }
}

/// The byte stream a connection reads: a TCP socket, or a WebSocket's binary frames (`super::ws`).
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The byte stream a connection writes; flushed after every write (a WebSocket buffers).
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A durable-publish completion: the ack to send, whether it is a QoS 1 PUBACK, the outcome.
pub(super) type AckFuture =
    Pin<Box<dyn Future<Output = (Packet, bool, Result<PermanentId, PublishError>)> + Send>>;

/// How long a closing connection waits for its session to be durable.
const SESSION_SAVE_WAIT: Duration = Duration::from_secs(5);

/// MQTT 5 subscription options kept per filter (defaults for 3.1.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubOptions {
    /// Do not deliver this connection's own publishes.
    pub no_local: bool,
    /// Keep RETAIN as published on live deliveries.
    pub retain_as_published: bool,
    /// Subscription identifier to echo on deliveries.
    pub sub_id: Option<u32>,
}

/// Append `packet` to `out` in the connection's protocol version; return
/// whether anything was written (3.1.1 cannot carry AUTH or a server DISCONNECT).
pub(super) fn encode_for(v5: bool, packet: &Packet, out: &mut BytesMut) -> bool {
    let written = if v5 {
        v5::encode(packet, out).map(|_| ())
    } else {
        match compat::to_v3(packet) {
            Some(p) => mqtt::encode(&p, out),
            None => return false,
        }
    };
    if let Err(e) = &written {
        tracing::warn!(error = %e, "packet cannot be encoded; skipped");
    }
    written.is_ok()
}

/// Decode one packet in the connection's protocol version.
fn decode_for(v5: bool, buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, DecodeError> {
    if v5 {
        v5::decode(buf, max)
    } else {
        Ok(mqtt::decode(buf, max)?.map(compat::from_v3))
    }
}

/// Return the current Unix time in milliseconds.
pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Collect the MQTT 5 application properties of a PUBLISH or will to store.
pub(super) fn stored_properties(p: &Properties) -> Option<Box<MqttProperties>> {
    let m = MqttProperties {
        payload_format_indicator: p.payload_format_indicator,
        expires_at_ms: p
            .message_expiry_interval
            .map(|s| unix_ms().saturating_add(u64::from(s) * 1000)),
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
    };
    (m != MqttProperties::default()).then(|| Box::new(m))
}

/// Serve one connection until it closes.
pub async fn run(
    mut reader: Reader,
    mut writer: Writer,
    shared: Shared,
) -> Result<(), ConnectionError> {
    let mut inbuf = BytesMut::with_capacity(8 * 1024);
    let max = shared.config.max_packet_size;
    let mut stop = shared.shutdown.clone();
    let mut level = None;
    let connect = tokio::select! {
        c = tokio::time::timeout(CONNECT_TIMEOUT, read_connect(&mut reader, &mut inbuf, max, &mut level)) => {
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
                refusal(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
            )
            .await;
            return Ok(());
        }
        Err(ConnectionError::Protocol(e)) if level == Some(v5::PROTOCOL_LEVEL_5) => {
            // Section 4.13: a bad level-5 CONNECT gets a CONNACK with the reason code.
            let _ = send_connack(&mut writer, true, refusal(e.reason_code())).await;
            return Err(e.into());
        }
        Err(e) => return Err(e),
    };
    let v5 = connect.protocol_level == v5::PROTOCOL_LEVEL_5;
    if v5 && connect.properties.authentication_method.is_some() {
        // Enhanced authentication is not supported (section 4.12).
        send_connack(
            &mut writer,
            true,
            refusal(ReasonCode::BAD_AUTHENTICATION_METHOD),
        )
        .await?;
        return Ok(());
    }
    let credentials = super::auth::Credentials {
        username: connect.username.as_deref(),
        password: connect.password.as_deref(),
        will_topic: connect.will.as_ref().map(|w| w.topic.as_str()),
    };
    let config = &shared.config;
    let grant = match super::auth::on_connect(
        &config.users,
        config.allow_anonymous,
        &config.mqtt_realm,
        credentials,
    ) {
        Ok(grant) => grant,
        Err(reason) => {
            tracing::info!(username = ?connect.username, %reason, "mqtt connect refused");
            send_connack(&mut writer, v5, refusal(reason)).await?;
            return Ok(());
        }
    };
    if !v5 && connect.client_id.is_empty() && !connect.clean_start {
        // [MQTT-3.1.3-8] a zero-byte client id needs clean session.
        send_connack(
            &mut writer,
            false,
            refusal(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        )
        .await?;
        return Ok(());
    }
    let assigned = connect.client_id.is_empty();
    let client_id = if assigned {
        format!("ordo-{:016x}", rand_id())
    } else {
        connect.client_id.clone()
    };
    let session_expiry = match (v5, connect.clean_start) {
        (true, _) => connect
            .properties
            .session_expiry_interval
            .unwrap_or(shared.config.mqtt_default_session_expiry),
        (false, true) => 0,
        (false, false) => NEVER_EXPIRES,
    };
    let (claim, kick) = shared.mqtt_sessions.claim(&client_id).await;
    // [MQTT-3.1.3-9] the will waits for its delay, or the end of the session.
    let will_delay = |w: &v5::Will| w.properties.will_delay_interval.unwrap_or(0);
    let armed_will = connect
        .will
        .as_ref()
        .map(|w| (w, will_delay(w).min(session_expiry)));
    // The will survives a crash of this node only once its record is durable: before CONNACK.
    let will_recorded = match super::live_wills::arm(&shared, &client_id, armed_will).await {
        Ok(recorded) => recorded,
        Err(e) => {
            tracing::warn!(client_id, error = %e, "mqtt connect refused");
            let _ = send_connack(&mut writer, v5, refusal(ReasonCode::SERVER_UNAVAILABLE)).await;
            shared.mqtt_sessions.release(claim);
            return Ok(());
        }
    };
    let stored = session_store::load(&shared.router, &client_id);
    let persisted = if connect.clean_start {
        shared.mqtt_sessions.discard(&client_id, stored.is_some());
        None
    } else {
        shared.mqtt_sessions.take_persisted(&client_id, stored)
    };
    let receive_max = shared.config.mqtt_inflight.clamp(1, usize::from(u16::MAX));
    // Section 3.2.2.3.14: an MQTT 5 client's keep alive may be capped by Server Keep Alive.
    let cap = shared.config.mqtt_max_keep_alive;
    let server_keep_alive =
        (v5 && cap > 0 && (connect.keep_alive == 0 || connect.keep_alive > cap)).then_some(cap);
    let keep_alive = server_keep_alive.unwrap_or(connect.keep_alive);
    let mut properties = Properties::default();
    if v5 {
        properties = Properties {
            assigned_client_identifier: assigned.then(|| client_id.clone()),
            server_keep_alive,
            receive_maximum: u16::try_from(receive_max).ok(),
            maximum_packet_size: Some(u32::try_from(max).unwrap_or(u32::MAX).max(1)),
            topic_alias_maximum: Some(TOPIC_ALIAS_MAX),
            retain_available: Some(1),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(1),
            shared_subscription_available: Some(1),
            ..Properties::default()
        };
    }
    let connack = Packet::ConnAck(ConnAck {
        session_present: persisted.is_some(),
        reason: ReasonCode::SUCCESS,
        properties,
    });
    write_now(&mut writer, v5, &connack).await?;
    tracing::debug!(
        client_id,
        v5,
        clean = connect.clean_start,
        "mqtt client connected"
    );

    let (session_id, deliveries) = shared.router.open_session();
    let client_receive_max = connect
        .properties
        .receive_maximum
        .map_or(usize::MAX, usize::from);
    let mut conn = Connection {
        shared: shared.clone(),
        session_id,
        v5,
        realm: shared.config.mqtt_realm.clone(),
        grant,
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
        inbound_qos1: 0,
        receive_max,
        client_receive_max,
        client_max_packet: connect.properties.maximum_packet_size.map(|m| m as usize),
        client_alias_max: connect.properties.topic_alias_maximum.unwrap_or(0),
        out_aliases: HashMap::new(),
        in_aliases: HashMap::new(),
        session_expiry,
        will_on_disconnect: false,
        client_id: client_id.clone(),
        // A resumed session is written at once: the record names this entry as
        // its owner now and supersedes a will that waits on the old record.
        session_dirty: session_expiry > 0,
        last_checkpoint: None,
        checkpointed: false,
        acks: FuturesOrdered::new(),
        graceful: false,
        kick,
        shutdown: shared.shutdown.clone(),
    };
    if let Some(p) = &persisted {
        conn.restore(p);
    }
    let result = conn
        .serve(&mut reader, &mut inbuf, deliveries, keep_alive)
        .await;
    let stopping = *conn.shutdown.borrow();
    if let (true, Err(e)) = (v5, &result) {
        if let Some(reason) = e.reason_code() {
            conn.close_with(reason).await;
        }
    }
    // Tear down: stop deliveries, save a session that outlives the connection, publish the will.
    shared.router.close_session(session_id);
    // The node stopping is not the client's failure: no will then.
    let will = connect
        .will
        .as_ref()
        .filter(|_| (!conn.graceful || conn.will_on_disconnect) && !stopping)
        .map(|will| {
            let message = super::live_wills::will_message(&conn.realm, will, session_id);
            (message, will_delay(will).min(conn.session_expiry))
        });
    let delayed = will.as_ref().and_then(|(message, delay)| {
        (*delay > 0).then(|| PendingWill {
            message: message.clone(),
            publish_at_ms: unix_ms().saturating_add(u64::from(*delay) * 1000),
        })
    });
    let mut session_durable = false;
    let saved_at = if conn.session_expiry > 0 {
        let expiry = (conn.session_expiry != NEVER_EXPIRES)
            .then(|| Duration::from_secs(u64::from(conn.session_expiry)));
        let (saved_at, durable) =
            shared
                .mqtt_sessions
                .save_persisted(&client_id, conn.persisted(), expiry, delayed);
        // Hold the client id until the session is in the log: a reconnect, here
        // or on another entry, then finds it (unless the node is stopping).
        if let (Some(durable), false) = (durable, stopping) {
            session_durable = matches!(
                tokio::time::timeout(SESSION_SAVE_WAIT, durable).await,
                Ok(Ok(()))
            );
        }
        Some(saved_at)
    } else {
        // A session that ends with its connection (MQTT 5 may shorten it on DISCONNECT).
        let stored = conn.checkpointed || session_store::load(&shared.router, &client_id).is_some();
        shared.mqtt_sessions.discard(&client_id, stored);
        None
    };
    // The live-will record goes once the will is published or in the session record;
    // a will left to a failed write stays armed for the next start.
    let mut will_settled = true;
    if let Some((message, delay)) = will {
        if delay == 0 {
            will_settled = publish_acked(&shared, message, will_recorded).await;
        } else if let Some(mut cancel) = shared.mqtt_sessions.delay_will(&claim) {
            // Not in a durable session record: the live record keeps it until published.
            will_settled = session_durable;
            let disarm_after = will_recorded && !session_durable;
            let sequencer = shared.sequencer.clone();
            let registry = shared.mqtt_sessions.clone();
            let client_id = client_id.clone();
            let mut stop = shared.shutdown.clone();
            tokio::spawn(async move {
                // Stopping leaves the will in the session record, armed again at the next start.
                tokio::select! {
                    _ = stop.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(u64::from(delay))) => {
                        let _ = sequencer.publish(message, false).await;
                        if let Some(saved_at) = saved_at {
                            registry.will_published(&client_id, saved_at);
                        }
                        if disarm_after {
                            super::live_wills::clear_unless_back(&registry, &client_id, Some(&mut cancel));
                        }
                    }
                    _ = &mut cancel => {}
                }
            });
        }
    }
    if will_recorded && will_settled {
        super::live_wills::disarm(&shared.mqtt_sessions, &client_id);
    }
    shared.mqtt_sessions.release(claim);
    result
}

/// Publish a will; with `acked`, wait until it is durable and say whether it is.
async fn publish_acked(shared: &Shared, message: StoredMessage, acked: bool) -> bool {
    match shared.sequencer.publish(message, acked).await {
        Ok(Some(ack)) => matches!(
            tokio::time::timeout(SESSION_SAVE_WAIT, ack).await,
            Ok(Ok(Ok(_)))
        ),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// A refusing CONNACK with `reason` (mapped to a 3.1.1 return code for 3.1.1 clients).
fn refusal(reason: ReasonCode) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present: false,
        reason,
        properties: Properties::default(),
    })
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

/// Read the CONNECT; `level` is set to the protocol level as soon as it is
/// readable, so a malformed MQTT 5 CONNECT can be answered in MQTT 5.
async fn read_connect(
    reader: &mut Reader,
    inbuf: &mut BytesMut,
    max: usize,
    level: &mut Option<u8>,
) -> Result<Connect, ConnectionError> {
    loop {
        *level = v5::peek_connect_level(inbuf);
        // Level 5 gets the MQTT 5 codec; anything else the 3.1.1 one, unchanged.
        let packet = if *level == Some(v5::PROTOCOL_LEVEL_5) {
            v5::decode(inbuf, max)?
        } else {
            mqtt::decode(inbuf, max)?.map(compat::from_v3)
        };
        if let Some(packet) = packet {
            return match packet {
                Packet::Connect(c) => Ok(*c),
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
    writer: &mut Writer,
    v5: bool,
    connack: Packet,
) -> Result<(), ConnectionError> {
    write_now(writer, v5, &connack).await
}

async fn write_now(writer: &mut Writer, v5: bool, packet: &Packet) -> Result<(), ConnectionError> {
    let mut buf = BytesMut::new();
    encode_for(v5, packet, &mut buf);
    write_flushed(writer, &buf).await?;
    Ok(())
}

/// One subscription of this connection, with its filter parsed once.
pub(super) struct Granted {
    pub(super) id: SubscriptionId,
    pub(super) qos: u8,
    pub(super) filter: Filter,
    pub(super) options: SubOptions,
    /// A shared subscription: never gets retained messages or replays.
    pub(super) shared: bool,
}

/// A QoS 1 or 2 delivery awaiting its acknowledgement.
#[derive(Clone, Copy, Debug)]
pub(super) struct Inflight {
    /// The message (`None` for retained copies and PUBRELs resent after a reconnect).
    pub(super) id: Option<PermanentId>,
    /// QoS 2: PUBREC came back and PUBREL went out; waiting for PUBCOMP.
    pub(super) released: bool,
}

pub(super) struct Connection {
    pub(super) shared: Shared,
    pub(super) session_id: SessionId,
    /// MQTT 5 (else 3.1.1 or 3.1).
    pub(super) v5: bool,
    pub(super) realm: String,
    /// Who the client authenticated as and what it may do (`super::auth`).
    pub(super) grant: crate::wamp::auth::Grant,
    writer: Writer,
    pub(super) out: BytesMut,
    /// Filter text -> subscription.
    pub(super) subscriptions: HashMap<String, Granted>,
    /// Deliveries taken from the queue (or replay) but not yet sent; `true` for retained copies.
    pub(super) pending: VecDeque<(Delivery, bool)>,
    /// Sent QoS 1/2 deliveries awaiting PUBACK / PUBREC / PUBCOMP, by packet id.
    pub(super) inflight: BTreeMap<u16, Inflight>,
    /// Deliveries unacknowledged by the previous connection, to resend with these packet ids.
    pub(super) resend: BTreeMap<PermanentId, u16>,
    pub(super) next_pkid: u16,
    /// Highest id taken into `pending`.
    pub(super) last_taken: PermanentId,
    /// Replay still to read from the store: `(after, upto]`.
    pub(super) replay: Option<(PermanentId, PermanentId)>,
    /// Inbound QoS 2 packet ids stored and not yet released by PUBREL.
    pub(super) qos2_received: HashSet<u16>,
    /// Inbound QoS 1 publishes not yet acknowledged.
    pub(super) inbound_qos1: usize,
    /// Our Receive Maximum (inbound QoS 1/2 in flight).
    pub(super) receive_max: usize,
    /// The client's Receive Maximum (outbound QoS 1/2 in flight).
    pub(super) client_receive_max: usize,
    /// The client's Maximum Packet Size.
    pub(super) client_max_packet: Option<usize>,
    /// The client's Topic Alias Maximum (outbound aliases).
    pub(super) client_alias_max: u16,
    pub(super) out_aliases: HashMap<String, u16>,
    pub(super) in_aliases: HashMap<u16, String>,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub(super) session_expiry: u32,
    /// DISCONNECT 0x04: publish the will although the disconnect is clean.
    pub(super) will_on_disconnect: bool,
    /// The client id, under which a persistent session is saved.
    client_id: String,
    /// Subscriptions changed: checkpoint the session before waiting again.
    pub(super) session_dirty: bool,
    /// The session as last checkpointed, to skip writes that change nothing.
    last_checkpoint: Option<PersistedSession>,
    /// Whether this connection wrote a session record to the log.
    checkpointed: bool,
    pub(super) acks: FuturesOrdered<AckFuture>,
    pub(super) graceful: bool,
    /// Fires when a new connection takes this client id over.
    kick: tokio::sync::oneshot::Receiver<()>,
    /// Turns `true` when the node stops.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Connection {
    pub(super) fn spec(&self, filter: &str, qos: u8, no_local: bool) -> SubscriptionSpec {
        SubscriptionSpec {
            realm: self.realm.clone(),
            filter: Filter::mqtt(filter),
            qos,
            exclude_own: no_local,
        }
    }

    /// Queue a packet for the client.
    pub(super) fn send(&mut self, packet: &Packet) {
        encode_for(self.v5, packet, &mut self.out);
    }

    /// Number of inbound QoS 1 and 2 publishes not yet completed.
    pub(super) fn inbound_in_flight(&self) -> usize {
        self.inbound_qos1 + self.qos2_received.len()
    }

    async fn serve(
        &mut self,
        reader: &mut Reader,
        inbuf: &mut BytesMut,
        mut deliveries: tokio::sync::mpsc::Receiver<Delivery>,
        keep_alive: u16,
    ) -> Result<(), ConnectionError> {
        let max = self.shared.config.max_packet_size;
        let max_inflight = self
            .shared
            .config
            .mqtt_inflight
            .clamp(1, 65_000)
            .min(self.client_receive_max);
        // [MQTT-3.1.2-24] allow one and a half keepalive periods.
        let idle_limit =
            (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let mut deadline = idle_limit.map(|d| Instant::now() + d);
        let period = Duration::from_millis(self.shared.config.mqtt_session_checkpoint_ms.max(10));
        let mut checkpoints = tokio::time::interval_at(Instant::now() + period, period);
        checkpoints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Packets already buffered are handled before waiting again.
            while let Some(packet) = decode_for(self.v5, inbuf, max)? {
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
            if self.session_dirty {
                self.checkpoint();
            }
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
                Some((ack, qos1, result)) = self.acks.next(), if !self.acks.is_empty() => {
                    self.complete_ack(ack, qos1, result)?;
                    while let Some(Some((ack, qos1, result))) = futures_util::FutureExt::now_or_never(self.acks.next()) {
                        self.complete_ack(ack, qos1, result)?;
                    }
                }
                _ = checkpoints.tick(), if self.session_expiry > 0 => self.checkpoint(),
                _ = sleep_until(deadline) => return Err(ConnectionError::Timeout("keepalive expired")),
                _ = self.shutdown.changed() => return Err(ConnectionError::Stopping),
                _ = &mut self.kick => return Err(ConnectionError::TakenOver),
            }
        }
    }

    /// Write a persistent session's state to the log if it changed since the last write.
    fn checkpoint(&mut self) {
        self.session_dirty = false;
        if self.session_expiry == 0 {
            return;
        }
        let session = self.persisted();
        if self.last_checkpoint.as_ref() == Some(&session) {
            return;
        }
        let expiry = (self.session_expiry != NEVER_EXPIRES)
            .then(|| Duration::from_secs(u64::from(self.session_expiry)));
        self.shared
            .mqtt_sessions
            .checkpoint(&self.client_id, session.clone(), expiry);
        self.last_checkpoint = Some(session);
        self.checkpointed = true;
    }

    fn complete_ack(
        &mut self,
        ack: Packet,
        qos1: bool,
        result: Result<PermanentId, PublishError>,
    ) -> Result<(), ConnectionError> {
        result?;
        if qos1 {
            self.inbound_qos1 = self.inbound_qos1.saturating_sub(1);
        }
        self.send(&ack);
        Ok(())
    }

    pub(super) fn take(&mut self, delivery: Delivery) {
        self.last_taken = self.last_taken.max(delivery.id);
        self.pending.push_back((delivery, false));
    }

    /// Send a DISCONNECT with `reason` before closing (MQTT 5), best effort.
    async fn close_with(&mut self, reason: ReasonCode) {
        let packet = Packet::Disconnect(Disconnect::reason(reason));
        if !reason.valid_for(14) {
            return;
        }
        self.send(&packet);
        let out = self.out.split();
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            write_flushed(&mut self.writer, &out),
        )
        .await;
    }

    pub(super) async fn flush(&mut self) -> Result<(), ConnectionError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = self.out.split();
        // A client that stops reading must not delay a takeover or a shutdown.
        tokio::select! {
            written = tokio::time::timeout(WRITE_TIMEOUT, write_flushed(&mut self.writer, &out)) => {
                written.map_err(|_| ConnectionError::NotReading)??;
                Ok(())
            }
            _ = &mut self.kick => Err(ConnectionError::TakenOver),
            _ = self.shutdown.changed() => Err(ConnectionError::Stopping),
        }
    }
}

async fn write_flushed(writer: &mut Writer, out: &[u8]) -> std::io::Result<()> {
    writer.write_all(out).await?;
    writer.flush().await
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
