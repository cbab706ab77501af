//! MQTT 5 body parsers, behind the framing shared with 3.1.1.

use bytes::{Buf, BytesMut};

use super::packet::*;
use super::properties::{read_properties, Context, Properties};
use crate::mqtt::decode::{check_first_byte, parse_fixed_header_with, Reader};
use crate::mqtt::error::DecodeError;
use crate::mqtt::topic::{validate_topic_filter, validate_topic_name};
use crate::mqtt::{QoS, ReasonCode, PROTOCOL_LEVEL_3_1, PROTOCOL_LEVEL_3_1_1};

/// Decode one MQTT 5 packet from the front of `buf`, consuming its bytes.
///
/// Same contract as the 3.1.1 [`decode`](crate::mqtt::decode): `Ok(None)`
/// means more bytes are needed and leaves `buf` untouched; `max_packet_size`
/// bounds the remaining length before the body is buffered; fixed-header
/// errors leave `buf` untouched, body errors come after the packet was
/// consumed. A CONNECT of level 3 or 4 is read too (without properties), so
/// a server can decode the first packet with this function whatever the
/// client speaks. [`DecodeError::reason_code`] gives the reason code to
/// close with.
pub fn decode(buf: &mut BytesMut, max_packet_size: usize) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = parse_fixed_header_with(buf, max_packet_size, check_first_byte_v5)? else {
        return Ok(None);
    };
    let total = header.header_len + header.remaining_len;
    if buf.len() < total {
        return Ok(None);
    }
    let mut body = buf.split_to(total).freeze();
    body.advance(header.header_len);
    decode_body(header.first_byte, Reader { buf: body }).map(Some)
}

/// Return the protocol level of a CONNECT at the front of `buf`, if the bytes
/// up to it have arrived and name "MQTT" or "MQIsdp".
///
/// Lets a server answer a malformed level-5 CONNECT with a level-5 CONNACK.
pub fn peek_connect_level(buf: &[u8]) -> Option<u8> {
    if buf.first()? >> 4 != 1 {
        return None;
    }
    let len_bytes = buf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let body = buf.get(1 + len_bytes..)?;
    match body {
        [0, 4, b'M', b'Q', b'T', b'T', level, ..] => Some(*level),
        [0, 6, b'M', b'Q', b'I', b's', b'd', b'p', level, ..] => Some(*level),
        _ => None,
    }
}

/// The 3.1.1 first-byte rule plus AUTH (type 15, flags 0) [MQTT-2.1.3-1].
fn check_first_byte_v5(first: u8) -> Result<(), DecodeError> {
    match first {
        0xf0 => Ok(()),
        0xf1..=0xff => Err(DecodeError::InvalidFixedHeaderFlags(first)),
        _ => check_first_byte(first),
    }
}

fn decode_body(first: u8, mut r: Reader) -> Result<Packet, DecodeError> {
    let packet = match first >> 4 {
        1 => Packet::Connect(Box::new(connect(&mut r)?)),
        2 => Packet::ConnAck(connack(&mut r)?),
        3 => Packet::Publish(publish(first & 0x0f, &mut r)?),
        4 => Packet::PubAck(ack(4, &mut r)?),
        5 => Packet::PubRec(ack(5, &mut r)?),
        6 => Packet::PubRel(ack(6, &mut r)?),
        7 => Packet::PubComp(ack(7, &mut r)?),
        8 => Packet::Subscribe(subscribe(&mut r)?),
        9 => Packet::SubAck(suback(&mut r)?),
        10 => Packet::Unsubscribe(unsubscribe(&mut r)?),
        11 => Packet::UnsubAck(unsuback(&mut r)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(disconnect(14, &mut r)?),
        15 => Packet::Auth(disconnect(15, &mut r)?),
        other => return Err(DecodeError::UnknownPacketType(other)),
    };
    r.finish()?;
    Ok(packet)
}

fn packet_name(packet_type: u8) -> &'static str {
    match packet_type {
        2 => "CONNACK",
        4 => "PUBACK",
        5 => "PUBREC",
        6 => "PUBREL",
        7 => "PUBCOMP",
        9 => "SUBACK",
        11 => "UNSUBACK",
        14 => "DISCONNECT",
        _ => "AUTH",
    }
}

/// Read a reason code valid for `packet_type`.
fn reason(r: &mut Reader, packet_type: u8) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode(r.u8("reason code")?);
    if !code.valid_for(packet_type) {
        return Err(DecodeError::InvalidReasonCode {
            code: code.0,
            packet: packet_name(packet_type),
        });
    }
    Ok(code)
}

fn connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary("protocol name")?;
    let level = r.u8("protocol level")?;
    // [MQTT-3.1.2-1], [MQTT-3.1.2-2].
    match (&name[..], level) {
        (b"MQTT", PROTOCOL_LEVEL_5 | PROTOCOL_LEVEL_3_1_1) | (b"MQIsdp", PROTOCOL_LEVEL_3_1) => {}
        (b"MQTT" | b"MQIsdp", level) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
        _ => return Err(DecodeError::InvalidProtocolName),
    }
    let v5 = level == PROTOCOL_LEVEL_5;
    let flags = r.u8("connect flags")?;
    if flags & 0x01 != 0 {
        // [MQTT-3.1.2-3].
        return Err(DecodeError::ReservedFlagSet);
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos_bits = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos_bits != 0 || will_retain) {
        // [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15].
        return Err(DecodeError::InvalidWillFlags);
    }
    let will_qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::InvalidQoS(will_qos_bits))?;
    if !v5 && password_flag && !username_flag {
        // 3.1.1 [MQTT-3.1.2-22]; MQTT 5 allows a password alone.
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = if v5 {
        read_properties(r, Context::Connect)?
    } else {
        Properties::default()
    };
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        // Section 3.1.2.11.10.
        return Err(DecodeError::ProtocolError(
            "authentication data without authentication method",
        ));
    }
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let properties = if v5 {
            read_properties(r, Context::Will)?
        } else {
            Properties::default()
        };
        let topic = r.string("will topic")?;
        if !validate_topic_name(&topic) {
            return Err(DecodeError::InvalidTopicName);
        }
        let payload = r.binary("will payload")?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary("password")?)
    } else {
        None
    };
    Ok(Connect {
        protocol_level: level,
        client_id,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        properties,
        will,
        username,
        password,
    })
}

fn connack(r: &mut Reader) -> Result<ConnAck, DecodeError> {
    let flags = r.u8("connect acknowledge flags")?;
    if flags & 0xfe != 0 {
        // [MQTT-3.2.2-1].
        return Err(DecodeError::ReservedFlagSet);
    }
    let reason = reason(r, 2)?;
    let session_present = flags & 0x01 != 0;
    if session_present && reason.is_error() {
        // [MQTT-3.2.2-6].
        return Err(DecodeError::ProtocolError(
            "session present set in a refusing connack",
        ));
    }
    let properties = read_properties(r, Context::ConnAck)?;
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

fn publish(flags: u8, r: &mut Reader) -> Result<Publish, DecodeError> {
    let qos_bits = (flags >> 1) & 0b11;
    let qos = QoS::from_u8(qos_bits).ok_or(DecodeError::InvalidQoS(qos_bits))?;
    let topic = r.string("topic name")?;
    if !topic.is_empty() && !validate_topic_name(&topic) {
        // [MQTT-3.3.2-2].
        return Err(DecodeError::InvalidTopicName);
    }
    let pkid = if qos == QoS::AtMostOnce { 0 } else { r.pkid()? };
    let properties = read_properties(r, Context::Publish)?;
    if topic.is_empty() && properties.topic_alias.is_none() {
        // Section 3.3.2.1: an empty topic needs a topic alias.
        return Err(DecodeError::ProtocolError(
            "empty topic name without topic alias",
        ));
    }
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        pkid,
        properties,
        payload: r.rest(),
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: the reason code and properties may be
/// left out (sections 3.4.2.1, 3.4.2.2).
fn ack(packet_type: u8, r: &mut Reader) -> Result<Ack, DecodeError> {
    let pkid = r.pkid()?;
    let reason = if r.is_empty() {
        ReasonCode::SUCCESS
    } else {
        reason(r, packet_type)?
    };
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        read_properties(r, Context::Ack)?
    };
    Ok(Ack {
        pkid,
        reason,
        properties,
    })
}

/// Tell whether `filter` is a valid topic filter, including the shared form
/// `$share/{ShareName}/{filter}` [MQTT-4.8.2-1], [MQTT-4.8.2-2].
pub fn validate_filter_v5(filter: &str) -> bool {
    match split_shared(filter) {
        Some((group, inner)) => {
            !group.is_empty() && !group.contains(['/', '+', '#']) && validate_topic_filter(inner)
        }
        None => !filter.starts_with("$share/") && validate_topic_filter(filter),
    }
}

/// Split a shared subscription filter into its share name and topic filter;
/// `None` if `filter` does not start with `$share/` followed by a name and `/`.
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    rest.split_once('/')
}

fn subscribe(r: &mut Reader) -> Result<Subscribe, DecodeError> {
    let pkid = r.pkid()?;
    let properties = read_properties(r, Context::Subscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        if !validate_filter_v5(&filter) {
            return Err(DecodeError::InvalidTopicFilter);
        }
        let options = r.u8("subscription options")?;
        if options & 0xc0 != 0 {
            // [MQTT-3.8.3-5] bits 6 and 7 are reserved.
            return Err(DecodeError::ReservedFlagSet);
        }
        let qos = QoS::from_u8(options & 0b11).ok_or(DecodeError::InvalidQoS(options & 0b11))?;
        let no_local = options & 0x04 != 0;
        if no_local && split_shared(&filter).is_some() {
            // [MQTT-3.8.3-4].
            return Err(DecodeError::ProtocolError(
                "no local set on a shared subscription",
            ));
        }
        let retain_handling = match (options >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::ProtocolError("retain handling 3")),
        };
        filters.push((
            filter,
            SubscriptionOptions {
                qos,
                no_local,
                retain_as_published: options & 0x08 != 0,
                retain_handling,
            },
        ));
    }
    if filters.is_empty() {
        // [MQTT-3.8.3-2].
        return Err(DecodeError::EmptySubscription);
    }
    Ok(Subscribe {
        pkid,
        properties,
        filters,
    })
}

fn reason_list(r: &mut Reader, packet_type: u8) -> Result<Vec<ReasonCode>, DecodeError> {
    let mut reasons = Vec::new();
    while !r.is_empty() {
        reasons.push(reason(r, packet_type)?);
    }
    if reasons.is_empty() {
        return Err(DecodeError::EmptySubscription);
    }
    Ok(reasons)
}

fn suback(r: &mut Reader) -> Result<SubAck, DecodeError> {
    let pkid = r.pkid()?;
    let properties = read_properties(r, Context::SubAck)?;
    let reasons = reason_list(r, 9)?;
    Ok(SubAck {
        pkid,
        properties,
        reasons,
    })
}

fn unsubscribe(r: &mut Reader) -> Result<Unsubscribe, DecodeError> {
    let pkid = r.pkid()?;
    let properties = read_properties(r, Context::Unsubscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        if !validate_filter_v5(&filter) {
            return Err(DecodeError::InvalidTopicFilter);
        }
        filters.push(filter);
    }
    if filters.is_empty() {
        // [MQTT-3.10.3-2].
        return Err(DecodeError::EmptySubscription);
    }
    Ok(Unsubscribe {
        pkid,
        properties,
        filters,
    })
}

fn unsuback(r: &mut Reader) -> Result<UnsubAck, DecodeError> {
    let pkid = r.pkid()?;
    let properties = read_properties(r, Context::UnsubAck)?;
    let reasons = reason_list(r, 11)?;
    Ok(UnsubAck {
        pkid,
        properties,
        reasons,
    })
}

/// DISCONNECT or AUTH: remaining length 0 means success without properties
/// (sections 3.14.2.1, 3.15.2.1).
fn disconnect(packet_type: u8, r: &mut Reader) -> Result<Disconnect, DecodeError> {
    if r.is_empty() {
        return Ok(Disconnect::default());
    }
    let reason = reason(r, packet_type)?;
    let ctx = if packet_type == 14 {
        Context::Disconnect
    } else {
        Context::Auth
    };
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        read_properties(r, ctx)?
    };
    Ok(Disconnect { reason, properties })
}
