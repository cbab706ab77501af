//! Server-side MQTT 3.1.1 codec (protocol level 4, and level 3 "MQIsdp" for 3.1),
//! and the MQTT 5 codec in [`v5`].
//!
//! Sans-IO: [`decode`] frames one packet off the front of a [`bytes::BytesMut`]
//! the caller fills from its socket, [`encode`] appends a packet to one. Both
//! directions are supported for every packet type, so the same codec serves
//! the router (decodes client packets) and the test and bench clients.
//!
//! ```text
//!  socket bytes ──> BytesMut ──decode──> Packet ──> session logic
//!  session logic ──> Packet ──encode──> BytesMut ──> socket
//! ```
//!
//! Every byte is untrusted: the decoder never panics, checks the declared
//! remaining length against the caller's limit before buffering a body, and
//! enforces the normative statements of the specification a server must
//! (cited as `[MQTT-x.y.z-n]` next to each check). Any [`DecodeError`] means
//! "close this connection"; [`DecodeError::connack_code`] says when a CONNACK
//! must be sent first.
//!
//! ```
//! use bytes::BytesMut;
//! use ordo_common::mqtt::{decode, encode, Packet};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut read_buf = BytesMut::from(&[0xc0, 0x00, 0xe0][..]); // PINGREQ, half a DISCONNECT
//! let mut write_buf = BytesMut::new();
//! while let Some(packet) = decode(&mut read_buf, 64 * 1024)? {
//!     if packet == Packet::PingReq {
//!         encode(&Packet::PingResp, &mut write_buf)?;
//!     }
//! }
//! assert_eq!(&read_buf[..], &[0xe0]); // kept until the rest arrives
//! assert_eq!(&write_buf[..], &[0xd0, 0x00]);
//! # Ok(())
//! # }
//! ```
//!
//! Versions: framing (fixed header, remaining length) lives apart from the
//! 3.1.1 body parsers in `decode.rs`; MQTT 5 has its own body parsers in
//! [`v5`], selected by the level negotiated in CONNECT. This module's
//! [`decode`] and [`encode`] are the 3.1.1 codec and refuse level 5.

mod decode;
mod encode;
mod error;
mod packet;
mod reason;
mod topic;
pub mod v5;

#[cfg(test)]
mod tests;

pub use decode::decode;
pub use encode::encode;
pub use error::{DecodeError, EncodeError};
pub use packet::{
    ConnAck, Connect, ConnectReturnCode, Packet, Publish, QoS, SubAck, SubAckCode, Subscribe,
    Unsubscribe, Will, MAX_REMAINING_LENGTH, PROTOCOL_LEVEL_3_1, PROTOCOL_LEVEL_3_1_1,
};
pub use reason::ReasonCode;
pub use topic::{validate_topic_filter, validate_topic_name};
