//! The `wamp.2.cbor` serializer: CBOR (RFC 8949) through `ciborium`'s value type.
//!
//! CBOR meets the other serializers in [`Value`]: text is a string, a byte
//! string is binary, every float decodes as `F64` (ciborium encodes it in the
//! shortest width that keeps its value), and tags are dropped in favour of the
//! value they wrap (WAMP defines none). Integers outside `[-2^63, 2^64)` (CBOR
//! bignums) are rejected: no WAMP id or argument needs them and [`Value`] cannot
//! hold them.
//!
//! Decoding bounds recursion with ciborium's own limit before the exact
//! [`MAX_DEPTH`] check, and ciborium never preallocates from a length prefix.

use ciborium::value::{Integer, Value as Cbor};
use rmpv::Value;

use super::error::DecodeError;
use super::MAX_DEPTH;

/// Parse one CBOR data item, which must fill `bytes` exactly.
pub(crate) fn read(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut cursor = bytes;
    // One level per array, map or tag; tags may double the count, the exact
    // limit is applied on the converted value.
    let limit = 2 * MAX_DEPTH + 4;
    let item: Cbor = ciborium::de::from_reader_with_recursion_limit(&mut cursor, limit).map_err(
        |e| match e {
            ciborium::de::Error::RecursionLimitExceeded => DecodeError::TooDeep,
            other => DecodeError::Syntax(other.to_string()),
        },
    )?;
    if !cursor.is_empty() {
        return Err(DecodeError::Syntax(format!(
            "{} bytes after the message",
            cursor.len()
        )));
    }
    from_cbor(item)
}

/// Convert a CBOR value into a WAMP value.
///
/// Recursion is bounded by the recursion limit of the reader that built `item`.
fn from_cbor(item: Cbor) -> Result<Value, DecodeError> {
    Ok(match item {
        Cbor::Null => Value::Nil,
        Cbor::Bool(b) => Value::Boolean(b),
        Cbor::Integer(i) => {
            let wide = i128::from(i);
            if let Ok(u) = u64::try_from(wide) {
                Value::from(u)
            } else if let Ok(s) = i64::try_from(wide) {
                Value::from(s)
            } else {
                return Err(DecodeError::Syntax(
                    "cbor integer outside the 64-bit range".into(),
                ));
            }
        }
        Cbor::Float(f) => Value::F64(f),
        Cbor::Text(s) => Value::from(s),
        Cbor::Bytes(b) => Value::Binary(b),
        // Bignums (tags 2 and 3) too wide for 64 bits arrive as tagged bytes.
        Cbor::Tag(2 | 3, _) => {
            return Err(DecodeError::Syntax(
                "cbor bignum outside the 64-bit range".into(),
            ))
        }
        Cbor::Tag(_, inner) => from_cbor(*inner)?,
        Cbor::Array(items) => {
            Value::Array(items.into_iter().map(from_cbor).collect::<Result<_, _>>()?)
        }
        Cbor::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| Ok((from_cbor(k)?, from_cbor(v)?)))
                .collect::<Result<_, DecodeError>>()?,
        ),
        // `ciborium::Value` is non-exhaustive.
        _ => return Err(DecodeError::Syntax("unsupported cbor item".into())),
    })
}

/// Convert a WAMP value into CBOR.
///
/// A msgpack string that is not UTF-8 becomes a byte string; msgpack extension
/// values have no CBOR form and become `null`.
pub(crate) fn to_cbor(value: &Value) -> Cbor {
    match value {
        Value::Nil | Value::Ext(..) => Cbor::Null,
        Value::Boolean(b) => Cbor::Bool(*b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Cbor::Integer(Integer::from(u)),
            (None, Some(s)) => Cbor::Integer(Integer::from(s)),
            (None, None) => Cbor::Null,
        },
        Value::F32(f) => Cbor::Float(f64::from(*f)),
        Value::F64(f) => Cbor::Float(*f),
        Value::String(s) => match s.as_str() {
            Some(text) => Cbor::Text(text.to_owned()),
            None => Cbor::Bytes(s.as_bytes().to_vec()),
        },
        Value::Binary(bytes) => Cbor::Bytes(bytes.clone()),
        Value::Array(items) => Cbor::Array(items.iter().map(to_cbor).collect()),
        Value::Map(entries) => Cbor::Map(
            entries
                .iter()
                .map(|(k, v)| (to_cbor(k), to_cbor(v)))
                .collect(),
        ),
    }
}

/// Serialize a CBOR value; writing into a `Vec` cannot fail.
pub(crate) fn write(item: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    let written = ciborium::ser::into_writer(item, &mut out);
    debug_assert!(written.is_ok(), "cbor into a Vec failed: {written:?}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let v = Value::Array(vec![
            Value::from(u64::MAX),
            Value::from(i64::MIN),
            Value::F64(1.5),
            Value::from("text"),
            Value::Binary(vec![0, 255]),
            Value::Map(vec![(Value::from("k"), Value::Nil)]),
            Value::Boolean(false),
        ]);
        assert_eq!(read(&write(&to_cbor(&v))), Ok(v));
    }

    #[test]
    fn tags_unwrap_and_bignums_fail() {
        // tag 1 (epoch time) around 5
        assert_eq!(read(&[0xc1, 0x05]), Ok(Value::from(5)));
        // -2^64 - 1 as a bignum: out of range
        let big = [0xc3, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(read(&big), Err(DecodeError::Syntax(_))));
        // trailing bytes
        assert!(matches!(read(&[0x80, 0x00]), Err(DecodeError::Syntax(_))));
        // invalid UTF-8 text
        assert!(matches!(read(&[0x61, 0xff]), Err(DecodeError::Syntax(_))));
    }

    #[test]
    fn deep_nesting_fails_without_overflow() {
        let bytes = vec![0x81; 1_000_000];
        assert_eq!(read(&bytes), Err(DecodeError::TooDeep));
        let tags = [0xc1u8; 100_000];
        assert!(read(&tags).is_err());
    }

    #[test]
    fn lying_length_does_not_allocate() {
        // byte string claiming 2^63 bytes
        let bytes = [0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(read(&bytes).is_err());
        let array = [0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(read(&array).is_err());
    }
}
