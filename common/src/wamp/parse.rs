//! From a decoded wire array to a typed [`Message`].

use rmpv::Value;

use super::error::{answers_with_error, DecodeError};
use super::message::{code, name_of, Dict, Message};
use super::options::{self, Problem};
use super::uri::{validate_prefix, validate_uri};
use super::value_to_dict;

/// The largest WAMP id, 2^53.
pub(crate) const MAX_ID: u64 = 1 << 53;

/// Why a value is not a WAMP id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IdError {
    /// Not a number, or a number with a fraction.
    WrongType,
    /// Negative or above 2^53.
    OutOfRange,
}

/// Read a WAMP id: an integer in `[0, 2^53]`.
///
/// A float with no fraction is accepted too (some JavaScript msgpack encoders
/// write large integers as float64); it fits exactly since ids stay below 2^53.
pub(crate) fn as_id(value: &Value) -> Result<u64, IdError> {
    let float = match value {
        Value::Integer(i) => {
            return match i.as_u64() {
                Some(id) if id <= MAX_ID => Ok(id),
                _ => Err(IdError::OutOfRange),
            }
        }
        Value::F64(f) => *f,
        Value::F32(f) => f64::from(*f),
        _ => return Err(IdError::WrongType),
    };
    if !float.is_finite() || float.fract() != 0.0 {
        Err(IdError::WrongType)
    } else if (0.0..=MAX_ID as f64).contains(&float) {
        // Exact: an integral float in [0, 2^53] converts without loss.
        Ok(float as u64)
    } else {
        Err(IdError::OutOfRange)
    }
}

/// How a URI field is checked.
#[derive(Clone, Copy)]
enum UriRule {
    /// Loose URI, no empty components.
    Strict,
    /// A subscription or registration pattern, checked by its `match` option.
    Pattern,
}

/// Parse the elements of a message array.
pub(crate) fn parse(items: Vec<Value>) -> Result<Message, DecodeError> {
    let mut items = items.into_iter();
    let code = match items.next() {
        Some(Value::Integer(i)) => i.as_u64().ok_or(DecodeError::InvalidCode)?,
        _ => return Err(DecodeError::InvalidCode),
    };
    let message = name_of(code).ok_or(DecodeError::UnknownCode(code))?;
    let mut f = Fields {
        code,
        message,
        items,
        request: None,
        pattern_match: None,
    };
    let msg = match code {
        code::HELLO => Message::Hello {
            realm: f.uri("realm", UriRule::Strict)?,
            details: f.options("details")?,
        },
        code::WELCOME => Message::Welcome {
            session: f.id("session")?,
            details: f.options("details")?,
        },
        code::ABORT => Message::Abort {
            details: f.options("details")?,
            reason: f.uri("reason", UriRule::Strict)?,
        },
        code::CHALLENGE => Message::Challenge {
            authmethod: f.string("authmethod")?,
            extra: f.options("extra")?,
        },
        code::AUTHENTICATE => Message::Authenticate {
            signature: f.string("signature")?,
            extra: f.options("extra")?,
        },
        code::GOODBYE => Message::Goodbye {
            details: f.options("details")?,
            reason: f.uri("reason", UriRule::Strict)?,
        },
        code::ERROR => Message::Error {
            request_type: f.id("request_type")?,
            request: f.id("request")?,
            details: f.options("details")?,
            error: f.uri("error", UriRule::Strict)?,
            args: f.args()?,
            kwargs: f.kwargs()?,
        },
        code::PUBLISH => Message::Publish {
            request: f.request()?,
            options: f.options("options")?,
            topic: f.uri("topic", UriRule::Strict)?,
            args: f.args()?,
            kwargs: f.kwargs()?,
        },
        code::PUBLISHED => Message::Published {
            request: f.request()?,
            publication: f.id("publication")?,
        },
        code::SUBSCRIBE => Message::Subscribe {
            request: f.request()?,
            options: f.options("options")?,
            topic: f.uri("topic", UriRule::Pattern)?,
        },
        code::SUBSCRIBED => Message::Subscribed {
            request: f.request()?,
            subscription: f.id("subscription")?,
        },
        code::UNSUBSCRIBE => Message::Unsubscribe {
            request: f.request()?,
            subscription: f.id("subscription")?,
        },
        code::UNSUBSCRIBED => Message::Unsubscribed {
            request: f.request()?,
            details: f.optional_details()?,
        },
        code::EVENT => Message::Event {
            subscription: f.id("subscription")?,
            publication: f.id("publication")?,
            details: f.options("details")?,
            args: f.args()?,
            kwargs: f.kwargs()?,
        },
        code::CALL => Message::Call {
            request: f.request()?,
            options: f.options("options")?,
            procedure: f.uri("procedure", UriRule::Strict)?,
            args: f.args()?,
            kwargs: f.kwargs()?,
        },
        code::CANCEL => Message::Cancel {
            request: f.request()?,
            options: f.options("options")?,
        },
        code::RESULT => Message::Result {
            request: f.request()?,
            details: f.options("details")?,
            args: f.args()?,
            kwargs: f.kwargs()?,
        },
        code::REGISTER => Message::Register {
            request: f.request()?,
            options: f.options("options")?,
            procedure: f.uri("procedure", UriRule::Pattern)?,
        },
        code::REGISTERED => Message::Registered {
            request: f.request()?,
            registration: f.id("registration")?,
        },
        code::UNREGISTER => Message::Unregister {
            request: f.request()?,
            registration: f.id("registration")?,
        },
        code::UNREGISTERED => Message::Unregistered {
            request: f.request()?,
            details: f.optional_details()?,
        },
        code::INVOCATION => Message::Invocation {
            request: f.request()?,
            registration: f.id("registration")?,
            details: f.options("details")?,
            args: f.args()?,
            kwargs: f.kwargs()?,
        },
        code::INTERRUPT => Message::Interrupt {
            request: f.request()?,
            options: f.options("options")?,
        },
        code::YIELD => Message::Yield {
            request: f.request()?,
            options: f.options("options")?,
            args: f.args()?,
            kwargs: f.kwargs()?,
        },
        _ => return Err(DecodeError::UnknownCode(code)),
    };
    f.finish()?;
    Ok(msg)
}

/// The elements of one message after its code, read front to back.
struct Fields {
    code: u64,
    message: &'static str,
    items: std::vec::IntoIter<Value>,
    /// The request id, once read, for requests answered with ERROR.
    request: Option<u64>,
    /// The `match` option of a SUBSCRIBE or REGISTER, once its options are read.
    pattern_match: Option<String>,
}

impl Fields {
    fn wrong_type(&self, field: &'static str) -> DecodeError {
        DecodeError::WrongType {
            message: self.message,
            field,
            request: self.request,
        }
    }

    fn next(&mut self, field: &'static str) -> Result<Value, DecodeError> {
        self.items.next().ok_or(DecodeError::MissingField {
            message: self.message,
            field,
            request: self.request,
        })
    }

    fn id(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let value = self.next(field)?;
        as_id(&value).map_err(|e| match e {
            IdError::WrongType => self.wrong_type(field),
            IdError::OutOfRange => DecodeError::IdOutOfRange {
                message: self.message,
                field,
                request: self.request,
            },
        })
    }

    /// Read the request id; remember it for errors if the message is a request.
    fn request(&mut self) -> Result<u64, DecodeError> {
        let id = self.id("request")?;
        if answers_with_error(self.code) {
            self.request = Some(id);
        }
        Ok(id)
    }

    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        match self.next(field)? {
            Value::String(s) => s.into_str().ok_or_else(|| self.wrong_type(field)),
            _ => Err(self.wrong_type(field)),
        }
    }

    fn uri(&mut self, field: &'static str, rule: UriRule) -> Result<String, DecodeError> {
        let uri = self.string(field)?;
        let valid = match (rule, self.pattern_match.as_deref()) {
            (UriRule::Pattern, Some("wildcard")) => validate_uri(&uri, true),
            (UriRule::Pattern, Some("prefix")) => validate_prefix(&uri),
            _ => validate_uri(&uri, false),
        };
        if valid {
            Ok(uri)
        } else {
            Err(DecodeError::InvalidUri {
                message: self.message,
                field,
                request: self.request,
            })
        }
    }

    fn dict(&self, field: &'static str, value: Value) -> Result<Dict, DecodeError> {
        value_to_dict(value).ok_or_else(|| self.wrong_type(field))
    }

    /// Read an options, details or extra dict and check its well-known keys.
    fn options(&mut self, field: &'static str) -> Result<Dict, DecodeError> {
        let value = self.next(field)?;
        let dict = self.dict(field, value)?;
        self.check_options(dict)
    }

    fn check_options(&mut self, mut dict: Dict) -> Result<Dict, DecodeError> {
        options::strip_unset(self.code, &mut dict);
        match options::check(self.code, &dict) {
            Ok(()) => {}
            Err(Problem::Invalid(key)) => {
                return Err(DecodeError::InvalidOption {
                    message: self.message,
                    key,
                    request: self.request,
                })
            }
            Err(Problem::Passthru) => return Err(self.passthru()),
        }
        if let Some(Value::String(m)) = dict.get("match") {
            self.pattern_match = m.as_str().map(str::to_owned);
        }
        Ok(dict)
    }

    /// Read the details that UNSUBSCRIBED and UNREGISTERED may carry.
    fn optional_details(&mut self) -> Result<Dict, DecodeError> {
        match self.items.next() {
            None => Ok(Dict::new()),
            Some(value) => {
                let dict = self.dict("details", value)?;
                self.check_options(dict)
            }
        }
    }

    fn passthru(&self) -> DecodeError {
        DecodeError::PayloadPassthru {
            message: self.message,
            request: self.request,
        }
    }

    fn args(&mut self) -> Result<Vec<Value>, DecodeError> {
        match self.items.next() {
            None => Ok(Vec::new()),
            Some(Value::Array(args)) => Ok(args),
            // A binary payload in place of the arguments list: passthru mode.
            Some(Value::Binary(_)) => Err(self.passthru()),
            Some(_) => Err(self.wrong_type("args")),
        }
    }

    fn kwargs(&mut self) -> Result<Dict, DecodeError> {
        match self.items.next() {
            None => Ok(Dict::new()),
            Some(value) => self.dict("kwargs", value),
        }
    }

    fn finish(mut self) -> Result<(), DecodeError> {
        match self.items.next() {
            None => Ok(()),
            Some(_) => Err(DecodeError::TooManyFields {
                message: self.message,
                request: self.request,
            }),
        }
    }
}
