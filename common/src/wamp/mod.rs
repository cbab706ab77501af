//! WAMP v2 codec: the message set of the basic profile (plus CANCEL and
//! INTERRUPT) and the `wamp.2.json`, `wamp.2.msgpack` and `wamp.2.cbor` serializers.
//!
//! ```text
//!  bytes ──decode(ser)──▶ wire array (rmpv::Value) ──parse──▶ Message
//!  Message ──layout──▶ wire array (ValueRef / serde_json::Value) ──encode(ser)──▶ bytes
//! ```
//!
//! The serializers meet in one dynamic value type, [`Value`] (`rmpv::Value`):
//! JSON goes through [`value::from_json`] / [`value::to_json`], which apply
//! WAMP's `"\0" + base64` convention for binary; CBOR through `ciborium::Value`
//! (floats decode as `F64`, tags are unwrapped). The codec checks the message
//! shape (field count, types, ids in `[0, 2^53]`, URIs, the types of the
//! well-known options and details) and makes no routing decision.
//!
//! Untrusted input never panics: every problem is a [`DecodeError`], nesting is
//! limited to [`MAX_DEPTH`] before anything recursive runs, and
//! [`DecodeError::request_info`] tells the router when it may answer a bad
//! request with an ERROR instead of closing the session.
//!
//! Not supported yet: payload passthru mode (E2EE `enc_algo` / binary
//! payloads, rejected as [`DecodeError::PayloadPassthru`]) and the provisional
//! EVENT_RECEIVED (337), which decodes as [`DecodeError::UnknownCode`].

mod cbor;
mod encode;
mod error;
mod message;
mod options;
mod parse;
mod publication;
mod uri;
pub mod value;
mod wire;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use error::DecodeError;
pub use message::{code, Dict, Message};
pub use publication::{Control, FoxOptions, PublishOptions, Publisher, When, Will};
pub use rmpv::Value;
pub use uri::validate_uri;

/// The deepest nesting of arrays and maps a message may have; the message
/// array itself is level 1, so its arguments may nest 63 levels more.
pub const MAX_DEPTH: usize = 64;

/// A WAMP serializer, as negotiated in the WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Serializer {
    /// `wamp.2.json`: text frames, binary as `"\0" + base64` strings.
    Json,
    /// `wamp.2.msgpack`: binary frames.
    MsgPack,
    /// `wamp.2.cbor`: binary frames.
    Cbor,
}

impl Serializer {
    /// Map a WebSocket subprotocol name to a serializer; `None` for names not supported.
    pub fn from_subprotocol(name: &str) -> Option<Self> {
        match name {
            "wamp.2.json" => Some(Self::Json),
            "wamp.2.msgpack" => Some(Self::MsgPack),
            "wamp.2.cbor" => Some(Self::Cbor),
            _ => None,
        }
    }

    /// Return the WebSocket subprotocol name of this serializer.
    pub fn subprotocol(&self) -> &'static str {
        match self {
            Self::Json => "wamp.2.json",
            Self::MsgPack => "wamp.2.msgpack",
            Self::Cbor => "wamp.2.cbor",
        }
    }

    /// Tell whether messages travel in binary WebSocket frames (text frames otherwise).
    pub fn is_binary(&self) -> bool {
        matches!(self, Self::MsgPack | Self::Cbor)
    }
}

/// Decode one WAMP message from the bytes of one WebSocket frame.
///
/// The whole buffer must be exactly one message: trailing bytes are an error.
/// The caller bounds the frame size: decoded values take up to ~32 bytes per
/// input byte (a msgpack array of `nil`s), so cap frames at the transport.
/// On error, [`DecodeError::request_info`] says whether the router may answer
/// with an ERROR rather than close the session.
pub fn decode(ser: Serializer, bytes: &[u8]) -> Result<Message, DecodeError> {
    let items = match ser {
        Serializer::Json => wire::read_json(bytes)?,
        Serializer::MsgPack => wire::read_msgpack(bytes)?,
        Serializer::Cbor => wire::read_cbor(bytes)?,
    };
    parse::parse(items)
}

/// Encode a message for one WebSocket frame; never fails.
///
/// Empty `args` and `kwargs` are left off the wire (`args` is written as `[]`
/// when only `kwargs` is set). In JSON, binary values become `"\0" + base64`
/// strings and non-finite floats become `null`.
pub fn encode(ser: Serializer, msg: &Message) -> Vec<u8> {
    match ser {
        Serializer::Json => encode::to_json_bytes(msg),
        Serializer::MsgPack => encode::to_msgpack_bytes(msg),
        Serializer::Cbor => encode::to_cbor_bytes(msg),
    }
}

/// Turn a map value into a [`Dict`]; `None` if it is not a map or a key is not a UTF-8 string.
pub fn value_to_dict(value: Value) -> Option<Dict> {
    match value {
        Value::Map(entries) => entries
            .into_iter()
            .map(|(k, v)| match k {
                Value::String(s) => s.into_str().map(|s| (s, v)),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Turn a [`Dict`] into a map value, for nesting a dict inside details or arguments.
pub fn dict_to_value(dict: Dict) -> Value {
    Value::Map(dict.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
}
