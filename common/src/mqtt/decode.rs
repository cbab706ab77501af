//! Packet decoding: frame one packet off a byte buffer, then parse its body.
//!
//! Framing (fixed header and remaining length) is the same in every MQTT
//! version; only the body parsers below it are 3.1.1 specific.

use bytes::{Buf, Bytes, BytesMut};

use super::error::DecodeError;
use super::packet::*;
use super::topic::{validate_topic_filter, validate_topic_name};

/// Decode one packet from the front of `buf`, consuming its bytes.
///
/// Call it after each read from the socket, in a loop until it returns
/// `Ok(None)`, which means more bytes are needed; `buf` is then untouched.
/// `max_packet_size` bounds the remaining length (the bytes after the fixed
/// header): a larger declaration fails with [`DecodeError::PacketTooLarge`] as
/// soon as the fixed header is readable, before the body is buffered.
///
/// On error the connection must be closed. Errors found in the fixed header
/// leave `buf` untouched; errors found in the body come after the whole packet
/// has been consumed (so the server can still answer
/// [`DecodeError::UnsupportedProtocolLevel`] with a CONNACK). The payload of a
/// PUBLISH shares `buf`'s memory instead of being copied.
pub fn decode(buf: &mut BytesMut, max_packet_size: usize) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = parse_fixed_header(buf, max_packet_size)? else {
        return Ok(None);
    };
    let total = header.header_len + header.remaining_len;
    if buf.len() < total {
        return Ok(None);
    }
    let mut body = buf.split_to(total).freeze();
    body.advance(header.header_len);
    decode_body(header.first_byte, body).map(Some)
}

/// The fixed header of a packet: first byte and remaining length (section 2.2).
pub(crate) struct FixedHeader {
    pub(crate) first_byte: u8,
    /// Bytes taken by the fixed header itself (2 to 5).
    pub(crate) header_len: usize,
    pub(crate) remaining_len: usize,
}

/// Parse the fixed header at the front of `buf` without consuming it.
///
/// Return `Ok(None)` if `buf` ends inside the header.
fn parse_fixed_header(buf: &[u8], max: usize) -> Result<Option<FixedHeader>, DecodeError> {
    parse_fixed_header_with(buf, max, check_first_byte)
}

/// [`parse_fixed_header`] with the first-byte rule of a protocol version.
pub(crate) fn parse_fixed_header_with(
    buf: &[u8],
    max: usize,
    check: fn(u8) -> Result<(), DecodeError>,
) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first_byte) = buf.first() else {
        return Ok(None);
    };
    check(first_byte)?;
    // Up to four bytes of 7 bits each, least significant first (section 2.2.3).
    let mut remaining_len = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining_len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if remaining_len > max {
                return Err(DecodeError::PacketTooLarge {
                    size: remaining_len,
                    max,
                });
            }
            return Ok(Some(FixedHeader {
                first_byte,
                header_len: 2 + i,
                remaining_len,
            }));
        }
    }
    Err(DecodeError::MalformedRemainingLength)
}

/// Check the packet type and the flags nibble of a first byte [MQTT-2.2.2-2].
pub(crate) fn check_first_byte(first: u8) -> Result<(), DecodeError> {
    let flags = first & 0x0f;
    match first >> 4 {
        PUBLISH => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                // [MQTT-3.3.1-4] both QoS bits set is malformed.
                return Err(DecodeError::InvalidQoS(qos));
            }
            if qos == 0 && flags & 0b1000 != 0 {
                // [MQTT-3.3.1-2] DUP must be 0 for QoS 0 messages.
                return Err(DecodeError::InvalidFixedHeaderFlags(first));
            }
            Ok(())
        }
        // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]: flags must be 0010.
        PUBREL | SUBSCRIBE | UNSUBSCRIBE if flags == 0b0010 => Ok(()),
        CONNECT | CONNACK | PUBACK | PUBREC | PUBCOMP | SUBACK | UNSUBACK | PINGREQ | PINGRESP
        | DISCONNECT
            if flags == 0 =>
        {
            Ok(())
        }
        CONNECT..=DISCONNECT => Err(DecodeError::InvalidFixedHeaderFlags(first)),
        other => Err(DecodeError::UnknownPacketType(other)),
    }
}

/// Parse the variable header and payload of a packet whose first byte passed
/// [`check_first_byte`].
fn decode_body(first: u8, body: Bytes) -> Result<Packet, DecodeError> {
    let mut r = Reader { buf: body };
    let packet = match first >> 4 {
        CONNECT => Packet::Connect(connect(&mut r)?),
        CONNACK => Packet::ConnAck(connack(&mut r)?),
        PUBLISH => Packet::Publish(publish(first & 0x0f, &mut r)?),
        PUBACK => Packet::PubAck(r.pkid()?),
        PUBREC => Packet::PubRec(r.pkid()?),
        PUBREL => Packet::PubRel(r.pkid()?),
        PUBCOMP => Packet::PubComp(r.pkid()?),
        SUBSCRIBE => Packet::Subscribe(subscribe(&mut r)?),
        SUBACK => Packet::SubAck(suback(&mut r)?),
        UNSUBSCRIBE => Packet::Unsubscribe(unsubscribe(&mut r)?),
        UNSUBACK => Packet::UnsubAck(r.pkid()?),
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => Packet::Disconnect,
        other => return Err(DecodeError::UnknownPacketType(other)),
    };
    r.finish()?;
    Ok(packet)
}

/// Parse CONNECT (section 3.1).
fn connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary("protocol name")?;
    let protocol_level = r.u8("protocol level")?;
    // [MQTT-3.1.2-1] protocol name; [MQTT-3.1.2-2] level checked before
    // anything else, so a newer client's CONNECT still gets CONNACK 0x01.
    match (&name[..], protocol_level) {
        (b"MQTT", PROTOCOL_LEVEL_3_1_1) | (b"MQIsdp", PROTOCOL_LEVEL_3_1) => {}
        (b"MQTT" | b"MQIsdp", level) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
        _ => return Err(DecodeError::InvalidProtocolName),
    }

    let flags = r.u8("connect flags")?;
    if flags & 0x01 != 0 {
        // [MQTT-3.1.2-3] reserved flag must be 0.
        return Err(DecodeError::ReservedFlagSet);
    }
    let clean_session = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos_bits = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos_bits != 0 || will_retain) {
        // [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15].
        return Err(DecodeError::InvalidWillFlags);
    }
    // [MQTT-3.1.2-14] will QoS 3 is malformed.
    let will_qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::InvalidQoS(will_qos_bits))?;
    if password_flag && !username_flag {
        // [MQTT-3.1.2-22].
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16("keep alive")?;

    // Payload order is fixed [MQTT-3.1.3-1]; a field whose flag is set must be
    // present [MQTT-3.1.2-9], [MQTT-3.1.2-19], [MQTT-3.1.2-21].
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let topic = r.string("will topic")?;
        if !validate_topic_name(&topic) {
            return Err(DecodeError::InvalidTopicName);
        }
        let payload = r.binary("will message")?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
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
        protocol_level,
        client_id,
        clean_session,
        keep_alive,
        will,
        username,
        password,
    })
}

/// Parse CONNACK (section 3.2).
fn connack(r: &mut Reader) -> Result<ConnAck, DecodeError> {
    let flags = r.u8("connect acknowledge flags")?;
    if flags & 0xfe != 0 {
        // Section 3.2.2.1: bits 7-1 are reserved and set to 0.
        return Err(DecodeError::ReservedFlagSet);
    }
    let raw = r.u8("connect return code")?;
    let code = ConnectReturnCode::from_u8(raw).ok_or(DecodeError::InvalidReturnCode(raw))?;
    let session_present = flags & 0x01 != 0;
    if session_present && code != ConnectReturnCode::Accepted {
        // [MQTT-3.2.2-4].
        return Err(DecodeError::MalformedPacket(
            "session present set in a refusing connack",
        ));
    }
    Ok(ConnAck {
        session_present,
        code,
    })
}

/// Parse PUBLISH (section 3.3); `flags` passed [`check_first_byte`].
fn publish(flags: u8, r: &mut Reader) -> Result<Publish, DecodeError> {
    let qos_bits = (flags >> 1) & 0b11;
    let qos = QoS::from_u8(qos_bits).ok_or(DecodeError::InvalidQoS(qos_bits))?;
    let topic = r.string("topic name")?;
    if !validate_topic_name(&topic) {
        // [MQTT-3.3.2-2] no wildcards; [MQTT-4.7.3-1] not empty.
        return Err(DecodeError::InvalidTopicName);
    }
    // [MQTT-2.3.1-1] a packet id only at QoS 1 and 2, and nonzero.
    let pkid = if qos == QoS::AtMostOnce { 0 } else { r.pkid()? };
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        pkid,
        payload: r.rest(),
    })
}

/// Parse SUBSCRIBE (section 3.8).
fn subscribe(r: &mut Reader) -> Result<Subscribe, DecodeError> {
    let pkid = r.pkid()?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        if !validate_topic_filter(&filter) {
            return Err(DecodeError::InvalidTopicFilter);
        }
        let options = r.u8("requested qos")?;
        if options & 0xfc != 0 {
            // [MQTT-3-8.3-4] upper six bits reserved.
            return Err(DecodeError::ReservedFlagSet);
        }
        let qos = QoS::from_u8(options).ok_or(DecodeError::InvalidQoS(options))?;
        filters.push((filter, qos));
    }
    if filters.is_empty() {
        // [MQTT-3.8.3-3].
        return Err(DecodeError::EmptySubscription);
    }
    Ok(Subscribe { pkid, filters })
}

/// Parse SUBACK (section 3.9).
fn suback(r: &mut Reader) -> Result<SubAck, DecodeError> {
    let pkid = r.pkid()?;
    let mut codes = Vec::new();
    while !r.is_empty() {
        let raw = r.u8("return code")?;
        // [MQTT-3.9.3-2] only 0x00, 0x01, 0x02 and 0x80 are allowed.
        codes.push(SubAckCode::from_u8(raw).ok_or(DecodeError::InvalidReturnCode(raw))?);
    }
    if codes.is_empty() {
        // One code per filter [MQTT-3.8.4-5], and a SUBSCRIBE has at least one.
        return Err(DecodeError::EmptySubscription);
    }
    Ok(SubAck { pkid, codes })
}

/// Parse UNSUBSCRIBE (section 3.10).
fn unsubscribe(r: &mut Reader) -> Result<Unsubscribe, DecodeError> {
    let pkid = r.pkid()?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        if !validate_topic_filter(&filter) {
            return Err(DecodeError::InvalidTopicFilter);
        }
        filters.push(filter);
    }
    if filters.is_empty() {
        // [MQTT-3.10.3-2].
        return Err(DecodeError::EmptySubscription);
    }
    Ok(Unsubscribe { pkid, filters })
}

/// Cursor over a packet body that reports a short read as [`DecodeError::Truncated`].
pub(crate) struct Reader {
    pub(crate) buf: Bytes,
}

impl Reader {
    /// Split off the next `len` bytes as a reader of their own.
    pub(crate) fn take(&mut self, len: usize, field: &'static str) -> Result<Reader, DecodeError> {
        if self.buf.len() < len {
            return Err(DecodeError::Truncated(field));
        }
        Ok(Reader {
            buf: self.buf.split_to(len),
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(DecodeError::Truncated(field));
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(DecodeError::Truncated(field));
        }
        Ok(self.buf.get_u16())
    }

    /// Read a packet identifier, which must be nonzero [MQTT-2.3.1-1].
    pub(crate) fn pkid(&mut self) -> Result<u16, DecodeError> {
        match self.u16("packet identifier")? {
            0 => Err(DecodeError::ZeroPacketId),
            id => Ok(id),
        }
    }

    /// Read two-byte-length-prefixed binary data (section 1.5.3), without copying.
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16(field)?);
        if self.buf.len() < len {
            return Err(DecodeError::Truncated(field));
        }
        Ok(self.buf.split_to(len))
    }

    /// Read a UTF-8 string (section 1.5.3): well-formed [MQTT-1.5.3-1], no
    /// U+0000 [MQTT-1.5.3-2]. A BOM is kept as is [MQTT-1.5.3-3].
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let raw = self.binary(field)?;
        let text = std::str::from_utf8(&raw).map_err(|_| DecodeError::MalformedUtf8)?;
        if text.contains('\0') {
            return Err(DecodeError::NullCharacter);
        }
        Ok(text.to_owned())
    }

    /// Take every remaining byte (a PUBLISH payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Fail if bytes are left after the last field of the packet.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::MalformedPacket(
                "bytes left after the last field",
            ))
        }
    }
}
