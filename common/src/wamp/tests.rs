//! Round trips and rejections of the WAMP codec.

use super::*;

pub(super) const SERIALIZERS: [Serializer; 3] =
    [Serializer::Json, Serializer::MsgPack, Serializer::Cbor];

fn dict(entries: &[(&str, Value)]) -> Dict {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn rich_args() -> Vec<Value> {
    vec![
        Value::from("Hello, world!"),
        Value::from(-7),
        Value::from(u64::MAX),
        Value::F64(1.5),
        Value::Nil,
        Value::Boolean(true),
        Value::Binary(vec![0, 1, 254, 255]),
        Value::Array(vec![
            Value::from(1),
            Value::Map(vec![(Value::from("k"), Value::from("v"))]),
        ]),
    ]
}

fn rich_kwargs() -> Dict {
    dict(&[
        ("name", Value::from("alice")),
        ("bytes", Value::Binary(b"\0raw".to_vec())),
        (
            "nested",
            Value::Map(vec![(Value::from("deep"), Value::Array(vec![]))]),
        ),
    ])
}

/// Every message type, with empty and filled optional parts.
fn samples() -> Vec<Message> {
    let opts = dict(&[
        ("acknowledge", Value::Boolean(true)),
        ("x_custom", Value::from(3)),
    ]);
    let roles = dict(&[(
        "roles",
        Value::Map(vec![(Value::from("subscriber"), Value::Map(vec![]))]),
    )]);
    let id = 1u64 << 53;
    let mut out = vec![
        Message::Hello {
            realm: "com.example.realm".into(),
            details: roles.clone(),
        },
        Message::Welcome {
            session: id,
            details: roles,
        },
        Message::Abort {
            details: Dict::new(),
            reason: "wamp.error.no_such_realm".into(),
        },
        Message::Challenge {
            authmethod: "wampcra".into(),
            extra: dict(&[("challenge", Value::from("{}"))]),
        },
        Message::Authenticate {
            signature: "c2lnbmF0dXJl".into(),
            extra: Dict::new(),
        },
        Message::Goodbye {
            details: Dict::new(),
            reason: "wamp.close.normal".into(),
        },
        Message::Published {
            request: 1,
            publication: id,
        },
        Message::Subscribe {
            request: 2,
            options: Dict::new(),
            topic: "com.myapp.topic1".into(),
        },
        Message::Subscribe {
            request: 3,
            options: dict(&[("match", Value::from("wildcard"))]),
            topic: "com..update".into(),
        },
        Message::Subscribed {
            request: 2,
            subscription: 0,
        },
        Message::Unsubscribe {
            request: 4,
            subscription: 5,
        },
        Message::Unsubscribed {
            request: 4,
            details: Dict::new(),
        },
        Message::Unsubscribed {
            request: 4,
            details: dict(&[("reason", Value::from("wamp.x"))]),
        },
        Message::Cancel {
            request: 6,
            options: dict(&[("mode", Value::from("kill"))]),
        },
        Message::Register {
            request: 7,
            options: Dict::new(),
            procedure: "com.myapp.add2".into(),
        },
        Message::Register {
            request: 7,
            options: dict(&[("match", Value::from("prefix"))]),
            procedure: "com.myapp.".into(),
        },
        Message::Registered {
            request: 7,
            registration: 8,
        },
        Message::Unregister {
            request: 9,
            registration: 8,
        },
        Message::Unregistered {
            request: 9,
            details: Dict::new(),
        },
        Message::Interrupt {
            request: 10,
            options: Dict::new(),
        },
    ];
    // Each payload-carrying message with no payload, args only, kwargs only, both.
    let payloads = [
        (vec![], Dict::new()),
        (rich_args(), Dict::new()),
        (vec![], rich_kwargs()),
        (rich_args(), rich_kwargs()),
    ];
    for (args, kwargs) in payloads {
        out.extend([
            Message::Error {
                request_type: code::CALL,
                request: 11,
                details: Dict::new(),
                error: "com.myapp.error".into(),
                args: args.clone(),
                kwargs: kwargs.clone(),
            },
            Message::Publish {
                request: 12,
                options: opts.clone(),
                topic: "com.myapp.topic1".into(),
                args: args.clone(),
                kwargs: kwargs.clone(),
            },
            Message::Event {
                subscription: 13,
                publication: 14,
                details: dict(&[("publisher", Value::from(15))]),
                args: args.clone(),
                kwargs: kwargs.clone(),
            },
            Message::Call {
                request: 16,
                options: dict(&[("timeout", Value::from(1000))]),
                procedure: "com.myapp.add2".into(),
                args: args.clone(),
                kwargs: kwargs.clone(),
            },
            Message::Result {
                request: 16,
                details: Dict::new(),
                args: args.clone(),
                kwargs: kwargs.clone(),
            },
            Message::Invocation {
                request: 17,
                registration: 8,
                details: Dict::new(),
                args: args.clone(),
                kwargs: kwargs.clone(),
            },
            Message::Yield {
                request: 17,
                options: Dict::new(),
                args,
                kwargs,
            },
        ]);
    }
    out
}

#[test]
fn every_message_type_round_trips_in_every_serializer() {
    let samples = samples();
    let codes: std::collections::BTreeSet<u64> = samples.iter().map(Message::code).collect();
    assert_eq!(
        codes.len(),
        message::MESSAGES.len(),
        "a message type has no sample"
    );
    for ser in SERIALIZERS {
        for msg in &samples {
            let bytes = encode(ser, msg);
            assert_eq!(decode(ser, &bytes).as_ref(), Ok(msg), "{ser:?} {msg:?}");
        }
    }
}

#[test]
fn names_and_codes_agree() {
    for msg in samples() {
        assert_eq!(message::code_of(msg.name()), Some(msg.code()));
    }
}

#[test]
fn serializer_names() {
    for ser in SERIALIZERS {
        assert_eq!(Serializer::from_subprotocol(ser.subprotocol()), Some(ser));
    }
    assert_eq!(Serializer::from_subprotocol("wamp.2.ubjson"), None);
    assert!(Serializer::MsgPack.is_binary() && !Serializer::Json.is_binary());
    assert!(Serializer::Cbor.is_binary());
}

fn publish(args: Vec<Value>, kwargs: Dict) -> Message {
    Message::Publish {
        request: 1,
        options: Dict::new(),
        topic: "a.b".into(),
        args,
        kwargs,
    }
}

#[test]
fn empty_payload_is_left_off_and_args_kept_for_kwargs() {
    let json = |m: &Message| String::from_utf8(encode(Serializer::Json, m)).unwrap_or_default();
    assert_eq!(json(&publish(vec![], Dict::new())), r#"[16,1,{},"a.b"]"#);
    assert_eq!(
        json(&publish(vec![Value::from(1)], Dict::new())),
        r#"[16,1,{},"a.b",[1]]"#
    );
    let kw = dict(&[("k", Value::from(2))]);
    assert_eq!(json(&publish(vec![], kw)), r#"[16,1,{},"a.b",[],{"k":2}]"#);
    assert_eq!(
        encode(Serializer::MsgPack, &publish(vec![], Dict::new())),
        [0x94, 0x10, 0x01, 0x80, 0xa3, b'a', b'.', b'b']
    );
}

#[test]
fn explicit_empty_payload_is_accepted() {
    for text in [
        r#"[16,1,{},"a.b",[],{}]"#,
        r#"[16,1,{},"a.b",[]]"#,
        r#"[16,1,{},"a.b"]"#,
    ] {
        assert_eq!(
            decode(Serializer::Json, text.as_bytes()),
            Ok(publish(vec![], Dict::new()))
        );
    }
}

#[test]
fn json_binary_and_unencodable_floats() {
    let msg = publish(
        vec![Value::Binary(b"hello".to_vec()), Value::F64(f64::NAN)],
        Dict::new(),
    );
    let text = String::from_utf8(encode(Serializer::Json, &msg)).unwrap_or_default();
    assert_eq!(text, r#"[16,1,{},"a.b",["\u0000aGVsbG8=",null]]"#);
}

fn json_err(text: &str) -> DecodeError {
    match decode(Serializer::Json, text.as_bytes()) {
        Ok(m) => panic!("{text} decoded to {m:?}"),
        Err(e) => e,
    }
}

#[test]
fn rejects_bad_envelopes() {
    assert!(matches!(json_err("[16,1,{},"), DecodeError::Syntax(_)));
    assert!(matches!(
        json_err(r#"[17,1,2] [17,1,2]"#),
        DecodeError::Syntax(_)
    ));
    assert_eq!(json_err("{}"), DecodeError::NotAnArray);
    assert_eq!(json_err(r#""x""#), DecodeError::NotAnArray);
    assert_eq!(json_err("[]"), DecodeError::InvalidCode);
    assert_eq!(json_err(r#"["16"]"#), DecodeError::InvalidCode);
    assert_eq!(json_err("[-1]"), DecodeError::InvalidCode);
    assert_eq!(json_err("[16.5]"), DecodeError::InvalidCode);
    assert_eq!(json_err("[999,1]"), DecodeError::UnknownCode(999));
    assert_eq!(json_err("[337,5512315355]"), DecodeError::UnknownCode(337));
}

#[test]
fn rejects_bad_fields_with_request_info() {
    let req = Some(1);
    let cases = [
        (
            r#"[16,"1",{},"a"]"#,
            DecodeError::WrongType {
                message: "PUBLISH",
                field: "request",
                request: None,
            },
        ),
        (
            r#"[16,1.5,{},"a"]"#,
            DecodeError::WrongType {
                message: "PUBLISH",
                field: "request",
                request: None,
            },
        ),
        (
            r#"[16,-1,{},"a"]"#,
            DecodeError::IdOutOfRange {
                message: "PUBLISH",
                field: "request",
                request: None,
            },
        ),
        (
            r#"[16,9007199254740993,{},"a"]"#,
            DecodeError::IdOutOfRange {
                message: "PUBLISH",
                field: "request",
                request: None,
            },
        ),
        (
            r#"[16,1,[],"a"]"#,
            DecodeError::WrongType {
                message: "PUBLISH",
                field: "options",
                request: req,
            },
        ),
        (
            r#"[16,1,{}]"#,
            DecodeError::MissingField {
                message: "PUBLISH",
                field: "topic",
                request: req,
            },
        ),
        (
            r#"[16,1,{},7]"#,
            DecodeError::WrongType {
                message: "PUBLISH",
                field: "topic",
                request: req,
            },
        ),
        (
            r#"[16,1,{},"a b"]"#,
            DecodeError::InvalidUri {
                message: "PUBLISH",
                field: "topic",
                request: req,
            },
        ),
        (
            r#"[16,1,{},"a..b"]"#,
            DecodeError::InvalidUri {
                message: "PUBLISH",
                field: "topic",
                request: req,
            },
        ),
        (
            r#"[16,1,{},"a",{}]"#,
            DecodeError::WrongType {
                message: "PUBLISH",
                field: "args",
                request: req,
            },
        ),
        (
            r#"[16,1,{},"a",[],[]]"#,
            DecodeError::WrongType {
                message: "PUBLISH",
                field: "kwargs",
                request: req,
            },
        ),
        (
            r#"[16,1,{},"a",[],{},1]"#,
            DecodeError::TooManyFields {
                message: "PUBLISH",
                request: req,
            },
        ),
        (
            r#"[16,1,{"acknowledge":1},"a"]"#,
            DecodeError::InvalidOption {
                message: "PUBLISH",
                key: "acknowledge",
                request: req,
            },
        ),
        (
            r#"[16,1,{"enc_algo":"cryptobox"},"a","\u0000AAAA"]"#,
            DecodeError::PayloadPassthru {
                message: "PUBLISH",
                request: req,
            },
        ),
        (
            r#"[32,1,{},"com..x"]"#,
            DecodeError::InvalidUri {
                message: "SUBSCRIBE",
                field: "topic",
                request: req,
            },
        ),
        (
            r#"[32,1,{"match":"prefix"},"com..x"]"#,
            DecodeError::InvalidUri {
                message: "SUBSCRIBE",
                field: "topic",
                request: req,
            },
        ),
        (
            r#"[64,1,{"match":"regex"},"a"]"#,
            DecodeError::InvalidOption {
                message: "REGISTER",
                key: "match",
                request: req,
            },
        ),
        (
            r#"[34,1,"x"]"#,
            DecodeError::WrongType {
                message: "UNSUBSCRIBE",
                field: "subscription",
                request: req,
            },
        ),
        (
            r#"[36,1,2,{},"\u0000AAAA"]"#,
            DecodeError::PayloadPassthru {
                message: "EVENT",
                request: None,
            },
        ),
        (
            r#"[36,1,-2,{}]"#,
            DecodeError::IdOutOfRange {
                message: "EVENT",
                field: "publication",
                request: None,
            },
        ),
        (
            r#"[17,1,2,3]"#,
            DecodeError::TooManyFields {
                message: "PUBLISHED",
                request: None,
            },
        ),
        (
            r#"[35,1,[]]"#,
            DecodeError::WrongType {
                message: "UNSUBSCRIBED",
                field: "details",
                request: None,
            },
        ),
        (
            r#"[1," ",{}]"#,
            DecodeError::InvalidUri {
                message: "HELLO",
                field: "realm",
                request: None,
            },
        ),
        (
            r#"[1,"r",{"roles":[]}]"#,
            DecodeError::InvalidOption {
                message: "HELLO",
                key: "roles",
                request: None,
            },
        ),
        (
            r#"[70,1,{},[],{},9]"#,
            DecodeError::TooManyFields {
                message: "YIELD",
                request: None,
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(json_err(text), expected, "{text}");
    }
}

#[test]
fn request_info_only_for_requests_with_a_readable_id() {
    let info = |text: &str| json_err(text).request_info();
    assert_eq!(info(r#"[16,1,{},"a b"]"#), Some((code::PUBLISH, 1)));
    assert_eq!(
        info(r#"[32,7,{"match":9},"a"]"#),
        Some((code::SUBSCRIBE, 7))
    );
    assert_eq!(info(r#"[34,8]"#), Some((code::UNSUBSCRIBE, 8)));
    assert_eq!(info(r#"[48,9,{},"p",{}]"#), Some((code::CALL, 9)));
    assert_eq!(info(r#"[64,10,{},"p",[]]"#), Some((code::REGISTER, 10)));
    assert_eq!(info(r#"[66,11,-1]"#), Some((code::UNREGISTER, 11)));
    // The request id itself is bad, or the message is not a request.
    assert_eq!(info(r#"[16,"1",{},"a"]"#), None);
    assert_eq!(info(r#"[16,-1,{},"a"]"#), None);
    assert_eq!(info(r#"[17,1,2,3]"#), None);
    assert_eq!(info(r#"[70,1,[]]"#), None);
    assert_eq!(info(r#"[8,48,1,{},"a b"]"#), None);
    assert_eq!(info("[999]"), None);
    assert_eq!(info("[16,"), None);
}

#[test]
fn accepts_edge_ids_and_patterns() {
    let ok = |text: &str| decode(Serializer::Json, text.as_bytes()).map(|m| m.code());
    assert_eq!(ok("[17,0,9007199254740992]"), Ok(code::PUBLISHED));
    assert_eq!(
        ok("[17,1.0,2e3]"),
        Ok(code::PUBLISHED),
        "integral floats are ids"
    );
    assert_eq!(
        ok(r#"[32,1,{"match":"wildcard"},"com..x"]"#),
        Ok(code::SUBSCRIBE)
    );
    assert_eq!(
        ok(r#"[32,1,{"match":"prefix"},"com.x."]"#),
        Ok(code::SUBSCRIBE)
    );
    assert_eq!(ok(r#"[67,1,{}]"#), Ok(code::UNREGISTERED));
    assert_eq!(ok(r#"[8,48,1,{},"wamp.error.x",[],{}]"#), Ok(code::ERROR));
}

pub(super) fn msgpack_of(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let written = rmpv::encode::write_value(&mut out, value);
    assert!(written.is_ok());
    out
}

pub(super) fn cbor_of(value: &Value) -> Vec<u8> {
    super::cbor::write(&super::cbor::to_cbor(value))
}

#[test]
fn rejects_bad_cbor() {
    let cb = |bytes: &[u8]| decode(Serializer::Cbor, bytes);
    let full = encode(Serializer::Cbor, &publish(rich_args(), rich_kwargs()));
    assert_eq!(cb(&full), Ok(publish(rich_args(), rich_kwargs())));
    for len in 0..full.len() {
        assert!(
            matches!(cb(&full[..len]), Err(DecodeError::Syntax(_))),
            "prefix {len}"
        );
    }
    // A map, not an array; a non-string dict key; a text URI that is not UTF-8.
    assert_eq!(cb(&[0xa1, 0x61, b'k', 0x01]), Err(DecodeError::NotAnArray));
    let int_key = Value::Array(vec![
        Value::from(32),
        Value::from(1),
        Value::Map(vec![(Value::from(1), Value::Nil)]),
        Value::from("a"),
    ]);
    assert!(matches!(
        cb(&cbor_of(&int_key)),
        Err(DecodeError::WrongType {
            message: "SUBSCRIBE",
            ..
        })
    ));
    assert!(matches!(
        cb(&[0x84, 0x18, 0x20, 0x01, 0xa0, 0x62, 0xff, 0xfe]),
        Err(DecodeError::Syntax(_))
    ));
    // Indefinite-length array of a SUBSCRIBE decodes like the definite one.
    let indefinite = [0x9f, 0x18, 0x20, 0x01, 0xa0, 0x61, b'a', 0xff];
    assert_eq!(
        cb(&indefinite),
        Ok(Message::Subscribe {
            request: 1,
            options: Dict::new(),
            topic: "a".into()
        })
    );
}

#[test]
fn rejects_bad_msgpack() {
    let mp = |bytes: &[u8]| decode(Serializer::MsgPack, bytes);
    // Every truncation of a valid message fails cleanly.
    let full = encode(Serializer::MsgPack, &publish(rich_args(), rich_kwargs()));
    for len in 0..full.len() {
        assert!(
            matches!(mp(&full[..len]), Err(DecodeError::Syntax(_))),
            "prefix {len}"
        );
    }
    let mut trailing = full.clone();
    trailing.push(0xc0);
    assert!(matches!(mp(&trailing), Err(DecodeError::Syntax(_))));
    // Lengths far beyond the buffer allocate nothing and fail.
    for lie in [
        &[0xdd, 0xff, 0xff, 0xff, 0xff, 0x10][..],
        &[0x92, 0x10, 0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
    ] {
        assert!(matches!(mp(lie), Err(DecodeError::Syntax(_))));
    }
    // Invalid UTF-8 in any msgpack str (here a URI), non-string dict keys.
    let bad_utf8 = [0x94, 0x20, 0x01, 0x80, 0xa2, 0xff, 0xfe];
    assert!(matches!(mp(&bad_utf8), Err(DecodeError::Syntax(_))));
    // Found by fuzzing: a non-UTF-8 str in args would come back as binary.
    let bad_arg = [
        0x95, 0x10, 0x01, 0x80, 0xa3, 0x61, 0x2e, 0x62, 0x91, 0xa1, 0xff,
    ];
    assert!(matches!(mp(&bad_arg), Err(DecodeError::Syntax(_))));
    let int_key = Value::Array(vec![
        Value::from(32),
        Value::from(1),
        Value::Map(vec![(Value::from(1), Value::Nil)]),
        Value::from("a"),
    ]);
    assert_eq!(
        mp(&msgpack_of(&int_key)),
        Err(DecodeError::WrongType {
            message: "SUBSCRIBE",
            field: "options",
            request: Some(1)
        })
    );
    assert_eq!(mp(&[0x81, 0xa1, b'k', 0x01]), Err(DecodeError::NotAnArray));
}

/// A PUBLISH whose single argument nests `levels` arrays deep (message array included).
fn nested_publish(levels: usize) -> Value {
    let mut arg = Value::from("leaf");
    for _ in 0..levels.saturating_sub(2) {
        arg = Value::Array(vec![arg]);
    }
    Value::Array(vec![
        Value::from(16),
        Value::from(1),
        Value::Map(vec![]),
        Value::from("a"),
        Value::Array(vec![arg]),
    ])
}

#[test]
fn nesting_is_limited_without_overflowing_the_stack() {
    for (levels, ok) in [
        (MAX_DEPTH, true),
        (MAX_DEPTH + 1, false),
        (MAX_DEPTH + 3, false),
    ] {
        let value = nested_publish(levels);
        let json = serde_json::to_vec(&value::to_json(&value)).unwrap_or_default();
        for (ser, bytes) in [
            (Serializer::Json, json),
            (Serializer::MsgPack, msgpack_of(&value)),
            (Serializer::Cbor, cbor_of(&value)),
        ] {
            let got = decode(ser, &bytes);
            if ok {
                assert!(got.is_ok(), "{ser:?} {levels}: {got:?}");
            } else {
                assert_eq!(got, Err(DecodeError::TooDeep), "{ser:?} {levels}");
            }
        }
    }
    // Far deeper than any stack could recurse.
    let deep = 1_000_000;
    let mut bytes = vec![0x91; deep];
    bytes.push(0xc0);
    assert_eq!(
        decode(Serializer::MsgPack, &bytes),
        Err(DecodeError::TooDeep)
    );
    let mut map_keys = vec![0x81; deep];
    map_keys.extend([0xc0, 0xc0]);
    assert_eq!(
        decode(Serializer::MsgPack, &map_keys),
        Err(DecodeError::TooDeep)
    );
    let text = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
    assert_eq!(
        decode(Serializer::Json, text.as_bytes()),
        Err(DecodeError::TooDeep)
    );
    let objects = "{\"a\":".repeat(deep);
    assert_eq!(
        decode(Serializer::Json, objects.as_bytes()),
        Err(DecodeError::TooDeep)
    );
}

#[test]
fn dict_helpers() {
    let d = dict(&[("a", Value::from(1))]);
    assert_eq!(value_to_dict(dict_to_value(d.clone())), Some(d));
    assert_eq!(value_to_dict(Value::Array(vec![])), None);
    assert_eq!(
        value_to_dict(Value::Map(vec![(Value::Nil, Value::Nil)])),
        None
    );
}
