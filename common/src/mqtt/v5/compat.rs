//! Conversions between 3.1.1 packets and MQTT 5 packets.
//!
//! A server can keep one state machine in MQTT 5 terms: 3.1.1 packets come in
//! through [`from_v3`] (no properties, success reason codes) and go out
//! through [`to_v3`], which drops what 3.1.1 cannot say.

use super::packet::*;
use super::properties::Properties;
use crate::mqtt::{self as v3, ConnectReturnCode, QoS, ReasonCode, SubAckCode};

/// Convert a 3.1.1 packet to its MQTT 5 equivalent.
///
/// A 3.1.1 CONNECT with clean session 0 keeps its session forever, so it gets
/// a Session Expiry Interval of 0xFFFFFFFF (section 3.1.2.11.2 of MQTT 5 maps
/// the two this way).
pub fn from_v3(packet: v3::Packet) -> Packet {
    let none = Properties::default;
    match packet {
        v3::Packet::Connect(c) => Packet::Connect(Box::new(Connect {
            protocol_level: c.protocol_level,
            client_id: c.client_id,
            clean_start: c.clean_session,
            keep_alive: c.keep_alive,
            properties: Properties::default(),
            will: c.will.map(|w| Will {
                topic: w.topic,
                payload: w.payload,
                qos: w.qos,
                retain: w.retain,
                properties: none(),
            }),
            username: c.username,
            password: c.password,
        })),
        v3::Packet::ConnAck(a) => Packet::ConnAck(ConnAck {
            session_present: a.session_present,
            reason: match a.code {
                ConnectReturnCode::Accepted => ReasonCode::SUCCESS,
                ConnectReturnCode::UnacceptableProtocolVersion => {
                    ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
                }
                ConnectReturnCode::IdentifierRejected => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                ConnectReturnCode::ServerUnavailable => ReasonCode::SERVER_UNAVAILABLE,
                ConnectReturnCode::BadUsernameOrPassword => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                ConnectReturnCode::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
            },
            properties: none(),
        }),
        v3::Packet::Publish(p) => Packet::Publish(Publish {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: p.topic,
            pkid: p.pkid,
            properties: none(),
            payload: p.payload,
        }),
        v3::Packet::PubAck(id) => Packet::PubAck(Ack::success(id)),
        v3::Packet::PubRec(id) => Packet::PubRec(Ack::success(id)),
        v3::Packet::PubRel(id) => Packet::PubRel(Ack::success(id)),
        v3::Packet::PubComp(id) => Packet::PubComp(Ack::success(id)),
        v3::Packet::Subscribe(s) => Packet::Subscribe(Subscribe {
            pkid: s.pkid,
            properties: none(),
            filters: s
                .filters
                .into_iter()
                .map(|(f, q)| (f, SubscriptionOptions::qos(q)))
                .collect(),
        }),
        v3::Packet::SubAck(s) => Packet::SubAck(SubAck {
            pkid: s.pkid,
            properties: none(),
            reasons: s
                .codes
                .into_iter()
                .map(|c| match c {
                    SubAckCode::Granted(q) => ReasonCode(q as u8),
                    SubAckCode::Failure => ReasonCode::UNSPECIFIED_ERROR,
                })
                .collect(),
        }),
        v3::Packet::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            pkid: u.pkid,
            properties: none(),
            filters: u.filters,
        }),
        v3::Packet::UnsubAck(id) => Packet::UnsubAck(UnsubAck {
            pkid: id,
            properties: none(),
            reasons: vec![ReasonCode::SUCCESS],
        }),
        v3::Packet::PingReq => Packet::PingReq,
        v3::Packet::PingResp => Packet::PingResp,
        v3::Packet::Disconnect => Packet::Disconnect(Disconnect::default()),
    }
}

/// Convert an MQTT 5 packet to the 3.1.1 packet a 3.1.1 peer gets, dropping
/// properties; `None` for what 3.1.1 cannot carry (AUTH, a DISCONNECT from a
/// server, a PUBLISH with only a topic alias): the caller then sends nothing.
///
/// Failure reason codes become SUBACK 0x80, or the nearest CONNACK return
/// code (3, server unavailable, when none is near).
pub fn to_v3(packet: &Packet) -> Option<v3::Packet> {
    Some(match packet {
        Packet::Connect(c) => v3::Packet::Connect(v3::Connect {
            protocol_level: c.protocol_level,
            client_id: c.client_id.clone(),
            clean_session: c.clean_start,
            keep_alive: c.keep_alive,
            will: c.will.as_ref().map(|w| v3::Will {
                topic: w.topic.clone(),
                payload: w.payload.clone(),
                qos: w.qos,
                retain: w.retain,
            }),
            username: c.username.clone(),
            password: c.password.clone(),
        }),
        Packet::ConnAck(a) => v3::Packet::ConnAck(v3::ConnAck {
            session_present: a.session_present,
            code: match a.reason {
                ReasonCode::SUCCESS => ConnectReturnCode::Accepted,
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => {
                    ConnectReturnCode::UnacceptableProtocolVersion
                }
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => ConnectReturnCode::IdentifierRejected,
                ReasonCode::BAD_USER_NAME_OR_PASSWORD => ConnectReturnCode::BadUsernameOrPassword,
                ReasonCode::NOT_AUTHORIZED => ConnectReturnCode::NotAuthorized,
                _ => ConnectReturnCode::ServerUnavailable,
            },
        }),
        Packet::Publish(p) if p.topic.is_empty() => return None,
        Packet::Publish(p) => v3::Packet::Publish(v3::Publish {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: p.topic.clone(),
            pkid: p.pkid,
            payload: p.payload.clone(),
        }),
        Packet::PubAck(a) => v3::Packet::PubAck(a.pkid),
        Packet::PubRec(a) => v3::Packet::PubRec(a.pkid),
        Packet::PubRel(a) => v3::Packet::PubRel(a.pkid),
        Packet::PubComp(a) => v3::Packet::PubComp(a.pkid),
        Packet::Subscribe(s) => v3::Packet::Subscribe(v3::Subscribe {
            pkid: s.pkid,
            filters: s.filters.iter().map(|(f, o)| (f.clone(), o.qos)).collect(),
        }),
        Packet::SubAck(s) => v3::Packet::SubAck(v3::SubAck {
            pkid: s.pkid,
            codes: s
                .reasons
                .iter()
                .map(|r| match QoS::from_u8(r.0) {
                    Some(q) => SubAckCode::Granted(q),
                    None => SubAckCode::Failure,
                })
                .collect(),
        }),
        Packet::Unsubscribe(u) => v3::Packet::Unsubscribe(v3::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters.clone(),
        }),
        Packet::UnsubAck(u) => v3::Packet::UnsubAck(u.pkid),
        Packet::PingReq => v3::Packet::PingReq,
        Packet::PingResp => v3::Packet::PingResp,
        Packet::Disconnect(_) | Packet::Auth(_) => return None,
    })
}
