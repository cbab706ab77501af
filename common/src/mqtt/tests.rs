//! Rejection rules of the decoder and the encoder, one test per normative statement.
//!
//! Round trips, known byte vectors, incremental decoding and property tests
//! live in `common/tests/mqtt_codec.rs`.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};

use super::*;

const MAX: usize = 4096;

/// Frame `body` behind `first` with a correctly encoded remaining length.
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

/// Append a two-byte-length-prefixed field.
fn field(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// Build a CONNECT body: protocol name, level, flags, keep alive 60, then `payload`.
fn connect_body(name: &[u8], level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    field(&mut body, name);
    body.extend_from_slice(&[level, flags, 0, 60]);
    body.extend_from_slice(payload);
    body
}

fn connect(flags: u8, payload: &[u8]) -> Vec<u8> {
    frame(0x10, &connect_body(b"MQTT", 4, flags, payload))
}

/// Build a PUBLISH with this first byte, raw topic bytes and optional packet id.
fn publish(first: u8, topic: &[u8], pkid: Option<u16>) -> Vec<u8> {
    let mut body = Vec::new();
    field(&mut body, topic);
    if let Some(id) = pkid {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(b"payload");
    frame(first, &body)
}

/// Build a SUBSCRIBE with packet id 1 and these (raw filter, options) pairs.
fn subscribe(filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut body = vec![0, 1];
    for (filter, options) in filters {
        field(&mut body, filter);
        body.push(*options);
    }
    frame(0x82, &body)
}

fn unsubscribe(filters: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![0, 1];
    for filter in filters {
        field(&mut body, filter);
    }
    frame(0xa2, &body)
}

/// Decode a whole buffer and return the error, checking the packet was consumed.
fn reject(bytes: &[u8]) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    let err = decode(&mut buf, MAX).unwrap_err();
    assert!(buf.is_empty(), "body error must consume the packet: {err}");
    err
}

/// Decode a buffer whose error is in the fixed header; `buf` must stay untouched.
fn reject_header(bytes: &[u8], max: usize) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    let err = decode(&mut buf, max).unwrap_err();
    assert_eq!(
        &buf[..],
        bytes,
        "header error must leave the buffer untouched"
    );
    err
}

#[test]
fn reserved_packet_types_are_rejected_from_the_first_byte() {
    assert_eq!(
        reject_header(&[0x00], MAX),
        DecodeError::UnknownPacketType(0)
    );
    assert_eq!(
        reject_header(&[0xf0, 0x00], MAX),
        DecodeError::UnknownPacketType(15)
    );
}

#[test]
fn fixed_header_flags_must_match_the_packet_type() {
    // [MQTT-2.2.2-2]: every type but PUBLISH has exactly one valid flags nibble.
    for kind in (1u8..=14).filter(|&k| k != 3) {
        let required = if matches!(kind, 6 | 8 | 10) {
            0b0010
        } else {
            0
        };
        for flags in (0u8..16).filter(|&f| f != required) {
            let first = (kind << 4) | flags;
            assert_eq!(
                reject_header(&[first], MAX),
                DecodeError::InvalidFixedHeaderFlags(first)
            );
        }
    }
}

#[test]
fn publish_qos_3_is_malformed() {
    // [MQTT-3.3.1-4].
    assert_eq!(reject_header(&[0x36], MAX), DecodeError::InvalidQoS(3));
    let bytes = publish(0x3e, b"a", Some(1));
    assert_eq!(reject_header(&bytes, MAX), DecodeError::InvalidQoS(3));
}

#[test]
fn publish_dup_at_qos_0_is_rejected() {
    // [MQTT-3.3.1-2].
    let bytes = publish(0x38, b"a", None);
    assert_eq!(
        reject_header(&bytes, MAX),
        DecodeError::InvalidFixedHeaderFlags(0x38)
    );
}

#[test]
fn remaining_length_is_at_most_four_bytes() {
    // Section 2.2.3: a fifth byte is malformed, even before it arrives.
    let five = [0x30, 0xff, 0xff, 0xff, 0xff, 0x7f];
    assert_eq!(
        reject_header(&five, usize::MAX),
        DecodeError::MalformedRemainingLength
    );
    assert_eq!(
        reject_header(&five[..5], usize::MAX),
        DecodeError::MalformedRemainingLength
    );
    // Four bytes is the maximum: 268,435,455, waiting for its body.
    let mut buf = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0x7f][..]);
    assert_eq!(decode(&mut buf, usize::MAX), Ok(None));
    assert_eq!(buf.len(), 5);
}

#[test]
fn oversized_packet_is_rejected_as_soon_as_the_header_is_readable() {
    // Remaining length 1000 (0xe8 0x07), only the header buffered.
    assert_eq!(
        reject_header(&[0x30, 0xe8, 0x07], 999),
        DecodeError::PacketTooLarge {
            size: 1000,
            max: 999
        }
    );
    // Exactly the limit is fine: more bytes needed.
    let mut buf = BytesMut::from(&[0x30, 0xe8, 0x07][..]);
    assert_eq!(decode(&mut buf, 1000), Ok(None));
    // The limit covers the remaining length, not the fixed header.
    let bytes = frame(0xc0, &[]);
    assert_eq!(
        decode(&mut BytesMut::from(&bytes[..]), 0),
        Ok(Some(Packet::PingReq))
    );
}

#[test]
fn strings_must_be_well_formed_utf8() {
    // [MQTT-1.5.3-1]: invalid byte, and an encoded UTF-16 surrogate (U+D800).
    assert_eq!(
        reject(&publish(0x30, b"a\xff", None)),
        DecodeError::MalformedUtf8
    );
    assert_eq!(
        reject(&publish(0x30, b"\xed\xa0\x80", None)),
        DecodeError::MalformedUtf8
    );
    let mut payload = Vec::new();
    field(&mut payload, b"\xc3");
    assert_eq!(reject(&connect(0x02, &payload)), DecodeError::MalformedUtf8);
}

#[test]
fn strings_must_not_contain_null() {
    // [MQTT-1.5.3-2].
    assert_eq!(
        reject(&publish(0x30, b"a\0b", None)),
        DecodeError::NullCharacter
    );
    let mut payload = Vec::new();
    field(&mut payload, b"id\0");
    assert_eq!(reject(&connect(0x02, &payload)), DecodeError::NullCharacter);
    assert_eq!(
        reject(&subscribe(&[(b"a/\0", 0)])),
        DecodeError::NullCharacter
    );
}

#[test]
fn bom_is_kept_in_strings() {
    // [MQTT-1.5.3-3]: U+FEFF must not be skipped or stripped.
    let mut buf = BytesMut::from(&publish(0x30, "\u{feff}a".as_bytes(), None)[..]);
    let Some(Packet::Publish(p)) = decode(&mut buf, MAX).unwrap() else {
        panic!("expected a publish");
    };
    assert_eq!(p.topic, "\u{feff}a");
}

#[test]
fn publish_topic_must_be_a_valid_topic_name() {
    // [MQTT-3.3.2-2] no wildcards; [MQTT-4.7.3-1] at least one character.
    for topic in [&b"a/+"[..], b"#", b"a/#", b"sport+", b""] {
        assert_eq!(
            reject(&publish(0x30, topic, None)),
            DecodeError::InvalidTopicName
        );
    }
}

#[test]
fn packet_ids_must_be_nonzero() {
    // [MQTT-2.3.1-1].
    assert_eq!(
        reject(&publish(0x32, b"a", Some(0))),
        DecodeError::ZeroPacketId
    );
    assert_eq!(
        reject(&publish(0x34, b"a", Some(0))),
        DecodeError::ZeroPacketId
    );
    for first in [0x40, 0x50, 0x62, 0x70, 0xb0] {
        assert_eq!(reject(&frame(first, &[0, 0])), DecodeError::ZeroPacketId);
    }
    assert_eq!(
        reject(&frame(0x82, &[0, 0, 0, 1, b'a', 0])),
        DecodeError::ZeroPacketId
    );
    assert_eq!(
        reject(&frame(0xa2, &[0, 0, 0, 1, b'a'])),
        DecodeError::ZeroPacketId
    );
    assert_eq!(reject(&frame(0x90, &[0, 0, 0])), DecodeError::ZeroPacketId);
}

#[test]
fn qos_0_publish_has_no_packet_id() {
    // Section 3.3.2.2: the two bytes after the topic are payload at QoS 0.
    let mut buf = BytesMut::from(&publish(0x30, b"a", Some(0x0102))[..]);
    let Some(Packet::Publish(p)) = decode(&mut buf, MAX).unwrap() else {
        panic!("expected a publish");
    };
    assert_eq!((p.pkid, &p.payload[..2]), (0, &[1u8, 2][..]));
}

#[test]
fn subscribe_and_unsubscribe_need_a_filter() {
    // [MQTT-3.8.3-3], [MQTT-3.10.3-2].
    assert_eq!(reject(&subscribe(&[])), DecodeError::EmptySubscription);
    assert_eq!(reject(&unsubscribe(&[])), DecodeError::EmptySubscription);
}

#[test]
fn topic_filters_must_place_wildcards_correctly() {
    // [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1].
    for filter in [
        &b"sport/tennis#"[..],
        b"sport/tennis/#/ranking",
        b"sport+",
        b"",
        b"a/+b",
    ] {
        assert_eq!(
            reject(&subscribe(&[(filter, 0)])),
            DecodeError::InvalidTopicFilter
        );
        assert_eq!(
            reject(&unsubscribe(&[filter])),
            DecodeError::InvalidTopicFilter
        );
    }
}

#[test]
fn subscribe_options_reserved_bits_and_qos() {
    // [MQTT-3-8.3-4]: upper six bits reserved, QoS 3 malformed.
    assert_eq!(
        reject(&subscribe(&[(b"a", 0x04)])),
        DecodeError::ReservedFlagSet
    );
    assert_eq!(
        reject(&subscribe(&[(b"a", 0x81)])),
        DecodeError::ReservedFlagSet
    );
    assert_eq!(reject(&subscribe(&[(b"a", 3)])), DecodeError::InvalidQoS(3));
}

#[test]
fn truncated_fields_are_named() {
    assert_eq!(
        reject(&frame(0x82, &[0, 1, 0, 1, b'a'])),
        DecodeError::Truncated("requested qos")
    );
    assert_eq!(
        reject(&frame(0x30, &[0, 5, b'a'])),
        DecodeError::Truncated("topic name")
    );
    assert_eq!(
        reject(&frame(0x40, &[0])),
        DecodeError::Truncated("packet identifier")
    );
    assert_eq!(
        reject(&frame(0x10, &[0, 4, b'M'])),
        DecodeError::Truncated("protocol name")
    );
}

#[test]
fn fixed_size_packets_reject_extra_bytes() {
    assert!(matches!(
        reject(&frame(0x40, &[0, 1, 0])),
        DecodeError::MalformedPacket(_)
    ));
    assert!(matches!(
        reject(&frame(0xc0, &[0])),
        DecodeError::MalformedPacket(_)
    ));
    assert!(matches!(
        reject(&frame(0xe0, &[0])),
        DecodeError::MalformedPacket(_)
    ));
    assert!(matches!(
        reject(&frame(0x20, &[0, 0, 0])),
        DecodeError::MalformedPacket(_)
    ));
}

#[test]
fn connect_protocol_name_must_be_mqtt() {
    // [MQTT-3.1.2-1].
    let bytes = frame(0x10, &connect_body(b"MQTX", 4, 0x02, &[0, 0]));
    assert_eq!(reject(&bytes), DecodeError::InvalidProtocolName);
    let bytes = frame(0x10, &connect_body(b"mqtt", 4, 0x02, &[0, 0]));
    assert_eq!(reject(&bytes), DecodeError::InvalidProtocolName);
}

#[test]
fn unsupported_protocol_level_is_reported_after_consuming_the_packet() {
    // [MQTT-3.1.2-2]: an MQTT 5 CONNECT (properties length 0 before the payload).
    let mut bytes = frame(0x10, &connect_body(b"MQTT", 5, 0x02, &[0, 0, 0]));
    bytes.extend_from_slice(&[0xc0, 0x00]);
    let mut buf = BytesMut::from(&bytes[..]);
    let err = decode(&mut buf, MAX).unwrap_err();
    assert_eq!(err, DecodeError::UnsupportedProtocolLevel(5));
    assert_eq!(
        err.connack_code(),
        Some(ConnectReturnCode::UnacceptableProtocolVersion)
    );
    // The next packet is intact.
    assert_eq!(decode(&mut buf, MAX), Ok(Some(Packet::PingReq)));
    // Level and name must agree.
    let bytes = frame(0x10, &connect_body(b"MQTT", 3, 0x02, &[0, 0]));
    assert_eq!(reject(&bytes), DecodeError::UnsupportedProtocolLevel(3));
    let bytes = frame(0x10, &connect_body(b"MQIsdp", 4, 0x02, &[0, 0]));
    assert_eq!(reject(&bytes), DecodeError::UnsupportedProtocolLevel(4));
    assert_eq!(DecodeError::MalformedUtf8.connack_code(), None);
}

#[test]
fn mqtt_3_1_connect_is_accepted() {
    let mut payload = Vec::new();
    field(&mut payload, b"old-client");
    let bytes = frame(0x10, &connect_body(b"MQIsdp", 3, 0x02, &payload));
    let Some(Packet::Connect(c)) = decode(&mut BytesMut::from(&bytes[..]), MAX).unwrap() else {
        panic!("expected a connect");
    };
    assert_eq!((c.protocol_level, c.client_id.as_str()), (3, "old-client"));
}

#[test]
fn connect_reserved_flag_must_be_zero() {
    // [MQTT-3.1.2-3].
    assert_eq!(
        reject(&connect(0x03, &[0, 0])),
        DecodeError::ReservedFlagSet
    );
}

#[test]
fn will_flags_must_be_consistent() {
    // [MQTT-3.1.2-11], [MQTT-3.1.2-13]: will QoS without the will flag.
    assert_eq!(
        reject(&connect(0x08, &[0, 0])),
        DecodeError::InvalidWillFlags
    );
    assert_eq!(
        reject(&connect(0x10, &[0, 0])),
        DecodeError::InvalidWillFlags
    );
    // [MQTT-3.1.2-15]: will retain without the will flag.
    assert_eq!(
        reject(&connect(0x20, &[0, 0])),
        DecodeError::InvalidWillFlags
    );
    // [MQTT-3.1.2-14]: will QoS 3.
    let mut payload = Vec::new();
    field(&mut payload, b"");
    field(&mut payload, b"will/topic");
    field(&mut payload, b"bye");
    assert_eq!(reject(&connect(0x1c, &payload)), DecodeError::InvalidQoS(3));
    // [MQTT-3.1.2-9]: the will flag requires the will fields.
    assert_eq!(
        reject(&connect(0x04, &[0, 0])),
        DecodeError::Truncated("will topic")
    );
}

#[test]
fn will_topic_must_be_a_valid_topic_name() {
    let mut payload = Vec::new();
    field(&mut payload, b"id");
    field(&mut payload, b"will/#");
    field(&mut payload, b"bye");
    assert_eq!(
        reject(&connect(0x04, &payload)),
        DecodeError::InvalidTopicName
    );
}

#[test]
fn password_requires_username() {
    // [MQTT-3.1.2-22].
    let mut payload = Vec::new();
    field(&mut payload, b"id");
    field(&mut payload, b"secret");
    assert_eq!(
        reject(&connect(0x42, &payload)),
        DecodeError::PasswordWithoutUsername
    );
}

#[test]
fn flagged_username_and_password_must_be_present() {
    // [MQTT-3.1.2-19], [MQTT-3.1.2-21].
    let mut payload = Vec::new();
    field(&mut payload, b"id");
    assert_eq!(
        reject(&connect(0x82, &payload)),
        DecodeError::Truncated("user name")
    );
    field(&mut payload, b"user");
    assert_eq!(
        reject(&connect(0xc2, &payload)),
        DecodeError::Truncated("password")
    );
}

#[test]
fn connect_rejects_trailing_bytes() {
    let mut payload = Vec::new();
    field(&mut payload, b"id");
    payload.push(0);
    assert!(matches!(
        reject(&connect(0x02, &payload)),
        DecodeError::MalformedPacket(_)
    ));
}

#[test]
fn empty_client_id_is_left_to_the_server() {
    let Some(Packet::Connect(c)) =
        decode(&mut BytesMut::from(&connect(0x02, &[0, 0])[..]), MAX).unwrap()
    else {
        panic!("expected a connect");
    };
    assert_eq!(c.client_id, "");
}

#[test]
fn connack_reserved_bits_and_codes() {
    // Section 3.2.2.1 reserved bits, table 3.1 return codes, [MQTT-3.2.2-4].
    assert_eq!(
        reject(&frame(0x20, &[0x02, 0])),
        DecodeError::ReservedFlagSet
    );
    assert_eq!(
        reject(&frame(0x20, &[0, 6])),
        DecodeError::InvalidReturnCode(6)
    );
    assert!(matches!(
        reject(&frame(0x20, &[1, 5])),
        DecodeError::MalformedPacket(_)
    ));
}

#[test]
fn suback_codes_are_checked() {
    // [MQTT-3.9.3-2].
    assert_eq!(
        reject(&frame(0x90, &[0, 1, 0, 3])),
        DecodeError::InvalidReturnCode(3)
    );
    assert_eq!(
        reject(&frame(0x90, &[0, 1, 0x81])),
        DecodeError::InvalidReturnCode(0x81)
    );
    assert_eq!(
        reject(&frame(0x90, &[0, 1])),
        DecodeError::EmptySubscription
    );
}

#[test]
fn topic_name_validation() {
    for ok in [
        "a",
        "/",
        "sport/tennis/player1",
        "$SYS/x",
        "a//b",
        " ",
        "\u{feff}",
    ] {
        assert!(validate_topic_name(ok), "{ok:?}");
    }
    for bad in ["", "+", "#", "a/+/b", "a/#", "a\0"] {
        assert!(!validate_topic_name(bad), "{bad:?}");
    }
    assert!(validate_topic_name(&"a".repeat(65_535)));
    assert!(!validate_topic_name(&"a".repeat(65_536)));
}

#[test]
fn topic_filter_validation() {
    // Examples of section 4.7.1.
    for ok in [
        "sport/tennis/player1/#",
        "sport/#",
        "#",
        "+",
        "+/tennis/#",
        "sport/+/player1",
        "/+",
        "+/+",
        "/",
        "a//b",
    ] {
        assert!(validate_topic_filter(ok), "{ok:?}");
    }
    for bad in [
        "",
        "sport/tennis#",
        "sport/tennis/#/ranking",
        "sport+",
        "#/",
        "a/#b",
        "+a",
        "a\0",
    ] {
        assert!(!validate_topic_filter(bad), "{bad:?}");
    }
    assert!(!validate_topic_filter(&"a".repeat(65_536)));
}

/// Encode and return the error, checking nothing was appended.
fn refuse(packet: Packet) -> EncodeError {
    let mut buf = BytesMut::from(&b"prefix"[..]);
    let err = encode(&packet, &mut buf).unwrap_err();
    assert_eq!(&buf[..], b"prefix");
    err
}

fn sample_publish() -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "a/b".into(),
        pkid: 7,
        payload: Bytes::from_static(b"x"),
    }
}

fn sample_connect() -> Connect {
    Connect {
        protocol_level: 4,
        client_id: "c".into(),
        clean_session: true,
        keep_alive: 0,
        will: None,
        username: None,
        password: None,
    }
}

#[test]
fn encoder_refuses_what_the_decoder_rejects() {
    let publish = |f: fn(&mut Publish)| {
        let mut p = sample_publish();
        f(&mut p);
        Packet::Publish(p)
    };
    assert_eq!(refuse(publish(|p| p.pkid = 0)), EncodeError::ZeroPacketId);
    assert_eq!(
        refuse(publish(|p| p.topic = "a/+".into())),
        EncodeError::InvalidTopicName
    );
    assert_eq!(
        refuse(publish(|p| p.topic.clear())),
        EncodeError::InvalidTopicName
    );
    assert_eq!(
        refuse(publish(|p| p.topic = "a\0".into())),
        EncodeError::NullCharacter("topic name")
    );
    assert!(matches!(
        refuse(publish(|p| (p.qos, p.dup) = (QoS::AtMostOnce, true))),
        EncodeError::InvalidPacket(_)
    ));
    assert_eq!(refuse(Packet::PubRel(0)), EncodeError::ZeroPacketId);
    assert_eq!(
        refuse(Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![]
        })),
        EncodeError::EmptySubscription
    );
    assert_eq!(
        refuse(Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![("a#".into(), QoS::AtMostOnce)]
        })),
        EncodeError::InvalidTopicFilter
    );
    assert_eq!(
        refuse(Packet::Unsubscribe(Unsubscribe {
            pkid: 1,
            filters: vec![]
        })),
        EncodeError::EmptySubscription
    );
    assert_eq!(
        refuse(Packet::SubAck(SubAck {
            pkid: 1,
            codes: vec![]
        })),
        EncodeError::EmptySubscription
    );
    assert!(matches!(
        refuse(Packet::ConnAck(ConnAck {
            session_present: true,
            code: ConnectReturnCode::NotAuthorized
        })),
        EncodeError::InvalidPacket(_)
    ));
    let connect = |f: fn(&mut Connect)| {
        let mut c = sample_connect();
        f(&mut c);
        Packet::Connect(c)
    };
    assert_eq!(
        refuse(connect(|c| c.password = Some(Bytes::from_static(b"pw")))),
        EncodeError::PasswordWithoutUsername
    );
    assert_eq!(
        refuse(connect(|c| c.protocol_level = 5)),
        EncodeError::UnsupportedProtocolLevel(5)
    );
    assert_eq!(
        refuse(connect(|c| c.client_id = "\0".into())),
        EncodeError::NullCharacter("client identifier")
    );
    assert_eq!(
        refuse(connect(|c| {
            c.will = Some(Will {
                topic: "w/+".into(),
                payload: Bytes::new(),
                qos: QoS::AtMostOnce,
                retain: false,
            })
        })),
        EncodeError::InvalidTopicName
    );
}

#[test]
fn encoder_refuses_oversized_fields_and_packets() {
    let mut c = sample_connect();
    c.client_id = "a".repeat(65_536);
    assert_eq!(
        refuse(Packet::Connect(c)),
        EncodeError::FieldTooLong {
            field: "client identifier",
            len: 65_536
        }
    );
    let mut c = sample_connect();
    c.username = Some("u".into());
    c.password = Some(Bytes::from(vec![0u8; 65_536]));
    assert_eq!(
        refuse(Packet::Connect(c)),
        EncodeError::FieldTooLong {
            field: "password",
            len: 65_536
        }
    );
    // Topic "a/b" (5 bytes) + packet id (2) + payload = 268,435,456.
    let mut p = sample_publish();
    p.payload = Bytes::from(vec![0u8; MAX_REMAINING_LENGTH - 6]);
    assert_eq!(
        refuse(Packet::Publish(p)),
        EncodeError::PacketTooLarge(MAX_REMAINING_LENGTH + 1)
    );
}

#[test]
fn remaining_length_boundaries_round_trip() {
    // Section 2.2.3 table 2.4: the first value needing 2, 3 and 4 bytes.
    for (remaining, header) in [
        (127usize, &[0x32, 0x7f][..]),
        (128, &[0x32, 0x80, 0x01]),
        (16_384, &[0x32, 0x80, 0x80, 0x01]),
        (2_097_152, &[0x32, 0x80, 0x80, 0x80, 0x01]),
    ] {
        let mut p = sample_publish();
        p.payload = Bytes::from(vec![7u8; remaining - 7]);
        let mut buf = BytesMut::new();
        encode(&Packet::Publish(p.clone()), &mut buf).unwrap();
        assert_eq!(&buf[..header.len()], header);
        assert_eq!(buf.len(), header.len() + remaining);
        assert_eq!(decode(&mut buf, remaining), Ok(Some(Packet::Publish(p))));
        assert!(buf.is_empty());
    }
}
