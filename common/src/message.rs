//! The message as stored in the log and carried between the front doors.

use crate::wamp::value::{from_json, to_json};
use bytes::Bytes;
use rmpv::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A message body, kept in the form it was published in.
///
/// MQTT publishes carry opaque bytes; WAMP publishes carry arguments. Each front
/// door converts on delivery, so bytes are never re-encoded for same-protocol
/// subscribers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// Opaque bytes, as published over MQTT.
    Raw(Bytes),
    /// Positional and keyword arguments, as published over WAMP.
    Wamp {
        /// Positional arguments.
        args: Vec<Value>,
        /// Keyword arguments.
        kwargs: BTreeMap<String, Value>,
    },
}

impl Payload {
    /// Tell whether this payload is empty (an empty MQTT payload clears a retained message).
    pub fn is_empty(&self) -> bool {
        match self {
            Payload::Raw(bytes) => bytes.is_empty(),
            Payload::Wamp { args, kwargs } => args.is_empty() && kwargs.is_empty(),
        }
    }

    /// Return the bytes an MQTT subscriber receives.
    ///
    /// WAMP arguments become JSON: a single argument is written alone (a binary
    /// argument as its raw bytes), keyword-only as an object, otherwise
    /// `{"args": [...], "kwargs": {...}}`.
    pub fn to_mqtt_bytes(&self) -> Bytes {
        match self {
            Payload::Raw(bytes) => bytes.clone(),
            Payload::Wamp { args, kwargs } => {
                let json = match (args.as_slice(), kwargs.is_empty()) {
                    ([], true) => return Bytes::new(),
                    ([Value::Binary(bytes)], true) => return Bytes::from(bytes.clone()),
                    ([single], true) => to_json(single),
                    ([], false) => kwargs_json(kwargs),
                    (many, true) => serde_json::Value::Array(many.iter().map(to_json).collect()),
                    (many, false) => serde_json::json!({
                        "args": many.iter().map(to_json).collect::<Vec<_>>(),
                        "kwargs": kwargs_json(kwargs),
                    }),
                };
                Bytes::from(json.to_string())
            }
        }
    }

    /// Return the positional and keyword arguments a WAMP subscriber receives.
    ///
    /// MQTT bytes that parse as JSON arrive as one argument holding that value;
    /// any other bytes arrive as one binary argument.
    pub fn to_wamp_args(&self) -> (Vec<Value>, BTreeMap<String, Value>) {
        match self {
            Payload::Wamp { args, kwargs } => (args.clone(), kwargs.clone()),
            Payload::Raw(bytes) if bytes.is_empty() => (Vec::new(), BTreeMap::new()),
            Payload::Raw(bytes) => match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(json) => (vec![from_json(json)], BTreeMap::new()),
                Err(_) => (vec![Value::Binary(bytes.to_vec())], BTreeMap::new()),
            },
        }
    }
}

fn kwargs_json(kwargs: &BTreeMap<String, Value>) -> serde_json::Value {
    serde_json::Value::Object(
        kwargs
            .iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect(),
    )
}

/// A published message as the log stores it under its permanent id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// WAMP realm; MQTT clients publish into the configured MQTT realm.
    pub realm: String,
    /// Topic in internal form (`a/b/c`).
    pub topic: String,
    /// The body.
    pub payload: Payload,
    /// Quality of service the publisher asked for (0, 1 or 2).
    pub qos: u8,
    /// Whether the message replaces the topic's retained message.
    pub retain: bool,
    /// Session id of the publisher, for publisher exclusion and identification.
    pub publisher: u64,
    /// Do not deliver to the publisher's own session (WAMP `exclude_me`, on by default).
    #[serde(default)]
    pub exclude_publisher: bool,
    /// MQTT 5 application properties, carried unchanged to MQTT 5 subscribers;
    /// `None` for 3.1.1 and WAMP publishes (and records written before).
    #[serde(default)]
    pub mqtt: Option<Box<MqttProperties>>,
    /// WAMP publisher disclosure and subscriber black/whitelists; `None` for MQTT.
    #[serde(default)]
    pub wamp: Option<crate::wamp::PublishOptions>,
}

/// The MQTT 5 PUBLISH properties that travel with a message (section 3.3.2.3).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MqttProperties {
    /// Payload format indicator (0 bytes, 1 UTF-8).
    pub payload_format_indicator: Option<u8>,
    /// Unix time in milliseconds after which the message is no longer delivered
    /// (publish time + Message Expiry Interval).
    pub expires_at_ms: Option<u64>,
    /// Content type.
    pub content_type: Option<String>,
    /// Response topic (request/response).
    pub response_topic: Option<String>,
    /// Correlation data (request/response).
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_json_becomes_one_argument() {
        let p = Payload::Raw(Bytes::from_static(b"{\"a\":1}"));
        let (args, kwargs) = p.to_wamp_args();
        assert_eq!(args.len(), 1);
        assert!(kwargs.is_empty());
        assert_eq!(to_json(&args[0]), serde_json::json!({"a": 1}));
    }

    #[test]
    fn raw_non_json_becomes_binary() {
        let p = Payload::Raw(Bytes::from_static(&[0xff, 0x00, 0x10]));
        let (args, _) = p.to_wamp_args();
        assert_eq!(args, vec![Value::Binary(vec![0xff, 0x00, 0x10])]);
    }

    #[test]
    fn wamp_single_argument_becomes_json_bytes() {
        let p = Payload::Wamp {
            args: vec![Value::from("hi")],
            kwargs: BTreeMap::new(),
        };
        assert_eq!(p.to_mqtt_bytes(), Bytes::from_static(b"\"hi\""));
        let b = Payload::Wamp {
            args: vec![Value::Binary(vec![1, 2])],
            kwargs: BTreeMap::new(),
        };
        assert_eq!(b.to_mqtt_bytes(), Bytes::from_static(&[1, 2]));
    }

    #[test]
    fn stored_message_round_trips_msgpack() {
        let m = StoredMessage {
            realm: "realm1".into(),
            topic: "a/b".into(),
            payload: Payload::Raw(Bytes::from_static(b"\x00\x01")),
            qos: 1,
            retain: false,
            publisher: 7,
            exclude_publisher: false,
            mqtt: None,
            wamp: None,
        };
        let bytes = rmp_serde::to_vec(&m).expect("encode");
        assert_eq!(
            rmp_serde::from_slice::<StoredMessage>(&bytes).expect("decode"),
            m
        );
        let with = StoredMessage {
            mqtt: Some(Box::new(MqttProperties {
                expires_at_ms: Some(5),
                user_properties: vec![("k".into(), "v".into())],
                ..MqttProperties::default()
            })),
            ..m
        };
        let bytes = rmp_serde::to_vec(&with).expect("encode");
        assert_eq!(
            rmp_serde::from_slice::<StoredMessage>(&bytes).expect("decode"),
            with
        );
    }

    #[test]
    fn records_written_before_mqtt_properties_still_decode() {
        // The seven fields a record had before `mqtt` was added, as rmp-serde writes them.
        let old = (
            "realm1",
            "a/b",
            Payload::Raw(Bytes::from_static(b"x")),
            1u8,
            false,
            7u64,
            true,
        );
        let bytes = rmp_serde::to_vec(&old).expect("encode");
        let m: StoredMessage = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(
            (m.topic.as_str(), m.exclude_publisher, m.mqtt),
            ("a/b", true, None)
        );
    }
}
