//! From frame bytes to the elements of the message array, for each serializer.
//!
//! Depth is bounded before anything recursive runs on input:
//! - JSON: a byte scan counts open brackets outside strings, so serde_json's
//!   own recursion (limit 128) and [`from_json`] only ever see [`MAX_DEPTH`] levels.
//! - msgpack: rmpv's reader recurses, so it runs with an explicit depth budget
//!   (`read_value_with_max_depth`, which spends at most 2 frames per level plus 3
//!   for a leaf); a walk over the decoded value then applies the exact limit.
//!   rmpv never preallocates from a length prefix, so a lying length costs at
//!   most the bytes actually present.
//! - CBOR: ciborium's reader has a recursion limit and reads lengths
//!   incrementally; the same walk applies the exact limit.

use rmpv::Value;

use super::error::DecodeError;
use super::value::from_json;
use super::MAX_DEPTH;

/// Parse a JSON frame into the elements of its top-level array.
pub(crate) fn read_json(bytes: &[u8]) -> Result<Vec<Value>, DecodeError> {
    if json_depth_exceeds(bytes, MAX_DEPTH) {
        return Err(DecodeError::TooDeep);
    }
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Syntax(e.to_string()))?;
    match json {
        serde_json::Value::Array(items) => Ok(items.into_iter().map(from_json).collect()),
        _ => Err(DecodeError::NotAnArray),
    }
}

/// Parse a msgpack frame into the elements of its top-level array.
pub(crate) fn read_msgpack(bytes: &[u8]) -> Result<Vec<Value>, DecodeError> {
    let mut cursor = bytes;
    // Budget: each array or map level costs 2, a leaf at most 3 (ext).
    let budget = 2 * MAX_DEPTH + 4;
    let value =
        rmpv::decode::read_value_with_max_depth(&mut cursor, budget).map_err(|e| match e {
            rmpv::decode::Error::DepthLimitExceeded => DecodeError::TooDeep,
            other => DecodeError::Syntax(other.to_string()),
        })?;
    if !cursor.is_empty() {
        return Err(DecodeError::Syntax(format!(
            "{} bytes after the message",
            cursor.len()
        )));
    }
    if depth_exceeds(&value, MAX_DEPTH) {
        return Err(DecodeError::TooDeep);
    }
    // A msgpack str must be UTF-8; kept as is, it would re-encode as bin and
    // reach subscribers as a different type (found by the wamp_msgpack fuzzer).
    if has_invalid_str(&value) {
        return Err(DecodeError::Syntax("msgpack str is not valid UTF-8".into()));
    }
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(DecodeError::NotAnArray),
    }
}

/// Parse a CBOR frame into the elements of its top-level array.
pub(crate) fn read_cbor(bytes: &[u8]) -> Result<Vec<Value>, DecodeError> {
    let value = super::cbor::read(bytes)?;
    if depth_exceeds(&value, MAX_DEPTH) {
        return Err(DecodeError::TooDeep);
    }
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(DecodeError::NotAnArray),
    }
}

/// Tell whether any string in `value` (keys included) is not valid UTF-8.
///
/// Recursion is bounded: the caller has already checked the depth.
fn has_invalid_str(value: &Value) -> bool {
    match value {
        Value::String(s) => s.as_str().is_none(),
        Value::Array(items) => items.iter().any(has_invalid_str),
        Value::Map(entries) => entries
            .iter()
            .any(|(k, v)| has_invalid_str(k) || has_invalid_str(v)),
        _ => false,
    }
}

/// Tell whether JSON text opens more than `limit` nested arrays or objects.
///
/// Brackets inside strings do not count; the text need not be valid JSON
/// (serde_json rejects it afterwards).
fn json_depth_exceeds(bytes: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Tell whether a value nests arrays and maps more than `limit` levels deep
/// (a scalar is level 0, `[]` level 1).
///
/// Recursion is bounded by the depth budget of the reader that built the value.
fn depth_exceeds(value: &Value, limit: usize) -> bool {
    match value {
        Value::Array(items) => limit == 0 || items.iter().any(|v| depth_exceeds(v, limit - 1)),
        Value::Map(entries) => {
            limit == 0
                || entries
                    .iter()
                    .any(|(k, v)| depth_exceeds(k, limit - 1) || depth_exceeds(v, limit - 1))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_ignores_brackets_in_strings() {
        assert!(!json_depth_exceeds(br#"[[ "[[[[\"[[[[" ]]"#, 2));
        assert!(json_depth_exceeds(b"[[[", 2));
        assert!(!json_depth_exceeds(b"[{}]", 2));
        assert!(json_depth_exceeds(b"[{\"a\":[]}]", 2));
    }

    #[test]
    fn value_depth() {
        let nested = |n: usize| {
            let mut v = Value::Nil;
            for _ in 0..n {
                v = Value::Array(vec![v]);
            }
            v
        };
        assert!(!depth_exceeds(&nested(0), 0));
        assert!(depth_exceeds(&nested(1), 0));
        assert!(!depth_exceeds(&nested(3), 3));
        assert!(depth_exceeds(&nested(4), 3));
        let map = Value::Map(vec![(Value::from("k"), nested(2))]);
        assert!(!depth_exceeds(&map, 3));
        assert!(depth_exceeds(&map, 2));
    }
}
