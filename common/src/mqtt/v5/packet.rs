//! MQTT 5 control packets as plain values.

use bytes::Bytes;

use super::properties::Properties;
use crate::mqtt::{QoS, ReasonCode};

/// CONNECT, any protocol level.
///
/// The MQTT 5 decoder also reads a 3.1.1 (level 4) or 3.1 (level 3) CONNECT,
/// so a server can read the first packet once and pick the codec for the rest
/// of the connection from [`Connect::protocol_level`]. At levels 3 and 4 the
/// properties are always empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// 5 for MQTT 5, 4 for 3.1.1, 3 for 3.1.
    pub protocol_level: u8,
    /// Client identifier; may be empty (the server then assigns one).
    pub client_id: String,
    /// Clean Start (MQTT 5) or Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep-alive interval in seconds; 0 turns the mechanism off.
    pub keep_alive: u16,
    /// CONNECT properties (section 3.1.2.11).
    pub properties: Properties,
    /// Will message, if the will flag was set.
    pub will: Option<Will>,
    /// User name, if the username flag was set.
    pub username: Option<String>,
    /// Password, if the password flag was set (MQTT 5 allows it without a user name).
    pub password: Option<Bytes>,
}

/// Will message of a CONNECT, with its will properties (section 3.1.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    /// Topic to publish the will on.
    pub topic: String,
    /// Application message.
    pub payload: Bytes,
    /// QoS of the will.
    pub qos: QoS,
    /// Publish the will as retained.
    pub retain: bool,
    /// Will properties (delay interval, message expiry, content type, ...).
    pub properties: Properties,
}

/// CONNACK (section 3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnAck {
    /// The server resumed a stored session; false unless the reason is success.
    pub session_present: bool,
    /// Outcome of the connection attempt.
    pub reason: ReasonCode,
    /// CONNACK properties.
    pub properties: Properties,
}

/// PUBLISH (section 3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// Redelivery of an earlier attempt; false at QoS 0.
    pub dup: bool,
    /// Delivery guarantee.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name; empty only when `properties.topic_alias` is set.
    pub topic: String,
    /// Packet identifier; 0 at QoS 0.
    pub pkid: u16,
    /// PUBLISH properties.
    pub properties: Properties,
    /// Application message.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP (sections 3.4 to 3.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// Packet identifier being acknowledged.
    pub pkid: u16,
    /// Outcome; [`ReasonCode::SUCCESS`] in the short forms.
    pub reason: ReasonCode,
    /// Reason string and user properties.
    pub properties: Properties,
}

impl Ack {
    /// Build a successful acknowledgement without properties.
    pub fn success(pkid: u16) -> Ack {
        Ack {
            pkid,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }
    }
}

/// What to do with retained messages when a subscription is made (section 3.8.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// Send them only if the subscription did not exist before.
    SendIfNew = 1,
    /// Never send them for this subscription.
    DoNotSend = 2,
}

/// Subscription options byte of one SUBSCRIBE filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// Do not forward messages published by this connection [MQTT-3.8.3-3].
    pub no_local: bool,
    /// Keep the RETAIN flag as published on forwarded messages.
    pub retain_as_published: bool,
    /// Retained message handling.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options of a plain subscription at `qos`.
    pub fn qos(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }
}

/// SUBSCRIBE (section 3.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub pkid: u16,
    /// Subscription identifier and user properties.
    pub properties: Properties,
    /// Topic filters with their options; never empty.
    pub filters: Vec<(String, SubscriptionOptions)>,
}

/// SUBACK (section 3.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub pkid: u16,
    /// Reason string and user properties.
    pub properties: Properties,
    /// One reason code per filter, in order; never empty.
    pub reasons: Vec<ReasonCode>,
}

/// UNSUBSCRIBE (section 3.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub pkid: u16,
    /// User properties.
    pub properties: Properties,
    /// Topic filters; never empty.
    pub filters: Vec<String>,
}

/// UNSUBACK (section 3.11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub pkid: u16,
    /// Reason string and user properties.
    pub properties: Properties,
    /// One reason code per filter; never empty.
    pub reasons: Vec<ReasonCode>,
}

/// DISCONNECT (section 3.14) or AUTH (section 3.15): a reason code and properties.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Why; [`ReasonCode::NORMAL_DISCONNECTION`] in the short form.
    pub reason: ReasonCode,
    /// Properties.
    pub properties: Properties,
}

impl Disconnect {
    /// Build a DISCONNECT with a reason code and no properties.
    pub fn reason(reason: ReasonCode) -> Disconnect {
        Disconnect {
            reason,
            properties: Properties::default(),
        }
    }
}

/// Any MQTT 5 control packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// Client asks to open a session (boxed: it carries two property lists).
    Connect(Box<Connect>),
    /// Server answers CONNECT.
    ConnAck(ConnAck),
    /// Application message.
    Publish(Publish),
    /// QoS 1 acknowledgement.
    PubAck(Ack),
    /// QoS 2, step 1.
    PubRec(Ack),
    /// QoS 2, step 2.
    PubRel(Ack),
    /// QoS 2, step 3.
    PubComp(Ack),
    /// Client asks for topic filters.
    Subscribe(Subscribe),
    /// Server answers SUBSCRIBE.
    SubAck(SubAck),
    /// Client drops topic filters.
    Unsubscribe(Unsubscribe),
    /// Server answers UNSUBSCRIBE.
    UnsubAck(UnsubAck),
    /// Keep-alive probe.
    PingReq,
    /// Keep-alive answer.
    PingResp,
    /// Either side closes, with a reason.
    Disconnect(Disconnect),
    /// Enhanced authentication exchange (same shape as DISCONNECT).
    Auth(Disconnect),
}

impl Packet {
    /// Return the packet type number (1 = CONNECT ... 15 = AUTH).
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }
}

/// Protocol level of MQTT 5.
pub const PROTOCOL_LEVEL_5: u8 = 5;
