//! Packet encoding: check a packet, then append its bytes.
//!
//! Encoding is two passes: [`body_len`] checks every rule the decoder enforces
//! and computes the remaining length, then [`write_body`] writes without
//! further checks. Nothing is appended unless the first pass succeeds.

use bytes::{BufMut, BytesMut};

use super::error::EncodeError;
use super::packet::*;
use super::topic::{validate_topic_filter, validate_topic_name};

/// Append the encoding of `packet` to `buf`.
///
/// Fail, leaving `buf` untouched, if the packet is one the decoder would
/// reject (a zero packet id, a wildcard in a PUBLISH topic, a string with
/// U+0000, ...) or cannot be represented (a string over 65,535 bytes, a
/// remaining length over 268,435,455). The QoS 0 `pkid` of a PUBLISH is ignored.
pub fn encode(packet: &Packet, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let remaining = body_len(packet)?;
    if remaining > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge(remaining));
    }
    buf.reserve(1 + remaining_len_size(remaining) + remaining);
    buf.put_u8(first_byte(packet));
    put_remaining_len(buf, remaining);
    write_body(packet, buf);
    Ok(())
}

/// Return the first fixed-header byte: type in the high nibble, flags in the low one.
fn first_byte(packet: &Packet) -> u8 {
    let flags = match packet {
        Packet::Publish(p) => (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain),
        // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1].
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    (packet.packet_type() << 4) | flags
}

/// Return the number of bytes the remaining length `len` takes (1 to 4).
fn remaining_len_size(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Append `len` (at most [`MAX_REMAINING_LENGTH`]) in the variable-length
/// encoding of section 2.2.3.
fn put_remaining_len(buf: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// Return the protocol name that goes with a supported protocol level.
fn protocol_name(level: u8) -> Result<&'static str, EncodeError> {
    match level {
        PROTOCOL_LEVEL_3_1_1 => Ok("MQTT"),
        PROTOCOL_LEVEL_3_1 => Ok("MQIsdp"),
        other => Err(EncodeError::UnsupportedProtocolLevel(other)),
    }
}

/// Check a length-prefixed field and return its encoded size.
fn field_len(field: &'static str, len: usize) -> Result<usize, EncodeError> {
    if len > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong { field, len });
    }
    Ok(2 + len)
}

/// Check a UTF-8 string field [MQTT-1.5.3-2] and return its encoded size.
fn str_len(field: &'static str, s: &str) -> Result<usize, EncodeError> {
    let size = field_len(field, s.len())?;
    if s.contains('\0') {
        return Err(EncodeError::NullCharacter(field));
    }
    Ok(size)
}

/// Check and size a topic name.
fn topic_name_len(field: &'static str, topic: &str) -> Result<usize, EncodeError> {
    let size = str_len(field, topic)?;
    if !validate_topic_name(topic) {
        return Err(EncodeError::InvalidTopicName);
    }
    Ok(size)
}

/// Check and size a topic filter.
fn topic_filter_len(filter: &str) -> Result<usize, EncodeError> {
    let size = str_len("topic filter", filter)?;
    if !validate_topic_filter(filter) {
        return Err(EncodeError::InvalidTopicFilter);
    }
    Ok(size)
}

/// Check a packet identifier [MQTT-2.3.1-1].
fn check_pkid(pkid: u16) -> Result<(), EncodeError> {
    if pkid == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    Ok(())
}

/// Check every rule of `packet` and return its remaining length.
fn body_len(packet: &Packet) -> Result<usize, EncodeError> {
    Ok(match packet {
        Packet::Connect(c) => connect_len(c)?,
        Packet::ConnAck(a) => {
            if a.session_present && a.code != ConnectReturnCode::Accepted {
                // [MQTT-3.2.2-4].
                return Err(EncodeError::InvalidPacket(
                    "session present set in a refusing connack",
                ));
            }
            2
        }
        Packet::Publish(p) => {
            let mut len = topic_name_len("topic name", &p.topic)?;
            if p.qos == QoS::AtMostOnce {
                if p.dup {
                    // [MQTT-3.3.1-2].
                    return Err(EncodeError::InvalidPacket("dup set at qos 0"));
                }
            } else {
                check_pkid(p.pkid)?;
                len += 2;
            }
            len.saturating_add(p.payload.len())
        }
        Packet::PubAck(id)
        | Packet::PubRec(id)
        | Packet::PubRel(id)
        | Packet::PubComp(id)
        | Packet::UnsubAck(id) => {
            check_pkid(*id)?;
            2
        }
        Packet::Subscribe(s) => {
            check_pkid(s.pkid)?;
            if s.filters.is_empty() {
                return Err(EncodeError::EmptySubscription);
            }
            let mut len = 2usize;
            for (filter, _) in &s.filters {
                len = len.saturating_add(topic_filter_len(filter)? + 1);
            }
            len
        }
        Packet::SubAck(s) => {
            check_pkid(s.pkid)?;
            if s.codes.is_empty() {
                return Err(EncodeError::EmptySubscription);
            }
            s.codes.len().saturating_add(2)
        }
        Packet::Unsubscribe(u) => {
            check_pkid(u.pkid)?;
            if u.filters.is_empty() {
                return Err(EncodeError::EmptySubscription);
            }
            let mut len = 2usize;
            for filter in &u.filters {
                len = len.saturating_add(topic_filter_len(filter)?);
            }
            len
        }
        Packet::PingReq | Packet::PingResp | Packet::Disconnect => 0,
    })
}

/// Check a CONNECT and return its remaining length.
fn connect_len(c: &Connect) -> Result<usize, EncodeError> {
    let name = protocol_name(c.protocol_level)?;
    if c.password.is_some() && c.username.is_none() {
        // [MQTT-3.1.2-22].
        return Err(EncodeError::PasswordWithoutUsername);
    }
    // Name, level, flags, keep alive.
    let mut len = 2 + name.len() + 1 + 1 + 2;
    len += str_len("client identifier", &c.client_id)?;
    if let Some(will) = &c.will {
        len += topic_name_len("will topic", &will.topic)?;
        len += field_len("will message", will.payload.len())?;
    }
    if let Some(username) = &c.username {
        len += str_len("user name", username)?;
    }
    if let Some(password) = &c.password {
        len += field_len("password", password.len())?;
    }
    Ok(len)
}

/// Append the variable header and payload of a packet that passed [`body_len`].
fn write_body(packet: &Packet, buf: &mut BytesMut) {
    match packet {
        Packet::Connect(c) => write_connect(c, buf),
        Packet::ConnAck(a) => {
            buf.put_u8(u8::from(a.session_present));
            buf.put_u8(a.code as u8);
        }
        Packet::Publish(p) => {
            put_str(buf, &p.topic);
            if p.qos != QoS::AtMostOnce {
                buf.put_u16(p.pkid);
            }
            buf.put_slice(&p.payload);
        }
        Packet::PubAck(id)
        | Packet::PubRec(id)
        | Packet::PubRel(id)
        | Packet::PubComp(id)
        | Packet::UnsubAck(id) => buf.put_u16(*id),
        Packet::Subscribe(s) => {
            buf.put_u16(s.pkid);
            for (filter, qos) in &s.filters {
                put_str(buf, filter);
                buf.put_u8(*qos as u8);
            }
        }
        Packet::SubAck(s) => {
            buf.put_u16(s.pkid);
            for code in &s.codes {
                buf.put_u8(code.to_u8());
            }
        }
        Packet::Unsubscribe(u) => {
            buf.put_u16(u.pkid);
            for filter in &u.filters {
                put_str(buf, filter);
            }
        }
        Packet::PingReq | Packet::PingResp | Packet::Disconnect => {}
    }
}

/// Append a CONNECT body that passed [`connect_len`].
fn write_connect(c: &Connect, buf: &mut BytesMut) {
    // `connect_len` already refused an unknown level.
    let name = protocol_name(c.protocol_level).unwrap_or("MQTT");
    put_str(buf, name);
    buf.put_u8(c.protocol_level);
    let mut flags = 0u8;
    if c.clean_session {
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
    put_str(buf, &c.client_id);
    if let Some(will) = &c.will {
        put_str(buf, &will.topic);
        put_bytes(buf, &will.payload);
    }
    if let Some(username) = &c.username {
        put_str(buf, username);
    }
    if let Some(password) = &c.password {
        put_bytes(buf, password);
    }
}

/// Append a length-prefixed string whose length was checked by [`str_len`].
fn put_str(buf: &mut BytesMut, s: &str) {
    put_bytes(buf, s.as_bytes());
}

/// Append length-prefixed binary data whose length was checked by [`field_len`].
fn put_bytes(buf: &mut BytesMut, data: &[u8]) {
    // Never truncates: the length was checked before anything was written.
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    buf.put_u16(len);
    buf.put_slice(&data[..usize::from(len)]);
}
