//! From a [`Message`] to frame bytes.
//!
//! One layout function lists a message's wire elements; a [`Sink`] per
//! serializer turns each element into that serializer's value type. msgpack
//! borrows the message's data (`ValueRef`), JSON converts through
//! [`to_json`] for the binary convention, CBOR through [`to_cbor`].

use rmpv::{Value, ValueRef};

use super::cbor::to_cbor;
use super::message::{Dict, Message};
use super::value::to_json;

/// Build one serializer's value for each kind of wire element.
trait Sink<'a> {
    type Out;
    fn id(&self, id: u64) -> Self::Out;
    fn text(&self, text: &'a str) -> Self::Out;
    fn dict(&self, dict: &'a Dict) -> Self::Out;
    fn list(&self, list: &'a [Value]) -> Self::Out;
}

struct MsgPack;

impl<'a> Sink<'a> for MsgPack {
    type Out = ValueRef<'a>;
    fn id(&self, id: u64) -> ValueRef<'a> {
        ValueRef::from(id)
    }
    fn text(&self, text: &'a str) -> ValueRef<'a> {
        ValueRef::from(text)
    }
    fn dict(&self, dict: &'a Dict) -> ValueRef<'a> {
        ValueRef::Map(
            dict.iter()
                .map(|(k, v)| (ValueRef::from(k.as_str()), v.as_ref()))
                .collect(),
        )
    }
    fn list(&self, list: &'a [Value]) -> ValueRef<'a> {
        ValueRef::Array(list.iter().map(Value::as_ref).collect())
    }
}

struct Cbor;

impl<'a> Sink<'a> for Cbor {
    type Out = ciborium::Value;
    fn id(&self, id: u64) -> ciborium::Value {
        ciborium::Value::Integer(id.into())
    }
    fn text(&self, text: &'a str) -> ciborium::Value {
        ciborium::Value::Text(text.to_owned())
    }
    fn dict(&self, dict: &'a Dict) -> ciborium::Value {
        ciborium::Value::Map(
            dict.iter()
                .map(|(k, v)| (ciborium::Value::Text(k.clone()), to_cbor(v)))
                .collect(),
        )
    }
    fn list(&self, list: &'a [Value]) -> ciborium::Value {
        ciborium::Value::Array(list.iter().map(to_cbor).collect())
    }
}

struct Json;

impl<'a> Sink<'a> for Json {
    type Out = serde_json::Value;
    fn id(&self, id: u64) -> serde_json::Value {
        serde_json::Value::from(id)
    }
    fn text(&self, text: &'a str) -> serde_json::Value {
        serde_json::Value::from(text)
    }
    fn dict(&self, dict: &'a Dict) -> serde_json::Value {
        serde_json::Value::Object(dict.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
    }
    fn list(&self, list: &'a [Value]) -> serde_json::Value {
        serde_json::Value::Array(list.iter().map(to_json).collect())
    }
}

/// Encode a message as msgpack.
pub(crate) fn to_msgpack_bytes(msg: &Message) -> Vec<u8> {
    let items = layout(&MsgPack, msg);
    let mut out = Vec::new();
    // rmpv's only errors are I/O errors of the writer; writing to a Vec has none.
    let written = rmpv::encode::write_value_ref(&mut out, &ValueRef::Array(items));
    debug_assert!(written.is_ok(), "msgpack into a Vec failed: {written:?}");
    out
}

/// Encode a message as CBOR.
pub(crate) fn to_cbor_bytes(msg: &Message) -> Vec<u8> {
    let items = layout(&Cbor, msg);
    super::cbor::write(&ciborium::Value::Array(items))
}

/// Encode a message as JSON.
pub(crate) fn to_json_bytes(msg: &Message) -> Vec<u8> {
    let items = layout(&Json, msg);
    // serde_json fails only on non-string map keys or writer errors; a
    // serde_json::Value into a Vec has neither.
    let written = serde_json::to_vec(&serde_json::Value::Array(items));
    debug_assert!(written.is_ok(), "json into a Vec failed: {written:?}");
    written.unwrap_or_default()
}

/// List the wire elements of a message, code first.
fn layout<'a, S: Sink<'a>>(s: &S, msg: &'a Message) -> Vec<S::Out> {
    let mut out = vec![s.id(msg.code())];
    match msg {
        Message::Hello { realm, details } => {
            out.extend([s.text(realm), s.dict(details)]);
        }
        Message::Welcome { session, details } => {
            out.extend([s.id(*session), s.dict(details)]);
        }
        Message::Abort { details, reason } | Message::Goodbye { details, reason } => {
            out.extend([s.dict(details), s.text(reason)]);
        }
        Message::Challenge {
            authmethod: text,
            extra,
        }
        | Message::Authenticate {
            signature: text,
            extra,
        } => {
            out.extend([s.text(text), s.dict(extra)]);
        }
        Message::Error {
            request_type,
            request,
            details,
            error,
            args,
            kwargs,
        } => {
            out.extend([
                s.id(*request_type),
                s.id(*request),
                s.dict(details),
                s.text(error),
            ]);
            payload(s, &mut out, args, kwargs);
        }
        Message::Publish {
            request,
            options,
            topic: uri,
            args,
            kwargs,
        }
        | Message::Call {
            request,
            options,
            procedure: uri,
            args,
            kwargs,
        } => {
            out.extend([s.id(*request), s.dict(options), s.text(uri)]);
            payload(s, &mut out, args, kwargs);
        }
        Message::Published {
            request,
            publication: id,
        }
        | Message::Subscribed {
            request,
            subscription: id,
        }
        | Message::Unsubscribe {
            request,
            subscription: id,
        }
        | Message::Registered {
            request,
            registration: id,
        }
        | Message::Unregister {
            request,
            registration: id,
        } => {
            out.extend([s.id(*request), s.id(*id)]);
        }
        Message::Subscribe {
            request,
            options,
            topic: uri,
        }
        | Message::Register {
            request,
            options,
            procedure: uri,
        } => {
            out.extend([s.id(*request), s.dict(options), s.text(uri)]);
        }
        Message::Unsubscribed { request, details } | Message::Unregistered { request, details } => {
            out.push(s.id(*request));
            if !details.is_empty() {
                out.push(s.dict(details));
            }
        }
        Message::Event {
            subscription: first,
            publication: second,
            details,
            args,
            kwargs,
        }
        | Message::Invocation {
            request: first,
            registration: second,
            details,
            args,
            kwargs,
        } => {
            out.extend([s.id(*first), s.id(*second), s.dict(details)]);
            payload(s, &mut out, args, kwargs);
        }
        Message::Cancel { request, options } | Message::Interrupt { request, options } => {
            out.extend([s.id(*request), s.dict(options)]);
        }
        Message::Result {
            request,
            details: dict,
            args,
            kwargs,
        }
        | Message::Yield {
            request,
            options: dict,
            args,
            kwargs,
        } => {
            out.extend([s.id(*request), s.dict(dict)]);
            payload(s, &mut out, args, kwargs);
        }
    }
    out
}

/// Append args and kwargs: both left off when empty, args written (possibly
/// `[]`) whenever kwargs are present.
fn payload<'a, S: Sink<'a>>(s: &S, out: &mut Vec<S::Out>, args: &'a [Value], kwargs: &'a Dict) {
    if !kwargs.is_empty() {
        out.extend([s.list(args), s.dict(kwargs)]);
    } else if !args.is_empty() {
        out.push(s.list(args));
    }
}
