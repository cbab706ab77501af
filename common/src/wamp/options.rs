//! Type checks of the well-known options and details.
//!
//! WAMP defines the type of many option and detail keys; a value of the wrong
//! type is a protocol violation (autobahn rejects it while parsing). Unknown
//! keys pass unchecked, as the specification requires.

use rmpv::Value;

use super::message::{code, Dict};
use super::parse::as_id;

/// The expected type of a well-known key.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Str,
    /// A WAMP id or other non-negative integer (e.g. a timeout in ms).
    Id,
    Dict,
    IdList,
    StrList,
    /// `forward_for`: a list of dicts (`session`, `authid`, `authrole`).
    ForwardFor,
    OneOf(&'static [&'static str]),
}

use Kind::*;

const MATCH: Kind = OneOf(&["exact", "prefix", "wildcard"]);
const FORWARD: (&str, Kind) = ("forward_for", ForwardFor);

const HELLO: &[(&str, Kind)] = &[
    ("roles", Dict),
    ("authmethods", StrList),
    ("authid", Str),
    ("authextra", Dict),
];
const WELCOME: &[(&str, Kind)] = &[
    ("roles", Dict),
    ("authid", Str),
    ("authrole", Str),
    ("authmethod", Str),
    ("authprovider", Str),
    ("authextra", Dict),
];
const PUBLISH: &[(&str, Kind)] = &[
    ("acknowledge", Bool),
    ("exclude_me", Bool),
    ("exclude", IdList),
    ("exclude_authid", StrList),
    ("exclude_authrole", StrList),
    ("eligible", IdList),
    ("eligible_authid", StrList),
    ("eligible_authrole", StrList),
    ("retain", Bool),
    ("disclose_me", Bool),
    ("transaction_hash", Str),
    ("watch", Bool),
    ("trace", Bool),
    FORWARD,
];
const SUBSCRIBE: &[(&str, Kind)] = &[
    ("match", MATCH),
    ("get_retained", Bool),
    ("snapshot", Bool),
    FORWARD,
];
const EVENT: &[(&str, Kind)] = &[
    ("publisher", Id),
    ("publisher_authid", Str),
    ("publisher_authrole", Str),
    ("topic", Str),
    ("retained", Bool),
    ("transaction_hash", Str),
    ("x_acknowledged_delivery", Bool),
    FORWARD,
];
const CALL: &[(&str, Kind)] = &[
    ("timeout", Id),
    ("receive_progress", Bool),
    ("disclose_me", Bool),
    FORWARD,
];
const CANCEL: &[(&str, Kind)] = &[("mode", OneOf(&["skip", "kill", "killnowait"])), FORWARD];
const PROGRESS: &[(&str, Kind)] = &[("progress", Bool), FORWARD];
const REGISTER: &[(&str, Kind)] = &[
    ("match", MATCH),
    (
        "invoke",
        OneOf(&["single", "roundrobin", "random", "first", "last"]),
    ),
    ("disclose_caller", Bool),
    FORWARD,
];
const INVOCATION: &[(&str, Kind)] = &[
    ("caller", Id),
    ("caller_authid", Str),
    ("caller_authrole", Str),
    ("procedure", Str),
    ("receive_progress", Bool),
    ("timeout", Id),
    FORWARD,
];
const INTERRUPT: &[(&str, Kind)] = &[("mode", OneOf(&["kill", "killnowait"])), FORWARD];

/// What is wrong with an options or details dict.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// This well-known key has a value of the wrong type.
    Invalid(&'static str),
    /// The message asks for payload passthru mode.
    Passthru,
}

/// Check the options (or details) of a message with this code.
pub(crate) fn check(message_code: u64, dict: &Dict) -> Result<(), Problem> {
    if carries_payload(message_code)
        && (dict.contains_key("enc_algo") || dict.contains_key("ppt_scheme"))
    {
        return Err(Problem::Passthru);
    }
    for (key, kind) in table(message_code) {
        if let Some(value) = dict.get(*key) {
            if !fits(*kind, value) {
                return Err(Problem::Invalid(key));
            }
        }
    }
    Ok(())
}

/// Remove the well-known keys of this message whose value is "not set": msgpack nil (JSON
/// null) or `undefined` as JavaScript msgpack encoders write it (msgpackr and msgpack-lite:
/// fixext 1, type 0, data 0). wampy.js sends every option it knows, e.g. SUBSCRIBE
/// `{match: undefined, get_retained: undefined}`, which its msgpack serializer encodes that way.
/// Unknown keys are kept as they are.
pub(crate) fn strip_unset(message_code: u64, dict: &mut Dict) {
    for (key, _) in table(message_code) {
        if dict.get(*key).is_some_and(is_unset) {
            dict.remove(*key);
        }
    }
}

fn is_unset(value: &Value) -> bool {
    match value {
        Value::Nil => true,
        Value::Ext(0, data) => data.as_slice() == [0],
        _ => false,
    }
}

fn table(message_code: u64) -> &'static [(&'static str, Kind)] {
    match message_code {
        code::HELLO => HELLO,
        code::WELCOME => WELCOME,
        code::PUBLISH => PUBLISH,
        code::SUBSCRIBE => SUBSCRIBE,
        code::EVENT => EVENT,
        code::CALL => CALL,
        code::CANCEL => CANCEL,
        code::RESULT | code::YIELD => PROGRESS,
        code::REGISTER => REGISTER,
        code::INVOCATION => INVOCATION,
        code::INTERRUPT => INTERRUPT,
        _ => &[],
    }
}

/// Return whether messages of this code carry an application payload.
pub(crate) fn carries_payload(message_code: u64) -> bool {
    matches!(
        message_code,
        code::ERROR
            | code::PUBLISH
            | code::EVENT
            | code::CALL
            | code::RESULT
            | code::INVOCATION
            | code::YIELD
    )
}

fn fits(kind: Kind, value: &Value) -> bool {
    match kind {
        Bool => value.is_bool(),
        Str => value.as_str().is_some(),
        Id => as_id(value).is_ok(),
        Dict => value.is_map(),
        IdList => list_of(value, |v| as_id(v).is_ok()),
        StrList => list_of(value, |v| v.as_str().is_some()),
        ForwardFor => list_of(value, Value::is_map),
        OneOf(allowed) => value.as_str().is_some_and(|s| allowed.contains(&s)),
    }
}

fn list_of(value: &Value, item: impl Fn(&Value) -> bool) -> bool {
    value.as_array().is_some_and(|items| items.iter().all(item))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(key: &str, value: Value) -> Dict {
        Dict::from([(key.to_owned(), value)])
    }

    #[test]
    fn unset_well_known_keys_are_removed() {
        let mut d = Dict::from([
            ("match".to_owned(), Value::Nil),
            ("get_retained".to_owned(), Value::Ext(0, vec![0])),
            ("x_custom".to_owned(), Value::Nil),
        ]);
        strip_unset(code::SUBSCRIBE, &mut d);
        assert_eq!(d, dict("x_custom", Value::Nil));
        assert_eq!(check(code::SUBSCRIBE, &d), Ok(()));
        // Another extension type, or a set value, stays (and is checked).
        let mut d = dict("match", Value::Ext(1, vec![0]));
        strip_unset(code::SUBSCRIBE, &mut d);
        assert_eq!(check(code::SUBSCRIBE, &d), Err(Problem::Invalid("match")));
        let mut d = dict("acknowledge", Value::Boolean(true));
        strip_unset(code::PUBLISH, &mut d);
        assert_eq!(d, dict("acknowledge", Value::Boolean(true)));
    }

    #[test]
    fn well_known_keys_are_typed() {
        let ok = check(
            code::PUBLISH,
            &dict("exclude", Value::Array(vec![Value::from(1)])),
        );
        assert_eq!(ok, Ok(()));
        let bad = check(
            code::PUBLISH,
            &dict("exclude", Value::Array(vec![Value::from("x")])),
        );
        assert_eq!(bad, Err(Problem::Invalid("exclude")));
        let bad = check(code::SUBSCRIBE, &dict("match", Value::from("regex")));
        assert_eq!(bad, Err(Problem::Invalid("match")));
        // Keys of other messages and unknown keys pass.
        assert_eq!(
            check(code::SUBSCRIBE, &dict("acknowledge", Value::from(3))),
            Ok(())
        );
        assert_eq!(check(code::PUBLISH, &dict("x_custom", Value::Nil)), Ok(()));
    }

    #[test]
    fn passthru_is_detected_on_payload_messages_only() {
        let e2e = dict("enc_algo", Value::from("cryptobox"));
        assert_eq!(check(code::EVENT, &e2e), Err(Problem::Passthru));
        assert_eq!(check(code::SUBSCRIBE, &e2e), Ok(()));
    }
}
