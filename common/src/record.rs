//! Versioned values on disk: one version byte, then the msgpack (`rmp-serde`) encoding.
//!
//! Every RocksDB store of the project (the embedded store, the ndb's and the sync
//! node's cluster stores) writes its structured values this way, so a later
//! format can be told apart from this one.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version byte written in front of every value.
pub const VERSION: u8 = 1;

/// Why a stored value did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The value has no bytes at all.
    #[error("empty value")]
    Empty,
    /// The value starts with a version this build does not know.
    #[error("unknown value version {0}")]
    Version(u8),
    /// The bytes after the version are not the expected type.
    #[error("{0}")]
    Decode(String),
}

/// Encode `value` behind the version byte.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Encoding a plain struct into a Vec cannot fail.
    #[allow(clippy::expect_used)]
    rmp_serde::encode::write(&mut out, value).expect("encode value");
    out
}

/// Decode a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    match bytes.split_first() {
        Some((&VERSION, body)) => {
            rmp_serde::from_slice(body).map_err(|e| RecordError::Decode(e.to_string()))
        }
        Some((v, _)) => Err(RecordError::Version(*v)),
        None => Err(RecordError::Empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bad_ones_are_named() {
        let bytes = encode(&(7u64, "x".to_owned()));
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<(u64, String)>(&bytes), Ok((7, "x".to_owned())));
        assert_eq!(decode::<u64>(&[]), Err(RecordError::Empty));
        assert_eq!(decode::<u64>(&[9, 1]), Err(RecordError::Version(9)));
        assert!(matches!(
            decode::<u64>(&[VERSION, 0xc1]),
            Err(RecordError::Decode(_))
        ));
    }
}
