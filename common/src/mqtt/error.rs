//! Errors of [`decode`](super::decode) and [`encode`](super::encode).

/// Why bytes from a peer are not a valid MQTT 3.1.1 packet.
///
/// Every variant is fatal for the connection: MQTT has no way to skip a bad
/// packet, so the server closes the network connection (after a CONNACK 0x01
/// for [`DecodeError::UnsupportedProtocolLevel`], see [`DecodeError::connack_code`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The remaining length declared in the fixed header exceeds the caller's limit.
    #[error("packet remaining length {size} exceeds the limit of {max} bytes")]
    PacketTooLarge {
        /// Declared remaining length.
        size: usize,
        /// The caller's `max_packet_size`.
        max: usize,
    },
    /// The remaining length field runs past four bytes (section 2.2.3).
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// The packet type nibble is 0 or 15, both reserved (section 2.2.1).
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    /// The flags nibble is not the one required for the packet type [MQTT-2.2.2-2];
    /// carries the whole first byte.
    #[error("invalid fixed header flags in first byte {0:#04x}")]
    InvalidFixedHeaderFlags(u8),
    /// A QoS field holds 3 [MQTT-3.3.1-4], [MQTT-3.1.2-14], [MQTT-3-8.3-4].
    #[error("invalid qos {0}")]
    InvalidQoS(u8),
    /// A string is not well-formed UTF-8 [MQTT-1.5.3-1].
    #[error("string is not well-formed utf-8")]
    MalformedUtf8,
    /// A string contains U+0000 [MQTT-1.5.3-2].
    #[error("string contains the null character")]
    NullCharacter,
    /// The packet ended in the middle of the named field.
    #[error("packet truncated in {0}")]
    Truncated(&'static str),
    /// The packet breaks a structural rule, named by the message.
    #[error("malformed packet: {0}")]
    MalformedPacket(&'static str),
    /// CONNECT names a protocol other than "MQTT" or "MQIsdp" [MQTT-3.1.2-1].
    #[error("invalid protocol name")]
    InvalidProtocolName,
    /// CONNECT asks for a protocol level this codec does not speak [MQTT-3.1.2-2].
    ///
    /// The whole packet has been consumed; the server answers CONNACK 0x01 and closes.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// A packet that needs a packet identifier carries 0 [MQTT-2.3.1-1].
    #[error("packet identifier is zero")]
    ZeroPacketId,
    /// SUBSCRIBE or UNSUBSCRIBE has no topic filter, or SUBACK no return code
    /// [MQTT-3.8.3-3], [MQTT-3.10.3-2].
    #[error("no topic filter")]
    EmptySubscription,
    /// A PUBLISH or will topic is empty or has a wildcard [MQTT-3.3.2-2], [MQTT-4.7.3-1].
    #[error("invalid topic name")]
    InvalidTopicName,
    /// A topic filter is empty or misplaces a wildcard [MQTT-4.7.1-2], [MQTT-4.7.1-3].
    #[error("invalid topic filter")]
    InvalidTopicFilter,
    /// A reserved bit is set: CONNECT flags bit 0 [MQTT-3.1.2-3], SUBSCRIBE
    /// options bits 2-7 [MQTT-3-8.3-4], CONNACK acknowledge flags bits 1-7.
    #[error("reserved flag set")]
    ReservedFlagSet,
    /// Will QoS or will retain set without the will flag [MQTT-3.1.2-13], [MQTT-3.1.2-15].
    #[error("will qos or retain set without the will flag")]
    InvalidWillFlags,
    /// CONNECT has the password flag without the username flag [MQTT-3.1.2-22].
    #[error("password flag set without username flag")]
    PasswordWithoutUsername,
    /// A CONNACK or SUBACK return code is a reserved value [MQTT-3.9.3-2].
    #[error("invalid return code {0:#04x}")]
    InvalidReturnCode(u8),
    /// MQTT 5: a property that may appear once appears twice (section 2.2.2.2).
    #[error("duplicate property {0:#04x}")]
    DuplicateProperty(u8),
    /// MQTT 5: an unknown property identifier, or one the packet may not carry
    /// (section 2.2.2.2).
    #[error("property {id:#04x} not allowed in {packet}")]
    PropertyNotAllowed {
        /// The property identifier (0 if it does not fit a byte).
        id: u8,
        /// Where it appeared.
        packet: &'static str,
    },
    /// MQTT 5: a property has a value its definition forbids (0 for Receive
    /// Maximum or Topic Alias, 2 for a 0/1 flag, ...).
    #[error("invalid value for property {0:#04x}")]
    InvalidPropertyValue(u8),
    /// MQTT 5: a reason code the packet type does not define.
    #[error("invalid reason code {code:#04x} in {packet}")]
    InvalidReasonCode {
        /// The wire value.
        code: u8,
        /// The packet type.
        packet: &'static str,
    },
    /// MQTT 5: the packet is well formed but breaks a rule named by the message.
    #[error("protocol error: {0}")]
    ProtocolError(&'static str),
}

impl DecodeError {
    /// Return the CONNACK code to send before closing, if the protocol calls for one.
    ///
    /// Only [`DecodeError::UnsupportedProtocolLevel`] has one (0x01, [MQTT-3.1.2-2]);
    /// for every other error the server closes the connection without a CONNACK.
    pub fn connack_code(&self) -> Option<super::ConnectReturnCode> {
        match self {
            DecodeError::UnsupportedProtocolLevel(_) => {
                Some(super::ConnectReturnCode::UnacceptableProtocolVersion)
            }
            _ => None,
        }
    }

    /// Return the MQTT 5 reason code to send (in CONNACK or DISCONNECT) before closing.
    ///
    /// Section 4.13: a packet that cannot be parsed is a Malformed Packet
    /// (0x81); one that parses but breaks a rule is a Protocol Error (0x82).
    pub fn reason_code(&self) -> super::ReasonCode {
        use super::ReasonCode as R;
        match self {
            DecodeError::PacketTooLarge { .. } => R::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolLevel(_) => R::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidPropertyValue(_)
            | DecodeError::InvalidReasonCode { .. }
            | DecodeError::ProtocolError(_) => R::PROTOCOL_ERROR,
            _ => R::MALFORMED_PACKET,
        }
    }
}

/// Why a [`Packet`](super::Packet) cannot be encoded as a valid MQTT 3.1.1 packet.
///
/// The encoder refuses exactly what the decoder would reject, so anything it
/// writes decodes back to the same value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The remaining length would exceed 268,435,455 bytes.
    #[error("packet remaining length {0} exceeds 268435455 bytes")]
    PacketTooLarge(usize),
    /// A length-prefixed field is longer than 65,535 bytes.
    #[error("{field} is {len} bytes, more than 65535")]
    FieldTooLong {
        /// The field, e.g. "topic name".
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A string contains U+0000 [MQTT-1.5.3-2].
    #[error("{0} contains the null character")]
    NullCharacter(&'static str),
    /// A packet that needs a packet identifier has 0 [MQTT-2.3.1-1].
    #[error("packet identifier is zero")]
    ZeroPacketId,
    /// SUBSCRIBE, UNSUBSCRIBE or SUBACK has an empty list.
    #[error("empty filter or return code list")]
    EmptySubscription,
    /// A PUBLISH or will topic is empty or has a wildcard.
    #[error("invalid topic name")]
    InvalidTopicName,
    /// A topic filter is empty or misplaces a wildcard.
    #[error("invalid topic filter")]
    InvalidTopicFilter,
    /// CONNECT protocol level is neither 3 nor 4.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// CONNECT has a password but no username [MQTT-3.1.2-22].
    #[error("password without username")]
    PasswordWithoutUsername,
    /// The packet breaks another rule, named by the message.
    #[error("invalid packet: {0}")]
    InvalidPacket(&'static str),
    /// MQTT 5: a property the packet may not carry.
    #[error("property {id:#04x} not allowed in {packet}")]
    PropertyNotAllowed {
        /// The property identifier.
        id: u8,
        /// Where it was set.
        packet: &'static str,
    },
    /// MQTT 5: a property value its definition forbids.
    #[error("invalid value for property {0:#04x}")]
    InvalidPropertyValue(u8),
    /// MQTT 5: a reason code the packet type does not define.
    #[error("invalid reason code {code:#04x} for packet type {packet_type}")]
    InvalidReasonCode {
        /// The code.
        code: u8,
        /// The packet type number.
        packet_type: u8,
    },
}
