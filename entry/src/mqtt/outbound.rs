//! Deliveries to the client: replay, message expiry, QoS 1 and 2 in flight,
//! MQTT 5 properties (subscription identifiers, `ordo-id`, topic aliases),
//! and the session state saved for the next connection.

use super::connection::{unix_ms, Connection, ConnectionError, Granted, Inflight, SubOptions};
use super::PersistedSession;
use crate::router::{Delivery, SubscriptionId};
use ordo_common::mqtt::v5::{self, Ack, Packet, Properties, Publish};
use ordo_common::mqtt::QoS;
use ordo_common::topic::Filter;
use ordo_common::PermanentId;
use std::sync::Arc;

const REPLAY_CHUNK: usize = 512;

impl Connection {
    /// Resubscribe and resume a saved session.
    pub(super) fn restore(&mut self, persisted: &PersistedSession) {
        let mut specs = Vec::new();
        let mut names = Vec::new();
        for (filter, qos) in &persisted.subscriptions {
            let options = persisted.options.get(filter).copied().unwrap_or_default();
            let (share, inner) = match v5::split_shared(filter) {
                Some((_, inner)) => (Some(filter.clone()), inner.to_owned()),
                None => (None, filter.clone()),
            };
            let shared = share.is_some();
            specs.push((self.spec(&inner, *qos, options.no_local), share));
            names.push((filter.clone(), inner, *qos, options, shared));
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
        if subscribed.last_dispatched > persisted.resume_after {
            self.replay = Some((persisted.resume_after, subscribed.last_dispatched));
        }
        self.last_taken = persisted.resume_after;
        self.resend = persisted
            .unacked
            .iter()
            .map(|(pkid, id)| (*id, *pkid))
            .collect();
        // [MQTT-4.4.0-1] QoS 2 deliveries past PUBREC get their PUBREL again.
        for pkid in &persisted.released {
            self.inflight.insert(
                *pkid,
                Inflight {
                    id: None,
                    released: true,
                },
            );
            self.send(&Packet::PubRel(Ack::success(*pkid)));
        }
    }

    /// Return the state to save for the next connection of this session.
    pub(super) fn persisted(&self) -> PersistedSession {
        let first_open = self
            .inflight
            .values()
            .filter_map(|f| f.id)
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
            .filter_map(|(pkid, f)| f.id.map(|id| (*pkid, id)))
            .chain(self.resend.iter().map(|(id, pkid)| (*pkid, *id)))
            .collect();
        PersistedSession {
            unacked,
            released: self
                .inflight
                .iter()
                .filter(|(_, f)| f.released)
                .map(|(pkid, _)| *pkid)
                .collect(),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(f, sub)| (f.clone(), sub.qos))
                .collect(),
            options: self
                .subscriptions
                .iter()
                .map(|(f, sub)| (f.clone(), sub.options))
                .collect(),
            resume_after,
        }
    }

    /// Return the non-shared subscriptions matching `topic` with their granted QoS.
    pub(super) fn matches_for(&self, topic: &str) -> Vec<(SubscriptionId, u8)> {
        self.subscriptions
            .values()
            .filter(|sub| !sub.shared && sub.filter.matches(topic))
            .map(|sub| (sub.id, sub.qos))
            .collect()
    }

    fn options_of(&self, id: SubscriptionId) -> Option<SubOptions> {
        self.subscriptions
            .values()
            .find(|sub| sub.id == id)
            .map(|sub| sub.options)
    }

    pub(super) async fn load_replay(&mut self) -> Result<(), ConnectionError> {
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
            if message.realm != self.realm
                || (message.publisher == self.session_id && message.exclude_publisher)
                || !self.shared.router.replayable(id, &message)
            {
                continue;
            }
            // Missed QoS 0 messages are not queued for an absent client.
            let matches = self.matches_for(&message.topic);
            let qos = matches.iter().map(|(_, q)| *q).max().unwrap_or(0);
            if qos.min(message.qos) > 0 {
                self.take(Delivery {
                    id,
                    message: Arc::new(message),
                    matches,
                });
            }
        }
        self.replay = match last {
            Some(last) if last < upto => Some((last, upto)),
            _ => None,
        };
        Ok(())
    }

    /// Send pending deliveries while fewer than `max_inflight` await acknowledgement.
    pub(super) fn send_pending(&mut self, max_inflight: usize) {
        let now_ms = unix_ms();
        while self.inflight.len() < max_inflight {
            let Some((delivery, retained_copy)) = self.pending.pop_front() else {
                break;
            };
            let props = delivery.message.mqtt.as_deref();
            // [MQTT-3.3.2-5] an expired message is not delivered; the rest of
            // the interval goes with it [MQTT-3.3.2-6].
            let remaining = match props.and_then(|p| p.expires_at_ms) {
                Some(at) if at <= now_ms => {
                    self.resend.remove(&delivery.id);
                    continue;
                }
                Some(at) => Some(u32::try_from((at - now_ms).div_ceil(1000)).unwrap_or(u32::MAX)),
                None => None,
            };
            // A wildcard subscription reaches only topics the user may subscribe to.
            if !super::auth::may_subscribe(&self.grant, &self.realm, &delivery.message.topic) {
                self.resend.remove(&delivery.id);
                continue;
            }
            let granted = delivery.matches.iter().map(|(_, q)| *q).max().unwrap_or(0);
            let qos =
                QoS::from_u8(granted.min(delivery.message.qos).min(2)).unwrap_or(QoS::AtMostOnce);
            // A message the last connection sent but never saw acknowledged goes
            // out again with its packet id and DUP set ([MQTT-4.4.0-1], [MQTT-3.3.1-1]).
            let resent = match retained_copy {
                false => self
                    .resend
                    .remove(&delivery.id)
                    .filter(|p| !self.inflight.contains_key(p)),
                true => None,
            };
            let pkid = match (qos, resent) {
                (QoS::AtMostOnce, _) => 0,
                (_, Some(pkid)) => pkid,
                (_, None) => self.allocate_pkid(),
            };
            let options: Vec<SubOptions> = delivery
                .matches
                .iter()
                .filter_map(|(id, _)| self.options_of(*id))
                .collect();
            // [MQTT-3.3.1-12], [MQTT-3.3.1-13] retain as published.
            let retain = retained_copy
                || (delivery.message.retain && options.iter().any(|o| o.retain_as_published));
            let mut properties = Properties::default();
            if self.v5 {
                if let Some(p) = props {
                    properties.payload_format_indicator = p.payload_format_indicator;
                    properties.message_expiry_interval = remaining;
                    properties.content_type = p.content_type.clone();
                    properties.response_topic = p.response_topic.clone();
                    properties.correlation_data = p.correlation_data.clone();
                    properties.user_properties = p.user_properties.clone();
                }
                // [MQTT-3.3.4-3] the identifiers of every matching subscription.
                properties.subscription_identifiers =
                    options.iter().filter_map(|o| o.sub_id).collect();
                properties.subscription_identifiers.sort_unstable();
                properties.subscription_identifiers.dedup();
                if self.shared.config.mqtt_ordo_id {
                    properties
                        .user_properties
                        .push(("ordo-id".to_owned(), delivery.id.0.to_string()));
                }
            }
            let mut publish = Publish {
                dup: resent.is_some() && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic: delivery.message.topic.clone(),
                pkid,
                properties,
                payload: delivery.message.payload.to_mqtt_bytes(),
            };
            if self.v5 {
                let packet = Packet::Publish(publish);
                // [MQTT-3.1.2-25] a packet over the client's maximum is discarded as if sent.
                let too_big = match (v5::encoded_len(&packet), self.client_max_packet) {
                    (Ok(len), Some(max)) => len > max,
                    (Ok(_), None) => false,
                    (Err(_), _) => true,
                };
                let Packet::Publish(p) = packet else { continue };
                publish = p;
                if too_big {
                    tracing::debug!(
                        id = delivery.id.0,
                        "delivery over the client's maximum packet size; dropped"
                    );
                    continue;
                }
                self.apply_topic_alias(&mut publish);
            }
            if qos != QoS::AtMostOnce {
                let id = (!retained_copy).then_some(delivery.id);
                self.inflight.insert(
                    pkid,
                    Inflight {
                        id,
                        released: false,
                    },
                );
            }
            let before = self.out.len();
            self.send(&Packet::Publish(publish));
            if self.out.len() == before {
                tracing::warn!(
                    id = delivery.id.0,
                    "message cannot be encoded for MQTT; skipped"
                );
                self.inflight.remove(&pkid);
            }
        }
    }

    /// Replace the topic by an alias the client already knows, or teach it a new one.
    fn apply_topic_alias(&mut self, publish: &mut Publish) {
        if self.client_alias_max == 0 {
            return;
        }
        if let Some(alias) = self.out_aliases.get(&publish.topic) {
            publish.properties.topic_alias = Some(*alias);
            publish.topic.clear();
            return;
        }
        let next = self.out_aliases.len() + 1;
        if let Ok(alias) = u16::try_from(next) {
            if alias <= self.client_alias_max {
                self.out_aliases.insert(publish.topic.clone(), alias);
                publish.properties.topic_alias = Some(alias);
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
}
