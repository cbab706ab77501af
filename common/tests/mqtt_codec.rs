//! MQTT 3.1.1 codec through its public API: byte vectors written from the
//! specification, round trips, incremental decoding and property tests.
//!
//! The rejection rules (one test per normative statement) are unit tests in
//! `common/src/mqtt/tests.rs`.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use ordo_common::mqtt::*;
use proptest::prelude::*;

const MAX: usize = 1 << 20;

/// Known encodings, each paired with the packet it decodes to.
fn vectors() -> Vec<(Vec<u8>, Packet)> {
    vec![
        // CONNECT with every field: flags 0xee = username, password, will
        // retain, will QoS 1, will flag, clean session; keep alive 10.
        (
            [
                &[0x10, 35, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xee, 0, 10][..],
                &[0, 3, b'c', b'i', b'd'],
                &[0, 3, b'w', b'/', b't'],
                &[0, 3, b'b', b'y', b'e'],
                &[0, 4, b'u', b's', b'e', b'r'],
                &[0, 2, b'p', b'w'],
            ]
            .concat(),
            Packet::Connect(Connect {
                protocol_level: 4,
                client_id: "cid".into(),
                clean_session: true,
                keep_alive: 10,
                will: Some(Will {
                    topic: "w/t".into(),
                    payload: Bytes::from_static(b"bye"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                }),
                username: Some("user".into()),
                password: Some(Bytes::from_static(b"pw")),
            }),
        ),
        // Minimal CONNECT as mosquitto_sub sends it: empty client id, clean session, keep alive 60.
        (
            vec![0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 0],
            Packet::Connect(Connect {
                protocol_level: 4,
                client_id: String::new(),
                clean_session: true,
                keep_alive: 60,
                will: None,
                username: None,
                password: None,
            }),
        ),
        // MQTT 3.1 CONNECT ("MQIsdp", level 3), persistent session, username only.
        (
            [
                &[0x10, 21, 0, 6][..],
                b"MQIsdp",
                &[3, 0x80, 0, 0, 0, 2, b'i', b'd', 0, 3, b'b', b'o', b'b'],
            ]
            .concat(),
            Packet::Connect(Connect {
                protocol_level: 3,
                client_id: "id".into(),
                clean_session: false,
                keep_alive: 0,
                will: None,
                username: Some("bob".into()),
                password: None,
            }),
        ),
        (
            vec![0x20, 2, 1, 0],
            Packet::ConnAck(ConnAck {
                session_present: true,
                code: ConnectReturnCode::Accepted,
            }),
        ),
        (
            vec![0x20, 2, 0, 5],
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: ConnectReturnCode::NotAuthorized,
            }),
        ),
        // Section 3.3.2.3: topic "a/b", packet id 10, QoS 1.
        (
            vec![0x32, 9, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i'],
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "a/b".into(),
                pkid: 10,
                payload: Bytes::from_static(b"hi"),
            }),
        ),
        // QoS 0 retained, empty payload: no packet id on the wire.
        (
            vec![0x31, 5, 0, 3, b'a', b'/', b'b'],
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: true,
                topic: "a/b".into(),
                pkid: 0,
                payload: Bytes::new(),
            }),
        ),
        // QoS 2 redelivery.
        (
            vec![0x3c, 6, 0, 1, b'x', 0xff, 0xfe, 0],
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: "x".into(),
                pkid: 0xfffe,
                payload: Bytes::from_static(&[0]),
            }),
        ),
        (vec![0x40, 2, 0, 10], Packet::PubAck(10)),
        (vec![0x50, 2, 0, 10], Packet::PubRec(10)),
        (vec![0x62, 2, 0, 10], Packet::PubRel(10)),
        (vec![0x70, 2, 0xff, 0xff], Packet::PubComp(65_535)),
        // Section 3.8.3 example: "a/b" QoS 1, "c/d" QoS 2, packet id 10.
        (
            vec![
                0x82, 14, 0, 10, 0, 3, b'a', b'/', b'b', 1, 0, 3, b'c', b'/', b'd', 2,
            ],
            Packet::Subscribe(Subscribe {
                pkid: 10,
                filters: vec![
                    ("a/b".into(), QoS::AtLeastOnce),
                    ("c/d".into(), QoS::ExactlyOnce),
                ],
            }),
        ),
        // Section 3.9.3 example: granted 0, granted 2, failure.
        (
            vec![0x90, 5, 0, 10, 0x00, 0x02, 0x80],
            Packet::SubAck(SubAck {
                pkid: 10,
                codes: vec![
                    SubAckCode::Granted(QoS::AtMostOnce),
                    SubAckCode::Granted(QoS::ExactlyOnce),
                    SubAckCode::Failure,
                ],
            }),
        ),
        // Section 3.10.3 example: "a/b" and "c/d".
        (
            vec![
                0xa2, 12, 0, 10, 0, 3, b'a', b'/', b'b', 0, 3, b'c', b'/', b'd',
            ],
            Packet::Unsubscribe(Unsubscribe {
                pkid: 10,
                filters: vec!["a/b".into(), "c/d".into()],
            }),
        ),
        (vec![0xb0, 2, 0, 10], Packet::UnsubAck(10)),
        (vec![0xc0, 0], Packet::PingReq),
        (vec![0xd0, 0], Packet::PingResp),
        (vec![0xe0, 0], Packet::Disconnect),
    ]
}

#[test]
fn known_vectors_decode() {
    for (bytes, packet) in vectors() {
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decode(&mut buf, MAX), Ok(Some(packet)), "{bytes:02x?}");
        assert!(buf.is_empty());
    }
}

#[test]
fn known_vectors_encode() {
    for (bytes, packet) in vectors() {
        let mut buf = BytesMut::new();
        encode(&packet, &mut buf).unwrap();
        assert_eq!(&buf[..], &bytes[..], "{packet:?}");
    }
}

#[test]
fn vectors_cover_every_packet_type() {
    let mut seen: Vec<u8> = vectors().iter().map(|(_, p)| p.packet_type()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (1..=14).collect::<Vec<u8>>());
}

#[test]
fn encode_appends_to_existing_bytes() {
    let mut buf = BytesMut::from(&b"xy"[..]);
    encode(&Packet::PingReq, &mut buf).unwrap();
    encode(&Packet::PubAck(1), &mut buf).unwrap();
    assert_eq!(&buf[..], &[b'x', b'y', 0xc0, 0, 0x40, 2, 0, 1]);
}

#[test]
fn empty_buffer_needs_more_bytes() {
    let mut buf = BytesMut::new();
    assert_eq!(decode(&mut buf, MAX), Ok(None));
}

#[test]
fn incremental_decoding_byte_by_byte() {
    let vectors = vectors();
    let stream: Vec<u8> = vectors.iter().flat_map(|(b, _)| b.clone()).collect();
    let mut ends = Vec::new();
    let mut end = 0;
    for (bytes, _) in &vectors {
        end += bytes.len();
        ends.push(end);
    }

    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for (i, byte) in stream.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let len_before = buf.len();
        match decode(&mut buf, MAX).unwrap() {
            Some(packet) => {
                assert!(
                    ends.contains(&(i + 1)),
                    "packet completed mid-stream at {i}"
                );
                decoded.push(packet);
            }
            None => {
                assert!(!ends.contains(&(i + 1)), "packet not completed at {i}");
                assert_eq!(
                    buf.len(),
                    len_before,
                    "Ok(None) must leave the buffer untouched"
                );
            }
        }
        assert_eq!(decode(&mut buf, MAX), Ok(None));
    }
    assert!(buf.is_empty());
    let expected: Vec<Packet> = vectors.into_iter().map(|(_, p)| p).collect();
    assert_eq!(decoded, expected);
}

#[test]
fn several_packets_in_one_buffer_decode_in_order() {
    let mut buf = BytesMut::new();
    for (_, packet) in vectors() {
        encode(&packet, &mut buf).unwrap();
    }
    let mut decoded = Vec::new();
    while let Some(packet) = decode(&mut buf, MAX).unwrap() {
        decoded.push(packet);
    }
    assert!(buf.is_empty());
    assert_eq!(
        decoded,
        vectors().into_iter().map(|(_, p)| p).collect::<Vec<_>>()
    );
}

#[test]
fn oversized_declaration_fails_before_the_body_arrives() {
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t".into(),
        pkid: 0,
        payload: Bytes::from(vec![0u8; 300]),
    });
    let mut encoded = BytesMut::new();
    encode(&packet, &mut encoded).unwrap();
    // Only the three header bytes: the limit is already known to be exceeded.
    let mut buf = BytesMut::from(&encoded[..3]);
    assert_eq!(
        decode(&mut buf, 256),
        Err(DecodeError::PacketTooLarge {
            size: 303,
            max: 256
        })
    );
    // Two bytes (the length continues): not yet decidable.
    let mut buf = BytesMut::from(&encoded[..2]);
    assert_eq!(decode(&mut buf, 256), Ok(None));
}

#[test]
fn publish_payload_shares_the_read_buffer() {
    let mut buf = BytesMut::from(&[0x30, 5, 0, 1, b't', b'h', b'i', 0xc0, 0][..]);
    let Some(Packet::Publish(p)) = decode(&mut buf, MAX).unwrap() else {
        panic!("expected a publish");
    };
    assert_eq!(&p.payload[..], b"hi");
    assert_eq!(decode(&mut buf, MAX), Ok(Some(Packet::PingReq)));
}

#[test]
fn return_code_conversions() {
    for v in 0..=255u8 {
        if let Some(code) = ConnectReturnCode::from_u8(v) {
            assert_eq!(code as u8, v);
        }
        if let Some(code) = SubAckCode::from_u8(v) {
            assert_eq!(code.to_u8(), v);
        }
        if let Some(qos) = QoS::from_u8(v) {
            assert_eq!(qos as u8, v);
        }
    }
    assert_eq!(QoS::from_u8(3), None);
    assert_eq!(ConnectReturnCode::from_u8(6), None);
    assert!(QoS::AtMostOnce < QoS::AtLeastOnce && QoS::AtLeastOnce < QoS::ExactlyOnce);
}

#[test]
fn errors_display_lowercase() {
    let err = DecodeError::PacketTooLarge { size: 10, max: 5 };
    assert_eq!(
        err.to_string(),
        "packet remaining length 10 exceeds the limit of 5 bytes"
    );
    assert_eq!(
        EncodeError::FieldTooLong {
            field: "topic name",
            len: 70_000
        }
        .to_string(),
        "topic name is 70000 bytes, more than 65535"
    );
}

// ---------------------------------------------------------------------------
// Property tests.

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn pkid() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

/// Any string without U+0000 (controls, non-BMP characters and `+`/`#` included).
fn text() -> impl Strategy<Value = String> {
    "[^\\x00]{0,24}"
}

fn topic_name() -> impl Strategy<Value = String> {
    "[^+#\\x00]{1,24}"
}

fn topic_filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![Just("+".to_owned()), "[^+#/\\x00]{0,8}"];
    (prop::collection::vec(level, 1..5), any::<bool>())
        .prop_map(|(mut levels, multi)| {
            if multi {
                levels.push("#".into());
            }
            levels.join("/")
        })
        .prop_filter("non-empty", |f| !f.is_empty())
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn will() -> impl Strategy<Value = Will> {
    (topic_name(), binary(), qos(), any::<bool>()).prop_map(|(topic, payload, qos, retain)| Will {
        topic,
        payload,
        qos,
        retain,
    })
}

fn connect() -> impl Strategy<Value = Connect> {
    (
        prop_oneof![Just(3u8), Just(4u8)],
        text(),
        any::<bool>(),
        any::<u16>(),
        prop::option::of(will()),
        prop::option::of((text(), prop::option::of(binary()))),
    )
        .prop_map(
            |(protocol_level, client_id, clean_session, keep_alive, will, login)| {
                let (username, password) = match login {
                    Some((user, password)) => (Some(user), password),
                    None => (None, None),
                };
                Connect {
                    protocol_level,
                    client_id,
                    clean_session,
                    keep_alive,
                    will,
                    username,
                    password,
                }
            },
        )
}

fn connack() -> impl Strategy<Value = ConnAck> {
    (0u8..=5, any::<bool>()).prop_map(|(code, session)| {
        let code = ConnectReturnCode::from_u8(code).unwrap_or(ConnectReturnCode::Accepted);
        ConnAck {
            session_present: session && code == ConnectReturnCode::Accepted,
            code,
        }
    })
}

fn publish() -> impl Strategy<Value = Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        pkid(),
        binary(),
    )
        .prop_map(|(qos, dup, retain, topic, pkid, payload)| {
            let at_most_once = qos == QoS::AtMostOnce;
            Publish {
                dup: dup && !at_most_once,
                qos,
                retain,
                topic,
                pkid: if at_most_once { 0 } else { pkid },
                payload,
            }
        })
}

fn suback_code() -> impl Strategy<Value = SubAckCode> {
    prop_oneof![
        qos().prop_map(SubAckCode::Granted),
        Just(SubAckCode::Failure)
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect().prop_map(Packet::Connect),
        connack().prop_map(Packet::ConnAck),
        publish().prop_map(Packet::Publish),
        pkid().prop_map(Packet::PubAck),
        pkid().prop_map(Packet::PubRec),
        pkid().prop_map(Packet::PubRel),
        pkid().prop_map(Packet::PubComp),
        (pkid(), prop::collection::vec((topic_filter(), qos()), 1..6))
            .prop_map(|(pkid, filters)| Packet::Subscribe(Subscribe { pkid, filters })),
        (pkid(), prop::collection::vec(suback_code(), 1..6))
            .prop_map(|(pkid, codes)| Packet::SubAck(SubAck { pkid, codes })),
        (pkid(), prop::collection::vec(topic_filter(), 1..6))
            .prop_map(|(pkid, filters)| Packet::Unsubscribe(Unsubscribe { pkid, filters })),
        pkid().prop_map(Packet::UnsubAck),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::Disconnect),
    ]
}

/// Decode everything in `bytes`; every packet decoded must re-encode and decode to itself.
fn decode_all_and_check(bytes: &[u8], max: usize) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(packet)) = decode(&mut buf, max) {
        let mut again = BytesMut::new();
        encode(&packet, &mut again).unwrap();
        assert_eq!(decode(&mut again, usize::MAX), Ok(Some(packet)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        max in prop_oneof![Just(usize::MAX), 0usize..600],
    ) {
        decode_all_and_check(&bytes, max);
    }

    #[test]
    fn mutated_packets_never_panic(
        packet in packet(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = BytesMut::new();
        encode(&packet, &mut buf).unwrap();
        let mut bytes = buf.to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        decode_all_and_check(&bytes, MAX);
    }

    #[test]
    fn valid_packets_round_trip(packet in packet()) {
        let mut buf = BytesMut::new();
        encode(&packet, &mut buf).unwrap();
        prop_assert_eq!(decode(&mut buf, MAX), Ok(Some(packet)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn split_packets_decode_once_complete(packet in packet(), split in any::<prop::sample::Index>()) {
        let mut encoded = BytesMut::new();
        encode(&packet, &mut encoded).unwrap();
        let at = split.index(encoded.len());
        let mut buf = BytesMut::from(&encoded[..at]);
        prop_assert_eq!(decode(&mut buf, MAX), Ok(None));
        prop_assert_eq!(buf.len(), at);
        buf.extend_from_slice(&encoded[at..]);
        prop_assert_eq!(decode(&mut buf, MAX), Ok(Some(packet)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn topic_validators_agree_with_the_filter_grammar(filter in topic_filter(), name in topic_name()) {
        prop_assert!(validate_topic_filter(&filter));
        prop_assert!(validate_topic_name(&name));
        // Every valid topic name is also a valid (exact) filter.
        prop_assert!(validate_topic_filter(&name));
    }
}
