//! The WAMP project's test vectors (wamp-proto `testsuite/`, see
//! `tests/data/wamp-test-vectors/SOURCE.md`) against the JSON, msgpack and CBOR codec.
//!
//! Serialization samples: every JSON, msgpack and CBOR representation decodes, has
//! the listed attributes, and re-encodes to bytes that decode to the same
//! message. Validation samples (a raw wire array, valid or to be rejected) are
//! fed through each serializer. UBJSON and FlatBuffers representations
//! are counted and skipped. Payload passthru (E2EE) samples and the provisional
//! EVENT_RECEIVED (337) must be rejected with the matching "unsupported" error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ordo_common::wamp::{decode, encode, value, DecodeError, Dict, Message, Serializer, Value};
use serde_json::Value as Json;

/// The vectors, under the crate directory cargo names when it runs the test (the path compiled in
/// may be another checkout's when a compiler cache served the build).
fn vectors() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/data/wamp-test-vectors/singlemessage")
}

#[derive(Debug, Default)]
struct Tally {
    files: usize,
    decoded: BTreeMap<&'static str, usize>,
    byte_exact: BTreeMap<&'static str, usize>,
    skipped: BTreeMap<String, usize>,
    unsupported: usize,
    validations_accepted: usize,
    validations_rejected: usize,
    failures: Vec<String>,
}

#[test]
fn wamp_test_vectors() {
    let mut tally = Tally::default();
    let root = vectors();
    for path in json_files(&root) {
        tally.files += 1;
        let name = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let vector: Json = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                tally.failures.push(format!("{name}: unreadable: {e}"));
                continue;
            }
        };
        let samples = vector["samples"].as_array().cloned().unwrap_or_default();
        for (i, sample) in samples.iter().enumerate() {
            let label = format!(
                "{name}#{i} ({})",
                sample["description"].as_str().unwrap_or("?")
            );
            if sample.get("wmsg").is_some() {
                check_validation(&label, sample, &mut tally);
            } else {
                check_serialization(&label, sample, &mut tally);
            }
        }
    }
    println!("{tally:#?}");
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
    // Exact counts for the copied vector set, so a skipped file or sample shows.
    assert_eq!(tally.files, 26, "vector files under {}", root.display());
    assert_eq!(tally.decoded.get("json"), Some(&53));
    assert_eq!(tally.decoded.get("msgpack"), Some(&30));
    assert_eq!(tally.decoded.get("cbor"), Some(&30));
    assert_eq!(tally.unsupported, 34, "passthru and EVENT_RECEIVED samples");
    assert_eq!(
        (tally.validations_accepted, tally.validations_rejected),
        (105, 78)
    );
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// What a sample is expected to decode to, when the codec does not support it.
fn unsupported_reason(expected: &Json) -> Option<fn(&DecodeError) -> bool> {
    if expected.get("payload").is_some_and(|p| !p.is_null()) {
        return Some(|e| matches!(e, DecodeError::PayloadPassthru { .. }));
    }
    if expected["message_type"] == 337 {
        return Some(|e| *e == DecodeError::UnknownCode(337));
    }
    None
}

fn check_serialization(label: &str, sample: &Json, tally: &mut Tally) {
    let expected = &sample["expected_attributes"];
    let Some(serializers) = sample["serializers"].as_object() else {
        tally.failures.push(format!("{label}: no serializers"));
        return;
    };
    for (ser_name, reps) in serializers {
        let ser = match ser_name.as_str() {
            "json" => Serializer::Json,
            "msgpack" => Serializer::MsgPack,
            "cbor" => Serializer::Cbor,
            other => {
                let n = reps.as_array().map_or(0, Vec::len);
                *tally.skipped.entry(other.to_owned()).or_default() += n;
                continue;
            }
        };
        let reps = reps.as_array().cloned().unwrap_or_default();
        let wanted: Vec<Vec<u8>> = reps.iter().filter_map(rep_bytes).collect();
        if wanted.len() != reps.len() {
            tally
                .failures
                .push(format!("{label} {ser_name}: unreadable bytes"));
        }
        for bytes in &wanted {
            let here = format!("{label} {ser_name} {}", String::from_utf8_lossy(bytes));
            let decoded = decode(ser, bytes);
            if let Some(is_expected) = unsupported_reason(expected) {
                match decoded {
                    Err(e) if is_expected(&e) => tally.unsupported += 1,
                    other => tally
                        .failures
                        .push(format!("{here}: expected unsupported, got {other:?}")),
                }
                continue;
            }
            let msg = match decoded {
                Ok(msg) => msg,
                Err(e) => {
                    tally.failures.push(format!("{here}: {e}"));
                    continue;
                }
            };
            if let Err(e) = check_attributes(&msg, expected) {
                tally.failures.push(format!("{here}: {e}"));
                continue;
            }
            let again = encode(ser, &msg);
            if decode(ser, &again).as_ref() != Ok(&msg) {
                tally.failures.push(format!(
                    "{here}: re-encoded {again:?} does not decode to {msg:?}"
                ));
                continue;
            }
            *tally.decoded.entry(short(ser)).or_default() += 1;
            if wanted.contains(&again) {
                *tally.byte_exact.entry(short(ser)).or_default() += 1;
            }
        }
    }
}

fn short(ser: Serializer) -> &'static str {
    match ser {
        Serializer::Json => "json",
        Serializer::MsgPack => "msgpack",
        Serializer::Cbor => "cbor",
    }
}

/// The bytes of one representation: `bytes_hex`, else `bytes_base64`, else `bytes` as text.
fn rep_bytes(rep: &Json) -> Option<Vec<u8>> {
    if let Some(hex) = rep["bytes_hex"].as_str() {
        return from_hex(hex);
    }
    if let Some(b64) = rep["bytes_base64"].as_str() {
        return value::base64_decode(b64);
    }
    rep["bytes"].as_str().map(|s| s.as_bytes().to_vec())
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    hex.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => u8::from_str_radix(std::str::from_utf8(&[*hi, *lo]).ok()?, 16).ok(),
            _ => None,
        })
        .collect()
}

/// Check every attribute the vector lists; an attribute this test cannot map fails.
fn check_attributes(msg: &Message, expected: &Json) -> Result<(), String> {
    let Some(expected) = expected.as_object() else {
        return Err("expected_attributes is not an object".into());
    };
    let have = attributes(msg);
    for (key, want) in expected {
        if key == "payload" {
            // Non-null payloads are unsupported samples, handled before.
            continue;
        }
        let Some(got) = have.get(key.as_str()) else {
            return Err(format!("no attribute {key} on {msg:?}"));
        };
        let matches = if want.is_null() {
            // Absent args/kwargs decode as empty.
            *got == Json::Array(vec![]) || *got == Json::Object(Default::default())
        } else {
            got == want
        };
        if !matches {
            return Err(format!("{key}: expected {want}, got {got}"));
        }
    }
    Ok(())
}

/// The message's fields under the names the vectors use (autobahn's), as JSON.
fn attributes(msg: &Message) -> BTreeMap<&'static str, Json> {
    let dict = |d: &Dict| {
        let map = d
            .iter()
            .map(|(k, v)| (Value::from(k.as_str()), v.clone()))
            .collect();
        value::to_json(&Value::Map(map))
    };
    let list = |l: &[Value]| value::to_json(&Value::Array(l.to_vec()));
    let id = |n: u64| Json::from(n);
    let text = |s: &str| Json::from(s);
    let mut a = BTreeMap::new();
    a.insert("message_type", id(msg.code()));
    let payload = |a: &mut BTreeMap<&'static str, Json>, args: &[Value], kwargs: &Dict| {
        a.insert("args", list(args));
        a.insert("kwargs", dict(kwargs));
    };
    match msg {
        Message::Hello { realm, details } => {
            a.insert("realm", text(realm));
            a.insert("details", dict(details));
            a.insert("roles", dict(details)["roles"].clone());
        }
        Message::Welcome { session, details } => {
            a.insert("session_id", id(*session));
            a.insert("details", dict(details));
            a.insert("roles", dict(details)["roles"].clone());
        }
        Message::Abort { details, reason } | Message::Goodbye { details, reason } => {
            a.insert("details", dict(details));
            a.insert("reason", text(reason));
        }
        Message::Challenge { authmethod, extra } => {
            a.insert("method", text(authmethod));
            a.insert("extra", dict(extra));
        }
        Message::Authenticate { signature, extra } => {
            a.insert("signature", text(signature));
            a.insert("extra", dict(extra));
        }
        Message::Error {
            request_type,
            request,
            details,
            error,
            args,
            kwargs,
        } => {
            a.insert("request_type", id(*request_type));
            a.insert("request_id", id(*request));
            a.insert("details", dict(details));
            a.insert("error", text(error));
            payload(&mut a, args, kwargs);
        }
        Message::Publish {
            request,
            options,
            topic,
            args,
            kwargs,
        } => {
            a.insert("request_id", id(*request));
            a.insert("options", dict(options));
            a.insert("topic", text(topic));
            payload(&mut a, args, kwargs);
        }
        Message::Published {
            request,
            publication,
        } => {
            a.insert("request_id", id(*request));
            a.insert("publication_id", id(*publication));
        }
        Message::Subscribe {
            request,
            options,
            topic,
        } => {
            a.insert("request_id", id(*request));
            a.insert("options", dict(options));
            a.insert("topic", text(topic));
        }
        Message::Subscribed {
            request,
            subscription,
        }
        | Message::Unsubscribe {
            request,
            subscription,
        } => {
            a.insert("request_id", id(*request));
            a.insert("subscription_id", id(*subscription));
        }
        Message::Unsubscribed { request, details } | Message::Unregistered { request, details } => {
            a.insert("request_id", id(*request));
            a.insert("details", dict(details));
        }
        Message::Event {
            subscription,
            publication,
            details,
            args,
            kwargs,
        } => {
            a.insert("subscription", id(*subscription));
            a.insert("publication", id(*publication));
            a.insert("details", dict(details));
            payload(&mut a, args, kwargs);
        }
        Message::Call {
            request,
            options,
            procedure,
            args,
            kwargs,
        } => {
            a.insert("request_id", id(*request));
            a.insert("options", dict(options));
            a.insert("procedure", text(procedure));
            payload(&mut a, args, kwargs);
        }
        Message::Cancel { request, options } | Message::Interrupt { request, options } => {
            a.insert("request_id", id(*request));
            a.insert("options", dict(options));
        }
        Message::Result {
            request,
            details: dict_,
            args,
            kwargs,
        }
        | Message::Yield {
            request,
            options: dict_,
            args,
            kwargs,
        } => {
            a.insert("request_id", id(*request));
            let name = if matches!(msg, Message::Result { .. }) {
                "details"
            } else {
                "options"
            };
            a.insert(name, dict(dict_));
            payload(&mut a, args, kwargs);
        }
        Message::Register {
            request,
            options,
            procedure,
        } => {
            a.insert("request_id", id(*request));
            a.insert("options", dict(options));
            a.insert("procedure", text(procedure));
        }
        Message::Registered {
            request,
            registration,
        }
        | Message::Unregister {
            request,
            registration,
        } => {
            a.insert("request_id", id(*request));
            a.insert("registration_id", id(*registration));
        }
        Message::Invocation {
            request,
            registration,
            details,
            args,
            kwargs,
        } => {
            a.insert("request_id", id(*request));
            a.insert("registration_id", id(*registration));
            a.insert("details", dict(details));
            payload(&mut a, args, kwargs);
        }
    }
    a
}

/// Feed a raw wire array through both serializers: accepted, or rejected
/// with an error naming the offending key.
fn check_validation(label: &str, sample: &Json, tally: &mut Tally) {
    let wmsg = &sample["wmsg"];
    let must_fail = sample.get("expected_error");
    // Payload passthru samples carry `enc_algo` in the options / details.
    let passthru = wmsg
        .as_array()
        .is_some_and(|items| items.iter().any(|item| item.get("enc_algo").is_some()));
    let as_value = value::from_json(wmsg.clone());
    let mut msgpack = Vec::new();
    if rmpv::encode::write_value(&mut msgpack, &as_value).is_err() {
        tally
            .failures
            .push(format!("{label}: cannot build msgpack"));
        return;
    }
    let mut cbor = Vec::new();
    if ciborium::ser::into_writer(&as_value, &mut cbor).is_err() {
        tally.failures.push(format!("{label}: cannot build cbor"));
        return;
    }
    let json = wmsg.to_string().into_bytes();
    let encodings = [
        (Serializer::Json, json),
        (Serializer::MsgPack, msgpack),
        (Serializer::Cbor, cbor),
    ];
    for (ser, bytes) in encodings {
        let here = format!("{label} {ser:?} {wmsg}");
        match (decode(ser, &bytes), must_fail) {
            (Err(DecodeError::PayloadPassthru { .. }), _) if passthru => tally.unsupported += 1,
            (Ok(_), None) if !passthru => tally.validations_accepted += 1,
            (Err(e), Some(want)) => {
                let contains = want["contains"].as_str().unwrap_or("");
                if e.to_string().contains(contains) {
                    tally.validations_rejected += 1;
                } else {
                    tally
                        .failures
                        .push(format!("{here}: error {e:?} does not mention {contains}"));
                }
            }
            (got, _) => tally.failures.push(format!("{here}: unexpected {got:?}")),
        }
    }
}
