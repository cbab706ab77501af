//! The dynamic value carried in WAMP arguments, and its JSON mapping.
//!
//! WAMP's JSON serializer has no binary type: a byte string travels as a JSON
//! string that starts with `\0` followed by the base64 of the bytes. These two
//! functions apply that convention so msgpack and JSON clients see the same data.
//!
//! Both recurse along the value's nesting; [`super::decode`] bounds that to
//! [`super::MAX_DEPTH`] before calling them on input.

use rmpv::Value;

/// Convert a JSON value into a WAMP value, decoding `\0`-prefixed base64 strings as binary.
pub fn from_json(json: serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_json::Value::String(s) => match s.strip_prefix('\0') {
            Some(b64) => match base64_decode(b64) {
                Some(bytes) => Value::Binary(bytes),
                None => Value::from(s),
            },
            None => Value::from(s),
        },
        serde_json::Value::Array(items) => Value::Array(items.into_iter().map(from_json).collect()),
        serde_json::Value::Object(map) => Value::Map(
            map.into_iter()
                .map(|(k, v)| (Value::from(k), from_json(v)))
                .collect(),
        ),
    }
}

/// Convert a WAMP value into JSON, encoding binary as a `\0`-prefixed base64 string.
///
/// Map keys that are not strings are written as their JSON text; msgpack extension
/// values have no JSON form and become `null`.
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil | Value::Ext(..) => serde_json::Value::Null,
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Integer(i) => {
            if let Some(u) = i.as_u64() {
                serde_json::Value::from(u)
            } else if let Some(s) = i.as_i64() {
                serde_json::Value::from(s)
            } else {
                serde_json::Value::Null
            }
        }
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f))
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::F64(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::String(s) => match s.as_str() {
            Some(text) => serde_json::Value::String(text.to_owned()),
            None => serde_json::Value::String(format!("\0{}", base64_encode(s.as_bytes()))),
        },
        Value::Binary(bytes) => serde_json::Value::String(format!("\0{}", base64_encode(bytes))),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k.as_str() {
                        Some(s) => s.to_owned(),
                        None => to_json(k).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encode bytes as standard padded base64.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard base64 (padding optional); `None` on any invalid character.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|x| *x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length() {
        for len in 0..20u8 {
            let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)), Some(bytes));
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn binary_survives_json() {
        let v = Value::Array(vec![Value::Binary(vec![0, 255, 7]), Value::from("x")]);
        assert_eq!(from_json(to_json(&v)), v);
    }
}
