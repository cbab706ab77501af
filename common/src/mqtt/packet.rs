//! MQTT control packets as plain values, one struct per packet with a body.

use bytes::Bytes;

/// Delivery guarantee of a message or a subscription (MQTT 3.1.1 section 4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// Fire and forget: delivered at most once, never acknowledged.
    AtMostOnce = 0,
    /// Acknowledged with PUBACK: delivered at least once.
    AtLeastOnce = 1,
    /// Four-step PUBREC/PUBREL/PUBCOMP handshake: delivered exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// Convert a wire value (0, 1 or 2) to a QoS; return `None` for anything else.
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// CONNECT: the first packet a client sends on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level byte: 4 for MQTT 3.1.1 (name "MQTT"), 3 for MQTT 3.1 (name "MQIsdp").
    pub protocol_level: u8,
    /// Client identifier; may be empty; the server decides whether to accept it.
    pub client_id: String,
    /// Discard any previous session and start a new one.
    pub clean_session: bool,
    /// Keep-alive interval in seconds; 0 turns the mechanism off.
    pub keep_alive: u16,
    /// Message the server publishes if the connection ends without DISCONNECT.
    pub will: Option<Will>,
    /// User name, if the username flag was set.
    pub username: Option<String>,
    /// Password (binary data), if the password flag was set; requires `username`.
    pub password: Option<Bytes>,
}

/// Will message carried in CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    /// Topic name to publish the will on (no wildcards).
    pub topic: String,
    /// Application message.
    pub payload: Bytes,
    /// QoS to publish the will with.
    pub qos: QoS,
    /// Publish the will as a retained message.
    pub retain: bool,
}

/// Return code of a CONNACK (MQTT 3.1.1 table 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConnectReturnCode {
    /// Connection accepted.
    Accepted = 0,
    /// The server does not support the protocol level the client asked for.
    UnacceptableProtocolVersion = 1,
    /// The client identifier is well-formed UTF-8 but not allowed by the server.
    IdentifierRejected = 2,
    /// The network connection is up but the MQTT service is not.
    ServerUnavailable = 3,
    /// The user name or password is malformed.
    BadUsernameOrPassword = 4,
    /// The client is not authorized to connect.
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// Convert a wire value (0 to 5) to a return code; return `None` for a reserved value.
    pub fn from_u8(value: u8) -> Option<ConnectReturnCode> {
        match value {
            0 => Some(ConnectReturnCode::Accepted),
            1 => Some(ConnectReturnCode::UnacceptableProtocolVersion),
            2 => Some(ConnectReturnCode::IdentifierRejected),
            3 => Some(ConnectReturnCode::ServerUnavailable),
            4 => Some(ConnectReturnCode::BadUsernameOrPassword),
            5 => Some(ConnectReturnCode::NotAuthorized),
            _ => None,
        }
    }
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnAck {
    /// The server resumed a stored session; must be false unless `code` is `Accepted`.
    pub session_present: bool,
    /// Outcome of the connection attempt.
    pub code: ConnectReturnCode,
}

/// PUBLISH: an application message, in either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// This is a redelivery of an earlier attempt; always false at QoS 0.
    pub dup: bool,
    /// Delivery guarantee of this transmission.
    pub qos: QoS,
    /// Retain flag: store (client to server) or was stored (server to client).
    pub retain: bool,
    /// Topic name (no wildcards, not empty).
    pub topic: String,
    /// Packet identifier; 0 at QoS 0 (not on the wire), nonzero otherwise.
    pub pkid: u16,
    /// Application message.
    pub payload: Bytes,
}

/// SUBSCRIBE: a client asks for one or more topic filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier (nonzero), echoed by the SUBACK.
    pub pkid: u16,
    /// Topic filters with the maximum QoS requested for each; never empty.
    pub filters: Vec<(String, QoS)>,
}

/// Outcome of one filter of a SUBSCRIBE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubAckCode {
    /// Subscribed with this maximum QoS (wire values 0x00, 0x01, 0x02).
    Granted(QoS),
    /// Subscription refused (wire value 0x80).
    Failure,
}

impl SubAckCode {
    /// Convert a wire value to a return code; return `None` for a reserved value.
    pub fn from_u8(value: u8) -> Option<SubAckCode> {
        match value {
            0x80 => Some(SubAckCode::Failure),
            v => QoS::from_u8(v).map(SubAckCode::Granted),
        }
    }

    /// Return the wire value of this code.
    pub fn to_u8(self) -> u8 {
        match self {
            SubAckCode::Granted(qos) => qos as u8,
            SubAckCode::Failure => 0x80,
        }
    }
}

/// SUBACK: the server's answer to SUBSCRIBE, one code per filter in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE being answered.
    pub pkid: u16,
    /// One return code per requested filter; never empty.
    pub codes: Vec<SubAckCode>,
}

/// UNSUBSCRIBE: a client drops one or more topic filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier (nonzero), echoed by the UNSUBACK.
    pub pkid: u16,
    /// Topic filters to remove; never empty.
    pub filters: Vec<String>,
}

/// Any MQTT 3.1.1 control packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// Client asks to open a session.
    Connect(Connect),
    /// Server answers CONNECT.
    ConnAck(ConnAck),
    /// Application message.
    Publish(Publish),
    /// Acknowledge a QoS 1 PUBLISH with this packet id.
    PubAck(u16),
    /// First answer to a QoS 2 PUBLISH with this packet id.
    PubRec(u16),
    /// Release a QoS 2 message with this packet id (answers PUBREC).
    PubRel(u16),
    /// Complete a QoS 2 exchange with this packet id (answers PUBREL).
    PubComp(u16),
    /// Client asks for topic filters.
    Subscribe(Subscribe),
    /// Server answers SUBSCRIBE.
    SubAck(SubAck),
    /// Client drops topic filters.
    Unsubscribe(Unsubscribe),
    /// Server answers the UNSUBSCRIBE with this packet id.
    UnsubAck(u16),
    /// Client keep-alive probe.
    PingReq,
    /// Server answers PINGREQ.
    PingResp,
    /// Client closes the connection cleanly (the will is discarded).
    Disconnect,
}

impl Packet {
    /// Return the packet type number of the fixed header (1 = CONNECT ... 14 = DISCONNECT).
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Connect(_) => CONNECT,
            Packet::ConnAck(_) => CONNACK,
            Packet::Publish(_) => PUBLISH,
            Packet::PubAck(_) => PUBACK,
            Packet::PubRec(_) => PUBREC,
            Packet::PubRel(_) => PUBREL,
            Packet::PubComp(_) => PUBCOMP,
            Packet::Subscribe(_) => SUBSCRIBE,
            Packet::SubAck(_) => SUBACK,
            Packet::Unsubscribe(_) => UNSUBSCRIBE,
            Packet::UnsubAck(_) => UNSUBACK,
            Packet::PingReq => PINGREQ,
            Packet::PingResp => PINGRESP,
            Packet::Disconnect => DISCONNECT,
        }
    }
}

// Packet type numbers (high nibble of the first fixed-header byte), section 2.2.1.
pub(crate) const CONNECT: u8 = 1;
pub(crate) const CONNACK: u8 = 2;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const PUBACK: u8 = 4;
pub(crate) const PUBREC: u8 = 5;
pub(crate) const PUBREL: u8 = 6;
pub(crate) const PUBCOMP: u8 = 7;
pub(crate) const SUBSCRIBE: u8 = 8;
pub(crate) const SUBACK: u8 = 9;
pub(crate) const UNSUBSCRIBE: u8 = 10;
pub(crate) const UNSUBACK: u8 = 11;
pub(crate) const PINGREQ: u8 = 12;
pub(crate) const PINGRESP: u8 = 13;
pub(crate) const DISCONNECT: u8 = 14;

/// Largest value the remaining-length field can carry (four bytes of 7 bits).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Protocol level of MQTT 3.1.1 (protocol name "MQTT").
pub const PROTOCOL_LEVEL_3_1_1: u8 = 4;

/// Protocol level of MQTT 3.1 (protocol name "MQIsdp").
pub const PROTOCOL_LEVEL_3_1: u8 = 3;
