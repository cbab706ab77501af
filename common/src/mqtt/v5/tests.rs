//! MQTT 5 codec: known vectors, round trips, one rejection test per rule.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::mqtt::{DecodeError, QoS, ReasonCode};

const MAX: usize = 1 << 20;

fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn reject(bytes: &[u8]) -> DecodeError {
    decode(&mut BytesMut::from(bytes), MAX).unwrap_err()
}

fn round_trip(packet: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let n = encode(packet, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    assert_eq!(encoded_len(packet).unwrap(), n);
    let wire = buf.to_vec();
    assert_eq!(decode(&mut buf, MAX).unwrap().as_ref(), Some(packet));
    assert!(buf.is_empty());
    wire
}

fn full_publish_properties() -> Properties {
    Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr")),
        subscription_identifiers: vec![1, 268_435_455],
        topic_alias: Some(3),
        user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
        ..Properties::default()
    }
}

#[test]
fn every_packet_type_round_trips_with_properties() {
    let user = || Properties {
        reason_string: Some("why".into()),
        user_properties: vec![("k".into(), "v".into())],
        ..Properties::default()
    };
    let packets = vec![
        Packet::Connect(Box::new(Connect {
            protocol_level: 5,
            client_id: "c".into(),
            clean_start: true,
            keep_alive: 30,
            properties: Properties {
                session_expiry_interval: Some(10),
                receive_maximum: Some(20),
                maximum_packet_size: Some(1000),
                topic_alias_maximum: Some(5),
                request_problem_information: Some(0),
                request_response_information: Some(1),
                authentication_method: Some("m".into()),
                authentication_data: Some(Bytes::from_static(b"d")),
                user_properties: vec![("x".into(), "y".into())],
                ..Properties::default()
            },
            will: Some(Will {
                topic: "will/t".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties {
                    will_delay_interval: Some(5),
                    message_expiry_interval: Some(9),
                    ..Properties::default()
                },
            }),
            username: None,
            password: Some(Bytes::from_static(b"pw")),
        })),
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason: ReasonCode::SUCCESS,
            properties: Properties {
                assigned_client_identifier: Some("auto-1".into()),
                server_keep_alive: Some(60),
                receive_maximum: Some(100),
                topic_alias_maximum: Some(10),
                maximum_qos: Some(1),
                retain_available: Some(1),
                wildcard_subscription_available: Some(1),
                subscription_identifier_available: Some(1),
                shared_subscription_available: Some(1),
                response_information: Some("r".into()),
                server_reference: Some("s".into()),
                ..user()
            },
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "a/b".into(),
            pkid: 9,
            properties: full_publish_properties(),
            payload: Bytes::from_static(b"payload"),
        }),
        Packet::PubAck(Ack {
            pkid: 1,
            reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            properties: user(),
        }),
        Packet::PubRec(Ack {
            pkid: 2,
            reason: ReasonCode::QUOTA_EXCEEDED,
            properties: Properties::default(),
        }),
        Packet::PubRel(Ack {
            pkid: 3,
            reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            properties: user(),
        }),
        Packet::PubComp(Ack::success(4)),
        Packet::Subscribe(Subscribe {
            pkid: 5,
            properties: Properties {
                subscription_identifiers: vec![77],
                ..Properties::default()
            },
            filters: vec![
                (
                    "a/+".into(),
                    SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                ),
                (
                    "$share/g/x/#".into(),
                    SubscriptionOptions::qos(QoS::AtMostOnce),
                ),
            ],
        }),
        Packet::SubAck(SubAck {
            pkid: 5,
            properties: user(),
            reasons: vec![ReasonCode::GRANTED_QOS_2, ReasonCode::TOPIC_FILTER_INVALID],
        }),
        Packet::Unsubscribe(Unsubscribe {
            pkid: 6,
            properties: user_only(),
            filters: vec!["a/+".into()],
        }),
        Packet::UnsubAck(UnsubAck {
            pkid: 6,
            properties: Properties::default(),
            reasons: vec![ReasonCode::NO_SUBSCRIPTION_EXISTED],
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::DISCONNECT_WITH_WILL,
            properties: Properties {
                session_expiry_interval: Some(0),
                ..user()
            },
        }),
        Packet::Auth(Disconnect {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: Properties {
                authentication_method: Some("m".into()),
                ..user()
            },
        }),
    ];
    for p in &packets {
        round_trip(p);
    }
}

fn user_only() -> Properties {
    Properties {
        user_properties: vec![("k".into(), "v".into())],
        ..Properties::default()
    }
}

#[test]
fn short_forms_are_written_and_read() {
    assert_eq!(
        round_trip(&Packet::PubAck(Ack::success(7))),
        [0x40, 2, 0, 7]
    );
    let rec = Packet::PubRec(Ack {
        pkid: 7,
        reason: ReasonCode::UNSPECIFIED_ERROR,
        properties: Properties::default(),
    });
    assert_eq!(round_trip(&rec), [0x50, 3, 0, 7, 0x80]);
    assert_eq!(
        round_trip(&Packet::Disconnect(Disconnect::default())),
        [0xe0, 0]
    );
    assert_eq!(
        round_trip(&Packet::Disconnect(Disconnect::reason(
            ReasonCode::PROTOCOL_ERROR
        ))),
        [0xe0, 1, 0x82]
    );
    // Long forms with an empty property list decode to the same packets.
    let mut buf = BytesMut::from(&[0x40, 4, 0, 7, 0, 0, 0xf0, 0][..]);
    assert_eq!(
        decode(&mut buf, MAX),
        Ok(Some(Packet::PubAck(Ack::success(7))))
    );
    assert_eq!(
        decode(&mut buf, MAX),
        Ok(Some(Packet::Auth(Disconnect::default())))
    );
}

#[test]
fn publish_vector_matches_the_spec_layout() {
    let p = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "t".into(),
        pkid: 1,
        properties: Properties {
            message_expiry_interval: Some(2),
            ..Properties::default()
        },
        payload: Bytes::from_static(b"x"),
    });
    assert_eq!(
        round_trip(&p),
        [0x32, 12, 0, 1, b't', 0, 1, 5, 0x02, 0, 0, 0, 2, b'x']
    );
}

/// A PUBLISH body "t", QoS 0, with the given raw property bytes.
fn publish_with_props(props: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 1, b't', props.len() as u8];
    body.extend_from_slice(props);
    frame(0x30, &body)
}

#[test]
fn duplicate_property_is_a_protocol_error() {
    // Section 2.2.2.2: Message Expiry Interval twice.
    let e = reject(&publish_with_props(&[2, 0, 0, 0, 1, 2, 0, 0, 0, 1]));
    assert_eq!(e, DecodeError::DuplicateProperty(0x02));
    assert_eq!(e.reason_code(), ReasonCode::PROTOCOL_ERROR);
    // User properties and PUBLISH subscription identifiers may repeat.
    let ok = publish_with_props(&[0x0b, 1, 0x0b, 2]);
    assert!(decode(&mut BytesMut::from(&ok[..]), MAX).unwrap().is_some());
}

#[test]
fn property_not_allowed_on_the_packet_is_malformed() {
    // Session Expiry Interval (0x11) on PUBLISH.
    let e = reject(&publish_with_props(&[0x11, 0, 0, 0, 1]));
    assert!(matches!(
        e,
        DecodeError::PropertyNotAllowed { id: 0x11, .. }
    ));
    assert_eq!(e.reason_code(), ReasonCode::MALFORMED_PACKET);
    // Unknown identifier 0x7f.
    let e = reject(&publish_with_props(&[0x7f, 0]));
    assert_eq!(e.reason_code(), ReasonCode::MALFORMED_PACKET);
    // A property list longer than the packet.
    assert_eq!(
        reject(&publish_with_props(&[0x02, 0, 0])).reason_code(),
        ReasonCode::MALFORMED_PACKET
    );
}

#[test]
fn forbidden_property_values_are_protocol_errors() {
    // [MQTT-3.3.2-8] topic alias 0; payload format indicator 2; subscription id 0.
    for props in [&[0x23, 0, 0][..], &[0x01, 2], &[0x0b, 0]] {
        let e = reject(&publish_with_props(props));
        assert!(matches!(e, DecodeError::InvalidPropertyValue(_)), "{e:?}");
        assert_eq!(e.reason_code(), ReasonCode::PROTOCOL_ERROR);
    }
    // Response topic with a wildcard [MQTT-3.3.2-14].
    let e = reject(&publish_with_props(&[0x08, 0, 1, b'#']));
    assert_eq!(e, DecodeError::InvalidPropertyValue(0x08));
}

#[test]
fn non_minimal_variable_byte_integer_is_malformed() {
    // [MQTT-1.5.5-1]: property length 0 written as 0x80 0x00.
    let bytes = frame(0x30, &[0, 1, b't', 0x80, 0x00]);
    assert_eq!(reject(&bytes).reason_code(), ReasonCode::MALFORMED_PACKET);
}

#[test]
fn bad_reason_codes_are_protocol_errors() {
    // 0x92 is a PUBREL/PUBCOMP code, not a PUBACK one.
    let e = reject(&[0x40, 3, 0, 1, 0x92]);
    assert!(matches!(
        e,
        DecodeError::InvalidReasonCode { code: 0x92, .. }
    ));
    assert_eq!(e.reason_code(), ReasonCode::PROTOCOL_ERROR);
    assert!(matches!(
        reject(&[0xe0, 1, 0x01]),
        DecodeError::InvalidReasonCode { .. }
    ));
    assert!(matches!(
        reject(&[0xf0, 1, 0x80]),
        DecodeError::InvalidReasonCode { .. }
    ));
    let mut buf = BytesMut::new();
    let bad = Packet::PubComp(Ack {
        pkid: 1,
        reason: ReasonCode::QUOTA_EXCEEDED,
        properties: Properties::default(),
    });
    assert!(encode(&bad, &mut buf).is_err());
    assert!(buf.is_empty());
}

#[test]
fn empty_topic_needs_a_topic_alias() {
    let e = reject(&frame(0x30, &[0, 0, 0]));
    assert_eq!(e.reason_code(), ReasonCode::PROTOCOL_ERROR);
    let ok = frame(0x30, &[0, 0, 3, 0x23, 0, 1]);
    match decode(&mut BytesMut::from(&ok[..]), MAX).unwrap() {
        Some(Packet::Publish(p)) => assert_eq!(p.properties.topic_alias, Some(1)),
        other => panic!("{other:?}"),
    }
}

fn subscribe_bytes(filter: &[u8], options: u8) -> Vec<u8> {
    let mut body = vec![0, 1, 0, 0, filter.len() as u8];
    body.extend_from_slice(filter);
    body.push(options);
    frame(0x82, &body)
}

#[test]
fn subscription_options_rules() {
    // [MQTT-3.8.3-5] reserved bits.
    assert_eq!(
        reject(&subscribe_bytes(b"a", 0x40)),
        DecodeError::ReservedFlagSet
    );
    // Retain handling 3.
    assert_eq!(
        reject(&subscribe_bytes(b"a", 0x30)).reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
    // [MQTT-3.8.3-4] no local on a shared subscription.
    assert_eq!(
        reject(&subscribe_bytes(b"$share/g/a", 0x04)).reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
    // Malformed share names [MQTT-4.8.2-1], [MQTT-4.8.2-2].
    for f in [&b"$share//a"[..], b"$share/g", b"$share/g+/a", b"$share/g/"] {
        assert_eq!(
            reject(&subscribe_bytes(f, 0)),
            DecodeError::InvalidTopicFilter
        );
    }
    // Two subscription identifiers on SUBSCRIBE.
    let mut body = vec![0, 1, 4, 0x0b, 1, 0x0b, 2, 0, 1, b'a', 0];
    let bytes = frame(0x82, &body);
    assert_eq!(reject(&bytes), DecodeError::DuplicateProperty(0x0b));
    body[2] = 0;
    body.drain(3..7);
    assert!(decode(&mut BytesMut::from(&frame(0x82, &body)[..]), MAX).is_ok());
}

#[test]
fn level_4_connect_is_read_without_properties_and_level_6_refused() {
    let body = [0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c'];
    let bytes = frame(0x10, &body);
    assert_eq!(peek_connect_level(&bytes), Some(4));
    match decode(&mut BytesMut::from(&bytes[..]), MAX).unwrap() {
        Some(Packet::Connect(c)) => {
            assert_eq!((c.protocol_level, c.client_id.as_str()), (4, "c"));
            assert!(c.properties.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let mut body6 = body;
    body6[6] = 6;
    let e = reject(&frame(0x10, &body6));
    assert_eq!(e, DecodeError::UnsupportedProtocolLevel(6));
    assert_eq!(e.reason_code(), ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
    // The 3.1.1 codec still refuses level 5.
    let v5 = frame(
        0x10,
        &[0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'c'],
    );
    assert_eq!(peek_connect_level(&v5), Some(5));
    assert_eq!(
        crate::mqtt::decode(&mut BytesMut::from(&v5[..]), MAX),
        Err(DecodeError::UnsupportedProtocolLevel(5))
    );
    assert!(decode(&mut BytesMut::from(&v5[..]), MAX).unwrap().is_some());
}

#[test]
fn auth_data_without_method_is_a_protocol_error() {
    let body = [
        0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 4, 0x16, 0, 1, b'x', 0, 1, b'c',
    ];
    assert_eq!(
        reject(&frame(0x10, &body)).reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
}

#[test]
fn oversized_packet_maps_to_0x95() {
    let e = decode(&mut BytesMut::from(&[0x30, 0xff, 0x7f][..]), 100).unwrap_err();
    assert_eq!(e.reason_code(), ReasonCode::PACKET_TOO_LARGE);
}

#[test]
fn compat_round_trips_3_1_1_packets() {
    use crate::mqtt as v3;
    let packets = [
        v3::Packet::PubAck(3),
        v3::Packet::Disconnect,
        v3::Packet::Subscribe(v3::Subscribe {
            pkid: 1,
            filters: vec![("a/#".into(), QoS::ExactlyOnce)],
        }),
        v3::Packet::SubAck(v3::SubAck {
            pkid: 1,
            codes: vec![
                v3::SubAckCode::Granted(QoS::AtLeastOnce),
                v3::SubAckCode::Failure,
            ],
        }),
    ];
    for p in packets {
        let v5 = compat::from_v3(p.clone());
        if p == v3::Packet::Disconnect {
            assert_eq!(compat::to_v3(&v5), None, "no server DISCONNECT in 3.1.1");
        } else {
            assert_eq!(compat::to_v3(&v5), Some(p));
        }
    }
}

fn arb_string() -> impl Strategy<Value = String> {
    "[a-z0-9/]{0,12}"
}

fn arb_topic() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,3}"
}

prop_compose! {
    fn arb_publish_properties()(
        pfi in proptest::option::of(0u8..=1),
        expiry in proptest::option::of(any::<u32>()),
        content_type in proptest::option::of(arb_string()),
        response_topic in proptest::option::of(arb_topic()),
        correlation in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        sub_ids in proptest::collection::vec(1u32..=MAX_VAR_INT, 0..3),
        alias in proptest::option::of(1u16..),
        user in proptest::collection::vec((arb_string(), arb_string()), 0..4),
    ) -> Properties {
        Properties {
            payload_format_indicator: pfi,
            message_expiry_interval: expiry,
            content_type,
            response_topic,
            correlation_data: correlation.map(Bytes::from),
            subscription_identifiers: sub_ids,
            topic_alias: alias,
            user_properties: user,
            ..Properties::default()
        }
    }
}

proptest! {
    #[test]
    fn publish_round_trips(
        topic in arb_topic(),
        qos in 0u8..=2,
        retain in any::<bool>(),
        pkid in 1u16..,
        properties in arb_publish_properties(),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let qos = QoS::from_u8(qos).unwrap();
        let p = Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic,
            pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
            properties,
            payload: Bytes::from(payload),
        });
        round_trip(&p);
    }

    #[test]
    fn subscribe_round_trips(
        pkid in 1u16..,
        sub_id in proptest::option::of(1u32..=MAX_VAR_INT),
        filters in proptest::collection::vec((arb_topic(), 0u8..=2, any::<bool>(), any::<bool>(), 0u8..=2), 1..5),
    ) {
        let p = Packet::Subscribe(Subscribe {
            pkid,
            properties: Properties { subscription_identifiers: sub_id.into_iter().collect(), ..Properties::default() },
            filters: filters.into_iter().map(|(f, q, nl, rap, rh)| (f, SubscriptionOptions {
                qos: QoS::from_u8(q).unwrap(),
                no_local: nl,
                retain_as_published: rap,
                retain_handling: match rh { 0 => RetainHandling::SendAtSubscribe, 1 => RetainHandling::SendIfNew, _ => RetainHandling::DoNotSend },
            })).collect(),
        });
        round_trip(&p);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(p)) = decode(&mut buf, MAX) {
            let mut again = BytesMut::new();
            encode(&p, &mut again).unwrap();
            prop_assert_eq!(decode(&mut again, MAX).unwrap(), Some(p));
        }
    }
}
