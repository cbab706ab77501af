//! Checks shared by the WAMP fuzz targets.

use ordo_common::wamp::{decode, encode, Message, Serializer};

/// Decode `data` with `ser`; if it is a message, check that it survives a
/// round trip through `ser` and through each serializer in `also`.
///
/// A round trip through a serializer means: the encoding decodes, to a message
/// equal to the first one, and encoding that message again gives the same
/// bytes (an encoding is a fixed point). Messages holding a NaN are not equal
/// to themselves, so for them only the bytes are compared.
pub fn check_wamp(ser: Serializer, data: &[u8], also: &[Serializer]) {
    let Ok(msg) = decode(ser, data) else {
        return;
    };
    for &to in std::iter::once(&ser).chain(also) {
        round_trip(&msg, to);
    }
}

/// Encode `msg` with `ser`, decode it and compare (see [`check_wamp`]).
fn round_trip(msg: &Message, ser: Serializer) {
    let wire = encode(ser, msg);
    let again = match decode(ser, &wire) {
        Ok(again) => again,
        Err(e) => panic!(
            "{ser:?} encoding of {msg:?} does not decode: {e}\nencoding: {}",
            show(ser, &wire)
        ),
    };
    #[allow(clippy::eq_op)] // NaN check
    let comparable = msg == msg;
    if comparable {
        assert_eq!(&again, msg, "{ser:?} round trip changed the message");
    }
    let rewire = encode(ser, &again);
    assert!(
        rewire == wire,
        "{ser:?} encoding is not a fixed point for {msg:?}\nfirst:  {}\nsecond: {}",
        show(ser, &wire),
        show(ser, &rewire)
    );
}

/// Render an encoding for a panic message: text for JSON, hex for msgpack and CBOR.
fn show(ser: Serializer, bytes: &[u8]) -> String {
    match ser {
        Serializer::Json => String::from_utf8_lossy(bytes).into_owned(),
        Serializer::MsgPack | Serializer::Cbor => format!("{bytes:02x?}"),
    }
}
