//! Decode arbitrary bytes as one `wamp.2.json` message.
//!
//! A decoded message must survive a JSON round trip unchanged, and also a
//! msgpack one: everything JSON can carry (null, bool, integers, floats, UTF-8
//! strings, `"\0" + base64` binary, arrays, string-keyed maps) has an exact
//! msgpack form, so a router can hand a JSON client's message to a msgpack one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordo_common::wamp::Serializer;
use ordo_fuzz::check_wamp;

fuzz_target!(|data: &[u8]| {
    check_wamp(Serializer::Json, data, &[Serializer::MsgPack]);
});
