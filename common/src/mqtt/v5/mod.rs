//! Server-side MQTT 5 codec (protocol level 5), beside the 3.1.1 one.
//!
//! Same framing and the same sans-IO contract as the 3.1.1 codec in the
//! parent module; the body parsers add properties (section 2.2.2), reason
//! codes (section 2.4) and the MQTT 5 forms of every packet, including AUTH.
//! A connection picks its codec once, from the protocol level of its CONNECT:
//!
//! ```text
//!  first bytes ──v5::decode──> Connect { protocol_level, .. }
//!      level 5  ──> v5::decode / v5::encode for the rest of the connection
//!      level 3/4 ──> mqtt::decode / mqtt::encode, via compat::{from_v3, to_v3}
//! ```
//!
//! Strict: a property not allowed on the packet type, an unknown property,
//! or a variable byte integer not in its shortest form is malformed; a
//! duplicate property, a forbidden property value or reason code, retain
//! handling 3, no local on a shared subscription is a protocol error.
//! [`DecodeError::reason_code`](crate::mqtt::DecodeError::reason_code) maps
//! each error to the reason code (0x81, 0x82, 0x84, 0x95) to close with.
//!
//! ```
//! use bytes::BytesMut;
//! use ordo_common::mqtt::v5::{decode, encode, Ack, Packet};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut buf = BytesMut::new();
//! encode(&Packet::PubAck(Ack::success(7)), &mut buf)?;
//! assert_eq!(&buf[..], &[0x40, 0x02, 0x00, 0x07]); // short form
//! assert_eq!(decode(&mut buf, 1024)?, Some(Packet::PubAck(Ack::success(7))));
//! # Ok(())
//! # }
//! ```

pub mod compat;
mod decode;
mod encode;
mod packet;
mod properties;

#[cfg(test)]
mod tests;

pub use decode::{decode, peek_connect_level, split_shared, validate_filter_v5};
pub use encode::{encode, encoded_len};
pub use packet::{
    Ack, ConnAck, Connect, Disconnect, Packet, Publish, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe, Will, PROTOCOL_LEVEL_5,
};
pub use properties::{Properties, MAX_VAR_INT};
