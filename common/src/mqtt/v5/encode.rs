//! MQTT 5 encoding: check, size, then write (the same two passes as 3.1.1).

use bytes::{BufMut, BytesMut};

use super::decode::validate_filter_v5;
use super::packet::*;
use super::properties::{
    properties_len, put_var_int, var_int_len, with_len_prefix, write_properties, Context,
    Properties,
};
use crate::mqtt::error::EncodeError;
use crate::mqtt::topic::validate_topic_name;
use crate::mqtt::{
    QoS, ReasonCode, MAX_REMAINING_LENGTH, PROTOCOL_LEVEL_3_1, PROTOCOL_LEVEL_3_1_1,
};

/// Append the MQTT 5 encoding of `packet` to `buf`; return the bytes written.
///
/// Fail, leaving `buf` untouched, if the decoder would reject the result: a
/// property the packet type may not carry, a reason code it does not define,
/// a zero packet id, an empty topic without a topic alias, and so on. The
/// shortest form is written for acknowledgements, DISCONNECT and AUTH that
/// have no properties. A CONNECT of level 3 or 4 is written in its 3.1.1 form
/// and must then have no properties.
pub fn encode(packet: &Packet, buf: &mut BytesMut) -> Result<usize, EncodeError> {
    let mut sizes = Vec::with_capacity(2);
    let remaining = body_len(packet, &mut sizes)?;
    if remaining > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge(remaining));
    }
    let total = 1 + var_int_len(remaining) + remaining;
    buf.reserve(total);
    buf.put_u8(first_byte(packet));
    put_var_int(buf, remaining);
    write_body(packet, buf, &sizes);
    Ok(total)
}

/// Return the size `packet` would take on the wire, checking it like [`encode`].
pub fn encoded_len(packet: &Packet) -> Result<usize, EncodeError> {
    let remaining = body_len(packet, &mut Vec::new())?;
    Ok(1 + var_int_len(remaining) + remaining)
}

fn first_byte(packet: &Packet) -> u8 {
    let flags = match packet {
        Packet::Publish(p) => (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    (packet.packet_type() << 4) | flags
}

fn str_len(field: &'static str, s: &str) -> Result<usize, EncodeError> {
    if s.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong {
            field,
            len: s.len(),
        });
    }
    if s.contains('\0') {
        return Err(EncodeError::NullCharacter(field));
    }
    Ok(2 + s.len())
}

fn bin_len(field: &'static str, b: &[u8]) -> Result<usize, EncodeError> {
    if b.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong {
            field,
            len: b.len(),
        });
    }
    Ok(2 + b.len())
}

fn check_pkid(pkid: u16) -> Result<(), EncodeError> {
    if pkid == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    Ok(())
}

fn check_reason(code: ReasonCode, packet_type: u8) -> Result<(), EncodeError> {
    if !code.valid_for(packet_type) {
        return Err(EncodeError::InvalidReasonCode {
            code: code.0,
            packet_type,
        });
    }
    Ok(())
}

/// Size a property list and remember its inner length for [`write_body`].
fn props(p: &Properties, ctx: Context, sizes: &mut Vec<usize>) -> Result<usize, EncodeError> {
    let len = properties_len(p, ctx)?;
    sizes.push(len);
    Ok(with_len_prefix(len))
}

/// Check `packet` and return its remaining length; property list sizes are
/// pushed to `sizes` in the order [`write_body`] writes them.
fn body_len(packet: &Packet, sizes: &mut Vec<usize>) -> Result<usize, EncodeError> {
    Ok(match packet {
        Packet::Connect(c) => connect_len(c, sizes)?,
        Packet::ConnAck(a) => {
            check_reason(a.reason, 2)?;
            if a.session_present && a.reason.is_error() {
                return Err(EncodeError::InvalidPacket(
                    "session present set in a refusing connack",
                ));
            }
            2 + props(&a.properties, Context::ConnAck, sizes)?
        }
        Packet::Publish(p) => {
            if p.topic.is_empty() {
                if p.properties.topic_alias.is_none() {
                    return Err(EncodeError::InvalidTopicName);
                }
            } else if !validate_topic_name(&p.topic) {
                return Err(EncodeError::InvalidTopicName);
            }
            let mut len = str_len("topic name", &p.topic)?;
            if p.qos == QoS::AtMostOnce {
                if p.dup {
                    return Err(EncodeError::InvalidPacket("dup set at qos 0"));
                }
            } else {
                check_pkid(p.pkid)?;
                len += 2;
            }
            len += props(&p.properties, Context::Publish, sizes)?;
            len.saturating_add(p.payload.len())
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            check_pkid(a.pkid)?;
            check_reason(a.reason, packet.packet_type())?;
            if a.properties.is_empty() {
                if a.reason == ReasonCode::SUCCESS {
                    2
                } else {
                    3
                }
            } else {
                3 + props(&a.properties, Context::Ack, sizes)?
            }
        }
        Packet::Subscribe(s) => {
            check_pkid(s.pkid)?;
            if s.filters.is_empty() {
                return Err(EncodeError::EmptySubscription);
            }
            let mut len = 2 + props(&s.properties, Context::Subscribe, sizes)?;
            for (filter, options) in &s.filters {
                if !validate_filter_v5(filter) {
                    return Err(EncodeError::InvalidTopicFilter);
                }
                if options.no_local && super::decode::split_shared(filter).is_some() {
                    return Err(EncodeError::InvalidPacket(
                        "no local on a shared subscription",
                    ));
                }
                len = len.saturating_add(str_len("topic filter", filter)? + 1);
            }
            len
        }
        Packet::SubAck(s) => {
            check_pkid(s.pkid)?;
            if s.reasons.is_empty() {
                return Err(EncodeError::EmptySubscription);
            }
            for r in &s.reasons {
                check_reason(*r, 9)?;
            }
            2 + props(&s.properties, Context::SubAck, sizes)? + s.reasons.len()
        }
        Packet::Unsubscribe(u) => {
            check_pkid(u.pkid)?;
            if u.filters.is_empty() {
                return Err(EncodeError::EmptySubscription);
            }
            let mut len = 2 + props(&u.properties, Context::Unsubscribe, sizes)?;
            for filter in &u.filters {
                if !validate_filter_v5(filter) {
                    return Err(EncodeError::InvalidTopicFilter);
                }
                len = len.saturating_add(str_len("topic filter", filter)?);
            }
            len
        }
        Packet::UnsubAck(u) => {
            check_pkid(u.pkid)?;
            if u.reasons.is_empty() {
                return Err(EncodeError::EmptySubscription);
            }
            for r in &u.reasons {
                check_reason(*r, 11)?;
            }
            2 + props(&u.properties, Context::UnsubAck, sizes)? + u.reasons.len()
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) | Packet::Auth(d) => {
            let (ptype, ctx) = match packet {
                Packet::Disconnect(_) => (14, Context::Disconnect),
                _ => (15, Context::Auth),
            };
            check_reason(d.reason, ptype)?;
            if d.properties.is_empty() {
                usize::from(d.reason != ReasonCode::SUCCESS)
            } else {
                1 + props(&d.properties, ctx, sizes)?
            }
        }
    })
}

fn connect_len(c: &Connect, sizes: &mut Vec<usize>) -> Result<usize, EncodeError> {
    let v5 = c.protocol_level == PROTOCOL_LEVEL_5;
    let name = match c.protocol_level {
        PROTOCOL_LEVEL_5 | PROTOCOL_LEVEL_3_1_1 => "MQTT",
        PROTOCOL_LEVEL_3_1 => "MQIsdp",
        other => return Err(EncodeError::UnsupportedProtocolLevel(other)),
    };
    if !v5 {
        if c.password.is_some() && c.username.is_none() {
            return Err(EncodeError::PasswordWithoutUsername);
        }
        let will_props = c.will.as_ref().is_some_and(|w| !w.properties.is_empty());
        if !c.properties.is_empty() || will_props {
            return Err(EncodeError::InvalidPacket("properties before MQTT 5"));
        }
    }
    if c.properties.authentication_data.is_some() && c.properties.authentication_method.is_none() {
        return Err(EncodeError::InvalidPacket(
            "authentication data without authentication method",
        ));
    }
    let mut len = 2 + name.len() + 1 + 1 + 2;
    if v5 {
        len += props(&c.properties, Context::Connect, sizes)?;
    }
    len += str_len("client identifier", &c.client_id)?;
    if let Some(will) = &c.will {
        if v5 {
            len += props(&will.properties, Context::Will, sizes)?;
        }
        if !validate_topic_name(&will.topic) {
            return Err(EncodeError::InvalidTopicName);
        }
        len += str_len("will topic", &will.topic)?;
        len += bin_len("will payload", &will.payload)?;
    }
    if let Some(username) = &c.username {
        len += str_len("user name", username)?;
    }
    if let Some(password) = &c.password {
        len += bin_len("password", password)?;
    }
    Ok(len)
}

fn put_bytes(buf: &mut BytesMut, data: &[u8]) {
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    buf.put_u16(len);
    buf.put_slice(&data[..usize::from(len)]);
}

/// Write a packet that passed [`body_len`]; `sizes` are its property list sizes.
fn write_body(packet: &Packet, buf: &mut BytesMut, sizes: &[usize]) {
    let mut sizes = sizes.iter().copied();
    let mut write_props = |p: &Properties, buf: &mut BytesMut| {
        write_properties(p, buf, sizes.next().unwrap_or(0));
    };
    match packet {
        Packet::Connect(c) => {
            let v5 = c.protocol_level == PROTOCOL_LEVEL_5;
            let name: &[u8] = if c.protocol_level == PROTOCOL_LEVEL_3_1 {
                b"MQIsdp"
            } else {
                b"MQTT"
            };
            put_bytes(buf, name);
            buf.put_u8(c.protocol_level);
            let mut flags = 0u8;
            if c.clean_start {
                flags |= 0x02;
            }
            if let Some(will) = &c.will {
                flags |= 0x04 | ((will.qos as u8) << 3);
                if will.retain {
                    flags |= 0x20;
                }
            }
            if c.password.is_some() {
                flags |= 0x40;
            }
            if c.username.is_some() {
                flags |= 0x80;
            }
            buf.put_u8(flags);
            buf.put_u16(c.keep_alive);
            if v5 {
                write_props(&c.properties, buf);
            }
            put_bytes(buf, c.client_id.as_bytes());
            if let Some(will) = &c.will {
                if v5 {
                    write_props(&will.properties, buf);
                }
                put_bytes(buf, will.topic.as_bytes());
                put_bytes(buf, &will.payload);
            }
            if let Some(username) = &c.username {
                put_bytes(buf, username.as_bytes());
            }
            if let Some(password) = &c.password {
                put_bytes(buf, password);
            }
        }
        Packet::ConnAck(a) => {
            buf.put_u8(u8::from(a.session_present));
            buf.put_u8(a.reason.0);
            write_props(&a.properties, buf);
        }
        Packet::Publish(p) => {
            put_bytes(buf, p.topic.as_bytes());
            if p.qos != QoS::AtMostOnce {
                buf.put_u16(p.pkid);
            }
            write_props(&p.properties, buf);
            buf.put_slice(&p.payload);
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            buf.put_u16(a.pkid);
            if !a.properties.is_empty() {
                buf.put_u8(a.reason.0);
                write_props(&a.properties, buf);
            } else if a.reason != ReasonCode::SUCCESS {
                buf.put_u8(a.reason.0);
            }
        }
        Packet::Subscribe(s) => {
            buf.put_u16(s.pkid);
            write_props(&s.properties, buf);
            for (filter, o) in &s.filters {
                put_bytes(buf, filter.as_bytes());
                buf.put_u8(
                    (o.qos as u8)
                        | (u8::from(o.no_local) << 2)
                        | (u8::from(o.retain_as_published) << 3)
                        | ((o.retain_handling as u8) << 4),
                );
            }
        }
        Packet::SubAck(s) => {
            buf.put_u16(s.pkid);
            write_props(&s.properties, buf);
            for r in &s.reasons {
                buf.put_u8(r.0);
            }
        }
        Packet::Unsubscribe(u) => {
            buf.put_u16(u.pkid);
            write_props(&u.properties, buf);
            for filter in &u.filters {
                put_bytes(buf, filter.as_bytes());
            }
        }
        Packet::UnsubAck(u) => {
            buf.put_u16(u.pkid);
            write_props(&u.properties, buf);
            for r in &u.reasons {
                buf.put_u8(r.0);
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) | Packet::Auth(d) => {
            if !d.properties.is_empty() {
                buf.put_u8(d.reason.0);
                write_props(&d.properties, buf);
            } else if d.reason != ReasonCode::SUCCESS {
                buf.put_u8(d.reason.0);
            }
        }
    }
}
