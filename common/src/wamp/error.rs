//! Why a WAMP message could not be decoded.

use super::message::{code, code_of};
use super::MAX_DEPTH;

/// A WAMP message that could not be decoded.
///
/// `message` names the message type (e.g. `"PUBLISH"`) and `field` the
/// element or option at fault. `request` is the request id when the message is
/// a request the router answers with ERROR and its id was readable; see
/// [`DecodeError::request_info`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not valid JSON or msgpack, or hold more than one value.
    #[error("malformed message: {0}")]
    Syntax(String),
    /// Arrays and maps nest deeper than [`MAX_DEPTH`].
    #[error("message nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The message is not an array.
    #[error("message is not an array")]
    NotAnArray,
    /// The array is empty or its first element is not a non-negative integer.
    #[error("message type code is missing or not an integer")]
    InvalidCode,
    /// The message type code is not one this codec knows.
    #[error("unknown message type code {0}")]
    UnknownCode(u64),
    /// A field has the wrong type.
    #[error("{message}.{field} has the wrong type")]
    WrongType {
        /// Message name.
        message: &'static str,
        /// Field name.
        field: &'static str,
        /// Request id, when readable and the message is a request.
        request: Option<u64>,
    },
    /// A mandatory field is missing.
    #[error("{message}.{field} is missing")]
    MissingField {
        /// Message name.
        message: &'static str,
        /// Field name.
        field: &'static str,
        /// Request id, when readable and the message is a request.
        request: Option<u64>,
    },
    /// The array has more elements than the message type allows.
    #[error("{message} has too many elements")]
    TooManyFields {
        /// Message name.
        message: &'static str,
        /// Request id, when readable and the message is a request.
        request: Option<u64>,
    },
    /// An id is negative or above 2^53.
    #[error("{message}.{field} is not an id in [0, 2^53]")]
    IdOutOfRange {
        /// Message name.
        message: &'static str,
        /// Field name.
        field: &'static str,
        /// Request id, when readable and the message is a request.
        request: Option<u64>,
    },
    /// A URI (realm, topic, procedure, error, reason) breaks WAMP's loose URI rules.
    #[error("{message}.{field} is not a valid uri")]
    InvalidUri {
        /// Message name.
        message: &'static str,
        /// Field name.
        field: &'static str,
        /// Request id, when readable and the message is a request.
        request: Option<u64>,
    },
    /// A well-known option or detail has the wrong type or an unknown value.
    #[error("{message} option {key} has an invalid value")]
    InvalidOption {
        /// Message name.
        message: &'static str,
        /// The option or detail key.
        key: &'static str,
        /// Request id, when readable and the message is a request.
        request: Option<u64>,
    },
    /// The message uses payload passthru mode (`enc_algo`, `ppt_scheme` or a
    /// binary payload in place of the arguments), which is not supported.
    #[error("{message} uses payload passthru mode, which is not supported")]
    PayloadPassthru {
        /// Message name.
        message: &'static str,
        /// Request id, when readable and the message is a request.
        request: Option<u64>,
    },
}

impl DecodeError {
    /// Return the message code and request id of a malformed request that the
    /// router may answer with an ERROR instead of closing the session.
    ///
    /// Set only for the requests WAMP answers with ERROR (PUBLISH, SUBSCRIBE,
    /// UNSUBSCRIBE, CALL, REGISTER, UNREGISTER), and only once their request id
    /// was read. Which ERROR to send (e.g. `wamp.error.invalid_uri` for
    /// [`DecodeError::InvalidUri`]) and whether to send one at all (PUBLISH
    /// without `acknowledge`) is the router's decision.
    pub fn request_info(&self) -> Option<(u64, u64)> {
        let (message, request) = match self {
            Self::WrongType {
                message, request, ..
            }
            | Self::MissingField {
                message, request, ..
            }
            | Self::TooManyFields { message, request }
            | Self::IdOutOfRange {
                message, request, ..
            }
            | Self::InvalidUri {
                message, request, ..
            }
            | Self::InvalidOption {
                message, request, ..
            }
            | Self::PayloadPassthru { message, request } => (*message, (*request)?),
            _ => return None,
        };
        Some((code_of(message)?, request))
    }
}

/// Return whether a malformed message of this code may be answered with ERROR.
pub(crate) fn answers_with_error(message_code: u64) -> bool {
    matches!(
        message_code,
        code::PUBLISH
            | code::SUBSCRIBE
            | code::UNSUBSCRIBE
            | code::CALL
            | code::REGISTER
            | code::UNREGISTER
    )
}
