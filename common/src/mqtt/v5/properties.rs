//! MQTT 5 properties (section 2.2.2): one struct for every packet type, with
//! the table of which property each packet may carry.

use bytes::{BufMut, Bytes, BytesMut};

use crate::mqtt::decode::Reader;
use crate::mqtt::error::{DecodeError, EncodeError};
use crate::mqtt::topic::validate_topic_name;

/// Largest value of a variable byte integer (section 1.5.5).
pub const MAX_VAR_INT: u32 = 268_435_455;

/// The properties of one packet (or of a will). Absent properties are `None`
/// or empty; a property that may appear more than once is a `Vec`, in wire order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Properties {
    /// 0x01: 0 = unspecified bytes, 1 = UTF-8.
    pub payload_format_indicator: Option<u8>,
    /// 0x02: seconds until the message expires.
    pub message_expiry_interval: Option<u32>,
    /// 0x03.
    pub content_type: Option<String>,
    /// 0x08.
    pub response_topic: Option<String>,
    /// 0x09.
    pub correlation_data: Option<Bytes>,
    /// 0x0B: once on SUBSCRIBE, any number of times on PUBLISH (1 to 268,435,455).
    pub subscription_identifiers: Vec<u32>,
    /// 0x11: seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12.
    pub assigned_client_identifier: Option<String>,
    /// 0x13: seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15.
    pub authentication_method: Option<String>,
    /// 0x16.
    pub authentication_data: Option<Bytes>,
    /// 0x17: 0 or 1.
    pub request_problem_information: Option<u8>,
    /// 0x18: seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19: 0 or 1.
    pub request_response_information: Option<u8>,
    /// 0x1A.
    pub response_information: Option<String>,
    /// 0x1C.
    pub server_reference: Option<String>,
    /// 0x1F.
    pub reason_string: Option<String>,
    /// 0x21: nonzero.
    pub receive_maximum: Option<u16>,
    /// 0x22.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23: nonzero.
    pub topic_alias: Option<u16>,
    /// 0x24: 0 or 1.
    pub maximum_qos: Option<u8>,
    /// 0x25: 0 or 1.
    pub retain_available: Option<u8>,
    /// 0x26: name/value pairs, order kept.
    pub user_properties: Vec<(String, String)>,
    /// 0x27: nonzero.
    pub maximum_packet_size: Option<u32>,
    /// 0x28: 0 or 1.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29: 0 or 1.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A: 0 or 1.
    pub shared_subscription_available: Option<u8>,
}

/// Where a property list sits: a packet type, or the will properties of CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// CONNECT variable header.
    Connect,
    /// CONNACK.
    ConnAck,
    /// PUBLISH.
    Publish,
    /// Will properties in the CONNECT payload.
    Will,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK.
    SubAck,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// UNSUBACK.
    UnsubAck,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

impl Context {
    fn name(self) -> &'static str {
        match self {
            Context::Connect => "CONNECT",
            Context::ConnAck => "CONNACK",
            Context::Publish => "PUBLISH",
            Context::Will => "will properties",
            Context::Ack => "PUBACK/PUBREC/PUBREL/PUBCOMP",
            Context::Subscribe => "SUBSCRIBE",
            Context::SubAck => "SUBACK",
            Context::Unsubscribe => "UNSUBSCRIBE",
            Context::UnsubAck => "UNSUBACK",
            Context::Disconnect => "DISCONNECT",
            Context::Auth => "AUTH",
        }
    }
}

/// Tell whether property `id` may appear in `ctx` (table of section 2.2.2.2).
fn allowed(id: u8, ctx: Context) -> bool {
    use Context::*;
    match id {
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 => matches!(ctx, Publish | Will),
        0x0b => matches!(ctx, Publish | Subscribe),
        0x11 => matches!(ctx, Connect | ConnAck | Disconnect),
        0x12 | 0x13 | 0x1a | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => ctx == ConnAck,
        0x15 | 0x16 => matches!(ctx, Connect | ConnAck | Auth),
        0x17 | 0x19 => ctx == Connect,
        0x18 => ctx == Will,
        0x1c => matches!(ctx, ConnAck | Disconnect),
        0x1f => !matches!(ctx, Connect | Publish | Will | Subscribe | Unsubscribe),
        0x21 | 0x22 | 0x27 => matches!(ctx, Connect | ConnAck),
        0x23 => ctx == Publish,
        0x26 => true,
        _ => false,
    }
}

/// One property value, borrowed, for sizing and writing.
enum Value<'a> {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(&'a str),
    Bin(&'a [u8]),
    Pair(&'a str, &'a str),
}

impl Properties {
    /// Tell whether no property is set.
    pub fn is_empty(&self) -> bool {
        let mut empty = true;
        self.for_each(|_, _| empty = false);
        empty
    }

    /// Call `f` with every present property, in identifier order.
    fn for_each<'a>(&'a self, mut f: impl FnMut(u8, Value<'a>)) {
        let byte = |f: &mut dyn FnMut(u8, Value<'a>), id, v: Option<u8>| {
            if let Some(v) = v {
                f(id, Value::Byte(v));
            }
        };
        let u32v = |f: &mut dyn FnMut(u8, Value<'a>), id, v: Option<u32>| {
            if let Some(v) = v {
                f(id, Value::U32(v));
            }
        };
        let u16v = |f: &mut dyn FnMut(u8, Value<'a>), id, v: Option<u16>| {
            if let Some(v) = v {
                f(id, Value::U16(v));
            }
        };
        let strv = |f: &mut dyn FnMut(u8, Value<'a>), id, v: &'a Option<String>| {
            if let Some(v) = v {
                f(id, Value::Str(v));
            }
        };
        let binv = |f: &mut dyn FnMut(u8, Value<'a>), id, v: &'a Option<Bytes>| {
            if let Some(v) = v {
                f(id, Value::Bin(v));
            }
        };
        let f: &mut dyn FnMut(u8, Value<'a>) = &mut f;
        byte(f, 0x01, self.payload_format_indicator);
        u32v(f, 0x02, self.message_expiry_interval);
        strv(f, 0x03, &self.content_type);
        strv(f, 0x08, &self.response_topic);
        binv(f, 0x09, &self.correlation_data);
        for id in &self.subscription_identifiers {
            f(0x0b, Value::VarInt(*id));
        }
        u32v(f, 0x11, self.session_expiry_interval);
        strv(f, 0x12, &self.assigned_client_identifier);
        u16v(f, 0x13, self.server_keep_alive);
        strv(f, 0x15, &self.authentication_method);
        binv(f, 0x16, &self.authentication_data);
        byte(f, 0x17, self.request_problem_information);
        u32v(f, 0x18, self.will_delay_interval);
        byte(f, 0x19, self.request_response_information);
        strv(f, 0x1a, &self.response_information);
        strv(f, 0x1c, &self.server_reference);
        strv(f, 0x1f, &self.reason_string);
        u16v(f, 0x21, self.receive_maximum);
        u16v(f, 0x22, self.topic_alias_maximum);
        u16v(f, 0x23, self.topic_alias);
        byte(f, 0x24, self.maximum_qos);
        byte(f, 0x25, self.retain_available);
        for (k, v) in &self.user_properties {
            f(0x26, Value::Pair(k, v));
        }
        u32v(f, 0x27, self.maximum_packet_size);
        byte(f, 0x28, self.wildcard_subscription_available);
        byte(f, 0x29, self.subscription_identifier_available);
        byte(f, 0x2a, self.shared_subscription_available);
    }
}

/// Return the number of bytes `value` takes as a variable byte integer.
pub(crate) fn var_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Append a variable byte integer (at most [`MAX_VAR_INT`]).
pub(crate) fn put_var_int(buf: &mut BytesMut, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Check a string for the encoder and return its encoded size.
fn str_size(field: &'static str, s: &str) -> Result<usize, EncodeError> {
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

/// Check the properties for `ctx` and return their size, without the
/// property length field (see [`with_len_prefix`]).
pub(crate) fn properties_len(p: &Properties, ctx: Context) -> Result<usize, EncodeError> {
    let mut len = 0usize;
    let mut err = None;
    let mut seen_sub_id = false;
    p.for_each(|id, value| {
        if err.is_some() {
            return;
        }
        if !allowed(id, ctx) {
            err = Some(EncodeError::PropertyNotAllowed {
                id,
                packet: ctx.name(),
            });
            return;
        }
        if id == 0x0b && ctx == Context::Subscribe && std::mem::replace(&mut seen_sub_id, true) {
            err = Some(EncodeError::InvalidPacket(
                "more than one subscription identifier on SUBSCRIBE",
            ));
            return;
        }
        if let Err(e) = check_value(id, &value) {
            err = Some(e);
            return;
        }
        let size = match value {
            Value::Byte(_) => Ok(1),
            Value::U16(_) => Ok(2),
            Value::U32(_) => Ok(4),
            Value::VarInt(v) => Ok(var_int_len(v as usize)),
            Value::Str(s) => str_size("property", s),
            Value::Bin(b) if b.len() > usize::from(u16::MAX) => Err(EncodeError::FieldTooLong {
                field: "binary property",
                len: b.len(),
            }),
            Value::Bin(b) => Ok(2 + b.len()),
            Value::Pair(k, v) => str_size("user property", k)
                .and_then(|a| str_size("user property", v).map(|b| a + b)),
        };
        match size {
            Ok(size) => len = len.saturating_add(1 + size),
            Err(e) => err = Some(e),
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    if len > MAX_VAR_INT as usize {
        return Err(EncodeError::PacketTooLarge(len));
    }
    Ok(len)
}

/// Return the size of a property list of `len` bytes with its length field.
pub(crate) fn with_len_prefix(len: usize) -> usize {
    var_int_len(len) + len
}

/// The value rules the decoder enforces, for the encoder.
fn check_value(id: u8, value: &Value<'_>) -> Result<(), EncodeError> {
    let ok = match (id, value) {
        (0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a, Value::Byte(b)) => *b <= 1,
        (0x21 | 0x23, Value::U16(v)) => *v != 0,
        (0x27, Value::U32(v)) => *v != 0,
        (0x0b, Value::VarInt(v)) => (1..=MAX_VAR_INT).contains(v),
        (0x08, Value::Str(s)) => validate_topic_name(s),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(EncodeError::InvalidPropertyValue(id))
    }
}

/// Append properties that passed [`properties_len`] (which returned `len`),
/// with their length prefix.
pub(crate) fn write_properties(p: &Properties, buf: &mut BytesMut, len: usize) {
    put_var_int(buf, len);
    p.for_each(|id, value| {
        buf.put_u8(id);
        match value {
            Value::Byte(b) => buf.put_u8(b),
            Value::U16(v) => buf.put_u16(v),
            Value::U32(v) => buf.put_u32(v),
            Value::VarInt(v) => put_var_int(buf, v as usize),
            Value::Str(s) => put_prefixed(buf, s.as_bytes()),
            Value::Bin(b) => put_prefixed(buf, b),
            Value::Pair(k, v) => {
                put_prefixed(buf, k.as_bytes());
                put_prefixed(buf, v.as_bytes());
            }
        }
    });
}

fn put_prefixed(buf: &mut BytesMut, data: &[u8]) {
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    buf.put_u16(len);
    buf.put_slice(&data[..usize::from(len)]);
}

impl Reader {
    /// Read a variable byte integer in its shortest form [MQTT-1.5.5-1].
    pub(crate) fn var_int(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..4 {
            let byte = self.u8(field)?;
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(DecodeError::MalformedPacket(
                        "variable byte integer not in its shortest form",
                    ));
                }
                return Ok(value);
            }
        }
        Err(DecodeError::MalformedPacket(
            "variable byte integer longer than four bytes",
        ))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let hi = self.u16(field)?;
        let lo = self.u16(field)?;
        Ok((u32::from(hi) << 16) | u32::from(lo))
    }
}

/// Store `value` in `slot`, failing if the property was already seen.
fn once<T>(slot: &mut Option<T>, id: u8, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        // Section 2.2.2.2: a property that may appear once, twice, is a Protocol Error.
        return Err(DecodeError::DuplicateProperty(id));
    }
    *slot = Some(value);
    Ok(())
}

/// Read a one-byte property that must be 0 or 1.
fn flag(r: &mut Reader, id: u8) -> Result<u8, DecodeError> {
    match r.u8("property")? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::InvalidPropertyValue(id)),
    }
}

fn nonzero_u16(r: &mut Reader, id: u8) -> Result<u16, DecodeError> {
    match r.u16("property")? {
        0 => Err(DecodeError::InvalidPropertyValue(id)),
        v => Ok(v),
    }
}

/// Read a property length and the properties after it, checking each
/// identifier against `ctx` and each value against its rule.
pub(crate) fn read_properties(r: &mut Reader, ctx: Context) -> Result<Properties, DecodeError> {
    let len = r.var_int("property length")? as usize;
    let mut r = r.take(len, "properties")?;
    let mut p = Properties::default();
    while !r.is_empty() {
        let id32 = r.var_int("property identifier")?;
        let id = u8::try_from(id32).unwrap_or(0);
        if !allowed(id, ctx) {
            // Section 2.2.2.2: an identifier not valid for the packet is malformed.
            return Err(DecodeError::PropertyNotAllowed {
                id,
                packet: ctx.name(),
            });
        }
        match id {
            0x01 => once(&mut p.payload_format_indicator, id, flag(&mut r, id)?)?,
            0x02 => once(&mut p.message_expiry_interval, id, r.u32("property")?)?,
            0x03 => once(&mut p.content_type, id, r.string("content type")?)?,
            0x08 => {
                let topic = r.string("response topic")?;
                if !validate_topic_name(&topic) {
                    // [MQTT-3.3.2-14] the response topic is a topic name.
                    return Err(DecodeError::InvalidPropertyValue(id));
                }
                once(&mut p.response_topic, id, topic)?
            }
            0x09 => once(&mut p.correlation_data, id, r.binary("correlation data")?)?,
            0x0b => {
                let v = r.var_int("subscription identifier")?;
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue(id));
                }
                if ctx == Context::Subscribe && !p.subscription_identifiers.is_empty() {
                    return Err(DecodeError::DuplicateProperty(id));
                }
                p.subscription_identifiers.push(v);
            }
            0x11 => once(&mut p.session_expiry_interval, id, r.u32("property")?)?,
            0x12 => once(
                &mut p.assigned_client_identifier,
                id,
                r.string("assigned client identifier")?,
            )?,
            0x13 => once(&mut p.server_keep_alive, id, r.u16("property")?)?,
            0x15 => once(
                &mut p.authentication_method,
                id,
                r.string("authentication method")?,
            )?,
            0x16 => once(
                &mut p.authentication_data,
                id,
                r.binary("authentication data")?,
            )?,
            0x17 => once(&mut p.request_problem_information, id, flag(&mut r, id)?)?,
            0x18 => once(&mut p.will_delay_interval, id, r.u32("property")?)?,
            0x19 => once(&mut p.request_response_information, id, flag(&mut r, id)?)?,
            0x1a => once(
                &mut p.response_information,
                id,
                r.string("response information")?,
            )?,
            0x1c => once(&mut p.server_reference, id, r.string("server reference")?)?,
            0x1f => once(&mut p.reason_string, id, r.string("reason string")?)?,
            0x21 => once(&mut p.receive_maximum, id, nonzero_u16(&mut r, id)?)?,
            0x22 => once(&mut p.topic_alias_maximum, id, r.u16("property")?)?,
            0x23 => once(&mut p.topic_alias, id, nonzero_u16(&mut r, id)?)?,
            0x24 => once(&mut p.maximum_qos, id, flag(&mut r, id)?)?,
            0x25 => once(&mut p.retain_available, id, flag(&mut r, id)?)?,
            0x26 => {
                let k = r.string("user property")?;
                let v = r.string("user property")?;
                p.user_properties.push((k, v));
            }
            0x27 => {
                let v = r.u32("property")?;
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue(id));
                }
                once(&mut p.maximum_packet_size, id, v)?
            }
            0x28 => once(
                &mut p.wildcard_subscription_available,
                id,
                flag(&mut r, id)?,
            )?,
            0x29 => once(
                &mut p.subscription_identifier_available,
                id,
                flag(&mut r, id)?,
            )?,
            0x2a => once(&mut p.shared_subscription_available, id, flag(&mut r, id)?)?,
            _ => {
                return Err(DecodeError::PropertyNotAllowed {
                    id,
                    packet: ctx.name(),
                })
            }
        }
    }
    Ok(p)
}
