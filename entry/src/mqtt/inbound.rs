//! Packets from the client: publishes (topic aliases, receive maximum),
//! acknowledgements of deliveries, subscriptions, DISCONNECT.

use super::connection::{
    stored_properties, Connection, ConnectionError, Granted, SubOptions, TOPIC_ALIAS_MAX,
};
use crate::router::Delivery;
use crate::sequencer::PublishError;
use ordo_common::mqtt::v5::{
    self, Ack, Packet, Properties, Publish, RetainHandling, SubAck, Subscribe, UnsubAck,
    Unsubscribe,
};
use ordo_common::mqtt::{QoS, ReasonCode};
use ordo_common::topic::Filter;
use ordo_common::{Payload, PermanentId, StoredMessage};

fn refused(reason: ReasonCode, why: &'static str) -> ConnectionError {
    ConnectionError::Refused { reason, why }
}

impl Connection {
    /// Handle one packet; return `false` after DISCONNECT.
    pub(super) async fn handle_packet(&mut self, packet: Packet) -> Result<bool, ConnectionError> {
        match packet {
            Packet::Publish(p) => self.handle_publish(p).await?,
            Packet::PubAck(a) | Packet::PubComp(a) => {
                if self.inflight.remove(&a.pkid).is_none() {
                    // An ack for a delivery of the previous connection not yet resent.
                    self.resend.retain(|_, p| *p != a.pkid);
                }
            }
            Packet::PubRec(a) => self.handle_pubrec(a),
            Packet::PubRel(a) => {
                let known = self.qos2_received.remove(&a.pkid);
                let reason = if known || !self.v5 {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                };
                self.send(&Packet::PubComp(Ack {
                    pkid: a.pkid,
                    reason,
                    properties: Properties::default(),
                }));
            }
            Packet::Subscribe(s) => {
                self.session_dirty = true;
                self.handle_subscribe(s)
            }
            Packet::Unsubscribe(u) => {
                self.session_dirty = true;
                self.handle_unsubscribe(u)
            }
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect(d) => {
                if let Some(expiry) = d.properties.session_expiry_interval {
                    if self.session_expiry == 0 && expiry != 0 {
                        // Section 3.14.2.2.2: 0 on CONNECT cannot become nonzero on DISCONNECT.
                        return Err(refused(
                            ReasonCode::PROTOCOL_ERROR,
                            "session expiry set on DISCONNECT after 0 on CONNECT",
                        ));
                    }
                    self.session_expiry = expiry;
                }
                self.will_on_disconnect = d.reason == ReasonCode::DISCONNECT_WITH_WILL;
                return Ok(false);
            }
            Packet::Auth(_) => {
                // Section 4.12: AUTH without an authentication method in CONNECT.
                return Err(refused(
                    ReasonCode::PROTOCOL_ERROR,
                    "AUTH without CONNECT authentication",
                ));
            }
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

    /// PUBREC for a QoS 2 delivery: release it with PUBREL, or drop it on an error code.
    fn handle_pubrec(&mut self, a: Ack) {
        let reason = match self.inflight.get_mut(&a.pkid) {
            Some(_) if a.reason.is_error() => {
                // Section 4.3.3: a PUBREC with an error code ends the exchange.
                self.inflight.remove(&a.pkid);
                return;
            }
            Some(f) => {
                f.released = true;
                f.id = None;
                ReasonCode::SUCCESS
            }
            None => {
                let before = self.resend.len();
                self.resend.retain(|_, p| *p != a.pkid);
                if self.resend.len() == before && self.v5 {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                } else {
                    ReasonCode::SUCCESS
                }
            }
        };
        self.send(&Packet::PubRel(Ack {
            pkid: a.pkid,
            reason,
            properties: Properties::default(),
        }));
    }

    async fn handle_publish(&mut self, mut p: Publish) -> Result<(), ConnectionError> {
        if self.v5 {
            if !p.properties.subscription_identifiers.is_empty() {
                // [MQTT-3.3.4-6].
                return Err(refused(
                    ReasonCode::PROTOCOL_ERROR,
                    "subscription identifier in a client PUBLISH",
                ));
            }
            if let Some(alias) = p.properties.topic_alias.take() {
                if alias > TOPIC_ALIAS_MAX {
                    // [MQTT-3.3.2-9].
                    return Err(refused(
                        ReasonCode::TOPIC_ALIAS_INVALID,
                        "topic alias too high",
                    ));
                }
                if p.topic.is_empty() {
                    p.topic = self
                        .in_aliases
                        .get(&alias)
                        .cloned()
                        .ok_or(refused(ReasonCode::PROTOCOL_ERROR, "unknown topic alias"))?;
                } else {
                    self.in_aliases.insert(alias, p.topic.clone());
                }
            }
        }
        if !super::auth::may_publish(&self.grant, &self.realm, &p.topic) {
            return self.refuse_publish(&p);
        }
        if p.qos == QoS::ExactlyOnce && self.qos2_received.contains(&p.pkid) {
            // A resent QoS 2 publish we already stored: acknowledge again, store nothing.
            self.send(&Packet::PubRec(Ack::success(p.pkid)));
            return Ok(());
        }
        if self.v5 && p.qos != QoS::AtMostOnce && self.inbound_in_flight() >= self.receive_max {
            // Section 3.3.4: more unacknowledged QoS 1/2 publishes than our Receive Maximum.
            return Err(refused(
                ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                "receive maximum exceeded",
            ));
        }
        let message = StoredMessage {
            realm: self.realm.clone(),
            topic: p.topic,
            payload: Payload::Raw(p.payload),
            qos: p.qos as u8,
            retain: p.retain,
            publisher: self.session_id,
            exclude_publisher: false,
            mqtt: if self.v5 {
                stored_properties(&p.properties)
            } else {
                None
            },
            wamp: None,
        };
        let reply = self
            .shared
            .sequencer
            .publish(message, p.qos != QoS::AtMostOnce)
            .await?;
        if let Some(rx) = reply {
            let (ack, qos1) = match p.qos {
                QoS::ExactlyOnce => {
                    self.qos2_received.insert(p.pkid);
                    (Packet::PubRec(Ack::success(p.pkid)), false)
                }
                _ => {
                    self.inbound_qos1 += 1;
                    (Packet::PubAck(Ack::success(p.pkid)), true)
                }
            };
            self.acks.push_back(Box::pin(async move {
                let result = rx.await.unwrap_or(Err(PublishError::Stopped));
                (ack, qos1, result)
            }));
        }
        Ok(())
    }

    /// A PUBLISH outside the user's permissions: QoS 0 is dropped; QoS 1/2 get
    /// PUBACK/PUBREC 0x87 in MQTT 5, and close a 3.1.1 connection, which has no
    /// negative ack and must not get a positive one for a message not stored
    /// ([MQTT-3.3.5-2] allows either).
    fn refuse_publish(&mut self, p: &Publish) -> Result<(), ConnectionError> {
        tracing::debug!(
            topic = p.topic,
            qos = p.qos as u8,
            "mqtt publish not authorized"
        );
        let ack = |pkid| Ack {
            pkid,
            reason: ReasonCode::NOT_AUTHORIZED,
            properties: Properties::default(),
        };
        let ack = match (p.qos, self.v5) {
            (QoS::AtMostOnce, _) => return Ok(()),
            (_, false) => {
                return Err(refused(
                    ReasonCode::NOT_AUTHORIZED,
                    "publish not authorized",
                ))
            }
            (QoS::AtLeastOnce, true) => Packet::PubAck(ack(p.pkid)),
            (QoS::ExactlyOnce, true) => Packet::PubRec(ack(p.pkid)),
        };
        // Behind the acks still waiting for the store: PUBACKs keep PUBLISH order [MQTT-4.6.0-2].
        self.acks.push_back(Box::pin(
            async move { (ack, false, Ok(PermanentId::default())) },
        ));
        Ok(())
    }

    fn handle_subscribe(&mut self, s: Subscribe) {
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut specs = Vec::new();
        let mut names = Vec::new();
        // Filters whose retained messages go out now (retain handling, not shared).
        let mut retained_for = Vec::new();
        // The codec has already refused invalid topic filters: such a
        // SUBSCRIBE closes the connection before it gets here.
        for (filter, o) in &s.filters {
            if self.shared.config.mqtt_deny_subscribe.contains(filter) {
                reasons.push(ReasonCode::UNSPECIFIED_ERROR);
                continue;
            }
            // A shared subscription is checked on its filter without `$share/{group}/`.
            let unshared = v5::split_shared(filter).map_or(filter.as_str(), |(_, inner)| inner);
            if !super::auth::may_subscribe(&self.grant, &self.realm, unshared) {
                // 3.1.1 clients get 0x80 (`compat`).
                reasons.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            }
            let granted = o.qos as u8;
            reasons.push(ReasonCode(granted));
            // [MQTT-3.8.4-3] a subscription to an existing filter replaces it.
            let existed = match self.subscriptions.remove(filter) {
                Some(old) => {
                    self.shared.router.unsubscribe(self.session_id, old.id);
                    true
                }
                None => false,
            };
            let (share, inner) = match v5::split_shared(filter) {
                Some((_, inner)) => (Some(filter.clone()), inner),
                None => (None, filter.as_str()),
            };
            // [MQTT-3.3.1-9] to [MQTT-3.3.1-11] retain handling; shared subscriptions get no
            // retained messages (section 4.8.2).
            let send_retained = share.is_none()
                && match o.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                retained_for.push(Filter::mqtt(inner));
            }
            let options = SubOptions {
                no_local: o.no_local,
                retain_as_published: o.retain_as_published,
                sub_id,
            };
            let shared = share.is_some();
            specs.push((self.spec(inner, granted, o.no_local), share));
            names.push((filter.clone(), inner.to_owned(), granted, options, shared));
        }
        let subscribed = self.shared.router.subscribe_shared(self.session_id, specs);
        for ((filter, inner, qos, options, shared), id) in names.into_iter().zip(subscribed.ids) {
            self.subscriptions.insert(
                filter,
                Granted {
                    id,
                    qos,
                    filter: Filter::mqtt(&inner),
                    options,
                    shared,
                },
            );
        }
        self.send(&Packet::SubAck(SubAck {
            pkid: s.pkid,
            properties: Properties::default(),
            reasons,
        }));
        // [MQTT-3.3.1-6] retained messages go to the new subscriber with RETAIN set.
        for (id, message) in subscribed.retained {
            if !retained_for.iter().any(|f| f.matches(&message.topic)) {
                continue;
            }
            let matches = self.matches_for(&message.topic);
            self.pending.push_back((
                Delivery {
                    id,
                    message,
                    matches,
                },
                true,
            ));
        }
    }

    fn handle_unsubscribe(&mut self, u: Unsubscribe) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            reasons.push(match self.subscriptions.remove(filter) {
                Some(sub) => {
                    self.shared.router.unsubscribe(self.session_id, sub.id);
                    ReasonCode::SUCCESS
                }
                None => ReasonCode::NO_SUBSCRIPTION_EXISTED,
            });
        }
        self.send(&Packet::UnsubAck(UnsubAck {
            pkid: u.pkid,
            properties: Properties::default(),
            reasons,
        }));
    }
}
