//! Property tests: no input panics the decoder, and whatever decodes
//! re-encodes to a fixed point.

use proptest::prelude::*;

use super::tests::{cbor_of, msgpack_of, SERIALIZERS};
use super::*;

/// Leaf values, with URIs and ids among them so that typed paths get exercised.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        (0u64..40).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::F64),
        prop_oneof![
            Just("a.b"),
            Just(""),
            Just("com..x"),
            Just("a b"),
            Just("wildcard"),
            Just("match")
        ]
        .prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Binary),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((leaf(), inner), 0..4).prop_map(Value::Map),
        ]
    })
}

/// Arrays that start with a known code, so most of them reach the field parser.
fn wire_array() -> impl Strategy<Value = Value> {
    let codes: Vec<u64> = message::MESSAGES.iter().map(|(c, _)| *c).collect();
    (
        proptest::sample::select(codes),
        proptest::collection::vec(value(), 0..7),
    )
        .prop_map(|(code, mut rest)| {
            rest.insert(0, Value::from(code));
            Value::Array(rest)
        })
}

/// Text made of JSON punctuation, numbers and URI-ish words, behind a code.
fn json_ish() -> impl Strategy<Value = String> {
    let codes: Vec<u64> = message::MESSAGES.iter().map(|(c, _)| *c).collect();
    (
        proptest::sample::select(codes),
        "([\\[\\]{},:]|-?[0-9]{1,17}|\"[a-z. #]{0,6}\"|true|null|1e99|\"\\\\u0000AAAA\"){0,24}",
    )
        .prop_map(|(code, rest)| format!("[{code},{rest}"))
}

proptest! {
    // Failures print their seed; nothing is written next to the sources.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        for ser in SERIALIZERS {
            let _ = decode(ser, &bytes);
        }
    }

    #[test]
    fn decoded_messages_reencode_to_themselves(array in wire_array()) {
        let json = serde_json::to_vec(&value::to_json(&array)).unwrap_or_default();
        let sources = [
            (Serializer::Json, json),
            (Serializer::MsgPack, msgpack_of(&array)),
            (Serializer::Cbor, cbor_of(&array)),
        ];
        for (ser, bytes) in sources {
            if let Ok(msg) = decode(ser, &bytes) {
                // Compared as bytes: a NaN argument is unequal to itself.
                let first = encode(ser, &msg);
                let again = decode(ser, &first).map(|m| encode(ser, &m));
                prop_assert_eq!(again, Ok(first), "{:?} {:?}", ser, msg);
            }
        }
    }

    /// A message decoded from msgpack crosses to CBOR and back unchanged
    /// (the generator makes no float32 or ext values, which CBOR widens or drops).
    #[test]
    fn msgpack_messages_survive_cbor(array in wire_array()) {
        if let Ok(msg) = decode(Serializer::MsgPack, &msgpack_of(&array)) {
            let cbor = encode(Serializer::Cbor, &msg);
            let back = decode(Serializer::Cbor, &cbor).map(|m| encode(Serializer::MsgPack, &m));
            prop_assert_eq!(back, Ok(encode(Serializer::MsgPack, &msg)), "{:?}", msg);
        }
    }

    #[test]
    fn json_shaped_text_never_panics(text in json_ish()) {
        if let Ok(msg) = decode(Serializer::Json, text.as_bytes()) {
            let first = encode(Serializer::Json, &msg);
            let again = decode(Serializer::Json, &first).map(|m| encode(Serializer::Json, &m));
            prop_assert_eq!(again, Ok(first));
        }
    }

    /// serde_json's default float parser may be 1 ULP off (exact parsing needs
    /// its `float_roundtrip` feature); check the bound that holds today.
    #[test]
    fn json_floats_round_trip_within_one_ulp(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
        let msg = Message::Yield { request: 1, options: Dict::new(), args: vec![Value::F64(f)], kwargs: Dict::new() };
        let back = match decode(Serializer::Json, &encode(Serializer::Json, &msg)) {
            Ok(Message::Yield { args, .. }) => args.first().and_then(Value::as_f64),
            _ => None,
        };
        let ulps = back.map(|b| (b.to_bits() as i64).abs_diff(f.to_bits() as i64));
        prop_assert!(ulps.is_some_and(|d| d <= 1), "{} came back as {:?}", f, back);
    }
}
